"""End to end on one GPU: full-size random weights at 480p through the real engine loop (LongSANA sampler: 4 steps +
1 cache pass per block, streaming VAE decode per block).

Reports seconds per block split into text / DiT / VAE, video frames per second end to end, and peak VRAM for 5 s, 30 s
and 60 s videos (it must stay flat: the linear-attention state has a constant size). In the same run it times diffusers'
AutoencoderKLWan.decode of 10 latent frames with the same random VAE weights, for the ratio.

H100:  python bench/e2e.py [--precision fp8 [--quant-recipe all-blocks]] [--compile] [--seconds 5,30,60] [--ab-graphs]
       (writes e2e.json, e2e.md to $OUT)
Dry run on the CPU:  python bench/e2e.py --tiny --device cpu --seconds 2.5,5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import environment, output_dir, randomize_parameters_, write_json, write_text  # noqa: E402


def gemma2_2b_config(tiny: bool):
    from transformers import Gemma2Config

    if tiny:
        return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=64)
    # google/gemma-2-2b-it (the SANA-Video text encoder)
    return dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=4096,
                Gemma2Config=Gemma2Config)


def build_engine(device: torch.device, tiny: bool, compile_dit: bool, seed: int, fp32_vae: bool = False,
                 precision: str = "bf16", quant_recipe: str | None = None, cache_dir: str | None = None):
    from transformers import Gemma2Config, Gemma2Model

    from core.config import PRESETS
    from core.demo import demo_transformer_config
    from core.engine import Engine, compile_blocks
    from core.model import SanaVideoTransformer
    from core.registry import ResolvedModel
    from core.text_encoder import TextEncoder, build_tiny_tokenizer
    from core.vae import WanStreamingDecoder, WanVAEConfig, WanVAEDecoder, random_wan_vae_state_dict
    from core.vae.config import tiny_wan_vae_config

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    cfg = demo_transformer_config() if tiny else PRESETS["480p"]
    with torch.device("meta"):
        dit = SanaVideoTransformer(cfg)
    dit = dit.to_empty(device=device).to(dtype)
    randomize_parameters_(dit, seed)
    dit.eval().requires_grad_(False)

    vae_cfg = tiny_wan_vae_config() if tiny else WanVAEConfig()
    vae_sd = random_wan_vae_state_dict(vae_cfg, seed=seed, include_encoder=True)
    with torch.device("meta"):
        vae_model = WanVAEDecoder(vae_cfg)
    own_keys = set(vae_model.state_dict())
    vae_model.load_state_dict({k: v.to(device) for k, v in vae_sd.items() if k in own_keys}, strict=True, assign=True)
    from core.vae.streaming import GPU_FAST_SETTINGS
    fast = GPU_FAST_SETTINGS if device.type == "cuda" and not fp32_vae else {}
    vae = WanStreamingDecoder(vae_model.eval().requires_grad_(False), **fast)  # what Engine.load uses

    tokenizer = build_tiny_tokenizer()
    g = gemma2_2b_config(tiny)
    g.pop("Gemma2Config", None)
    gcfg = Gemma2Config(vocab_size=256000 if not tiny else len(tokenizer), pad_token_id=0, eos_token_id=1,
                        bos_token_id=2, **g)
    with torch.device(device):
        gemma = Gemma2Model(gcfg).to(dtype).eval().requires_grad_(False)
    encoder = TextEncoder(gemma, tokenizer, device=device, dtype=dtype)
    height, width = (64, 112) if tiny else (480, 832)
    used, quant_s = ("bf16" if dtype == torch.bfloat16 else "fp32"), None
    if precision != "bf16":
        # the engine's first-launch step, as Engine.load runs it: calibration through the LongSANA loop with this
        # engine's text encoder, packing, cache (a temporary folder here), layer swap
        from quant.prepare import make_model_transform
        from quant.recipe import recipe_from_arg

        def encode_prompts(prompts):
            enc = encoder.encode(prompts)
            return [(enc.embeds[i:i + 1], enc.mask[i:i + 1]) for i in range(len(prompts))]

        t_quant = time.perf_counter()
        transform = make_model_transform(fmt=precision, recipe=recipe_from_arg(quant_recipe), cache_dir=cache_dir)
        dit, quant_used = transform(dit, device, {"encode_prompts": encode_prompts,
                                                  "latent_hw": (height // 8, width // 8)})
        used, quant_s = quant_used or used, time.perf_counter() - t_quant
    if compile_dit:
        compile_blocks(dit)
    resolved = ResolvedModel(id="random-480p", sampler="longsana", transformer=Path("-"), vae=Path("-"),
                             text_encoder=Path("-"), tokenizer=Path("-"), preset="480p", height=height, width=width,
                             fps=16, is_demo=True, label="full-size random weights (benchmark)")
    engine = Engine(resolved, dit, vae, encoder, device, dtype, used)
    engine.collect_timings = True
    engine.bench_quant_s = quant_s
    return engine, vae_cfg, vae_sd, time.perf_counter() - t0


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_video(engine, seconds: float, seed: int, device) -> dict:
    from core.engine import GenerateRequest
    from core.events import BlockDoneEvent, CancelToken, ErrorEvent, FinishedEvent
    from core.timeline import Timeline

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    engine._text_cache.clear()
    prompt = f"a slow aerial shot over a coastline at sunset, take {seconds}"
    sync(device)
    t0 = time.perf_counter()
    blocks, error, frames = [], None, 0
    for ev in engine.generate(GenerateRequest(Timeline.single(prompt, seconds), seed=seed), CancelToken()):
        if isinstance(ev, BlockDoneEvent):
            blocks.append(dict(ev.extra.get("timings", {}), frames=ev.frame_end - ev.frame_start))
        elif isinstance(ev, ErrorEvent):
            error = ev.message
        elif isinstance(ev, FinishedEvent):
            frames = ev.num_frames
    sync(device)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    # reserved includes what the allocator holds beyond live tensors, e.g. a CUDA graph's memory pool
    peak_reserved = torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else float("nan")
    steady = blocks[1:] or blocks  # block 0 also pays compile / first-call costs
    return dict(seconds=seconds, blocks=len(blocks), frames=frames, wall_s=wall, fps=frames / wall if wall else 0,
                peak_gib=peak, peak_reserved_gib=peak_reserved, error=error,
                dit_s_per_block=sum(b.get("dit_s", 0) for b in steady) / max(1, len(steady)),
                vae_s_per_block=sum(b.get("vae_s", 0) for b in steady) / max(1, len(steady)))


def time_text(engine, device, reps=3) -> float:
    times = []
    for i in range(reps):
        sync(device)
        t0 = time.perf_counter()
        engine.text_encoder.encode([f"a fresh prompt number {i} about a red kite over hills"])
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def diffusers_vae_decode_ms(vae_cfg, vae_sd, device, latent_frames, hw) -> float | None:
    try:
        from diffusers import AutoencoderKLWan
    except ImportError:
        return None
    ref = AutoencoderKLWan(base_dim=vae_cfg.base_dim, z_dim=vae_cfg.z_dim, dim_mult=list(vae_cfg.dim_mult),
                           num_res_blocks=vae_cfg.num_res_blocks, temperal_downsample=list(vae_cfg.temperal_downsample))
    ref.load_state_dict(vae_sd, strict=True)
    ref = ref.to(device).eval()
    z = torch.randn(1, vae_cfg.z_dim, latent_frames, *hw, device=device)
    with torch.no_grad():
        ref.decode(z)
        sync(device)
        t0 = time.perf_counter()
        ref.decode(z)
        sync(device)
    del ref
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks (the engine does not by default)")
    p.add_argument("--no-compile", action="store_true", help=argparse.SUPPRESS)   # the default now; kept for old commands
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp8", "nvfp4"],
                   help="DiT weights: bf16, or quantized by the engine's first-launch step (quant/)")
    p.add_argument("--quant-recipe", default=None, help="default, all-blocks or a JSON recipe (with --precision fp8)")
    p.add_argument("--fp32-vae", action="store_true", help="the exact fp32 VAE decode instead of the bf16 fast path")
    p.add_argument("--seconds", default="5,30,60")
    p.add_argument("--ab-graphs", action="store_true",
                   help="each length twice: denoising steps from CUDA graphs (the engine default) and eager")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    out = output_dir(args.out)
    compiled = args.compile and device.type == "cuda"
    with tempfile.TemporaryDirectory() as cache_dir:
        engine, vae_cfg, vae_sd, build_s = build_engine(device, args.tiny, compiled, args.seed, args.fp32_vae,
                                                         args.precision, args.quant_recipe, cache_dir)
    print(f"built full-size random engine in {build_s:.1f} s", flush=True)
    warm = run_video(engine, 5.0, args.seed, device)  # compiles the block shapes
    print(f"warm-up 5 s video: {warm['wall_s']:.1f} s", flush=True)
    text_s = time_text(engine, device)
    rows = []
    graph_modes = [True, False] if args.ab_graphs else [engine.cuda_graphs]
    for seconds in [float(s) for s in args.seconds.split(",")]:
        for graphs in graph_modes:
            engine.cuda_graphs = graphs
            r = run_video(engine, seconds, args.seed, device)
            r["cuda_graphs"] = bool(graphs and device.type == "cuda")
            rows.append(r)
            print(json.dumps(r), flush=True)
    hw = (engine.resolved.height // 8, engine.resolved.width // 8)
    ref_ms = diffusers_vae_decode_ms(vae_cfg, vae_sd, device, 10, hw)
    env = environment(device)
    result = dict(env=env, build_s=build_s, warmup=warm, text_encode_s=text_s, runs=rows,
                  diffusers_vae_decode_10_latent_ms=ref_ms, compiled=compiled, precision=engine.precision,
                  quant_recipe=args.quant_recipe, quant_first_launch_s=engine.bench_quant_s)
    write_json(out / "e2e.json", result)
    lines = [f"# End to end, full-size random weights, 480p: {env.get('gpu_name', env.get('gpu', device))}, torch {torch.__version__}, "
             f"{env.get('date_utc', '')}", "",
             f"Text encode (Gemma-2 2B, one prompt): {text_s * 1000:.0f} ms. DiT {engine.precision}, "
             f"{'compiled per block' if compiled else 'not compiled'}"
             + (f", quantized at start-up in {engine.bench_quant_s:.1f} s (recipe {args.quant_recipe or 'default'})"
                if engine.bench_quant_s is not None else "") + ".",
             "", "| video | DiT steps | blocks | frames | wall s | video frames/s | DiT s/block | VAE s/block | "
             "peak VRAM GiB (reserved) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        steps = "CUDA graph" if r["cuda_graphs"] else "eager"
        lines.append(f"| {r['seconds']:.0f} s | {steps} | {r['blocks']} | {r['frames']} | {r['wall_s']:.1f} | {r['fps']:.1f} | "
                     f"{r['dit_s_per_block']:.3f} | {r['vae_s_per_block']:.3f} | {r['peak_gib']:.2f} ({r['peak_reserved_gib']:.2f}) |")
    if ref_ms is not None:
        ours = rows[-1]["vae_s_per_block"] * 1000 if rows else math.nan
        lines += ["", f"VAE decode of 10 latent frames: ours {ours:.0f} ms (streaming, per block) vs diffusers "
                  f"AutoencoderKLWan.decode {ref_ms:.0f} ms (same weights, same run): {ref_ms / ours:.2f}x"]
    write_text(out / "e2e.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
