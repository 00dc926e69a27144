"""Weight packing: nn.Linear weights -> NVFP4 or FP8 tensors with static input scales from calibration.

Deterministic round-to-nearest; the same weights, amax and format always give the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from quant.formats import fp8_quantize, fp8_scale, nvfp4_global_scale, nvfp4_quantize


def pack_weight(weight: torch.Tensor, fmt: str, input_amax: float | None) -> dict[str, torch.Tensor]:
    """weight (N, K) -> the QuantLinear tensors (see quant.modules), on weight.device."""
    if fmt == "nvfp4":
        q = nvfp4_quantize(weight)
        tensors = {"weight": q.data, "weight_scale": q.block_scale, "weight_scale_2": q.global_scale.reshape(())}
        if input_amax is not None:
            tensors["input_scale"] = nvfp4_global_scale(float(input_amax)).to(weight.device).reshape(())
        return tensors
    if fmt == "fp8":
        data, scale = fp8_quantize(weight)
        tensors = {"weight": data, "weight_scale": scale.reshape(())}
        if input_amax is not None:
            tensors["input_scale"] = fp8_scale(float(input_amax)).to(weight.device).reshape(())
        return tensors
    raise ValueError(f"unknown quantized format {fmt!r} (expected 'nvfp4' or 'fp8')")


def check_packable(model: nn.Module, names: list[str], fmt: str) -> list[str]:
    """Names whose shapes the format cannot hold (K % 16 for NVFP4 / _scaled_mm; N % 16 for _scaled_mm)."""
    bad = []
    for name in names:
        linear = model.get_submodule(name)
        n, k = linear.weight.shape
        if k % 16 or n % 16 or (fmt == "nvfp4" and k % 32):
            bad.append(name)
    return bad


def pack_model(model: nn.Module, names: list[str], fmt: str, input_amax: dict[str, float] | None,
               on_layer: Callable[[int, int], None] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Pack the named Linear layers; returns {layer name: tensors} on CPU (ready for the cache file)."""
    packed: dict[str, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        for i, name in enumerate(names):
            linear = model.get_submodule(name)
            amax = None if input_amax is None else input_amax[name]
            packed[name] = {k: v.cpu() for k, v in pack_weight(linear.weight.detach(), fmt, amax).items()}
            if on_layer is not None:
                on_layer(i + 1, len(names))
    return packed


def flatten_packed(packed: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{layer}.{key}": t for layer, tensors in packed.items() for key, t in tensors.items()}


def unflatten_packed(flat: dict[str, torch.Tensor], names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in names}
    for key, tensor in flat.items():
        layer, _, field = key.rpartition(".")
        if layer not in out:
            raise KeyError(f"cache holds tensor {key!r} for a layer the recipe does not select")
        out[layer][field] = tensor
    return out
