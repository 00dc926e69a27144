"""`sana-video quantize`: build (or verify) the quantized-weight cache for a model ahead of the first generation.

app/cli.py wires it: `quant.cli.add_subcommand(subparsers, encode_prompts=...)`, then dispatches to `run(args)`.
`encode_prompts(model_source, prompts, device) -> [(caption (1, L, C), mask (1, L))]` comes from the app because the
text encoder is not quant's business; without it the cache is built with dynamic activation scales.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch

from core.errors import QuantizationError, StudioError
from core.events import StageEvent
from quant.calibrate import CALIBRATORS
from quant.dispatch import FORMAT_CHOICES

LoadModel = Callable[[str, str], object]
EncodePrompts = Callable[[str, list[str], str], list]


def _default_load_model(source: str, device: str):
    from core.checkpoints import load_transformer
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return load_transformer(source, device=device, dtype=dtype)


def add_subcommand(subparsers, *, load_model: LoadModel | None = None,
                   encode_prompts: EncodePrompts | None = None) -> argparse.ArgumentParser:
    p = subparsers.add_parser("quantize", help="calibrate and pack the transformer to NVFP4 / FP8 (first-launch step)",
                              description=__doc__.splitlines()[0])
    p.add_argument("model", help="model folder, .safetensors / .pth file, or installed model id")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto",
                   help="auto: NVFP4 on sm_100/120, FP8 on sm_89/90, none elsewhere")
    p.add_argument("--device", default="auto", help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--recipe", help="which layers to quantize: a built-in name (default, all-blocks) or a JSON "
                                    "recipe file (default: default)")
    p.add_argument("--calibrator", choices=CALIBRATORS, default="auto", help="modelopt if installed, else hooks")
    p.add_argument("--prompts", type=int, default=4, help="how many built-in calibration prompts to run")
    p.add_argument("--blocks", type=int, default=2, help="LongSANA blocks per calibration prompt")
    p.add_argument("--calib-latent", default="2x30x52", help="calibration latent size TxHxW per block")
    p.add_argument("--cache-dir", help="cache folder (default: the user cache directory)")
    p.add_argument("--rebuild", action="store_true", help="ignore an existing cache and rebuild it")
    p.add_argument("--low-vram", action="store_true", help="on GPUs without FP8/FP4: store weights as NVFP4")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run, quant_load_model=load_model or _default_load_model,
                   quant_encode_prompts=encode_prompts)
    return p


def _parse_latent(text: str) -> tuple[int, int, int]:
    try:
        t, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise QuantizationError(f"--calib-latent must look like 2x30x52, got {text!r}") from exc
    return t, h, w


def run(args: argparse.Namespace) -> int:
    from quant.calib_loop import CALIBRATION_PROMPTS, make_longsana_forward_loop, passes_per_prompt
    from quant.prepare import prepare_model
    from quant.recipe import recipe_from_arg

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")

    def progress(event: StageEvent) -> None:
        pct = "" if event.percent is None else f"{event.percent:5.1f}% "
        print(f"[quantize] {pct}{event.detail}", file=sys.stderr, flush=True)

    try:
        recipe = recipe_from_arg(args.recipe)
        model = args.quant_load_model(args.model, device)
        forward_loop, passes = None, None
        encode = getattr(args, "quant_encode_prompts", None)
        if encode is not None and args.prompts > 0:
            prompts = list(CALIBRATION_PROMPTS[: args.prompts])
            texts = encode(args.model, prompts, device)
            t, h, w = _parse_latent(args.calib_latent)
            shape = (model.cfg.in_channels, t, h, w)
            forward_loop = make_longsana_forward_loop(texts, shape, num_blocks=args.blocks)
            passes = len(texts) * passes_per_prompt(args.blocks)
        _, report = prepare_model(model, device, fmt=args.format, recipe=recipe, forward_loop=forward_loop,
                                  cache_dir=args.cache_dir, calibrator=args.calibrator, low_vram=args.low_vram,
                                  rebuild=args.rebuild, progress=progress, expected_passes=passes)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {
        "device": report.plan.device, "format": report.plan.format, "backend": report.plan.backend,
        "reason": report.plan.reason, "layers": len(report.layers), "cache": str(report.cache_path or ""),
        "cache_hit": report.cache_hit, "cache_bytes": report.cache_bytes, "calibrator": report.calibrator,
        "seconds": round(report.seconds, 2), "notes": report.notes,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            print(f"{k:12s} {v}")
    return 0
