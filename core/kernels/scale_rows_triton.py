"""Triton kernel for gate-scaled weight rows; math in core/kernels/scale_rows.py.

One program per (row, column block): contiguous vector loads and stores, memory-bound (read + write R x C)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from core.kernels._triton import Kernel, empty

BLOCK = 2048


@Kernel
def _scale_rows_kernel(w_ptr, g_ptr, out_ptr, C, s_w, identity_col,
                       HAS_IDENTITY: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = offs < C
    w = tl.load(w_ptr + row.to(tl.int64) * s_w + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_IDENTITY:
        w = tl.where(offs == identity_col + row, w + 1.0, w)
    g = tl.load(g_ptr + row).to(tl.float32)
    tl.store(out_ptr + row.to(tl.int64) * C + offs, (w * g).to(out_ptr.dtype.element_ty), mask=mask)


def scale_rows_triton(weight: torch.Tensor, gate: torch.Tensor, out_dtype: torch.dtype,
                      identity_col: int | None = None) -> torch.Tensor:
    R, C = weight.shape
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    gate = gate.contiguous()
    out = empty((R, C), out_dtype, weight.device)
    if R * C == 0:
        return out
    block = min(BLOCK, triton.next_power_of_2(C))
    _scale_rows_kernel.on(weight.device)[(R, triton.cdiv(C, block))](
        weight, gate, out, C, weight.stride(0), 0 if identity_col is None else identity_col,
        HAS_IDENTITY=identity_col is not None, BLOCK_C=block, num_warps=4,
    )
    return out
