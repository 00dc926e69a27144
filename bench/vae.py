"""Wan2.1 VAE decode on one GPU: diffusers' AutoencoderKLWan.decode vs our streaming decoder, same random weights.

One LongSANA block = 10 latent frames at 480x832 (latent 60x104). For diffusers that is a whole-video decode of 10
latent frames (37 frames, its cache cleared per call); ours decodes a block that continues a video (40 frames), as the
engine does, after one priming block. Variants of ours: dtype (fp32 / bf16 / fp16), the fast path
(`fast=True`: channels_last_3d, preallocated causal context, fused Triton RMS norm + SiLU), latent frames per pass and
cudnn.benchmark.

Accuracy: every output is compared with diffusers' fp32 decode run with TF32 OFF (true fp32, the reference): relative
error, and PSNR / max level difference of the uint8 frames ((x + 1) * 127.5, rounded) the app would show. For ours the
compared output is a fresh-video decode of the same 10 latent frames (37 frames, like diffusers).

H100:  python bench/vae.py [--variants all|name,name] [--profile VARIANT]   (writes vae.json, vae.md to $OUT)
Dry run on the CPU:  python bench/vae.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import (  # noqa: E402
    PeakMemory,
    count_flops,
    environment,
    markdown_table,
    output_dir,
    profile_table,
    rel_err,
    synchronize,
    time_fn,
    write_json,
    write_text,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# name -> options; order = run order (most informative first). Keys: dtype, fast, fpp (frames per pass), bench
# (cudnn.benchmark), compile, taps2d, subpixel, defer_bias (fast path: conv biases fused into the next pass; default on)
VARIANTS = {
    "fp32-today": dict(dtype="fp32", fast=False, fpp=1),                     # today's GPU defaults
    "bf16-fast-fpp4-bench": dict(dtype="bf16", fast=True, fpp=4, bench=True),
    "bf16-fast-fpp4-bench-subpixel": dict(dtype="bf16", fast=True, fpp=4, bench=True, subpixel=True),
    "bf16-fast-fpp4-bench-nodefer": dict(dtype="bf16", fast=True, fpp=4, bench=True, defer_bias=False),
    "bf16-fast-fpp2-bench": dict(dtype="bf16", fast=True, fpp=2, bench=True),
    "bf16-fast-fpp3-bench": dict(dtype="bf16", fast=True, fpp=3, bench=True),
    "bf16-fast-fpp5-bench": dict(dtype="bf16", fast=True, fpp=5, bench=True),
    "bf16-fast-fpp10-bench": dict(dtype="bf16", fast=True, fpp=10, bench=True),
    "bf16-fast-fpp1": dict(dtype="bf16", fast=True, fpp=1),
    "fp16-fast-fpp4-bench": dict(dtype="fp16", fast=True, fpp=4, bench=True),
    "fp16-fast-fpp4-bench-subpixel": dict(dtype="fp16", fast=True, fpp=4, bench=True, subpixel=True),
    "bf16-fast-fpp2-bench-subpixel": dict(dtype="bf16", fast=True, fpp=2, bench=True, subpixel=True),
    "fp32-fast-fpp4-bench": dict(dtype="fp32", fast=True, fpp=4, bench=True),
    "bf16-fast-taps2d-fpp4-bench": dict(dtype="bf16", fast=True, fpp=4, bench=True, taps2d=True),
    "bf16-fast-taps2d-fpp10-bench": dict(dtype="bf16", fast=True, fpp=10, bench=True, taps2d=True),
    "bf16-fpp1": dict(dtype="bf16", fast=False, fpp=1),                       # plain bf16, nothing else
    "bf16-fpp10": dict(dtype="bf16", fast=False, fpp=10),
    "fp32-fast-fpp10": dict(dtype="fp32", fast=True, fpp=10),
    "fp16-fast-fpp10-bench": dict(dtype="fp16", fast=True, fpp=10, bench=True),
    "bf16-compile-fpp10": dict(dtype="bf16", fast=False, fpp=10, compile=True),  # inductor fusion; ~40 s start
}


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def accuracy(got: torch.Tensor, ref: torch.Tensor) -> dict:
    got = got.to(ref.device)
    a, b = to_uint8(got).double(), to_uint8(ref).double()
    mse = (a - b).square().mean().item()
    return dict(rel_err=rel_err(got.float(), ref), psnr_u8=math.inf if mse == 0 else 10 * math.log10(255**2 / mse),
                max_u8_diff=int((a - b).abs().max().item()), frac_u8_diff_gt1=((a - b).abs() > 1).double().mean().item())


def diffusers_model(cfg, sd, device, dtype):
    from diffusers import AutoencoderKLWan

    ref = AutoencoderKLWan(**{k: v for k, v in cfg.to_dict().items() if not k.startswith("_")})
    ref.load_state_dict(sd, strict=True)
    return ref.to(device=device, dtype=dtype).eval().requires_grad_(False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny VAE (base_dim 4), latent 4x6: a dry run of the logic")
    p.add_argument("--variants", default="all", help="comma list of: " + ", ".join(VARIANTS))
    p.add_argument("--latent-frames", type=int, default=10)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--profile", default="", help="variant to profile (torch.profiler top ops, vae_profile.txt)")
    p.add_argument("--no-diffusers-bf16", action="store_true")
    p.add_argument("--time-budget", type=float, default=260.0, help="seconds; later variants are skipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    t_start = time.perf_counter()
    device = torch.device(args.device)
    out = output_dir(args.out)

    from core.vae import WanStreamingDecoder, WanVAEConfig, decoder_from_state_dict, random_wan_vae_state_dict
    from core.vae.config import tiny_wan_vae_config

    cfg = tiny_wan_vae_config() if args.tiny else WanVAEConfig()
    hw = (4, 6) if args.tiny else (60, 104)
    sd = random_wan_vae_state_dict(cfg, seed=args.seed, include_encoder=True)
    gen = torch.Generator().manual_seed(args.seed + 1)
    t = args.latent_frames
    # raw (denormalised) latents of a few consecutive blocks; blocks rotate so no two timed calls share inputs
    blocks = [(torch.randn(1, cfg.z_dim, t, *hw, generator=gen) * 1.5).to(device) for _ in range(3)]
    env = environment(device)
    result: dict = dict(env=env, args=vars(args), latent=[t, *hw], rows=[], notes=[])
    print(f"env: {env}", flush=True)

    def save() -> None:
        write_json(out / "vae.json", result)
        write_text(out / "vae.md", render(result))

    # --- diffusers: the reference output (TF32 off) and its timings ----------------------------------------------
    old_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    ref_model = diffusers_model(cfg, sd, device, torch.float32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        synchronize(device)
        t0 = time.perf_counter()
        reference = ref_model.decode(blocks[0]).sample.float()
        synchronize(device)
        true_fp32_ms = (time.perf_counter() - t0) * 1e3
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old_tf32
    result["rows"].append(dict(name="diffusers fp32, TF32 off (reference)", impl="diffusers", ms=true_fp32_ms,
                               frames=reference.shape[2], note="one cold call", rel_err=0.0, psnr_u8=math.inf))
    print(f"reference decode {tuple(reference.shape)} in {true_fp32_ms:.0f} ms", flush=True)

    def diffusers_row(name: str, model) -> None:
        dtype = next(model.parameters()).dtype
        z0, z1 = blocks[0].to(dtype), blocks[1].to(dtype)
        with torch.no_grad():
            got = model.decode(z0).sample
            with PeakMemory(device) as mem:
                timing = time_fn(lambda: model.decode(z1).sample, device, warmup=1, reps=max(2, args.reps - 1))
        row = dict(name=name, impl="diffusers", frames=got.shape[2], **timing, peak_gib=mem.peak_gib,
                   delta_gib=mem.delta_gib, **accuracy(got, reference))
        result["rows"].append(row)
        print(row, flush=True)
        save()

    diffusers_row("diffusers fp32 (torch defaults: TF32 convs)", ref_model)
    if args.tiny or device.type == "cpu":
        flops = None
    else:
        with torch.no_grad():
            flops = count_flops(lambda m=ref_model: m.decode(blocks[0]))
    result["flops_diffusers_decode"] = flops
    del ref_model
    gc.collect()
    if not args.no_diffusers_bf16:
        bf = diffusers_model(cfg, sd, device, torch.bfloat16)
        diffusers_row("diffusers bf16 (the shared/anchors setting)", bf)
        del bf
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # --- ours -------------------------------------------------------------------------------------------------
    names = list(VARIANTS) if args.variants == "all" else [n.strip() for n in args.variants.split(",") if n.strip()]
    for name in names:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    for name in names:
        elapsed = time.perf_counter() - t_start
        if elapsed > args.time_budget:
            result["notes"].append(f"{name}: skipped, {elapsed:.0f} s of the {args.time_budget:.0f} s budget used")
            print(result["notes"][-1], flush=True)
            continue
        v = VARIANTS[name]
        dtype_name, fast, fpp, bench = v["dtype"], v["fast"], v["fpp"], v.get("bench", False)
        compiled, taps2d, defer_bias = v.get("compile", False), v.get("taps2d", False), v.get("defer_bias", True)
        subpixel = v.get("subpixel", False)
        row = dict(name=name, impl="ours", dtype=dtype_name, fast=fast, frames_per_pass=fpp, cudnn_benchmark=bench,
                   compile=compiled, taps2d=taps2d, defer_bias=defer_bias, subpixel=subpixel)
        dec = None
        try:
            t0 = time.perf_counter()
            model = decoder_from_state_dict(cfg, sd, device=device, dtype=torch.float32)
            dec = WanStreamingDecoder(model, frames_per_pass=fpp, dtype=DTYPES[dtype_name], fast=fast,
                                      cudnn_benchmark=bench, compile=compiled, taps2d=taps2d, subpixel=subpixel)
            if fast and not defer_bias:
                dec.model.configure(fast=True, taps2d=taps2d, defer_bias=False, subpixel=subpixel)
            whole = dec.decode_full(blocks[0], normalized=False)  # fresh video: 37 frames, like diffusers
            synchronize(device)
            row["first_call_s"] = time.perf_counter() - t0  # includes Triton compile / cuDNN autotuning
            row.update(accuracy(whole, reference))
            del whole
            dec.reset()
            dec.decode_block(blocks[0], normalized=False)  # priming block: the timed blocks continue a video
            turn = iter(range(10**9))

            def one_block(dec=dec, turn=turn):
                return dec.decode_block(blocks[1 + next(turn) % 2], normalized=False)

            with PeakMemory(device) as mem:
                timing = time_fn(one_block, device, warmup=1, reps=args.reps)
            row.update(timing, frames=one_block().shape[2], peak_gib=mem.peak_gib, delta_gib=mem.delta_gib)
            if flops:
                row["tflops"] = flops / (timing["ms"] * 1e-3) / 1e12
            if args.profile == name:
                write_text(out / "vae_profile.txt", f"# {name}\n" + profile_table(one_block, device, row_limit=25))
        except Exception as exc:  # noqa: BLE001 - record (e.g. out of memory) and go on with the next variant
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        result["rows"].append(row)
        print({k: v for k, v in row.items() if k != "all_ms"}, flush=True)
        del dec
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        save()
    result["total_s"] = time.perf_counter() - t_start
    save()
    print(render(result))
    return 0


def render(result: dict) -> str:
    env = result["env"]
    t, h, w = result["latent"]
    ref = next((r for r in result["rows"] if r.get("impl") == "diffusers" and "TF32 convs" in r["name"]), None)
    lines = [f"# Wan2.1 VAE decode, {t} latent frames at {h * 8}x{w * 8} (latent {h}x{w}): "
             f"{env.get('gpu') or env.get('device')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
             f"triton {env.get('triton')}, diffusers {env.get('diffusers')}, {env.get('date_utc')}", ""]
    if result.get("flops_diffusers_decode"):
        lines += [f"diffusers decode FLOPs (torch flop counter): {result['flops_diffusers_decode'] / 1e12:.1f} TFLOP", ""]
    header = ["variant", "dtype", "fast", "frames/pass", "cudnn bench", "ms / block", "min ms", "x vs diffusers fp32",
              "frames", "peak GiB", "rel err", "PSNR u8 dB", "max u8 diff", "first call s"]
    rows = []
    for r in result["rows"]:
        speedup = ref["ms"] / r["ms"] if ref and r.get("ms") else None
        fast = "compile" if r.get("compile") else ("taps2d" if r.get("taps2d") else r.get("fast", "-"))
        fast = f"{fast}+subpixel" if r.get("subpixel") else fast
        fast = f"{fast}, bias unfused" if r.get("fast") and r.get("defer_bias") is False else fast
        rows.append([r["name"], r.get("dtype", "-"), fast, r.get("frames_per_pass", "-"),
                     r.get("cudnn_benchmark", "-"), r.get("ms"), r.get("min_ms"), speedup, r.get("frames"),
                     r.get("peak_gib"), r.get("rel_err"), r.get("psnr_u8"), r.get("max_u8_diff"),
                     r.get("first_call_s") or r.get("error")])
    lines.append(markdown_table(header, rows))
    errors = [f"- {r['name']}: {r['error']}" for r in result["rows"] if r.get("error")]
    if errors:
        lines += ["", "Errors:"] + errors
    if result.get("notes"):
        lines += [""] + [f"- {n}" for n in result["notes"]]
    lines += ["", "ms / block: median CUDA-event time of one decode_block of a block that continues a video "
              "(diffusers: one whole decode of the block). rel err / PSNR: vs diffusers fp32 with TF32 off."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
