"""Quantization bench: FP8 vs bf16 on one LongSANA block, ModelOpt calibration end to end, NVFP4 / FP8 emulated error
per layer, first-launch time and cache size.

Released 480p config with random weights (bf16, eval, no_grad), one LongSANA block: latent 10x60x104, batch 1
(15,600 tokens), run as the sampler runs it: a non-empty stream state (cache pass of a previous block) and
frame_offset 10. Sections:
  layers     every recipe-selected Linear: relative error of NVFP4 (W4A4, static activation scale) and FP8 (W8A8)
             emulation vs the fp32 GEMM on that layer's real block inputs (1024 sampled tokens).
  modelopt   ModelOpt NVFP4 and FP8 `max` calibration through a short LongSANA forward loop (1 prompt x 1 block x 4
             steps): seconds, and the largest relative difference of its amax vs our hook calibrator.
  launch     first launch (calibrate + pack + write cache + self-test + swap layers) and the cache-hit launch:
             seconds, cache size; then the prepared model (FP8 via torch._scaled_mm on sm_89/90) vs bf16 on the block:
             median ms and output relative error.

H100 (~3-5 min):  python bench/quant.py            (writes quant.json and quant.md to $OUT)
CPU dry run:      python bench/quant.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/quant.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import (  # noqa: E402
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
from core.config import PRESETS, tiny_config  # noqa: E402
from core.model import SanaVideoTransformer  # noqa: E402
from quant import act_quant  # noqa: E402
from quant.calib_loop import make_longsana_forward_loop, passes_per_prompt  # noqa: E402
from quant.calibrate import calibrate_with_hooks, modelopt_version  # noqa: E402
from quant.formats import fp8_dequantize, fp8_quantize, nvfp4_dequantize, nvfp4_global_scale, nvfp4_quantize  # noqa: E402
from quant.prepare import prepare_model  # noqa: E402
from quant.recipe import default_recipe, recipe_from_arg  # noqa: E402


def build_model(cfg, device, dtype, seed=0) -> SanaVideoTransformer:
    with torch.device(device):
        model = SanaVideoTransformer(cfg)
    model.to(dtype)
    randomize_parameters_(model, seed)
    return model.eval()


def block_inputs(model, cfg, latent_shape, text_len, device, dtype):
    """Latents, timestep, text context, a non-empty stream state and the frame offset of one LongSANA block."""
    g = torch.Generator(device="cpu").manual_seed(1)
    caption = torch.randn(1, text_len, cfg.caption_channels, generator=g).to(device, dtype)
    text = model.encode_text(caption, None)
    prev = torch.randn(1, *latent_shape, generator=g).to(device, dtype)
    state = model.empty_state(1).add(model.cache_pass(prev, text, model.empty_state(1), 0))
    latents = torch.randn(1, *latent_shape, generator=g).to(device, dtype)
    timestep = torch.full((1,), 889.0, device=device)
    return latents, timestep, text, state, latent_shape[1], caption


def layer_errors(model, names, run_block, max_rows=1024) -> list[dict[str, Any]]:
    """NVFP4 / FP8 emulated output error of each selected layer on its real inputs from one block forward."""
    captured: dict[str, tuple[torch.Tensor, float]] = {}

    def hook_for(name):
        def hook(_m, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            step = max(1, x.shape[0] // max_rows)
            captured[name] = (x[::step][:max_rows].float().clone(), float(x.abs().amax()))
        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(hook_for(n)) for n in names]
    try:
        run_block()
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name in names:
        x, amax = captured[name]
        w = model.get_submodule(name).weight.detach().float()
        ref = x @ w.t()
        xq4 = nvfp4_dequantize(nvfp4_quantize(x, nvfp4_global_scale(amax)))
        y4 = xq4 @ nvfp4_dequantize(nvfp4_quantize(w)).t()
        xd8, xs8 = fp8_quantize(x, torch.tensor(amax / 448.0))
        wd8, ws8 = fp8_quantize(w)
        y8 = fp8_dequantize(xd8, xs8) @ fp8_dequantize(wd8, ws8).t()
        rows.append({"layer": name, "shape": list(w.shape), "input_amax": amax,
                     "nvfp4_rel_err": rel_err(y4, ref), "fp8_rel_err": rel_err(y8, ref),
                     "nvfp4_weight_rel_err": rel_err(nvfp4_dequantize(nvfp4_quantize(w)), w)})
    return rows


def summarize_layers(rows):
    kinds: dict[str, list[dict]] = {}
    for r in rows:
        kinds.setdefault(r["layer"].split(".", 2)[2], []).append(r)
    return [[k, len(v), sum(r["nvfp4_rel_err"] for r in v) / len(v), max(r["nvfp4_rel_err"] for r in v),
             sum(r["fp8_rel_err"] for r in v) / len(v), max(r["fp8_rel_err"] for r in v)] for k, v in kinds.items()]


def run_variants(cfg, device, dtype, latent_shape, text_len, forward_loop, fmt, warmup, reps, errors, tiny,
                 profiles: list[str] | None = None):
    """Block time of bf16 and the quantized model, eager and with torch.compile per block, for the default recipe
    and for one that quantizes every block (the default keeps the first and last two in bf16)."""
    backend = "eager" if tiny or device.type != "cuda" else "inductor"
    rows: list[dict[str, Any]] = []
    ref = None
    bf16_ms: dict[str, float] = {}
    recipes = [("default recipe", default_recipe()), ("all blocks", recipe_from_arg("all-blocks"))]
    for label, recipe in [("bf16", None)] + recipes:
        model = None
        try:
            with tempfile.TemporaryDirectory() as cache_dir:
                model = build_model(cfg, device, dtype)
                layers = 0
                if recipe is not None:
                    model, rep = prepare_model(model, device, fmt=fmt, recipe=recipe, forward_loop=forward_loop,
                                               cache_dir=cache_dir, expected_passes=passes_per_prompt(1))
                    layers = len(rep.layers)
                with torch.no_grad():
                    latents, timestep, text, state, offset, _ = block_inputs(model, cfg, latent_shape, text_len,
                                                                             device, dtype)
                    run_block = functools.partial(model, latents, timestep, text, state=state, frame_offset=offset)
                    # "eager graph": the eager forward replayed from a CUDA graph (no Python or launch cost: the
                    # eager FP8 forward issues more small ops per layer and can be CPU-bound)
                    for mode in ("eager", "eager graph", "compiled"):
                        name = f"{label} {mode}" if recipe is None else f"{fmt} {label} {mode}"
                        if mode == "eager graph" and device.type != "cuda":
                            continue
                        try:   # one failing mode (a capture, a compile) must not drop the others
                            call = graphed(run_block, device) if mode == "eager graph" else run_block
                            if mode == "compiled":
                                for block in model.blocks:
                                    block.compile(backend=backend, dynamic=False)
                            got = call().float()
                            if ref is None:
                                ref = got
                            ms = time_fn(call, device, warmup, reps)["ms"]
                        except Exception as exc:  # noqa: BLE001 - report and go on
                            rows.append({"name": f"{name}: {type(exc).__name__}: {exc}"[:200]})
                            errors.append(traceback.format_exc())
                            continue
                        if recipe is None:
                            bf16_ms[mode] = ms
                        rows.append({"name": name, "ms": ms, "speedup": bf16_ms.get(mode, ms) / ms,
                                     "speedup_vs_bf16_eager": bf16_ms.get("eager", ms) / ms,
                                     "rel_err": rel_err(got, ref), "layers": layers})
                        print(f"  {name}: {ms:.1f} ms", flush=True)
                        if profiles is not None:
                            profiles.append(f"=== {name} ===\n{profile_table(call, device, row_limit=30)}")
        except Exception as exc:  # noqa: BLE001 - report and go on
            rows.append({"name": f"{label}: {type(exc).__name__}: {exc}"[:200]})
            errors.append(traceback.format_exc())
        model = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny config and latent (logic dry run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--format", default="fp8", choices=["fp8", "nvfp4", "auto"], help="format of the launch section")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--skip-modelopt", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="torch.profiler top ops of each variant (writes quant_profile.txt)")
    ap.add_argument("--no-variants", action="store_true",
                    help="skip the variants section (torch.compile of bf16 and quantized blocks; all-blocks recipe)")
    ap.add_argument("--out", help="output folder (default $OUT)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.tiny:
        cfg, latent_shape, text_len, recipe = tiny_config(num_layers=6), (4, 2, 8, 8), 8, default_recipe()
        reps, warmup = 1, 0
    else:
        cfg, latent_shape, text_len, recipe = PRESETS["480p"], (16, 10, 60, 104), 300, default_recipe()
        reps, warmup = args.reps, 2
    out = output_dir(args.out)
    results: dict[str, Any] = {"env": environment(device), "modelopt": modelopt_version(), "tiny": args.tiny,
                               "latent": list(latent_shape), "recipe": recipe.to_dict(), "errors": []}
    t_all = time.perf_counter()

    with torch.no_grad():
        model = build_model(cfg, device, dtype)
        names = recipe.select(model)
        results["layers_quantized"] = len(names)
        latents, timestep, text, state, offset, caption = block_inputs(model, cfg, latent_shape, text_len, device,
                                                                       dtype)

        def run_block():
            return model(latents, timestep, text, state=state, frame_offset=offset)

        ref = run_block().float()
        results["bf16_block"] = time_fn(run_block, device, warmup, reps)

        t0 = time.perf_counter()
        rows = layer_errors(model, names, run_block)
        results["layers"] = rows
        results["layers_seconds"] = time.perf_counter() - t0

    # calibration forward loop: one prompt, one LongSANA block (4 steps) at the bench latent size
    forward_loop = make_longsana_forward_loop([(caption, None)], latent_shape, num_blocks=1)
    results["calib_passes"] = passes_per_prompt(1)

    calib: dict[str, Any] = {}
    t0 = time.perf_counter()
    hooks_amax = calibrate_with_hooks(model, names, forward_loop)
    synchronize(device)
    calib["hooks_seconds"] = time.perf_counter() - t0
    if args.skip_modelopt or modelopt_version() is None:
        calib["modelopt"] = "skipped" if args.skip_modelopt else "nvidia-modelopt not installed"
    else:
        from quant.calibrate import calibrate_with_modelopt
        for fmt in ("nvfp4", "fp8"):
            try:
                t0 = time.perf_counter()
                amax = calibrate_with_modelopt(model, names, forward_loop, fmt)
                synchronize(device)
                calib[f"modelopt_{fmt}_seconds"] = time.perf_counter() - t0
                calib[f"modelopt_{fmt}_amax_max_rel_diff_vs_hooks"] = max(
                    abs(amax[n] - hooks_amax[n]) / max(hooks_amax[n], 1e-12) for n in names)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other sections
                calib[f"modelopt_{fmt}_error"] = f"{type(exc).__name__}: {exc}"
                results["errors"].append(traceback.format_exc())
            gc.collect()
    results["calibration"] = calib

    launch: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        try:
            events = []
            t0 = time.perf_counter()
            model, report = prepare_model(model, device, fmt=args.format, recipe=recipe, forward_loop=forward_loop,
                                          cache_dir=cache_dir, progress=events.append,
                                          expected_passes=passes_per_prompt(1))
            synchronize(device)
            launch.update(first_launch_seconds=time.perf_counter() - t0, format=report.plan.format,
                          backend=report.plan.backend, reason=report.plan.reason, calibrator=report.calibrator,
                          cache_bytes=report.cache_bytes, cache_gib=report.cache_bytes / 2**30, notes=report.notes,
                          progress_events=len(events))
            with torch.no_grad():
                got = run_block().float()
                launch["block_rel_err_vs_bf16"] = rel_err(got, ref)
                launch["quant_block"] = time_fn(run_block, device, warmup, reps)
                act_quant.set_compile(False)  # A/B: eager activation quantization (no Triton, e.g. some Windows)
                launch["quant_block_eager_act_quant"] = time_fn(run_block, device, warmup, reps)
                act_quant.set_compile(True)
            launch["speedup_vs_bf16"] = results["bf16_block"]["ms"] / launch["quant_block"]["ms"]
            model = got = None  # free the quantized model before building the cache-hit one
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            fresh = build_model(cfg, device, dtype)
            t0 = time.perf_counter()
            _, again = prepare_model(fresh, device, fmt=args.format, recipe=recipe, forward_loop=forward_loop,
                                     cache_dir=cache_dir)
            synchronize(device)
            launch.update(cached_launch_seconds=time.perf_counter() - t0, cache_hit=again.cache_hit)
            fresh = None
        except Exception as exc:  # noqa: BLE001
            launch["error"] = f"{type(exc).__name__}: {exc}"
            results["errors"].append(traceback.format_exc())
    results["launch"] = launch
    if not args.no_variants:
        profiles: list[str] = []
        results["variants"] = run_variants(cfg, device, dtype, latent_shape, text_len, forward_loop, args.format,
                                           warmup, reps, results["errors"], args.tiny,
                                           profiles if args.profile else None)
        if profiles:
            write_text(out / "quant_profile.txt", "\n\n".join(profiles) + "\n")
    results["total_seconds"] = time.perf_counter() - t_all

    write_json(out / "quant.json", results)
    md = [f"# Quantization bench ({'tiny' if args.tiny else '480p'}, {results['env'].get('gpu') or device})", "",
          f"Block latent {'x'.join(map(str, latent_shape))}, {len(names)} quantized layers, "
          f"ModelOpt {results['modelopt']}. Total {results['total_seconds']:.0f} s.", "",
          "## Block forward", "",
          markdown_table(["variant", "median ms", "rel err vs unquantized"], [
              [str(dtype).replace("torch.", ""), results["bf16_block"]["ms"], 0.0],
              [f"{launch.get('format')} {launch.get('backend')}", launch.get("quant_block", {}).get("ms"),
               launch.get("block_rel_err_vs_bf16")],
              [f"{launch.get('format')} {launch.get('backend')}, eager activation quant",
               launch.get("quant_block_eager_act_quant", {}).get("ms"), launch.get("block_rel_err_vs_bf16")]]), "",
          "## First launch", "",
          markdown_table(["first launch s", "cache-hit launch s", "cache GiB", "calibrator", "notes"], [
              [launch.get("first_launch_seconds"), launch.get("cached_launch_seconds"), launch.get("cache_gib"),
               launch.get("calibrator"), "; ".join(launch.get("notes", [])) or launch.get("error", "")]]), "",
          "## Variants (same run; compiled = torch.compile of each transformer block)", "",
          markdown_table(["variant", "median ms", "x bf16 eager", "x bf16 same mode", "rel err vs bf16 eager",
                          "quantized layers"],
                         [[v["name"], v.get("ms"), v.get("speedup_vs_bf16_eager"), v.get("speedup"), v.get("rel_err"),
                           v.get("layers")]
                          for v in results.get("variants", [])]), "",
          "## Calibration", "",
          markdown_table(["what", "value"], [[k, v] for k, v in calib.items()]), "",
          "## Emulated error per layer kind (output rel err vs fp32 GEMM on real block inputs)", "",
          markdown_table(["layer", "count", "nvfp4 mean", "nvfp4 max", "fp8 mean", "fp8 max"], summarize_layers(rows)),
          ""]
    if results["errors"]:
        md += ["## Errors", "", "```", *results["errors"], "```", ""]
    write_text(out / "quant.md", "\n".join(md))
    print("\n".join(md))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
