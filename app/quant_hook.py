"""Glue between quant and the engine (app layer: core never imports quant).

`engine_model_transform(precision)` returns the engine's `model_transform(model, device, context)` hook: it runs
quant's first-launch step (cached calibration + packing) with calibration prompts encoded by the engine's own text
encoder, and reports which precision is really in use."""

from __future__ import annotations

from collections.abc import Callable


def engine_model_transform(precision: str, recipe: str | None = None) -> Callable | None:
    """quant's engine hook for `precision` and a recipe (a built-in name or a JSON file; None: the default); None for
    bf16 / fp32 or when quant's dependencies are missing."""
    if precision in ("bf16", "fp32"):
        return None
    try:
        from quant.prepare import make_model_transform
        from quant.recipe import recipe_from_arg
    except ImportError:  # quant's optional dependencies are missing: stay in bf16
        return None
    return make_model_transform(fmt="auto" if precision == "auto" else precision, recipe=recipe_from_arg(recipe))


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
