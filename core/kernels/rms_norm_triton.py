"""Triton RMSNorm kernels; math in core/kernels/rms_norm.py.

One program per row (`rms_norm`), or per row and segment for `qk_rms_reciprocals` (segments 0 and 1: q and k of the
fused qkv row, of which only the 1/rms is written)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from core.kernels._triton import Kernel, empty


@Kernel
def _rms_kernel(x_ptr, w_ptr, out_ptr,
                D, eps, s_xm,
                HAS_WEIGHT: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    x = tl.load(x_ptr + row * s_xm + offs, mask=mask, other=0.0).to(tl.float32)
    y = x * tl.div_rn(1.0, tl.sqrt_rn(tl.sum(x * x, axis=0) / D + eps))   # IEEE: tl.rsqrt is approximate
    if HAS_WEIGHT:
        y = y * tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * D + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@Kernel
def _rstd_kernel(x_ptr, rstd_ptr, M, D, eps, s_xm, BLOCK_D: tl.constexpr):
    # program (row, segment): 1 / rms of x[row, segment * D : (segment + 1) * D], written to rstd[segment, row]
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    x = tl.load(x_ptr + row * s_xm + seg * D + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(rstd_ptr + seg * M + row, tl.div_rn(1.0, tl.sqrt_rn(tl.sum(x * x, axis=0) / D + eps)))


def _rows(x: torch.Tensor) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])  # a view for slices of a contiguous tensor (the qkv case)
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    D = x.shape[-1]
    if weight is not None and tuple(weight.shape) != (D,):
        raise ValueError(f"weight must be ({D},), got {tuple(weight.shape)}")
    x2 = _rows(x)
    M = x2.shape[0]
    out = empty((M, D), x2.dtype, x2.device)
    if M and D:
        block_d = triton.next_power_of_2(D)
        _rms_kernel.on(x2.device)[(M,)](
            x2, x2 if weight is None else weight.contiguous(), out, D, float(eps), x2.stride(0),
            HAS_WEIGHT=weight is not None, BLOCK_D=block_d, num_warps=8 if block_d >= 2048 else 4,
        )
    return out.view(x.shape)


def _rstd_segments(x2: torch.Tensor, D: int, segments: int, eps: float) -> torch.Tensor:
    """(segments, M) fp32: 1 / rms of each D-wide segment of the M rows of x2 (row stride any, last dim contiguous)."""
    M = x2.shape[0]
    rstd = empty((segments, M), torch.float32, x2.device)
    if M and D:
        block_d = triton.next_power_of_2(D)
        _rstd_kernel.on(x2.device)[(M, segments)](
            x2, rstd, M, D, float(eps), x2.stride(0), BLOCK_D=block_d, num_warps=8 if block_d >= 2048 else 4,
        )
    return rstd


def qk_rms_reciprocals_triton(qkv: torch.Tensor, D: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    if qkv.shape[-1] < 2 * D:
        raise ValueError(f"qkv (..., >= 2D) expected for D = {D}, got {tuple(qkv.shape)}")
    rstd = _rstd_segments(_rows(qkv), D, 2, eps)
    return rstd[0].view(qkv.shape[:-1]), rstd[1].view(qkv.shape[:-1])


def rms_reciprocal_triton(x: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / rms over the last dim of x (rows may be strided, e.g. k inside the fused qkv): (...,) fp32."""
    return _rstd_segments(_rows(x), x.shape[-1], 1, eps)[0].view(x.shape[:-1])
