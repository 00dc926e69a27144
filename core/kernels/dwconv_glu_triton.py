"""Triton depthwise 3x3 conv + bias + GLU on channels-last features; math in core/kernels/dwconv_glu.py.

Per token it reads 2F inputs and writes F outputs (480p block: 15,600 tokens x 13,440 channels, ~0.63 GB, ~0.2 ms at
3 TB/s), but the kernel is bound by instruction issue (ncu, run 9), so the design counts instructions per output.

Version 4 (this one). A program owns a (BLOCK_G slots x BLOCK_C channels) strip of both GLU halves and sweeps down the
rows of a frame once, carrying each output row's partial sums between iterations (input row i completes output row
i-1, continues row i, starts row i+1) and loading the next row while it computes this one (software prefetch).
- Column phases: a slot is 4 adjacent output columns w0 + p (p = 0..3), each phase its own (BLOCK_G, BLOCK_C) tile.
  The column neighbours of phase p are phases p-1 and p+1, already in registers; only the two outer neighbours of a
  slot are extra (L1-hit) loads. Per input element: 1.5 loads and 1.5 SiLUs (version 2 loaded each row at three
  column shifts and applied SiLU 3 times).
- Slots run over (frame, column group) pairs flattened across the batch, so a frame width that is not a multiple of
  the tile (480p: 52 columns = 13 groups) leaves no lanes idle (per-frame column tiles: 52 of 64 lanes busy).
Measured (bench/dit.py --sweep, H100, one 480p block's sizes): version 2 (row sweep, 3 shifted loads per row)
0.55 ms, version 3 (phases, per-frame column tiles) 0.43 ms, version 4 0.39 ms. Offline SASS (sm_90, Triton 3.6): ~67
instructions per output element for version 2, ~50 for versions 3 and 4. docs/perf-notes.md has the earlier versions
and the attempts that were removed (tl.gather shifts, L2 prefetch, centre tiles two rows ahead).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from core.kernels._triton import Kernel, empty, sm_count
from core.kernels.dwconv_glu import _check
from core.kernels.fp8_out import kernel_scale

# Launch settings (H100, one 480p block; docs/perf-notes.md); module-level so the bench can sweep them.
# block_g: slots (4 output columns each) per program; block_c: channels per program; rows: output rows per program
# (None: whole frames when that already gives `waves` waves of programs); fast_sigmoid: SiLU's sigmoid as
# 0.5 + 0.5 tanh(x/2) on the GPU's tanh unit (one special-function op instead of exp + reciprocal; ~1e-3 relative error
# per sigmoid, used for 16-bit / FP8 outputs only, whose own rounding is 4e-3 or more), for the input SiLU and the GLU
# gate. Registers (offline SASS): 4 x 64 and 8 x 32 at 4 warps: 128 (four programs per SM); 16 x 32: 249.
# half_gate: with fast_sigmoid, the gate half's weights and bias are halved on load (exact) so that the GLU's SiLU
# needs no multiply (bit-identical results).
CFG = {"block_g": 4, "block_c": 64, "num_warps": 4, "rows": None, "waves": 4, "fast_sigmoid": True,
       "half_gate": True}


def _silu_ptx(n: int, halved: bool = False) -> str:
    """PTX for n SiLUs at once (outputs $0..$n-1, inputs $n..$2n-1): SiLU(x) = h + h tanh(h), h = x / 2.
    halved: the inputs are h already (no multiply)."""
    if halved:
        body = "".join(f"tanh.approx.f32 t, ${n + k}; fma.rn.f32 ${k}, ${n + k}, t, ${n + k}; " for k in range(n))
        return "{ .reg .f32 t; " + body + "}"
    body = "".join(f"mul.f32 h, ${n + k}, 0f3F000000; tanh.approx.f32 t, h; fma.rn.f32 ${k}, h, t, h; "
                   for k in range(n))
    return "{ .reg .f32 h, t; " + body + "}"


def _silu_constraints(n: int) -> str:
    """inline_asm_elementwise constraints for _silu_ptx(n): n 32-bit outputs, then n inputs."""
    return ",".join(["=r"] * n + ["r"] * n)


# module-level constants must be constexpr to be read inside a kernel. 12: the six input tiles of both GLU halves of
# a row; 4: the four gate phases.
_SILU12_PTX = tl.constexpr(_silu_ptx(12))
_SILU12_HALVED_PTX = tl.constexpr(_silu_ptx(12, halved=True))
_SILU12_CONSTRAINTS = tl.constexpr(_silu_constraints(12))
_SILU4_PTX = tl.constexpr(_silu_ptx(4))
_SILU4_HALVED_PTX = tl.constexpr(_silu_ptx(4, halved=True))
_SILU4_CONSTRAINTS = tl.constexpr(_silu_constraints(4))


@Kernel
def _dwconv_glu_slots_kernel(x_ptr, w_ptr, b_ptr, out_ptr, scale_ptr,
                             H, W, F, rows_per_prog, n_slot_blocks, n_slots, groups_per_row,
                             s_xt, s_xp, s_ot, s_op,
                             HAS_BIAS: tl.constexpr, SILU_INPUT: tl.constexpr, FAST_SIGMOID: tl.constexpr,
                             BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr, FP8_OUT: tl.constexpr = False,
                             HALVED_INPUT: tl.constexpr = False, HALVED_GATE: tl.constexpr = False):
    # The module docstring has the design: slots of 4 column phases, the (frame, group) pairs flattened. A slot's
    # outer neighbours (columns 4 g - 1 and 4 g + 4 of its frame, "halo" l / r) are the only extra loads.
    pid_rw = tl.program_id(0)
    pid_c = tl.program_id(1)
    r0 = (pid_rw // n_slot_blocks) * rows_per_prog
    r1 = tl.minimum(r0 + rows_per_prog, H)
    slot = (pid_rw % n_slot_blocks) * BLOCK_G + tl.arange(0, BLOCK_G)            # (G,) (frame, group) index
    ok_slot = slot < n_slots
    frame = (slot // groups_per_row).to(tl.int64)
    col0 = 4 * (slot % groups_per_row)                                           # (G,) column of phase 0
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)                             # output channel (GLU value half)
    mask_c = offs_c < F
    x_base = x_ptr
    o_base = out_ptr
    # (G, C) offsets within a row (frame included) and column masks (zero padding outside the frame) of the six
    # input tiles
    off_0 = (frame * s_xt + col0 * s_xp)[:, None] + offs_c[None, :]
    m_l = (ok_slot & (col0 >= 1))[:, None] & mask_c[None, :]
    m_0 = (ok_slot & (col0 < W))[:, None] & mask_c[None, :]
    m_1 = (ok_slot & (col0 + 1 < W))[:, None] & mask_c[None, :]
    m_2 = (ok_slot & (col0 + 2 < W))[:, None] & mask_c[None, :]
    m_3 = (ok_slot & (col0 + 3 < W))[:, None] & mask_c[None, :]
    m_r = (ok_slot & (col0 + 4 < W))[:, None] & mask_c[None, :]
    # tap weights (2F, 9), tap = dh * 3 + dw, in registers for the whole sweep. HALVED_GATE: the gate half's weights
    # and bias times 1/2 (exact), so that its sums come out as the h = g / 2 that SiLU's tanh form needs
    g_scale = 0.5 if HALVED_GATE else 1.0
    wa_ptr = w_ptr + offs_c * 9
    wg_ptr = w_ptr + (F + offs_c) * 9
    wa0 = tl.load(wa_ptr + 0, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    wa1 = tl.load(wa_ptr + 1, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    wa2 = tl.load(wa_ptr + 2, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    wa3 = tl.load(wa_ptr + 3, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    wa4 = tl.load(wa_ptr + 4, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    wa5 = tl.load(wa_ptr + 5, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    wa6 = tl.load(wa_ptr + 6, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    wa7 = tl.load(wa_ptr + 7, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    wa8 = tl.load(wa_ptr + 8, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    wg0 = tl.load(wg_ptr + 0, mask=mask_c, other=0.0).to(tl.float32)[None, :] * g_scale
    wg1 = tl.load(wg_ptr + 1, mask=mask_c, other=0.0).to(tl.float32)[None, :] * g_scale
    wg2 = tl.load(wg_ptr + 2, mask=mask_c, other=0.0).to(tl.float32)[None, :] * g_scale
    wg3 = tl.load(wg_ptr + 3, mask=mask_c, other=0.0).to(tl.float32)[None, :] * g_scale
    wg4 = tl.load(wg_ptr + 4, mask=mask_c, other=0.0).to(tl.float32)[None, :] * g_scale
    wg5 = tl.load(wg_ptr + 5, mask=mask_c, other=0.0).to(tl.float32)[None, :] * g_scale
    wg6 = tl.load(wg_ptr + 6, mask=mask_c, other=0.0).to(tl.float32)[None, :] * g_scale
    wg7 = tl.load(wg_ptr + 7, mask=mask_c, other=0.0).to(tl.float32)[None, :] * g_scale
    wg8 = tl.load(wg_ptr + 8, mask=mask_c, other=0.0).to(tl.float32)[None, :] * g_scale
    if HAS_BIAS:   # the bias starts each output row's sum (cur_* below)
        bias_a = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        bias_g = tl.load(b_ptr + F + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :] * g_scale
    else:
        bias_a = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        bias_g = tl.zeros((1, BLOCK_C), dtype=tl.float32)
    inv_scale = 1.0 / tl.load(scale_ptr) if FP8_OUT else 1.0
    # partial sums per phase: p* = output row i-1 (rows i-2, i-1 added), c* = output row i (row i-1 added)
    pa0 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    pa1 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    pa2 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    pa3 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    pg0 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    pg1 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    pg2 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    pg3 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    ca0 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    ca1 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    ca2 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    ca3 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    cg0 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    cg1 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    cg2 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    cg3 = tl.zeros((BLOCK_G, BLOCK_C), dtype=tl.float32)
    # software prefetch: the next input row's twelve tiles are loaded while this row is computed
    zero_g = col0 * 0      # row conditions as (G, 1) vectors: the interpreter cannot mask with a scalar
    ok = (zero_g + r0 >= 1)[:, None]                                   # input row r0 - 1 exists
    rb = x_base + (r0 - 1) * W * s_xp
    na_l = tl.load(rb + off_0 - s_xp, mask=m_l & ok, other=0.0)
    na_0 = tl.load(rb + off_0, mask=m_0 & ok, other=0.0)
    na_1 = tl.load(rb + off_0 + s_xp, mask=m_1 & ok, other=0.0)
    na_2 = tl.load(rb + off_0 + 2 * s_xp, mask=m_2 & ok, other=0.0)
    na_3 = tl.load(rb + off_0 + 3 * s_xp, mask=m_3 & ok, other=0.0)
    na_r = tl.load(rb + off_0 + 4 * s_xp, mask=m_r & ok, other=0.0)
    ng_l = tl.load(rb + F + off_0 - s_xp, mask=m_l & ok, other=0.0)
    ng_0 = tl.load(rb + F + off_0, mask=m_0 & ok, other=0.0)
    ng_1 = tl.load(rb + F + off_0 + s_xp, mask=m_1 & ok, other=0.0)
    ng_2 = tl.load(rb + F + off_0 + 2 * s_xp, mask=m_2 & ok, other=0.0)
    ng_3 = tl.load(rb + F + off_0 + 3 * s_xp, mask=m_3 & ok, other=0.0)
    ng_r = tl.load(rb + F + off_0 + 4 * s_xp, mask=m_r & ok, other=0.0)
    for i in range(r0 - 1, r1 + 1):                                    # input rows
        xa_l = na_l.to(tl.float32)
        xa_0 = na_0.to(tl.float32)
        xa_1 = na_1.to(tl.float32)
        xa_2 = na_2.to(tl.float32)
        xa_3 = na_3.to(tl.float32)
        xa_r = na_r.to(tl.float32)
        xg_l = ng_l.to(tl.float32)
        xg_0 = ng_0.to(tl.float32)
        xg_1 = ng_1.to(tl.float32)
        xg_2 = ng_2.to(tl.float32)
        xg_3 = ng_3.to(tl.float32)
        xg_r = ng_r.to(tl.float32)
        ok = ((zero_g + i + 1 < H) & (zero_g + i + 1 <= r1))[:, None]  # row i+1 is needed and exists
        rb = x_base + (i + 1) * W * s_xp
        na_l = tl.load(rb + off_0 - s_xp, mask=m_l & ok, other=0.0)
        na_0 = tl.load(rb + off_0, mask=m_0 & ok, other=0.0)
        na_1 = tl.load(rb + off_0 + s_xp, mask=m_1 & ok, other=0.0)
        na_2 = tl.load(rb + off_0 + 2 * s_xp, mask=m_2 & ok, other=0.0)
        na_3 = tl.load(rb + off_0 + 3 * s_xp, mask=m_3 & ok, other=0.0)
        na_r = tl.load(rb + off_0 + 4 * s_xp, mask=m_r & ok, other=0.0)
        ng_l = tl.load(rb + F + off_0 - s_xp, mask=m_l & ok, other=0.0)
        ng_0 = tl.load(rb + F + off_0, mask=m_0 & ok, other=0.0)
        ng_1 = tl.load(rb + F + off_0 + s_xp, mask=m_1 & ok, other=0.0)
        ng_2 = tl.load(rb + F + off_0 + 2 * s_xp, mask=m_2 & ok, other=0.0)
        ng_3 = tl.load(rb + F + off_0 + 3 * s_xp, mask=m_3 & ok, other=0.0)
        ng_r = tl.load(rb + F + off_0 + 4 * s_xp, mask=m_r & ok, other=0.0)
        if SILU_INPUT:  # zero padding stays zero: SiLU(0) = 0
            if FAST_SIGMOID:   # SiLU(x) = h + h tanh(h), h = x / 2: one MUFU op, one FMA (and the FMUL for h unless
                # the input holds h already) per value
                xa_l, xa_0, xa_1, xa_2, xa_3, xa_r, xg_l, xg_0, xg_1, xg_2, xg_3, xg_r = tl.inline_asm_elementwise(
                    _SILU12_HALVED_PTX if HALVED_INPUT else _SILU12_PTX, _SILU12_CONSTRAINTS,
                    [xa_l, xa_0, xa_1, xa_2, xa_3, xa_r, xg_l, xg_0, xg_1, xg_2, xg_3, xg_r],
                    dtype=(tl.float32,) * 12, is_pure=True, pack=1)
            else:   # x * sigmoid(x) with x = in_scale * loaded value (2 for a halved input, exact)
                in_scale = 2.0 if HALVED_INPUT else 1.0
                xa_l = (in_scale * xa_l) * tl.sigmoid(in_scale * xa_l)
                xa_0 = (in_scale * xa_0) * tl.sigmoid(in_scale * xa_0)
                xa_1 = (in_scale * xa_1) * tl.sigmoid(in_scale * xa_1)
                xa_2 = (in_scale * xa_2) * tl.sigmoid(in_scale * xa_2)
                xa_3 = (in_scale * xa_3) * tl.sigmoid(in_scale * xa_3)
                xa_r = (in_scale * xa_r) * tl.sigmoid(in_scale * xa_r)
                xg_l = (in_scale * xg_l) * tl.sigmoid(in_scale * xg_l)
                xg_0 = (in_scale * xg_0) * tl.sigmoid(in_scale * xg_0)
                xg_1 = (in_scale * xg_1) * tl.sigmoid(in_scale * xg_1)
                xg_2 = (in_scale * xg_2) * tl.sigmoid(in_scale * xg_2)
                xg_3 = (in_scale * xg_3) * tl.sigmoid(in_scale * xg_3)
                xg_r = (in_scale * xg_r) * tl.sigmoid(in_scale * xg_r)
        # input row i is kernel row dh=2 of output row i-1 (done), dh=1 of row i (p), dh=0 of row i+1 (c);
        # phase p's left / centre / right inputs are tiles p-1 / p / p+1 (l and r at the ends)
        da0 = pa0 + xa_l * wa6 + xa_0 * wa7 + xa_1 * wa8
        da1 = pa1 + xa_0 * wa6 + xa_1 * wa7 + xa_2 * wa8
        da2 = pa2 + xa_1 * wa6 + xa_2 * wa7 + xa_3 * wa8
        da3 = pa3 + xa_2 * wa6 + xa_3 * wa7 + xa_r * wa8
        pa0 = ca0 + xa_l * wa3 + xa_0 * wa4 + xa_1 * wa5
        pa1 = ca1 + xa_0 * wa3 + xa_1 * wa4 + xa_2 * wa5
        pa2 = ca2 + xa_1 * wa3 + xa_2 * wa4 + xa_3 * wa5
        pa3 = ca3 + xa_2 * wa3 + xa_3 * wa4 + xa_r * wa5
        ca0 = bias_a + xa_l * wa0 + xa_0 * wa1 + xa_1 * wa2
        ca1 = bias_a + xa_0 * wa0 + xa_1 * wa1 + xa_2 * wa2
        ca2 = bias_a + xa_1 * wa0 + xa_2 * wa1 + xa_3 * wa2
        ca3 = bias_a + xa_2 * wa0 + xa_3 * wa1 + xa_r * wa2
        dg0 = pg0 + xg_l * wg6 + xg_0 * wg7 + xg_1 * wg8
        dg1 = pg1 + xg_0 * wg6 + xg_1 * wg7 + xg_2 * wg8
        dg2 = pg2 + xg_1 * wg6 + xg_2 * wg7 + xg_3 * wg8
        dg3 = pg3 + xg_2 * wg6 + xg_3 * wg7 + xg_r * wg8
        pg0 = cg0 + xg_l * wg3 + xg_0 * wg4 + xg_1 * wg5
        pg1 = cg1 + xg_0 * wg3 + xg_1 * wg4 + xg_2 * wg5
        pg2 = cg2 + xg_1 * wg3 + xg_2 * wg4 + xg_3 * wg5
        pg3 = cg3 + xg_2 * wg3 + xg_3 * wg4 + xg_r * wg5
        cg0 = bias_g + xg_l * wg0 + xg_0 * wg1 + xg_1 * wg2
        cg1 = bias_g + xg_0 * wg0 + xg_1 * wg1 + xg_2 * wg2
        cg2 = bias_g + xg_1 * wg0 + xg_2 * wg1 + xg_3 * wg2
        cg3 = bias_g + xg_2 * wg0 + xg_3 * wg1 + xg_r * wg2
        # GLU: out = a * SiLU(g)
        if FAST_SIGMOID:   # HALVED_GATE: the sums are g / 2 already
            dg0, dg1, dg2, dg3 = tl.inline_asm_elementwise(
                _SILU4_HALVED_PTX if HALVED_GATE else _SILU4_PTX, _SILU4_CONSTRAINTS, [dg0, dg1, dg2, dg3],
                dtype=(tl.float32,) * 4, is_pure=True, pack=1)
        else:
            dg0 = dg0 * tl.sigmoid(dg0)
            dg1 = dg1 * tl.sigmoid(dg1)
            dg2 = dg2 * tl.sigmoid(dg2)
            dg3 = dg3 * tl.sigmoid(dg3)
        o0 = da0 * dg0
        o1 = da1 * dg1
        o2 = da2 * dg2
        o3 = da3 * dg3
        if FP8_OUT:   # E4M3 for an FP8 consumer (core/kernels/fp8_out.py): value / scale, saturated, RNE
            o0 = tl.clamp(o0 * inv_scale, -448.0, 448.0, propagate_nan=tl.PropagateNan.ALL)
            o1 = tl.clamp(o1 * inv_scale, -448.0, 448.0, propagate_nan=tl.PropagateNan.ALL)
            o2 = tl.clamp(o2 * inv_scale, -448.0, 448.0, propagate_nan=tl.PropagateNan.ALL)
            o3 = tl.clamp(o3 * inv_scale, -448.0, 448.0, propagate_nan=tl.PropagateNan.ALL)
        store = (zero_g + i - 1 >= r0)[:, None]                          # output row i-1 belongs to this program
        ob = (o_base + ((i - 1) * W).to(tl.int64) * s_op
              + (frame * s_ot + col0.to(tl.int64) * s_op)[:, None] + offs_c[None, :])
        tl.store(ob, o0.to(out_ptr.dtype.element_ty), mask=m_0 & store)
        tl.store(ob + s_op, o1.to(out_ptr.dtype.element_ty), mask=m_1 & store)
        tl.store(ob + 2 * s_op, o2.to(out_ptr.dtype.element_ty), mask=m_2 & store)
        tl.store(ob + 3 * s_op, o3.to(out_ptr.dtype.element_ty), mask=m_3 & store)


def launch_shape(BT: int, H: int, W: int, F: int, device: torch.device) -> tuple[int, int, int, int, int]:
    """(BLOCK_G, BLOCK_C, rows per program, slot blocks, slots) for a (BT, H, W, 2F) input under CFG."""
    slots = BT * triton.cdiv(W, 4)
    block_g = max(1, min(CFG["block_g"], triton.next_power_of_2(slots)))
    block_c = max(16, min(CFG["block_c"], triton.next_power_of_2(max(F, 1))))
    slot_blocks = triton.cdiv(slots, block_g)
    rows = CFG["rows"]
    if rows is None:
        # whole frames when that already gives enough programs, else shorter runs of rows (2 extra rows each)
        base = slot_blocks * triton.cdiv(F, block_c)
        want = CFG["waves"] * sm_count(device)
        rows = H if base >= want else max(4, triton.cdiv(H * base, want))
    return block_g, block_c, max(1, min(rows, H)), slot_blocks, slots


def dwconv3x3_glu_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         silu_input: bool = False, out: torch.Tensor | None = None,
                         out_scale: torch.Tensor | None = None, halved_input: bool = False) -> torch.Tensor:
    C = _check(x, weight, bias, silu_input, halved_input)
    BT, H, W, _ = x.shape
    F = C // 2
    # pixels of a frame must be one strided run: (H, W, C) contiguous per frame, any frame stride
    if x.stride(3) != 1 or x.stride(2) != C or x.stride(1) != W * C:
        x = x.contiguous()
    w = weight.reshape(C, 9).contiguous()         # (2F, 9): a view of the conv weight (loaded once per program)
    b = bias.contiguous() if bias is not None else w
    out_dtype = x.dtype if out_scale is None else torch.float8_e4m3fn
    if out is None:
        out = empty((BT, H, W, F), out_dtype, x.device)
    elif tuple(out.shape) != (BT, H, W, F) or out.dtype != out_dtype or not out.is_contiguous():
        raise ValueError("out must be a contiguous (B*T, H, W, F) tensor in x.dtype (FP8 with out_scale)")
    scale = w if out_scale is None else kernel_scale(out_scale, x.device)
    if BT * H * W * F == 0:
        return out
    fast = bool(CFG["fast_sigmoid"]) and x.is_cuda and x.element_size() == 2
    block_g, block_c, rows, slot_blocks, slots = launch_shape(BT, H, W, F, x.device)
    grid = (triton.cdiv(H, rows) * slot_blocks, triton.cdiv(F, block_c))
    _dwconv_glu_slots_kernel.on(x.device)[grid](
        x, w, b, out, scale, H, W, F, rows, slot_blocks, slots, triton.cdiv(W, 4), x.stride(0), C, out.stride(0), F,
        HAS_BIAS=bias is not None, SILU_INPUT=bool(silu_input), FAST_SIGMOID=fast,
        BLOCK_G=block_g, BLOCK_C=block_c, FP8_OUT=out_scale is not None,
        HALVED_INPUT=bool(halved_input), HALVED_GATE=fast and bool(CFG["half_gate"]), num_warps=CFG["num_warps"],
    )
    return out
