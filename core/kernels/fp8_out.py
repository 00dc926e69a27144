"""FP8 E4M3 outputs of the fused kernels, for a following Linear that consumes pre-quantized FP8 activations.

A layer advertises that it takes FP8 E4M3 input with a static per-tensor scale through an `fp8_input_scale`
attribute (a 0-d fp32 tensor; quant.modules.QuantLinear has it for calibrated FP8 layers). The kernel that produces
its input can then write E4M3 directly: value / scale, saturated to +-448, rounded to nearest even. Why: the separate
cast pass (read the bf16 output, write FP8) costs more than the FP8 GEMM saves on a 2F-wide tensor; writing one byte
instead of two saves memory traffic too. core does not import quant: this attribute is the whole contract.
"""

from __future__ import annotations

import torch
from torch import nn

E4M3_MAX = 448.0


def cast_e4m3(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale saturated to +-448, as float8_e4m3fn (computed in fp32, or fp64 for fp64 inputs)."""
    acc = x.to(torch.promote_types(x.dtype, torch.float32))
    return (acc / scale.to(acc.dtype)).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def kernel_scale(out_scale: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The scale as the Triton kernels read it: a 1-element fp32 tensor on the kernel's device."""
    return out_scale.to(device=device, dtype=torch.float32).reshape(1)


def fp8_input_scale(layer: nn.Module) -> torch.Tensor | None:
    """The static FP8 input scale a layer asks for, or None (plain layers, dynamic scales, hooked layers: calibration
    hooks must see the real-valued input)."""
    if layer._forward_hooks or layer._forward_pre_hooks:
        return None
    scale = getattr(layer, "fp8_input_scale", None)
    return scale if isinstance(scale, torch.Tensor) else None
