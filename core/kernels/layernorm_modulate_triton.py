"""Triton kernel for LayerNorm (no affine) + modulation; math and shapes in core/kernels/layernorm_modulate.py.

One program per CFG["rows"] token rows: the rows (D = 2240 -> 4096 lanes, masked) stay in registers between the
statistics and the output, so x is read once and the result written once (memory-bound: 2 * N * D * 2 bytes).
FP8_OUT: the normalised output as E4M3 (value / scale, saturated, rounded to nearest even) for an FP8 GEMM."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from core.kernels._triton import Kernel, empty
from core.kernels.fp8_out import kernel_scale
from core.kernels.layernorm_modulate import modulation_groups

# Launch settings: rows per program (a (ROWS, BLOCK_D) tile: more bytes in flight per program) and warps.
# Module-level so that the bench can sweep them.
CFG = {"rows": 2, "num_warps": 8}


@Kernel
def _ln_mod_kernel(x_ptr, shift_ptr, scale_ptr, out_ptr, fp8_scale_ptr,
                   M, N, D, tokens_per_group, eps,
                   s_xb, s_xn, s_shb, s_shg, s_scb, s_scg, s_ob, s_on,
                   ROWS: tl.constexpr, BLOCK_D: tl.constexpr, FP8_OUT: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)                 # flattened (b, n) rows
    row_ok = rows < M
    b = (rows // N).to(tl.int64)
    n = (rows % N).to(tl.int64)
    g = n // tokens_per_group
    offs = tl.arange(0, BLOCK_D)
    m2 = row_ok[:, None] & (offs < D)[None, :]
    x = tl.load(x_ptr + (b * s_xb + n * s_xn)[:, None] + offs[None, :], mask=m2, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(m2, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / D
    y = xc * tl.div_rn(1.0, tl.sqrt_rn(var + eps))[:, None]   # IEEE sqrt and division: tl.rsqrt is approximate
    shift = tl.load(shift_ptr + (b * s_shb + g * s_shg)[:, None] + offs[None, :], mask=m2, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + (b * s_scb + g * s_scg)[:, None] + offs[None, :], mask=m2, other=0.0).to(tl.float32)
    y = y * (1.0 + scale) + shift
    if FP8_OUT:
        y = tl.clamp(y * (1.0 / tl.load(fp8_scale_ptr)), -448.0, 448.0, propagate_nan=tl.PropagateNan.ALL)
    tl.store(out_ptr + (b * s_ob + n * s_on)[:, None] + offs[None, :], y.to(out_ptr.dtype.element_ty), mask=m2)


@Kernel
def _add_ln_mod_kernel(x_ptr, y_ptr, gate_ptr, shift_ptr, scale_ptr, xout_ptr, out_ptr, fp8_scale_ptr,
                       M, N, D, tokens_per_group, gate_tokens_per_group, eps,
                       s_xb, s_xn, s_yb, s_yn, s_gb, s_gg, s_shb, s_shg, s_scb, s_scg, s_ob, s_on,
                       HAS_GATE: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr, FP8_OUT: tl.constexpr):
    # x_new = x + gate * y (stored, rounded to x's dtype), then LayerNorm + modulation of the stored value
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)                 # flattened (b, n) rows
    row_ok = rows < M
    b = (rows // N).to(tl.int64)
    n = (rows % N).to(tl.int64)
    offs = tl.arange(0, BLOCK_D)
    m2 = row_ok[:, None] & (offs < D)[None, :]
    x = tl.load(x_ptr + (b * s_xb + n * s_xn)[:, None] + offs[None, :], mask=m2, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + (b * s_yb + n * s_yn)[:, None] + offs[None, :], mask=m2, other=0.0).to(tl.float32)
    if HAS_GATE:
        gg = n // gate_tokens_per_group
        gate = tl.load(gate_ptr + (b * s_gb + gg * s_gg)[:, None] + offs[None, :], mask=m2, other=0.0)
        y = y * gate.to(tl.float32)
    x_new = (x + y).to(xout_ptr.dtype.element_ty)
    tl.store(xout_ptr + (b * s_ob + n * s_on)[:, None] + offs[None, :], x_new, mask=m2)
    x = x_new.to(tl.float32)
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(m2, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / D
    h = xc * tl.div_rn(1.0, tl.sqrt_rn(var + eps))[:, None]
    g = n // tokens_per_group
    shift = tl.load(shift_ptr + (b * s_shb + g * s_shg)[:, None] + offs[None, :], mask=m2, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + (b * s_scb + g * s_scg)[:, None] + offs[None, :], mask=m2, other=0.0).to(tl.float32)
    h = h * (1.0 + scale) + shift
    if FP8_OUT:
        h = tl.clamp(h * (1.0 / tl.load(fp8_scale_ptr)), -448.0, 448.0, propagate_nan=tl.PropagateNan.ALL)
    tl.store(out_ptr + (b * s_ob + n * s_on)[:, None] + offs[None, :], h.to(out_ptr.dtype.element_ty), mask=m2)


def _groups_last_contiguous(m: torch.Tensor, B: int, N: int, D: int) -> torch.Tensor:
    g = modulation_groups(m, B, N, D)
    return g if g.stride(-1) == 1 else g.contiguous()


def _h_dtype(x: torch.Tensor, out_scale: torch.Tensor | None) -> torch.dtype:
    return x.dtype if out_scale is None else torch.float8_e4m3fn


def add_layernorm_modulate_triton(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, shift: torch.Tensor,
                                  scale: torch.Tensor, eps: float, out_scale: torch.Tensor | None = None
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() != 3 or y.shape != x.shape:
        raise ValueError(f"x and y must be the same (B, N, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    B, N, D = x.shape
    shift_g = _groups_last_contiguous(shift, B, N, D)
    scale_g = _groups_last_contiguous(scale, B, N, D)
    if shift_g.shape[1] != scale_g.shape[1]:
        raise ValueError("shift and scale must have the same modulation groups")
    gate_g = _groups_last_contiguous(gate, B, N, D) if gate is not None else shift_g
    x = x if x.stride(-1) == 1 else x.contiguous()
    y = y if y.stride(-1) == 1 else y.contiguous()
    x_new = empty((B, N, D), x.dtype, x.device)
    out = empty((B, N, D), _h_dtype(x, out_scale), x.device)
    if B * N == 0:
        return x_new, out
    block_d = triton.next_power_of_2(D)
    rows = CFG["rows"]
    fp8_scale = None if out_scale is None else kernel_scale(out_scale, x.device)
    _add_ln_mod_kernel.on(x.device)[(triton.cdiv(B * N, rows),)](
        x, y, gate_g, shift_g, scale_g, x_new, out, x if fp8_scale is None else fp8_scale,
        B * N, N, D, N // shift_g.shape[1], N // gate_g.shape[1], float(eps),
        x.stride(0), x.stride(1), y.stride(0), y.stride(1), gate_g.stride(0), gate_g.stride(1),
        shift_g.stride(0), shift_g.stride(1), scale_g.stride(0), scale_g.stride(1), out.stride(0), out.stride(1),
        HAS_GATE=gate is not None, ROWS=rows, BLOCK_D=block_d, FP8_OUT=fp8_scale is not None,
        num_warps=CFG["num_warps"] if block_d >= 2048 else 4,
    )
    return x_new, out


def layernorm_modulate_triton(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
                              out: torch.Tensor | None = None, out_scale: torch.Tensor | None = None) -> torch.Tensor:
    if x.dim() != 3:
        raise ValueError(f"x must be (B, N, D), got {tuple(x.shape)}")
    B, N, D = x.shape
    shift_g = _groups_last_contiguous(shift, B, N, D)
    scale_g = _groups_last_contiguous(scale, B, N, D)
    if shift_g.shape[1] != scale_g.shape[1]:
        raise ValueError("shift and scale must have the same modulation groups")
    x = x if x.stride(-1) == 1 else x.contiguous()
    if out is None:
        out = empty((B, N, D), _h_dtype(x, out_scale), x.device)
    elif out.dtype != _h_dtype(x, out_scale):
        raise ValueError(f"out must be {_h_dtype(x, out_scale)}, got {out.dtype}")
    if B * N == 0:
        return out
    block_d = triton.next_power_of_2(D)
    rows = CFG["rows"]
    fp8_scale = None if out_scale is None else kernel_scale(out_scale, x.device)
    _ln_mod_kernel.on(x.device)[(triton.cdiv(B * N, rows),)](
        x, shift_g, scale_g, out, x if fp8_scale is None else fp8_scale,
        B * N, N, D, N // shift_g.shape[1], float(eps),
        x.stride(0), x.stride(1), shift_g.stride(0), shift_g.stride(1), scale_g.stride(0), scale_g.stride(1),
        out.stride(0), out.stride(1),
        ROWS=rows, BLOCK_D=block_d, FP8_OUT=fp8_scale is not None,
        num_warps=CFG["num_warps"] if block_d >= 2048 else 4,
    )
    return out
