"""Our SANA-Video transformer vs diffusers' SanaVideoTransformer3DModel: same random weights, same run, same GPU.

Cases (released 480p config, bf16, eval, no_grad):
  full   480x832x81 frames, batch 2 (the CFG batch): latent 21x60x104, 32,760 tokens per sample.
  block  one LongSANA block: 10 latent frames at 480p, batch 1. Ours runs it as in the sampler: with a non-empty
         stream state (the cache pass of an 11-frame first block) and frame_offset 11. diffusers has no streaming
         state, so it runs the same chunk bidirectionally (what the anchor timed); the output comparison for this case
         uses ours without state (the same function).
Variants: ours eager, ours graphed (the eager forward replayed from a CUDA graph, as the engine runs its denoising
steps; CUDA only), ours torch.compile (repeated blocks; --compile-scope model for the whole model), diffusers eager,
diffusers torch.compile (--compile-diffusers, ~75 s), ours with Triton off (--ab-triton).
Reported: median ms (CUDA events, after warm-up), TFLOP/s (FLOPs counted on diffusers by torch.utils.flop_counter),
speed-up vs diffusers eager, peak memory, output relative error vs diffusers, compile seconds; environment facts.
Ours gets its text context (caption projection + per-layer cross K/V) computed once outside the timed region, as the
sampler does; diffusers recomputes it in every forward (about 0.1% of the FLOPs).

H100:  python bench/dit.py [--compile-diffusers] [--profile]      (writes dit.json, dit.md, dit_profile.txt to $OUT)
Dry run of the logic on the CPU:  python bench/dit.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/dit.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import (  # noqa: E402
    PeakMemory,
    count_flops,
    environment,
    graphed,
    markdown_table,
    output_dir,
    profile_table,
    randomize_parameters_,
    rel_err,
    synchronize,
    time_fn,
    write_json,
    write_text,
)
from core.config import PRESETS, TransformerConfig, tiny_config  # noqa: E402
from core.kernels import _triton as kernel_switch  # noqa: E402
from core.model import SanaVideoTransformer, StreamState  # noqa: E402
from core.model.graphed import GraphedForward  # noqa: E402

# diffusers 0.42.1, torch 2.11 cu130, one H100 80GB (shared/anchors/diffusers-h100-2026-11-27.json)
ANCHOR_H100_MS = {"full": {"diffusers_eager": 1045.0}, "block": {"diffusers_eager": 228.2, "diffusers_compiled": 130.3}}
TARGETS = {"block_ms": 100.0, "full_speedup": 2.0}

CASES = {
    # name: batch, latent frames, latent H, latent W, previous block's frames (None: no stream state), text tokens
    "full": dict(batch=2, frames=21, height=60, width=104, prev_frames=None, tokens=300,
                 label="480x832x81, batch 2 (21x60x104 latent)"),
    "block": dict(batch=1, frames=10, height=60, width=104, prev_frames=11, tokens=300,
                  label="LongSANA block, 10 latent frames 480p, batch 1, state + frame_offset 11"),
}
TINY_CASES = {
    "full": dict(batch=2, frames=3, height=8, width=12, prev_frames=None, tokens=8, label="tiny full"),
    "block": dict(batch=1, frames=2, height=8, width=12, prev_frames=3, tokens=8, label="tiny block"),
}
DEFAULT_REPS = {"full": (1, 5), "block": (2, 10)}   # (warm-up, timed) calls


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--tiny", action="store_true", help="tiny config and sizes (dry run of the logic, e.g. on CPU)")
    p.add_argument("--cases", default="full,block", help="comma-separated subset of: full, block")
    p.add_argument("--reps", type=int, default=None, help="timed calls per variant (default 5 full / 10 block)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per variant (default 1 full / 2 block)")
    p.add_argument("--no-compile", action="store_true", help="skip ours torch.compile")
    p.add_argument("--compile-diffusers", action="store_true", help="also time diffusers torch.compile (~75 s)")
    p.add_argument("--compile-scope", default="blocks", choices=["blocks", "model"],
                   help="compile each transformer block (regional, fast to compile) or the whole model")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode, e.g. max-autotune-no-cudagraphs (default: torch's default)")
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend (default inductor; 'eager' in --tiny mode to dry-run the plumbing)")
    p.add_argument("--no-diffusers", action="store_true", help="ours only (no FLOP count, no comparison)")
    p.add_argument("--no-graphed", action="store_true",
                   help="skip ours_graphed (the engine's CUDA-graph replay of the eager forward)")
    p.add_argument("--ab-triton", action="store_true", help="also time ours eager with the Triton kernels off")
    p.add_argument("--cuda-graph", action="store_true",
                   help="also time ours eager captured into one CUDA graph (replayed on the same inputs)")
    p.add_argument("--profile", action="store_true", help="torch.profiler top-20 ops per eager model and case")
    p.add_argument("--no-kernels", action="store_true",
                   help="skip the per-kernel section (each Triton kernel vs eager PyTorch at the block's sizes)")
    p.add_argument("--sweep", action="store_true",
                   help="only sweep the Triton kernels' launch settings at one block's sizes (writes sweep.json)")
    p.add_argument("--sweep-only", default=None, metavar="TEXT",
                   help="with --sweep: only the ops whose name contains TEXT (e.g. dwconv)")
    p.add_argument("--tune", action="store_true",
                   help="sweep first, keep each kernel's fastest accurate setting, then run the benchmark")
    p.add_argument("--time-budget", type=float, default=330.0,
                   help="seconds; a compile variant is skipped when less than 100 s of the budget is left")
    p.add_argument("--set", action="append", default=[], metavar="MODULE.CFG=JSON",
                   help="override a kernel launch-setting dict for this run, e.g. "
                        "core.kernels.attn_fold_triton.RATIO_CFG='{\"block_n\": 64}' (in-model A/B of sweep winners)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default $OUT, else bench/results)")
    return p.parse_args(argv)


# ------------------------------------------------------------------ models and inputs

def build_models(cfg: TransformerConfig, device: torch.device, dtype: torch.dtype, seed: int, with_diffusers: bool):
    """(ours, diffusers or None): diffusers gets random weights; ours loads diffusers' state dict."""
    diffusers_model = None
    if with_diffusers:
        from diffusers import SanaVideoTransformer3DModel

        kwargs = {k: v for k, v in cfg.to_diffusers_dict().items() if not k.startswith("_")}
        with torch.device(device):                       # build on the GPU directly: 2B parameters
            diffusers_model = SanaVideoTransformer3DModel(**kwargs)
        diffusers_model = diffusers_model.to(dtype).eval().requires_grad_(False)
        randomize_parameters_(diffusers_model, seed)
        with torch.device("meta"):
            ours = SanaVideoTransformer(cfg)
        ours.load_diffusers_state_dict(diffusers_model.state_dict(), device=device, dtype=dtype)
    else:
        with torch.device(device):
            ours = SanaVideoTransformer(cfg)
        ours = ours.to(dtype)
        randomize_parameters_(ours, seed)
    return ours.eval().requires_grad_(False), diffusers_model


