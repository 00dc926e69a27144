"""Triton kernel for the Wan VAE decoder's fast path: RMS norm over channels (+ SiLU) written straight into the
causal conv's context buffer.

Why: unfused, `conv(silu(norm(x)))` with a causal context costs ~8 full passes over the activation (square, sum,
rsqrt, two multiplies, SiLU, torch.cat with the cached frames, F.pad); at 480x832 those passes cost about as much
as the convolutions. Here it is one read of x and one write into the (B, C, 2 + T, H, W) buffer's last T frames.

Layout: channels_last_3d, so each pixel's C channels are one contiguous row; a program normalises BLOCK_R rows.
Imported lazily (only for CUDA tensors, or CPU tensors under TRITON_INTERPRET=1 in tests): never at `core.vae`
import time, so a CPU-only install needs no Triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from core.kernels._triton import Kernel


@Kernel
def _rms_silu_rows_kernel(x_ptr, bias_ptr, gamma_ptr, out_ptr,
                          n_rows, rows_per_batch, x_batch_stride, out_batch_stride, C, scale, eps_sq,
                          HAS_BIAS: tl.constexpr, APPLY_SILU: tl.constexpr, BLOCK_R: tl.constexpr,
                          BLOCK_C: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    batch = rows // rows_per_batch
    within = rows - batch * rows_per_batch
    col_ok = cols < C
    mask = (rows < n_rows)[:, None] & col_ok[None, :]
    x = tl.load(x_ptr + (batch * x_batch_stride + within * C)[:, None] + cols[None, :], mask=mask,
                other=0.0).to(tl.float32)
    if HAS_BIAS:  # the previous conv's bias, deferred to here (saves a separate pass over its output)
        x += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        x = tl.where(mask, x, 0.0)
    # x / max(||x||, 1e-12) == x * rsqrt(max(sum x^2, 1e-24)); IEEE sqrt and division (tl.rsqrt is approximate)
    inv = tl.div_rn(1.0, tl.sqrt_rn(tl.maximum(tl.sum(x * x, axis=1), eps_sq)))
    g = tl.load(gamma_ptr + cols, mask=col_ok, other=0.0).to(tl.float32) * scale
    y = x * inv[:, None] * g[None, :]
    if APPLY_SILU:
        y = y * tl.sigmoid(y)
    tl.store(out_ptr + (batch * out_batch_stride + within * C)[:, None] + cols[None, :],
             y.to(out_ptr.dtype.element_ty), mask=mask)


def rms_silu_into(x: torch.Tensor, gamma: torch.Tensor, scale: float, out: torch.Tensor, silu: bool = True,
                  bias: torch.Tensor | None = None) -> None:
    """out[...] = silu(x' / ||x'||_C * scale * gamma), x' = x + bias (per channel; optional), computed in fp32,
    rounded once to out.dtype.

    x, out: (B, C, T, H, W), both channels_last_3d-dense within each batch item (out may be a time slice of a larger
    buffer, e.g. ctx[:, :, 2:]); gamma: C values."""
    b, c, t, h, w = x.shape
    assert out.shape == x.shape and x.device == out.device
    for name, v in (("x", x), ("out", out)):  # rows of C contiguous channels, frames of a batch item back to back
        if not v[:1].is_contiguous(memory_format=torch.channels_last_3d):
            raise ValueError(f"rms_silu_into: {name} must be channels_last_3d-dense per batch item")
    rows_per_batch = t * h * w
    n_rows = b * rows_per_batch
    block_c = triton.next_power_of_2(c)
    block_r = max(1, 8192 // block_c)
    grid = (triton.cdiv(n_rows, block_r),)
    kernel = _rms_silu_rows_kernel.on(x.device)
    kernel[grid](x, gamma if bias is None else bias, gamma.reshape(-1), out, n_rows, rows_per_batch, x.stride(0), out.stride(0), c, float(scale),
                 1e-24, HAS_BIAS=bias is not None, APPLY_SILU=silu, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=4)


@Kernel
def _bias_residual_kernel(h_ptr, bias_ptr, s_ptr, n, C, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = offs < n
    h = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(bias_ptr + offs % C, mask=mask, other=0.0).to(tl.float32)
    tl.store(h_ptr + offs, (h + b + s).to(h_ptr.dtype.element_ty), mask=mask)


def bias_residual_(h: torch.Tensor, bias: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """h += bias (per channel) + shortcut, in place, in one pass; h and shortcut channels_last_3d-contiguous."""
    fmt = torch.channels_last_3d
    if h.shape != shortcut.shape or not (h.is_contiguous(memory_format=fmt) and shortcut.is_contiguous(memory_format=fmt)):
        raise ValueError("bias_residual_: h and shortcut must be channels_last_3d-contiguous, same shape")
    n = h.numel()
    block = 4096
    _bias_residual_kernel.on(h.device)[(triton.cdiv(n, block),)](h, bias, shortcut, n, h.shape[1], BLOCK=block,
                                                                   num_warps=8)
    return h
