"""Triton RMSNorm kernels; math in core/kernels/rms_norm.py.

One program per (row, segment): a segment is a D-wide column block of the input row (one segment for `rms_norm`, q
and k of the fused qkv row for `qk_rms_norm`). Outputs go to one (segments, rows, D) buffer."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from core.kernels._triton import Kernel, empty


@Kernel
def _rms_kernel(x_ptr, w0_ptr, w1_ptr, out_ptr,
                M, D, eps, s_xm,
                HAS_WEIGHT: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    x = tl.load(x_ptr + row * s_xm + seg * D + offs, mask=mask, other=0.0).to(tl.float32)
    y = x * tl.div_rn(1.0, tl.sqrt_rn(tl.sum(x * x, axis=0) / D + eps))   # IEEE: tl.rsqrt is approximate
    if HAS_WEIGHT:
        if seg == 0:
            w = tl.load(w0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            w = tl.load(w1_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = y * w
    tl.store(out_ptr + (seg * M + row) * D + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def _rows(x: torch.Tensor) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])  # a view for slices of a contiguous tensor (the qkv case)
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _launch(x2: torch.Tensor, w0: torch.Tensor | None, w1: torch.Tensor | None, D: int, segments: int,
            eps: float) -> torch.Tensor:
    M = x2.shape[0]
    out = empty((segments, M, D), x2.dtype, x2.device)
    if M == 0 or D == 0:
        return out
    block_d = triton.next_power_of_2(D)
    has_weight = w0 is not None
    w0 = w0.contiguous() if has_weight else x2
    w1 = w1.contiguous() if w1 is not None else w0
    _rms_kernel.on(x2.device)[(M, segments)](
        x2, w0, w1, out, M, D, float(eps), x2.stride(0),
        HAS_WEIGHT=has_weight, BLOCK_D=block_d, num_warps=8 if block_d >= 2048 else 4,
    )
    return out


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    D = x.shape[-1]
    if weight is not None and tuple(weight.shape) != (D,):
        raise ValueError(f"weight must be ({D},), got {tuple(weight.shape)}")
    return _launch(_rows(x), weight, None, D, 1, eps)[0].view(x.shape)


def qk_rms_norm_triton(qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, eps: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    D = q_weight.shape[-1]
    if tuple(q_weight.shape) != (D,) or tuple(k_weight.shape) != (D,) or qkv.shape[-1] < 2 * D:
        raise ValueError(f"qkv (..., >= 2D) with q/k weights (D,) expected, got {tuple(qkv.shape)}, "
                         f"{tuple(q_weight.shape)}, {tuple(k_weight.shape)}")
    out = _launch(_rows(qkv), q_weight, k_weight, D, 2, eps)
    shape = (*qkv.shape[:-1], D)
    return out[0].view(shape), out[1].view(shape)