def make_inputs(case: dict, cfg: TransformerConfig, device: torch.device, dtype: torch.dtype, seed: int,
                ours: SanaVideoTransformer) -> dict[str, Any]:
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    b = case["batch"]

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(dtype)

    latents = randn(b, cfg.in_channels, case["frames"], case["height"], case["width"])
    caption = randn(b, case["tokens"], cfg.caption_channels)
    mask = torch.ones(b, case["tokens"], dtype=torch.bool, device=device)
    timestep = torch.full((b,), 500.0, device=device)          # an integer: flooring is moot
    with torch.no_grad():
        text = ours.encode_text(caption, mask)
        state, frame_offset = None, 0
        if case["prev_frames"]:
            # a realistic state: the clean cache pass of the previous (first, longer) block
            prev = randn(b, cfg.in_channels, case["prev_frames"], case["height"], case["width"])
            contribution = ours.cache_pass(prev, text, None, frame_offset=0)
            state = StreamState.empty(cfg, batch=b, device=device).add(contribution)
            frame_offset = case["prev_frames"] // cfg.patch_size[0]
    return dict(latents=latents, caption=caption, mask=mask, timestep=timestep, text=text, state=state,
                frame_offset=frame_offset)


def ours_call(model, inp, streaming: bool = True):
    state = inp["state"] if streaming else None
    offset = inp["frame_offset"] if streaming else 0
    return lambda: model(inp["latents"], inp["timestep"], inp["text"], state, offset)


def diffusers_call(model, inp):
    return lambda: model(inp["latents"], inp["caption"], inp["timestep"],
                         encoder_attention_mask=inp["mask"].to(inp["latents"].dtype), return_dict=False)[0]


# ------------------------------------------------------------------ measuring

