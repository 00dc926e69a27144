"""Triton kernels for the FP8 block's elementwise glue; math and shapes in core/kernels/fp8_residual.py.

Both are memory-bound single passes over (ROWS, BLOCK_D) tiles: gated_residual reads x, a (and b) once and writes
x_new (and its E4M3 copy); stack_taps reads each u row once and writes it to its three taps (version 1 gathered each
output row's three taps, reading u three times: 109 us per 480p layer on an H100)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from core.kernels._triton import Kernel, empty
from core.kernels.fp8_out import kernel_scale

CFG = {"rows": 4, "block_d": 512, "num_warps": 4}


@Kernel
def _gated_residual_kernel(x_ptr, a_ptr, b_ptr, g_ptr, out_ptr, q_ptr, scale_ptr,
                           M, N, D, gate_tokens,
                           s_xb, s_xn, s_ab, s_an, s_bb, s_bn, s_gb, s_gg, s_ob, s_on,
                           HAS_B: tl.constexpr, FP8_OUT: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)                  # flattened (b, n) rows
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    bi = (rows // N).to(tl.int64)
    n = (rows % N).to(tl.int64)
    m2 = (rows < M)[:, None] & (cols < D)[None, :]
    c = cols[None, :]
    x = tl.load(x_ptr + (bi * s_xb + n * s_xn)[:, None] + c, mask=m2, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + (bi * s_ab + n * s_an)[:, None] + c, mask=m2, other=0.0).to(tl.float32)
    if HAS_B:
        a += tl.load(b_ptr + (bi * s_bb + n * s_bn)[:, None] + c, mask=m2, other=0.0).to(tl.float32)
    gg = n // gate_tokens
    g = tl.load(g_ptr + (bi * s_gb + gg * s_gg)[:, None] + c, mask=m2, other=0.0).to(tl.float32)
    x_new = (x + g * a).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + (bi * s_ob + n * s_on)[:, None] + c, x_new, mask=m2)
    if FP8_OUT:   # from the rounded residual, as a consumer of the stored x_new would see it
        xq = tl.clamp(x_new.to(tl.float32) * (1.0 / tl.load(scale_ptr)), -448.0, 448.0,
                      propagate_nan=tl.PropagateNan.ALL)
        tl.store(q_ptr + (bi * N + n)[:, None] * D + c, xq.to(q_ptr.dtype.element_ty), mask=m2)


@Kernel
def _stack_taps_kernel(u_ptr, p_ptr, out_ptr, scale_ptr,
                       M, T, S, D,
                       s_ub, s_ut, s_us, s_pb, s_ps,
                       HAS_PREV: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    # One program per tile of u's rows (b, t, s): each row is read once and written to its three places,
    # out[b, t+1, s, tap 0], out[b, t, s, tap 1], out[b, t-1, s, tap 2]; the rows of the first frame also write
    # tap 0 of their own output row (prev or zero) and those of the last frame tap 2 (zero).
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)                  # flattened (b, t, s) rows of u
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < M
    bi = (rows // (T * S)).to(tl.int64)
    t = (rows // S) % T
    s = (rows % S).to(tl.int64)
    col_ok = (cols < D)[None, :]
    c = cols[None, :]
    m2 = row_ok[:, None] & col_ok
    inv = 1.0 / tl.load(scale_ptr)
    v = tl.load(u_ptr + (bi * s_ub + t.to(tl.int64) * s_ut + s * s_us)[:, None] + c, mask=m2, other=0.0)
    q = tl.clamp(v.to(tl.float32) * inv, -448.0, 448.0, propagate_nan=tl.PropagateNan.ALL)
    q = q.to(out_ptr.dtype.element_ty)
    out_row = rows.to(tl.int64) * (3 * D)                                  # out is contiguous (B, T, S, 3D)
    step = S.to(tl.int64) * (3 * D)                                         # one frame further
    tl.store(out_ptr + out_row[:, None] + D + c, q, mask=m2)                                  # u_t of row t
    tl.store(out_ptr + (out_row + step)[:, None] + c, q, mask=m2 & (t < T - 1)[:, None])      # u_{t-1} of t + 1
    tl.store(out_ptr + (out_row - step)[:, None] + 2 * D + c, q, mask=m2 & (t > 0)[:, None])  # u_{t+1} of t - 1
    first = m2 & (t == 0)[:, None]
    edge = tl.zeros((ROWS, BLOCK_D), dtype=tl.float32)
    if HAS_PREV:
        edge = tl.load(p_ptr + (bi * s_pb + s * s_ps)[:, None] + c, mask=first, other=0.0).to(tl.float32)
        edge = tl.clamp(edge * inv, -448.0, 448.0, propagate_nan=tl.PropagateNan.ALL)
    tl.store(out_ptr + out_row[:, None] + c, edge.to(out_ptr.dtype.element_ty), mask=first)   # before the first
    zero = tl.zeros((ROWS, BLOCK_D), dtype=tl.float32).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + out_row[:, None] + 2 * D + c, zero, mask=m2 & (t == T - 1)[:, None])   # after the last


def _last_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def gated_residual_triton(x: torch.Tensor, a: torch.Tensor, gate: torch.Tensor, b: torch.Tensor | None = None,
                          out_scale: torch.Tensor | None = None, inplace: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    B, N, D = x.shape
    if inplace and x.stride(-1) != 1:
        raise ValueError("in-place gated_residual needs x with a contiguous last dim")
    x, a, gate = _last_contiguous(x), _last_contiguous(a), _last_contiguous(gate)
    b = None if b is None else _last_contiguous(b)
    out = x if inplace else empty((B, N, D), x.dtype, x.device)
    xq = None if out_scale is None else empty((B, N, D), torch.float8_e4m3fn, x.device)
    if B * N * D == 0:
        return out, xq
    rows, block_d = CFG["rows"], min(CFG["block_d"], triton.next_power_of_2(D))
    bb = a if b is None else b
    _gated_residual_kernel.on(x.device)[(triton.cdiv(B * N, rows), triton.cdiv(D, block_d))](
        x, a, bb, gate, out, out if xq is None else xq, x if out_scale is None else kernel_scale(out_scale, x.device),
        B * N, N, D, N // gate.shape[1],
        x.stride(0), x.stride(1), a.stride(0), a.stride(1), bb.stride(0), bb.stride(1),
        gate.stride(0), gate.stride(1), out.stride(0), out.stride(1),
        HAS_B=b is not None, FP8_OUT=xq is not None, ROWS=rows, BLOCK_D=block_d, num_warps=CFG["num_warps"],
    )
    return out, xq


def stack_taps_e4m3_triton(u: torch.Tensor, prev: torch.Tensor | None, out_scale: torch.Tensor) -> torch.Tensor:
    B, T, S, D = u.shape
    u = _last_contiguous(u)
    prev = None if prev is None else _last_contiguous(prev.to(u.dtype))
    out = empty((B, T, S, 3 * D), torch.float8_e4m3fn, u.device)
    if B * T * S * D == 0:
        return out
    rows, block_d = CFG["rows"], min(CFG["block_d"], triton.next_power_of_2(D))
    pp = u if prev is None else prev
    _stack_taps_kernel.on(u.device)[(triton.cdiv(B * T * S, rows), triton.cdiv(D, block_d))](
        u, pp, out, kernel_scale(out_scale, u.device),
        B * T * S, T, S, D,
        u.stride(0), u.stride(1), u.stride(2), pp.stride(0), pp.stride(1),
        HAS_PREV=prev is not None, ROWS=rows, BLOCK_D=block_d, num_warps=CFG["num_warps"],
    )
    return out
