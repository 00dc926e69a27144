"""Low-precision linear layers as functions: the emulated reference and the torch._scaled_mm fast paths.

All functions take a 2-D activation x (M, K) and return (M, N) in x.dtype (plus bias, kept in high precision).
Weights are (N, K) row-major, i.e. nn.Linear's layout; `w.t()` is then the column-major (K, N) operand cuBLASLt wants
(TN layout, the only one sm_90 and, before cuBLAS 13.6, sm_120 accept for scaled GEMMs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from quant.act_quant import fp8_cast, nvfp4_quantize_activation
from quant.formats import (
    NVFP4Tensor,
    fp8_dequantize,
    fp8_quantize,
    fp8_scale,
    nvfp4_dequantize,
    nvfp4_global_scale,
    nvfp4_quantize,
)
from quant.swizzle import to_blocked


def activation_global_scale(x: torch.Tensor, input_scale: torch.Tensor | None) -> torch.Tensor:
    """NVFP4 activation tensor scale: the calibrated static one, or amax/(6*448) of this call (dynamic)."""
    if input_scale is not None:
        return input_scale
    return nvfp4_global_scale(x.detach().abs().amax().float())


def _finish(y: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.to(dtype)


# ---------------------------------------------------------------- emulated references (any device)

def emulated_nvfp4_linear(x: torch.Tensor, weight: NVFP4Tensor, input_scale: torch.Tensor | None,
                          bias: torch.Tensor | None) -> torch.Tensor:
    """W4A4 reference: quantize-dequantize x (per-16 E4M3 block scales, tensor scale), dequantize W, fp32 GEMM."""
    xq = nvfp4_quantize(x, activation_global_scale(x, input_scale))
    y = nvfp4_dequantize(xq) @ nvfp4_dequantize(weight).t()                      # (M, N) fp32
    return _finish(y, bias, x.dtype)


def emulated_fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                        input_scale: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """W8A8 per-tensor reference: quantize-dequantize x, dequantize W, fp32 GEMM."""
    xq, xs = fp8_quantize(x, input_scale)
    y = fp8_dequantize(xq, xs) @ fp8_dequantize(weight, weight_scale).t()        # (M, N) fp32
    return _finish(y, bias, x.dtype)


def dequant_nvfp4_linear(x: torch.Tensor, weight: NVFP4Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """W4A16 weight storage: dequantize W to x.dtype, then an ordinary GEMM (memory saving, not speed)."""
    return F.linear(x, nvfp4_dequantize(weight, x.dtype), None if bias is None else bias.to(x.dtype))


def dequant_fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                       bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, fp8_dequantize(weight, weight_scale, x.dtype), None if bias is None else bias.to(x.dtype))


# ---------------------------------------------------------------- torch._scaled_mm (sm_89+ FP8, sm_100/120 NVFP4)

def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16


def scaled_mm_fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                         input_scale: torch.Tensor | None, bias: torch.Tensor | None,
                         fast_accum: bool = True) -> torch.Tensor:
    """FP8 E4M3 x FP8 E4M3 per-tensor GEMM: x (M, K) float, weight (N, K) e4m3 -> (M, N) in x.dtype."""
    xs = fp8_scale(x.detach().abs().amax().float()) if input_scale is None else input_scale.float()
    xq = fp8_cast(x, xs)                                                          # (M, K) e4m3
    return scaled_mm_fp8_prequantized(xq, weight, weight_scale, xs, bias, _out_dtype(x), fast_accum)


def scaled_mm_fp8_prequantized(xq: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                               input_scale: torch.Tensor, bias: torch.Tensor | None,
                               out_dtype: torch.dtype = torch.bfloat16, fast_accum: bool = True) -> torch.Tensor:
    """The same GEMM for an activation already in E4M3 (xq = x / input_scale, written by its producer kernel)."""
    # cuBLASLt adds a bias of the output dtype in its epilogue (not with fp32 output): saves a pass over (M, N)
    fused_bias = bias is not None and out_dtype in (torch.bfloat16, torch.float16)
    y = torch._scaled_mm(xq, weight.t(), scale_a=input_scale.reshape(()).float(),
                         scale_b=weight_scale.reshape(()).float(),
                         bias=bias.to(out_dtype) if fused_bias else None, out_dtype=out_dtype,
                         use_fast_accum=fast_accum)                                # (M, N)
    return _finish(y, None if fused_bias else bias, out_dtype)


def _pad_rows(t: torch.Tensor, multiple: int) -> torch.Tensor:
    pad = (-t.shape[0]) % multiple
    if pad == 0:
        return t
    return torch.cat([t, t.new_zeros(pad, *t.shape[1:])], dim=0)


def scaled_mm_nvfp4_linear(x: torch.Tensor, weight_data: torch.Tensor, weight_scale_swizzled: torch.Tensor,
                           weight_global: torch.Tensor, input_scale: torch.Tensor | None,
                           bias: torch.Tensor | None) -> torch.Tensor:
    """Real NVFP4 GEMM (sm_100 / sm_120): x (M, K) float, weight_data (N, K/2) uint8, swizzled E4M3 weight scales.

    The activation is quantized here (per-16 blocks, static or dynamic tensor scale). _scaled_mm applies only the
    block scales; the two tensor scales multiply the output. M is padded to 128 rows because the swizzled scale
    layout has 128-row tiles and cuBLAS rejects smaller M (vLLM #48491)."""
    m = x.shape[0]
    a_global = activation_global_scale(x, input_scale)
    a_data, a_block_scale = nvfp4_quantize_activation(x, a_global)               # (M, K/2), (M, K/16)
    a_data = _pad_rows(a_data, 128)                                               # (M', K/2) uint8
    a_scale = to_blocked(a_block_scale)                                           # padded to 128 rows inside
    y = torch._scaled_mm(a_data.view(torch.float4_e2m1fn_x2), weight_data.view(torch.float4_e2m1fn_x2).t(),
                         scale_a=a_scale, scale_b=weight_scale_swizzled, out_dtype=torch.bfloat16)  # (M', N)
    y = y[:m].float() * (a_global.float() * weight_global.float())
    return _finish(y, bias, x.dtype)


__all__ = [
    "activation_global_scale", "emulated_nvfp4_linear", "emulated_fp8_linear", "dequant_nvfp4_linear",
    "dequant_fp8_linear", "scaled_mm_fp8_linear", "scaled_mm_fp8_prequantized", "scaled_mm_nvfp4_linear",
]