def measure(name: str, fn, device: torch.device, warmup: int, reps: int, first_call: bool = False) -> dict[str, Any]:
    """Time one variant; never raises (an error is recorded and the run goes on)."""
    result: dict[str, Any] = {"variant": name}
    try:
        with torch.no_grad():
            if first_call:                                   # compile happens here; time it separately
                t0 = time.perf_counter()
                fn()
                synchronize(device)
                result["compile_s"] = time.perf_counter() - t0
            with PeakMemory(device) as mem:
                result.update(time_fn(fn, device, warmup, reps))
            result["peak_gib"], result["peak_delta_gib"] = mem.peak_gib, mem.delta_gib
    except Exception as exc:  # noqa: BLE001 - OOM, compile failure, ...: keep the rest of the run
        result["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    status = f"{result['ms']:.2f} ms" if "ms" in result else result["error"][:200]
    extra = f" (compile {result['compile_s']:.1f} s)" if "compile_s" in result else ""
    print(f"  {name:<24} {status}{extra}", flush=True)
    return result


def output_of(fn) -> torch.Tensor | None:
    try:
        with torch.no_grad():
            return fn().float()
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return None


def compile_model(model: torch.nn.Module, blocks, scope: str, backend: str, mode: str | None):
    """Regional (each repeated block, in place) or whole-model torch.compile; returns the callable model."""
    kwargs: dict[str, Any] = {"backend": backend, "dynamic": False}
    if mode:
        kwargs["mode"] = mode
    if scope == "blocks":
        for block in blocks:
            block.compile(**kwargs)
        return model
    return torch.compile(model, **kwargs)


# ------------------------------------------------------------------ per-kernel section

def kernel_bench(device: torch.device, dtype: torch.dtype, tiny: bool) -> list[dict[str, Any]]:
    """Each Triton kernel vs the eager PyTorch a model would run without it, at one LongSANA block's sizes
    (B=1, 10 x 30 x 52 tokens, 20 heads x 112, F = 6720): median ms, GB/s of the bytes it must move, and the
    relative error against the op's fp32 reference."""
    import torch.nn.functional as F_nn

    from core.kernels import attn_fold as af
    from core.kernels import dwconv_glu as dw
    from core.kernels import layernorm_modulate as lnm
    from core.kernels import linear_attention as la
    from core.kernels import rms_norm as rn

    B, T, Hh, Ww, H, d, F = (1, 2, 4, 6, 2, 16, 24) if tiny else (1, 10, 30, 52, 20, 112, 6720)
    N, D = T * Hh * Ww, H * d
    warmup, reps = (1, 2) if tiny else (3, 20)
    gen = torch.Generator(device=device).manual_seed(123)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen, device=device) * scale + shift).to(dtype)

    qkv = rand(B, N, 3 * D)
    q, k, v = (t.view(B, N, H, d) for t in qkv.chunk(3, dim=-1))
    angles = torch.rand(N, d // 2, generator=gen, device=device) * 20
    cos, sin = angles.cos(), angles.sin()
    vk, k_sum = la.linear_attn_state_reference(k, v, cos, sin)
    x = rand(B, N, D, scale=2.0, shift=0.5)
    table = rand(B, 6, D, scale=0.3)
    shift, scale = table[:, 0], table[:, 1]
    wq, wk = rand(D, shift=1.0), rand(D, shift=1.0)
    w_out = rand(D, D, scale=D ** -0.5)
    h = rand(B * T, Hh, Ww, 2 * F)
    conv_w, conv_b = rand(2 * F, 1, 3, 3, scale=0.3), rand(2 * F, scale=0.1)
    el = torch.finfo(dtype).bits // 8

    def eager_ln_mod():
        return F_nn.layer_norm(x, (D,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]

    y, gate = rand(B, N, D), table[:, 2]

    def eager_add_ln_mod():   # the model's residual update + norm + modulation in eager PyTorch
        x_new = x + y * gate[:, None]
        return x_new, F_nn.layer_norm(x_new, (D,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]

    def eager_qk_rms():   # what the model's q/k norms cost in eager PyTorch (both normalized and written)
        out = []
        for part, w in ((qkv[..., :D], wq), (qkv[..., D:2 * D], wk)):
            p32 = part.float()
            out.append((p32 * torch.rsqrt(p32.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dtype) * w)
        return out

    def eager_dwconv():   # what the model does without the kernel: SiLU, cuDNN depthwise (channels-last), GLU
        y = F_nn.conv2d(F_nn.silu(h).permute(0, 3, 1, 2), conv_w, conv_b, padding=1, groups=2 * F)
        a, g = y.permute(0, 2, 3, 1).chunk(2, dim=-1)
        return a * F_nn.silu(g)

    def impl(module_name: str):
        import importlib

        return importlib.import_module(module_name)

    ops = [
        ("linear_attn_state", lambda: impl("core.kernels.linear_attention_triton").linear_attn_state_triton(k, v, cos, sin),
         lambda: la.linear_attn_state_reference(k, v, cos, sin), lambda: la.linear_attn_state_reference(k, v, cos, sin),
         2 * B * N * D * el + 2 * N * (d // 2) * 4),
        ("linear_attn_apply", lambda: impl("core.kernels.linear_attention_triton").linear_attn_apply_triton(q, vk, k_sum, cos, sin, 1e-8),
         lambda: la.linear_attn_apply_reference(q, vk, k_sum, cos, sin, 1e-8),
         lambda: la.linear_attn_apply_reference(q, vk, k_sum, cos, sin, 1e-8),
         2 * B * N * D * el + 2 * N * (d // 2) * 4),
        ("layernorm_modulate", lambda: impl("core.kernels.layernorm_modulate_triton").layernorm_modulate_triton(x, shift, scale, 1e-6),
         eager_ln_mod, lambda: lnm.layernorm_modulate_reference(x, shift, scale, 1e-6), 2 * B * N * D * el),
        ("add_layernorm_modulate", lambda: impl("core.kernels.layernorm_modulate_triton").add_layernorm_modulate_triton(x, y, gate, shift, scale, 1e-6),
         eager_add_ln_mod, lambda: lnm.add_layernorm_modulate_reference(x, y, gate, shift, scale, 1e-6),
         4 * B * N * D * el),
        ("qk_rms_reciprocals", lambda: impl("core.kernels.rms_norm_triton").qk_rms_reciprocals_triton(qkv, D, 1e-5),
         eager_qk_rms, lambda: rn.qk_rms_reciprocals_reference(qkv, D, 1e-5), 2 * B * N * D * el),
        ("dwconv3x3_glu(silu_input)", lambda: impl("core.kernels.dwconv_glu_triton").dwconv3x3_glu_triton(h, conv_w, conv_b, True),
         eager_dwconv, lambda: dw.dwconv3x3_glu_reference(h, conv_w, conv_b, True), 3 * B * N * F * el),
        # the folded self-attention (core/kernels/attn_fold.py): ratio (computing q's 1/rms itself) + the state
        # folded into the out projection's weight; "eager" is the apply kernel it replaces
        ("linear_attn_ratio(q rms)", lambda: impl("core.kernels.attn_fold_triton").linear_attn_ratio_triton(q, k_sum, cos, sin, 1e-8, q_weight=wq, q_norm_eps=1e-5),
         lambda: impl("core.kernels.linear_attention_triton").linear_attn_apply_triton(q, vk, k_sum, cos, sin, 1e-8),
         lambda: af.linear_attn_ratio_reference(q, k_sum, cos, sin, 1e-8, q_weight=wq, q_norm_eps=1e-5),
         2 * B * N * D * el + N * (d // 2) * 8),
        ("fold_out_projection", lambda: impl("core.kernels.attn_fold_triton").fold_out_projection_triton(w_out, vk, table[:, 2]),
         lambda: [(table[i, 2, :, None].float() * (w_out.float().view(D, H, d).transpose(0, 1) @ vk[i])
                   .transpose(0, 1).reshape(D, D)).to(dtype) for i in range(B)],
         lambda: af.fold_out_projection_reference(w_out, vk, table[:, 2]), 2 * B * D * D * el),
        ("rms_reciprocal(k)", lambda: impl("core.kernels.rms_norm_triton").rms_reciprocal_triton(qkv[..., D:2 * D], 1e-5),
         lambda: impl("core.kernels.rms_norm_triton").qk_rms_reciprocals_triton(qkv, D, 1e-5),
         lambda: rn.rms_reciprocal_reference(qkv[..., D:2 * D], 1e-5), B * N * D * el),
    ]
    results = []
    for name, triton_fn, eager_fn, reference_fn, nbytes in ops:
        res: dict[str, Any] = {"op": name, "bytes": nbytes}
        try:
            with torch.no_grad():
                ref = reference_fn()
                got = triton_fn()
                ref_t = ref if isinstance(ref, torch.Tensor) else ref[0]
                got_t = got if isinstance(got, torch.Tensor) else got[0]
                res["rel_err_vs_fp32_reference"] = rel_err(got_t.float(), ref_t.float())
                res["triton_ms"] = time_fn(triton_fn, device, warmup, reps)["ms"]
                res["eager_ms"] = time_fn(eager_fn, device, warmup, reps)["ms"]
            res["triton_GBps"] = nbytes / (res["triton_ms"] * 1e-3) / 1e9
            res["speedup_vs_eager"] = res["eager_ms"] / res["triton_ms"]
        except Exception as exc:  # noqa: BLE001
            res["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        results.append(res)
        shown = (f"triton {res['triton_ms']:.3f} ms ({res['triton_GBps']:.0f} GB/s), eager {res['eager_ms']:.3f} ms, "
                 f"err {res['rel_err_vs_fp32_reference']:.2e}") if "error" not in res else res["error"][:200]
        print(f"  {name:<28} {shown}", flush=True)
    return results



# ------------------------------------------------------------------ launch-setting sweep

def kernel_sweep(device: torch.device, dtype: torch.dtype, out_dir: Path, tiny: bool = False,
                 only: str | None = None) -> list[dict[str, Any]]:
    """Time the linear-attention and dwconv kernels under several launch settings at one LongSANA block's sizes,
    with each setting's error against the fp32 reference; plus the neighbours they compete with (cuDNN depthwise,
    a SiLU pass, SDPA cross attention with and without the additive mask)."""
    import torch.nn.functional as F_nn

    from core.kernels import dwconv_glu as dw
    from core.kernels import dwconv_glu_triton as dwt
    from core.kernels import linear_attention as la
    from core.kernels import linear_attention_triton as lat

    B, T, Hh, Ww, H, d, F = (1, 2, 4, 6, 2, 16, 24) if tiny else (1, 10, 30, 52, 20, 112, 6720)
    N, D = T * Hh * Ww, H * d
    warmup, reps = (0, 1) if tiny else (3, 20)
    gen = torch.Generator(device=device).manual_seed(7)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, device=device) * scale).to(dtype)

    qkv = rand(B, N, 3 * D)
    q, k, v = (t.view(B, N, H, d) for t in qkv.chunk(3, dim=-1))
    angles = torch.rand(N, d // 2, generator=gen, device=device) * 20
    cos, sin = angles.cos(), angles.sin()
    ref_vk, ref_ks = la.linear_attn_state_reference(k, v, cos, sin)
    ref_out = la.linear_attn_apply_reference(q, ref_vk, ref_ks, cos, sin, 1e-8)
    h = rand(B * T, Hh, Ww, 2 * F)
    conv_w, conv_b = rand(2 * F, 1, 3, 3, scale=0.3), rand(2 * F, scale=0.1)
    ref_dw = {silu: dw.dwconv3x3_glu_reference(h, conv_w, conv_b, silu) for silu in (True, False)}
    rows: list[dict[str, Any]] = []

    def record(op: str, cfg: dict, fn, check=None):
        if only is not None and only not in op:
            return
        row: dict[str, Any] = {"op": op, "cfg": dict(cfg)}
        try:
            with torch.no_grad():
                got = fn()
                if check is not None:
                    row["rel_err"] = check(got)
                row["ms"] = time_fn(fn, device, warmup, reps)["ms"]
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
        shown = f"{row['ms']:.3f} ms err {row.get('rel_err', float('nan')):.2e}" if "ms" in row else row["error"]
        print(f"  {op:<22} {cfg} {shown}", flush=True)

    def sweep(op: str, module, attr: str, settings: list[dict], fn, check) -> None:
        """Time fn under the module's default launch settings and each override, then restore the default."""
        default = dict(getattr(module, attr))
        for cfg in [{}] + settings:
            setattr(module, attr, {**default, **cfg})
            record(op, getattr(module, attr), fn, check)
        setattr(module, attr, default)

    from core.kernels import attn_fold as af
    from core.kernels import attn_fold_triton as aft

    wq = rand(D, scale=0.2) + 1
    ref_ratio = af.linear_attn_ratio_reference(q, ref_ks, cos, sin, 1e-8, q_weight=wq, q_norm_eps=1e-5)
    sweep("linear_attn_ratio", aft, "RATIO_CFG",
          [{"block_n": bn, "num_warps": nw} for bn, nw in [(16, 4), (64, 4), (64, 8), (32, 8), (128, 8), (16, 2)]],
          lambda: aft.linear_attn_ratio_triton(q, ref_ks, cos, sin, 1e-8, q_weight=wq, q_norm_eps=1e-5),
          lambda got: rel_err(got, ref_ratio))
    q_rstd = torch.rsqrt(q.float().pow(2).mean(dim=(-1, -2)) + 1e-5)
    record("linear_attn_ratio given rstd", aft.RATIO_CFG,
           lambda: aft.linear_attn_ratio_triton(q, ref_ks, cos, sin, 1e-8, q_weight=wq, q_rstd=q_rstd),
           lambda got: rel_err(got, ref_ratio))

    # as the model calls it: k's RMSNorm applied on load (weight, 1/rms)
    wk = rand(D, scale=0.2) + 1
    k_rstd = torch.rsqrt(k.float().pow(2).mean(dim=(-1, -2)) + 1e-5)
    ref_vk_n, _ = la.linear_attn_state_reference(k, v, cos, sin, k_weight=wk, k_rstd=k_rstd)
    sweep("linear_attn_state", lat, "STATE_CFG",
          [{"block_n": bn, "num_warps": nw, "waves": wv, "num_stages": ns}
           for bn, nw, wv, ns in [(32, 4, 8, 3), (32, 4, 4, 4), (16, 4, 4, 3), (64, 4, 4, 3), (32, 8, 4, 3)]],
          lambda: lat.linear_attn_state_triton(k, v, cos, sin, wk, k_rstd), lambda got: rel_err(got[0], ref_vk_n))
    sweep("linear_attn_apply", lat, "APPLY_CFG",
          [{"block_n": bn, "num_warps": nw, "waves": wv, "num_stages": ns}
           for bn, nw, wv, ns in [(128, 8, 8, 2), (64, 4, 8, 2), (64, 4, 8, 3), (64, 8, 8, 2), (32, 4, 8, 3),
                                  (128, 8, 8, 1)]],
          lambda: lat.linear_attn_apply_triton(q, ref_vk, ref_ks, cos, sin, 1e-8), lambda got: rel_err(got, ref_out))
    for silu in (True, False):
        # (block_g, block_c, warps); registers from the offline SASS (sm_90, triton 3.6) in the comment
        settings = [{"block_g": 8, "block_c": 32, "num_warps": 4},      # 128 registers
                    {"block_g": 16, "block_c": 32, "num_warps": 4},     # 249
                    {"half_gate": False}]
        sweep(f"dwconv_glu silu={silu}", dwt, "CFG", settings if silu else settings[:1],
              lambda silu=silu: dwt.dwconv3x3_glu_triton(h, conv_w, conv_b, silu),
              lambda got, silu=silu: rel_err(got, ref_dw[silu]))
    h_half = h * 0.5   # as the model's inverted GEMM writes it (alpha = 1/2)
    record("dwconv_glu silu=True halved input", dwt.CFG,
           lambda: dwt.dwconv3x3_glu_triton(h_half, conv_w, conv_b, True, halved_input=True),
           lambda got: rel_err(got, ref_dw[True]))

    from core.kernels import layernorm_modulate as lnm
    from core.kernels import layernorm_modulate_triton as lnt

    xl, yl = rand(B, N, D, scale=3.0), rand(B, N, D)
    mod = rand(B, 6, D, scale=0.3)
    ref_ln = lnm.layernorm_modulate_reference(xl, mod[:, 0], mod[:, 1], 1e-6)
    sweep("layernorm kernels", lnt, "CFG",
          [{"rows": r, "num_warps": w} for r, w in [(1, 8), (4, 8), (2, 4), (1, 4), (4, 16)]],
          lambda: (lnt.add_layernorm_modulate_triton(xl, yl, None, mod[:, 0], mod[:, 1], 1e-6),
                   lnt.layernorm_modulate_triton(xl, mod[:, 0], mod[:, 1], 1e-6))[1],
          lambda got: rel_err(got, ref_ln))

    def cudnn_dw(silu_input: bool):
        x = F_nn.silu(h) if silu_input else h
        y = F_nn.conv2d(x.permute(0, 3, 1, 2), conv_w, conv_b, padding=1, groups=2 * F)
        a, g = y.permute(0, 2, 3, 1).chunk(2, dim=-1)
        return a * F_nn.silu(g)

    record("cudnn dw+silu+glu", {}, lambda: cudnn_dw(True), lambda got: rel_err(got, ref_dw[True]))
    record("silu pass (2F wide)", {}, lambda: F_nn.silu(h))
    record("cudnn dw only", {}, lambda: F_nn.conv2d(h.permute(0, 3, 1, 2), conv_w, conv_b, padding=1, groups=2 * F))
    qh = rand(B, H, N, d)
    kh, vh = rand(B, H, 300, d), rand(B, H, 300, d)
    bias = torch.zeros(B, 1, 1, 300, device=device, dtype=dtype)
    record("sdpa cross, bias", {}, lambda: F_nn.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias))
    record("sdpa cross, no mask", {}, lambda: F_nn.scaled_dot_product_attention(qh, kh, vh))
    qt = qh.transpose(1, 2).contiguous().transpose(1, 2)   # the model's (B, N, H, d) -> (B, H, N, d) view
    record("sdpa cross, bias, view", {}, lambda: F_nn.scaled_dot_product_attention(qt, kh, vh, attn_mask=bias))
    record("sdpa cross, no mask, view", {}, lambda: F_nn.scaled_dot_product_attention(qt, kh, vh))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        def run(backend=backend):
            with sdpa_kernel(backend):
                return F_nn.scaled_dot_product_attention(qt, kh, vh)
        record(f"sdpa cross, view, {backend.name.lower()}", {}, run,
               lambda got: rel_err(got, F_nn.scaled_dot_product_attention(qt.float(), kh.float(), vh.float())))
    write_json(out_dir / "sweep.json", rows)
    return rows


def apply_fastest(rows: list[dict[str, Any]]) -> dict[str, dict]:
    """Set each kernel's launch settings to its fastest swept setting whose error is at most twice the default's
    (the first row of each op); returns what was chosen."""
    from core.kernels import dwconv_glu_triton as dwt
    from core.kernels import layernorm_modulate_triton as lnt

    # the linear-attention kernels keep their defaults: their sweep winners ran slower inside the model (state:
    # 4 stages, 0.198 vs 0.149 ms per layer; apply: 64 tokens x 4 warps, 0.217 vs 0.153 ms; runs 18 and 20 of
    # docs/perf-notes.md), where they are the variants that apply the q / k norms on load
    targets = {"dwconv_glu silu=True": (dwt, "CFG"), "layernorm kernels": (lnt, "CFG")}
    chosen = {}
    for op, (module, attr) in targets.items():
        mine = [r for r in rows if r["op"] == op and "ms" in r]
        if not mine:
            continue
        limit = 2 * mine[0].get("rel_err", 0.0) + 1e-6
        best = min((r for r in mine if r.get("rel_err", 0.0) <= limit), key=lambda r: r["ms"])
        setattr(module, attr, dict(best["cfg"]))
        chosen[op] = {"cfg": best["cfg"], "ms": best["ms"], "default_ms": mine[0]["ms"]}
        print(f"  tuned {op}: {best['cfg']} {best['ms']:.3f} ms (default {mine[0]['ms']:.3f} ms)", flush=True)
    return chosen

# ------------------------------------------------------------------ main

def parse_setting(item: str) -> tuple[dict, dict]:
    """`module.NAME={json}` -> (the dict `NAME` of an imported kernel module (launch settings), the update)."""
    import importlib
    import json

    target, _, value = item.partition("=")
    module_name, _, attr = target.rpartition(".")
    table = getattr(importlib.import_module(module_name), attr)
    update = json.loads(value)
    unknown = sorted(set(update) - set(table))
    if unknown:
        raise SystemExit(f"--set {target}: unknown keys {unknown} (known: {sorted(table)})")
    return table, update


def apply_setting(item: str) -> None:
    """`module.NAME={json}`: update that launch-settings dict in place."""
    table, update = parse_setting(item)
    table.update(update)
    print(f"setting {item.partition('=')[0]} = {table}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu" and "triton" not in sys.modules:
        # Triton kernels can only run on CPU tensors through the interpreter, which must be chosen before triton
        # is first imported
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available; use --device cpu (with --tiny) for a dry run", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    backend = args.compile_backend or ("eager" if args.tiny else "inductor")
    torch.backends.cuda.matmul.allow_tf32 = True                 # as the anchor script
    cases_def = TINY_CASES if args.tiny else CASES
    case_names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in case_names if c not in cases_def]
    if unknown:
        print(f"unknown cases {unknown}; choose from {list(cases_def)}", file=sys.stderr)
        return 2
    out_dir = output_dir(args.out)
    # diffusers' numerics (eps 1e-15 / 1e-5) so the output comparison measures our implementation, not the knobs
    cfg = (tiny_config() if args.tiny else PRESETS["480p"]).with_numerics("diffusers")

    with_diffusers = not args.no_diffusers
    if with_diffusers:
        try:
            import diffusers  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            print(f"diffusers unavailable ({exc}); timing ours only", flush=True)
            with_diffusers = False

    env = environment(device)
    report: dict[str, Any] = {"environment": env, "args": vars(args), "config": cfg.to_diffusers_dict(),
                              "anchor_h100_ms": ANCHOR_H100_MS, "targets": TARGETS, "cases": {}}
    print(f"{env.get('gpu') or device}  torch {env['torch']}  triton {env['triton']}  diffusers {env['diffusers']}",
          flush=True)
    t_start = time.perf_counter()
    if args.sweep or args.tune:
        rows = kernel_sweep(device, dtype, out_dir, args.tiny, args.sweep_only)
        if args.sweep:
            return 0
        report["tuned"] = apply_fastest(rows)
        t_start = time.perf_counter()
    for item in args.set:   # after --tune, so that an explicit setting wins
        apply_setting(item)
    if not args.no_kernels:
        print("[kernels] one LongSANA block's sizes", flush=True)
        report["kernels"] = kernel_bench(device, dtype, args.tiny)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ours, theirs = build_models(cfg, device, dtype, args.seed, with_diffusers)
    synchronize(device)
    report["build_s"] = time.perf_counter() - t_start
    report["params_b"] = sum(p.numel() for p in ours.parameters()) / 1e9
    print(f"models built in {report['build_s']:.1f} s ({report['params_b']:.3f} B parameters each)", flush=True)

    profiles: list[str] = []
    inputs: dict[str, dict] = {}
    eager_out: dict[str, torch.Tensor | None] = {}
    timed_out: dict[str, torch.Tensor | None] = {}

    def save() -> None:
        write_json(out_dir / "dit.json", report)
        if profiles:
            write_text(out_dir / "dit_profile.txt", "\n\n".join(profiles) + "\n")

    # ---- eager phase (before anything is compiled in place)
    for name in case_names:
        case = cases_def[name]
        warmup, reps = DEFAULT_REPS[name]
        warmup = args.warmup if args.warmup is not None else warmup
        reps = args.reps if args.reps is not None else reps
        print(f"[{name}] {case['label']}", flush=True)
        entry: dict[str, Any] = {"label": case["label"], "batch": case["batch"],
                                 "latent": [case["frames"], case["height"], case["width"]],
                                 "tokens_per_sample": case["frames"] * case["height"] * case["width"]
                                 // (cfg.patch_size[1] * cfg.patch_size[2] * cfg.patch_size[0]),
                                 "warmup": warmup, "reps": reps, "variants": {}}
        report["cases"][name] = entry
        try:
            inp = inputs[name] = make_inputs(case, cfg, device, dtype, args.seed, ours)
        except Exception as exc:  # noqa: BLE001
            entry["error"] = f"inputs: {type(exc).__name__}: {exc}"
            traceback.print_exc()
            continue
        entry["variants"]["ours_eager"] = measure("ours_eager", ours_call(ours, inp), device, warmup, reps)
        if device.type == "cuda" and not args.no_graphed:
            # what the engine runs for its denoising steps: the eager forward replayed from a CUDA graph with its
            # inputs in fixed buffers (core/model/graphed.py)
            engine_forward = GraphedForward(ours)
            result = measure("ours_graphed", ours_call(engine_forward, inp), device, warmup, reps)
            result["rel_err_vs_ours_eager"] = rel_err(output_of(ours_call(engine_forward, inp)),
                                                      output_of(ours_call(ours, inp)))
            result["captures"] = engine_forward.captures
            entry["variants"]["ours_graphed"] = result
            del engine_forward
        if args.cuda_graph and device.type == "cuda":
            try:
                replay = graphed(ours_call(ours, inp), device)
                entry["variants"]["ours_eager_cuda_graph"] = measure("ours_eager_cuda_graph", replay, device, warmup,
                                                                     reps)
                entry["rel_err_cuda_graph_vs_eager"] = rel_err(replay(), output_of(ours_call(ours, inp)))
                print(f"  cuda graph vs eager rel err: {entry['rel_err_cuda_graph_vs_eager']:.3e}", flush=True)
                del replay
            except Exception as exc:  # noqa: BLE001
                entry["variants"]["ours_eager_cuda_graph"] = {"error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()
        if args.ab_triton:
            kernel_switch._DISABLED = True
            try:
                entry["variants"]["ours_eager_no_triton"] = measure("ours_eager_no_triton", ours_call(ours, inp),
                                                                    device, warmup, reps)
            finally:
                kernel_switch._DISABLED = False
        # the function diffusers computes: ours without stream state
        eager_out[name] = output_of(ours_call(ours, inp, streaming=False))
        # the timed call's output, for checking the compiled model on the same (already compiled) call
        timed_out[name] = eager_out[name] if inp["state"] is None else output_of(ours_call(ours, inp))
        if theirs is not None:
            entry["variants"]["diffusers_eager"] = measure("diffusers_eager", diffusers_call(theirs, inp), device,
                                                           warmup, reps)
            ref = output_of(diffusers_call(theirs, inp))
            if ref is not None and eager_out[name] is not None:
                entry["rel_err_ours_vs_diffusers"] = rel_err(eager_out[name], ref)
                print(f"  output rel err ours vs diffusers: {entry['rel_err_ours_vs_diffusers']:.3e}", flush=True)
            del ref
            try:
                with torch.no_grad():
                    entry["tflop"] = count_flops(diffusers_call(theirs, inp)) / 1e12
            except Exception as exc:  # noqa: BLE001
                entry["tflop_error"] = f"{type(exc).__name__}: {exc}"
        if args.profile:
            for label, fn in (("ours eager", ours_call(ours, inp)),
                              ("diffusers eager", diffusers_call(theirs, inp) if theirs is not None else None)):
                if fn is None:
                    continue
                try:
                    with torch.no_grad():
                        table = profile_table(fn, device)
                    profiles.append(f"=== {name}: {label} ===\n{table}")
                    if label == "ours eager":
                        print(table, flush=True)
                except Exception as exc:  # noqa: BLE001
                    profiles.append(f"=== {name}: {label} === profiler failed: {exc}")
        gc.collect()
        save()

    # ---- compiled phase
    compiled_variants = []
    if not args.no_compile:
        compiled_variants.append(("ours_compiled", ours, list(ours.blocks)))
    if args.compile_diffusers and theirs is not None:
        compiled_variants.append(("diffusers_compiled", theirs, list(theirs.transformer_blocks)))
    for variant, model, blocks in compiled_variants:
        left = args.time_budget - (time.perf_counter() - t_start)
        if left < 100:
            print(f"[{variant}] skipped: {left:.0f} s of the --time-budget left", flush=True)
            for name in inputs:
                report["cases"][name]["variants"][variant] = {"variant": variant,
                                                              "error": "skipped: time budget"}
            continue
        try:
            compiled = compile_model(model, blocks, args.compile_scope, backend, args.compile_mode)
        except Exception as exc:  # noqa: BLE001
            for name in inputs:
                report["cases"][name]["variants"][variant] = {"variant": variant, "error": f"compile: {exc}"}
            continue
        for name, inp in inputs.items():
            warmup = report["cases"][name]["warmup"]
            reps = report["cases"][name]["reps"]
            print(f"[{name}] {variant} ({args.compile_scope}, {backend})", flush=True)
            fn = ours_call(compiled, inp) if variant.startswith("ours") else diffusers_call(compiled, inp)
            result = measure(variant, fn, device, warmup, reps, first_call=True)
            if variant == "ours_compiled" and "ms" in result and timed_out.get(name) is not None:
                out = output_of(fn)                        # the timed call: no extra recompilation
                if out is not None:
                    result["rel_err_vs_ours_eager"] = rel_err(out, timed_out[name])
            report["cases"][name]["variants"][variant] = result
            if args.profile and variant == "ours_compiled":
                try:
                    with torch.no_grad():
                        profiles.append(f"=== {name}: ours compiled ===\n{profile_table(fn, device)}")
                except Exception as exc:  # noqa: BLE001
                    profiles.append(f"=== {name}: ours compiled === profiler failed: {exc}")
            save()

    report["total_s"] = time.perf_counter() - t_start
    summarize(report)
    save()
    write_text(out_dir / "dit.md", report["markdown"] + "\n")
    print(report["markdown"], flush=True)
    return 0


def summarize(report: dict[str, Any]) -> None:
    """Derived numbers (TFLOP/s, speed-ups, target verdicts) and the markdown table."""
    rows = []
    verdicts = []
    for name, entry in report["cases"].items():
        variants = entry["variants"]
        base = variants.get("diffusers_eager", {}).get("ms")
        tflop = entry.get("tflop")
        for variant, res in variants.items():
            ms = res.get("ms")
            if ms is not None:
                if tflop:
                    res["tflops"] = tflop / (ms / 1e3)
                if base:
                    res["speedup_vs_diffusers_eager"] = base / ms
            err = entry.get("rel_err_ours_vs_diffusers") if variant == "ours_eager" else res.get("rel_err_vs_ours_eager")
            rows.append([name, variant, ms, res.get("min_ms"), res.get("tflops"), res.get("speedup_vs_diffusers_eager"),
                         res.get("peak_gib"), err, res.get("compile_s"), res.get("error", "")[:60] or None])
        ours_ms = [variants[v]["ms"] for v in ("ours_eager", "ours_graphed", "ours_compiled")
                   if "ms" in variants.get(v, {})]
        if ours_ms:
            best = min(ours_ms)
            entry["ours_best_ms"] = best
            if name == "block":
                verdicts.append(f"block: ours best {best:.1f} ms, target <= {TARGETS['block_ms']:.0f} ms: "
                                f"{'PASS' if best <= TARGETS['block_ms'] else 'FAIL'}")
            if name == "full" and base:
                speedup = base / best
                entry["ours_best_speedup"] = speedup
                verdicts.append(f"full: ours best {best:.1f} ms = {speedup:.2f}x diffusers eager, target >= "
                                f"{TARGETS['full_speedup']:.1f}x: {'PASS' if speedup >= TARGETS['full_speedup'] else 'FAIL'}")
    env = report["environment"]
    header = ["case", "variant", "median ms", "min ms", "TFLOP/s", "x diffusers eager", "peak GiB",
              "rel err (ours: vs diffusers; compiled: vs eager)", "compile s", "error"]
    lines = [f"# DiT benchmark: {env.get('gpu') or env['device']}, torch {env['torch']}, triton {env['triton']}, "
             f"diffusers {env['diffusers']}, {env['date_utc']}", ""]
    for name, entry in report["cases"].items():
        tflop = entry.get("tflop")
        lines.append(f"- {name}: {entry['label']}" + (f"; {tflop:.1f} TFLOP per forward (diffusers count)"
                                                       if tflop else ""))
    lines += ["", markdown_table(header, rows), ""] + [f"- {v}" for v in verdicts]
    for op, pick in (report.get("tuned") or {}).items():
        lines.append(f"- launch settings (--tune) {op}: {pick['cfg']} {pick['ms']:.3f} ms (default "
                     f"{pick['default_ms']:.3f} ms)")
    if report.get("kernels"):
        krows = [[k["op"], k.get("triton_ms"), k.get("triton_GBps"), k.get("eager_ms"), k.get("speedup_vs_eager"),
                  k.get("rel_err_vs_fp32_reference"), k.get("error", "")[:60] or None] for k in report["kernels"]]
        lines += ["", "Kernels at one block's sizes (GB/s: bytes the op must move / time):", "",
                  markdown_table(["op", "triton ms", "GB/s", "eager ms", "x eager", "rel err vs fp32 ref", "error"],
                                 krows)]
    report["verdicts"] = verdicts
    report["markdown"] = "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
