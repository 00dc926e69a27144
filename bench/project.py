"""Project bench: what a saved project costs on disk per block, and what resuming / regenerating costs in time.

Sections:
  bytes     bytes per LongSANA block at 480x832 for the full-size model, from shapes (no GPU, no weights): the state
            contribution (vk, k_sum, temporal-conv frame), the latents, the decoded uint8 frames, the streaming VAE
            decoder cache (measured by decoding two blocks on the meta device with the released Wan2.1 VAE config),
            and what a project therefore stores per block and per minute of video.
  timing    on a real engine (default: the demo model on the CPU): generate N blocks into a project; resume after the
            last block (open + load the saved state, VAE cache stored) and Extend by one block; Regenerate from block
            k (state loaded, VAE cache re-decoded from block 0) vs generating the whole video; and the alternatives
            the project format rejects: recomputing the k contributions with clean passes, re-decoding k blocks.

CPU, demo model (docs/benchmarks.md):    python bench/project.py
GPU, full-size model if installed:        python bench/project.py --model longsana-480p --device cuda --blocks 6 --k 4
Shapes only:                               python bench/project.py --bytes-only
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/project.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import environment, markdown_table, output_dir, write_json, write_text  # noqa: E402

MIB = 2**20


# ====================================================================== bytes from shapes
def bytes_per_block(height: int = 480, width: int = 832, block_latent: int = 10) -> dict[str, Any]:
    from core.config import PRESETS
    from core.timeline import video_frames_for_latent_frames
    from core.vae.config import WanVAEConfig
    from core.vae.streaming import WanStreamingDecoder
    from core.vae.wan import WanVAEDecoder

    cfg = PRESETS["480p"]
    h, w = height // 8, width // 8
    tokens = (h // cfg.patch_size[1]) * (w // cfg.patch_size[2])
    L, H, d = cfg.num_layers, cfg.num_attention_heads, cfg.attention_head_dim
    vk = L * H * d * d * 4                      # fp32
    k_sum = L * H * d * 4                       # fp32
    tconv_bf16 = L * tokens * cfg.hidden_size * 2   # model dtype on the GPU (bf16)
    contribution = vk + k_sum + tconv_bf16
    latents = 16 * block_latent * h * w * 4    # fp32, as stored
    frames = 4 * block_latent * height * width * 3
    first_frames = video_frames_for_latent_frames(block_latent + 1) * height * width * 3

    with torch.device("meta"):
        decoder = WanStreamingDecoder(WanVAEDecoder(WanVAEConfig()))
    decoder.decode_block(torch.zeros(1, 16, block_latent + 1, h, w, device="meta"))
    decoder.decode_block(torch.zeros(1, 16, block_latent, h, w, device="meta"))
    vae_cache = decoder.cache_nbytes

    block_file = latents + frames + contribution
    block_file_switch = block_file + contribution      # a prompt switch also stores the recached previous block
    blocks_per_minute = 60 * 16 / (4 * block_latent)
    return {
        "resolution": f"{width}x{height}", "latent": [16, block_latent, h, w], "tokens_per_frame": tokens,
        "state_vk": vk, "state_k_sum": k_sum, "state_tconv_frame_bf16": tconv_bf16, "state_contribution": contribution,
        "stream_state_total": vk + k_sum + tconv_bf16,
        "latents_fp32": latents, "decoded_frames_uint8": frames, "decoded_frames_first_block": first_frames,
        "vae_cache_fp32": vae_cache, "block_file": block_file, "block_file_prompt_switch": block_file_switch,
        "per_minute_of_video": int(block_file * blocks_per_minute), "per_take_tip_vae_cache": vae_cache,
    }


# ====================================================================== timing on an engine
def _consume(events) -> None:
    from core.events import ErrorEvent

    for ev in events:
        if isinstance(ev, ErrorEvent):
            raise RuntimeError(ev.message)


def timing(model: str, device: str, blocks: int, k: int, height: int | None, width: int | None) -> dict[str, Any]:
    from core.engine import Engine
    from core.events import CancelToken
    from core.model import StreamState
    from core.project import Project
    from core.timeline import Timeline

    engine = Engine.load(model, device=device)
    if height or width:  # a smaller frame for slow CPUs (every cost below scales with it)
        engine.resolved = dataclasses.replace(engine.resolved, height=height or engine.resolved.height,
                                              width=width or engine.resolved.width)
    sync = torch.cuda.synchronize if engine.device.type == "cuda" else (lambda: None)
    seconds = 2.5 * blocks
    out: dict[str, Any] = {"model": engine.info["model_id"], "device": str(engine.device),
                           "resolution": f"{engine.resolved.width}x{engine.resolved.height}", "blocks": blocks, "k": k}
    prompt = "a lighthouse on a cliff at dusk, waves crashing"
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up (text encoder, kernels) outside the timings
        warm = Project.create(Path(tmp) / "warm", engine.info, Timeline.single(prompt, 2.5), 0)
        _consume(warm.generate(engine, CancelToken()))

        project = Project.create(Path(tmp) / "p", engine.info, Timeline.single(prompt, seconds), 0)

        def timed(fn) -> float:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            return time.perf_counter() - t0

        out["generate_all_s"] = timed(lambda: _consume(project.generate(engine, CancelToken())))
        out["generate_per_block_s"] = out["generate_all_s"] / blocks
        tip = project._blocks[project.blocks()[-1].id]
        out["demo_block_file_bytes"] = tip["bytes"]
        out["demo_vae_cache_bytes"] = (tip["vae_cache"] or {"bytes": 0})["bytes"]
        out["demo_project_bytes"] = project.disk_bytes()

        # resume at the tip (what Extend does first): open + load every contribution + the stored VAE cache
        holder: dict[str, Any] = {}

        def reopen_and_resume() -> None:
            holder["p"] = Project.open(project.folder)
            holder["p"]._resume_point(engine, holder["p"].take().blocks)

        out["resume_at_tip_s"] = timed(reopen_and_resume)
        reopened = holder["p"]
        out["extend_one_block_s"] = timed(lambda: _consume(reopened.extend(engine, CancelToken(), seconds=2.5)))

        # regenerate from block k: state loaded, VAE cache re-decoded through blocks 0..k-1
        path = reopened.take("t1").blocks[:k]
        out[f"resume_at_block_{k}_s"] = timed(lambda: reopened._resume_point(engine, path))
        reopened.select_take("t1")
        out[f"regenerate_from_{k}_s"] = timed(
            lambda: _consume(reopened.regenerate(engine, CancelToken(), from_block=k, seed=1)))

        # the rejected alternatives: recompute the k contributions (clean passes from block 0), re-decode k blocks
        loaded = [reopened._load_block(b) for b in path]
        text = engine._encode(prompt, 10)

        def recompute() -> None:
            state = StreamState.from_contributions(engine.transformer.cfg, [], device=engine.device)
            with torch.no_grad():
                for bid, tensors in zip(path, loaded):
                    lat = tensors["latents"][None].to(engine.device, engine.dtype)
                    start = reopened._blocks[bid]["start"]
                    state = state.add(engine.transformer.cache_pass(lat, text, state, frame_offset=start))

        def redecode() -> None:
            engine.vae.reset()
            for tensors in loaded:
                engine.vae.decode_block(tensors["latents"][None].float())

        out[f"recompute_{k}_contributions_s"] = timed(recompute)
        out[f"redecode_{k}_blocks_vae_s"] = timed(redecode)
        out[f"load_{k}_block_files_s"] = timed(lambda: [reopened._load_block(b) for b in path])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--blocks", type=int, default=3, help="blocks of the generated video (2.5 s each)")
    ap.add_argument("--k", type=int, default=2, help="regenerate from this block")
    ap.add_argument("--height", type=int, help="override the model's frame height (smaller = faster on a CPU)")
    ap.add_argument("--width", type=int)
    ap.add_argument("--reps", type=int, default=3, help="timing runs (min and median are reported)")
    ap.add_argument("--bytes-only", action="store_true")
    ap.add_argument("--out", help="folder for project.json / project.md (default $OUT or bench/results)")
    args = ap.parse_args(argv)
    if not 1 <= args.k < args.blocks:
        ap.error("--k must be in [1, blocks)")

    sizes = bytes_per_block()
    result: dict[str, Any] = {"environment": environment(torch.device(args.device)), "bytes_480p": sizes}
    rows = [[name, value, f"{value / MIB:,.1f}"] for name, value in sizes.items() if isinstance(value, int)]
    md = ["## Project bytes per block, full-size model at 480x832 (from shapes)", "",
          markdown_table(["item", "bytes", "MiB"], rows), ""]
    if not args.bytes_only:
        runs = [timing(args.model, args.device, args.blocks, args.k, args.height, args.width)
                for _ in range(max(1, args.reps))]
        # min and median of each measure over the runs (on a shared CPU other load only ever adds time)
        t = {}
        for key, value in runs[0].items():
            if isinstance(value, float):
                t[key] = min(r[key] for r in runs)
                t[key.replace("_s", "_median_s")] = statistics.median(r[key] for r in runs)
            else:
                t[key] = value
        t["reps"] = len(runs)
        result["timing"] = t
        result["timing_runs"] = runs
        md += [f"## Project timings: {t['model']} on {t['device']} at {t['resolution']}", "",
               markdown_table(["measure", "value"], [[k_, v] for k_, v in t.items()]), ""]
    folder = output_dir(args.out)
    write_json(folder / "project.json", result)
    write_text(folder / "project.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
