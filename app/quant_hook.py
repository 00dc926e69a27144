"""Glue between quant and the engine (app layer: core never imports quant).

`engine_model_transform(precision)` returns the engine's `model_transform(model, device, context)` hook: it runs
quant's first-launch step (cached calibration + packing) with calibration prompts encoded by the engine's own text
encoder, and reports which precision is really in use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CALIB_PROMPTS = 4
CALIB_BLOCKS = 2
CALIB_LATENT_FRAMES = 2


def engine_model_transform(precision: str) -> Callable | None:
    if precision in ("bf16", "fp32"):
        return None
    try:
        from quant.calib_loop import CALIBRATION_PROMPTS, make_longsana_forward_loop
        from quant.prepare import prepare_model
    except ImportError:  # quant's optional dependencies are missing: stay in bf16
        return None
    fmt = "auto" if precision == "auto" else precision

    def transform(model, device, context: dict[str, Any]):
        h, w = context["latent_hw"]
        texts = context["encode_prompts"](list(CALIBRATION_PROMPTS[:CALIB_PROMPTS]))
        loop = make_longsana_forward_loop(texts, (model.cfg.in_channels, CALIB_LATENT_FRAMES, h, w),
                                          num_blocks=CALIB_BLOCKS)
        model, report = prepare_model(model, device, fmt=fmt, forward_loop=loop, progress=context.get("progress"),
                                      expected_passes=CALIB_PROMPTS * CALIB_BLOCKS * 5)
        plan = report.plan
        return model, (plan.format if getattr(plan, "active", False) else None)

    return transform


def encode_prompts_for_model(source: str, prompts: list[str], device: str) -> list:
    """For `sana-video quantize`: the model's own text encoder turns calibration prompts into captions."""
    from core.registry import resolve_model
    from core.text_encoder import TextEncoder

    resolved = resolve_model(source)
    encoder = TextEncoder.from_pretrained(resolved.text_encoder, resolved.tokenizer, device=device)
    enc = encoder.encode(list(prompts))
    return [(enc.embeds[i:i + 1], enc.mask[i:i + 1]) for i in range(len(prompts))]


def load_model_for_quantize(source: str, device: str):
    import torch

    from core.checkpoints import load_transformer
    from core.registry import resolve_model

    resolved = resolve_model(source)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    preset = None if resolved.preset == "tiny" else resolved.preset
    return load_transformer(resolved.transformer, device=device, dtype=dtype, preset=preset)
