"""Triton depthwise 3x3 conv + bias + GLU on channels-last features; math in core/kernels/dwconv_glu.py.

Memory-bound: per token it reads 2F inputs and writes F outputs (480p block: 15,600 tokens x 13,440 channels,
~0.63 GB, ~0.2 ms at 3 TB/s).

Version 2 (row sweep). A program owns one frame, a (BLOCK_W columns x BLOCK_C channels) strip of both GLU halves and a
run of output rows. It walks down the input rows once: each input row is loaded at the three column shifts (the two
shifted loads hit L1) and added into the three output rows it touches, which are carried between iterations as
partial sums (row i completes output row i-1, then starts output row i+1), and the next row's loads are issued before
the current row is computed (software prefetch). So each input element is read from DRAM once and, with `silu_input`,
activated 3 times (version 1: a 16-pixel tile loaded each of the 9 taps through L2 and applied SiLU 9 times per
element, 1.55 ms at the block's sizes; this one: ~0.8 ms, see docs/perf-notes.md)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from core.kernels._triton import Kernel, empty, sm_count
from core.kernels.dwconv_glu import _check

# Launch settings (H100, one 480p block; docs/perf-notes.md); module-level so the bench can sweep them.
# block_w / block_c: the (columns x channels) strip of a program; rows: output rows per program (None: whole frames
# when that already gives `waves` waves of programs); fast_sigmoid: SiLU's sigmoid as 0.5 + 0.5 tanh(x/2) on the
# GPU's tanh unit (one special-function op instead of exp + reciprocal; ~1e-3 relative error per sigmoid, used for
# 16-bit / FP8 outputs only, whose own rounding is 4e-3 or more), for the input SiLU and the GLU gate; maxnreg: register cap per thread (None: ptxas's choice, ~178
# for 64 x 16 x 8 warps, one program per SM); hoist_w: keep the 18 tap-weight rows in registers across the row loop
# instead of reloading them from L1 every row (costs 18 x channels-per-thread registers).
# Run 5 sweep (H100, one 480p block): 32 x 32, 8 warps, cap 128, hoisted: 0.59 ms, no spills (ptxas -v: 128
# registers); 64 x 16 not hoisted: 0.71 ms; first row-sweep cut: 1.9 ms (255 registers, spills).
# Run 11: SiLU / GLU gate as h + h tanh(h) (h = x/2) and the bias folded into each output row's first sum: 0.551 vs
# 0.60 ms on the same machine (ncu: the kernel is issue-bound, 77% SM throughput, DRAM 31%).
# Tried and removed (docs/perf-notes.md, runs 6-10): each row loaded once and shifted in registers with tl.gather
# (0.64-0.68 ms at 64 x 16, no faster; 1.1 ms at 32 x 32), an L2 prefetch of rows ahead (~1.05 ms) and the centre
# tiles loaded two rows ahead (0.87 ms at best; 2.2 ms with the 128-register cap, which then spills).
CFG = {"block_w": 32, "block_c": 32, "num_warps": 8, "rows": None, "waves": 4, "fast_sigmoid": True, "maxnreg": 128,
       "hoist_w": True}


@Kernel
def _dwconv_glu_rows_kernel(x_ptr, w_ptr, b_ptr, out_ptr, scale_ptr,
                            H, W, F, rows_per_prog, n_wblocks,
                            s_xt, s_xp, s_ot, s_op,
                            HAS_BIAS: tl.constexpr, SILU_INPUT: tl.constexpr, FAST_SIGMOID: tl.constexpr,
                            HOIST_W: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                            FP8_OUT: tl.constexpr = False):
    pid_rw = tl.program_id(0)
    pid_c = tl.program_id(1)
    frame = tl.program_id(2).to(tl.int64)
    r0 = (pid_rw // n_wblocks) * rows_per_prog
    r1 = tl.minimum(r0 + rows_per_prog, H)
    offs_w = (pid_rw % n_wblocks) * BLOCK_W + tl.arange(0, BLOCK_W)     # output column
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)                     # output channel (GLU value half)
    mask_c = offs_c < F
    mask_w = offs_w < W
    x_base = x_ptr + frame * s_xt
    o_base = out_ptr + frame * s_ot

    # tap weights w (9, 2F), tap = dh * 3 + dw: loaded inside the loop right before use (L1 hits). Held across the
    # loop, the 18 weight rows of BLOCK_C channels took ~144 registers per thread and the kernel spilled.
    wa_ptr = w_ptr + offs_c
    wg_ptr = w_ptr + F + offs_c
    if HOIST_W:   # alternative: all 18 weight rows in registers for the whole loop (fewer loads, more registers)
        wa0 = tl.load(wa_ptr + 0 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wa1 = tl.load(wa_ptr + 1 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wa2 = tl.load(wa_ptr + 2 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wa3 = tl.load(wa_ptr + 3 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wa4 = tl.load(wa_ptr + 4 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wa5 = tl.load(wa_ptr + 5 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wa6 = tl.load(wa_ptr + 6 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wa7 = tl.load(wa_ptr + 7 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wa8 = tl.load(wa_ptr + 8 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wg0 = tl.load(wg_ptr + 0 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wg1 = tl.load(wg_ptr + 1 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wg2 = tl.load(wg_ptr + 2 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wg3 = tl.load(wg_ptr + 3 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wg4 = tl.load(wg_ptr + 4 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wg5 = tl.load(wg_ptr + 5 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wg6 = tl.load(wg_ptr + 6 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wg7 = tl.load(wg_ptr + 7 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        wg8 = tl.load(wg_ptr + 8 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    else:
        wa0 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wa1 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wa2 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wa3 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wa4 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wa5 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wa6 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wa7 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wa8 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wg0 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wg1 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wg2 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wg3 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wg4 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wg5 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wg6 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wg7 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        wg8 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
    # column shifts: input column = output column - 1, +0, +1 (zero padding outside the frame)
    col_l = offs_w - 1
    col_r = offs_w + 1
    ok_l = (col_l >= 0) & (col_l < W)
    ok_c = mask_w
    ok_r = col_r < W
    # pointer offsets of the three column shifts within a row, and their masks (without the row's own validity)
    off_l = col_l[:, None] * s_xp + offs_c[None, :]
    off_c = offs_w[:, None] * s_xp + offs_c[None, :]
    off_r = col_r[:, None] * s_xp + offs_c[None, :]
    # the bias starts each output row's sum (cur_* below), so it is added once per output without a separate add
    if HAS_BIAS:
        bias_a = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
        bias_g = tl.load(b_ptr + F + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    else:
        bias_a = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        bias_g = tl.zeros((1, BLOCK_C), dtype=tl.float32)
    # FP8 output: multiply by 1/scale (one division per program; at most 1 ulp of fp32 from value / scale, far below
    # the E4M3 step)
    inv_scale = 1.0 / tl.load(scale_ptr) if FP8_OUT else 1.0
    # partial sums: prev_* = output row i-1 (rows i-2, i-1 added), cur_* = output row i (row i-1 added)
    prev_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    prev_g = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    cur_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    cur_g = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    # software prefetch: row i+1 is loaded while row i is computed (Triton pipelines only loads that feed dots;
    # without it a program had one row of loads in flight and the kernel ran at ~0.8 TB/s, latency-bound)
    jv = offs_w * 0 + (r0 - 1)                                           # (BLOCK_W,) first input row
    ok = (jv >= 0) & (jv < H)
    rb = x_base + (r0 - 1) * W * s_xp
    na_l = tl.load(rb + off_l, mask=(ok_l & ok)[:, None] & mask_c[None, :], other=0.0)
    na_c = tl.load(rb + off_c, mask=(ok_c & ok)[:, None] & mask_c[None, :], other=0.0)
    na_r = tl.load(rb + off_r, mask=(ok_r & ok)[:, None] & mask_c[None, :], other=0.0)
    ng_l = tl.load(rb + F + off_l, mask=(ok_l & ok)[:, None] & mask_c[None, :], other=0.0)
    ng_c = tl.load(rb + F + off_c, mask=(ok_c & ok)[:, None] & mask_c[None, :], other=0.0)
    ng_r = tl.load(rb + F + off_r, mask=(ok_r & ok)[:, None] & mask_c[None, :], other=0.0)
    for i in range(r0 - 1, r1 + 1):                                      # input rows
        iv = offs_w * 0 + i                                              # (BLOCK_W,) row index as a vector
        xa_l = na_l.to(tl.float32)
        xa_c = na_c.to(tl.float32)
        xa_r = na_r.to(tl.float32)
        xg_l = ng_l.to(tl.float32)
        xg_c = ng_c.to(tl.float32)
        xg_r = ng_r.to(tl.float32)
        ok = (iv + 1 < H) & (iv + 1 <= r1)                               # row i+1 is needed and exists
        rb = x_base + (i + 1) * W * s_xp
        na_l = tl.load(rb + off_l, mask=(ok_l & ok)[:, None] & mask_c[None, :], other=0.0)
        na_c = tl.load(rb + off_c, mask=(ok_c & ok)[:, None] & mask_c[None, :], other=0.0)
        na_r = tl.load(rb + off_r, mask=(ok_r & ok)[:, None] & mask_c[None, :], other=0.0)
        ng_l = tl.load(rb + F + off_l, mask=(ok_l & ok)[:, None] & mask_c[None, :], other=0.0)
        ng_c = tl.load(rb + F + off_c, mask=(ok_c & ok)[:, None] & mask_c[None, :], other=0.0)
        ng_r = tl.load(rb + F + off_r, mask=(ok_r & ok)[:, None] & mask_c[None, :], other=0.0)
        if SILU_INPUT:  # zero padding stays zero: SiLU(0) = 0
            if FAST_SIGMOID:
                xa_l = 0.5 * xa_l    # SiLU(x) = h + h tanh(h), h = x/2: one MUFU op, one FMA
                xa_l = xa_l + xa_l * tl.inline_asm_elementwise(
                    "tanh.approx.f32 $0, $1;", "=r,r", [xa_l], dtype=tl.float32, is_pure=True, pack=1)
                xa_c = 0.5 * xa_c    # SiLU(x) = h + h tanh(h), h = x/2: one MUFU op, one FMA
                xa_c = xa_c + xa_c * tl.inline_asm_elementwise(
                    "tanh.approx.f32 $0, $1;", "=r,r", [xa_c], dtype=tl.float32, is_pure=True, pack=1)
                xa_r = 0.5 * xa_r    # SiLU(x) = h + h tanh(h), h = x/2: one MUFU op, one FMA
                xa_r = xa_r + xa_r * tl.inline_asm_elementwise(
                    "tanh.approx.f32 $0, $1;", "=r,r", [xa_r], dtype=tl.float32, is_pure=True, pack=1)
            else:
                xa_l = xa_l * tl.sigmoid(xa_l)
                xa_c = xa_c * tl.sigmoid(xa_c)
                xa_r = xa_r * tl.sigmoid(xa_r)
        # input row i is kernel row dh=2 of output row i-1, dh=1 of output row i, dh=0 of output row i+1
        done_a = (prev_a
                  + xa_l * (wa6 if HOIST_W else
                               tl.load(wa_ptr + 6 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                  + xa_c * (wa7 if HOIST_W else
                               tl.load(wa_ptr + 7 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                  + xa_r * (wa8 if HOIST_W else
                               tl.load(wa_ptr + 8 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]))
        prev_a = (cur_a
                  + xa_l * (wa3 if HOIST_W else
                               tl.load(wa_ptr + 3 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                  + xa_c * (wa4 if HOIST_W else
                               tl.load(wa_ptr + 4 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                  + xa_r * (wa5 if HOIST_W else
                               tl.load(wa_ptr + 5 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]))
        cur_a = (bias_a + xa_l * (wa0 if HOIST_W else
                            tl.load(wa_ptr + 0 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                 + xa_c * (wa1 if HOIST_W else
                              tl.load(wa_ptr + 1 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                 + xa_r * (wa2 if HOIST_W else
                              tl.load(wa_ptr + 2 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]))
        if SILU_INPUT:
            if FAST_SIGMOID:
                xg_l = 0.5 * xg_l    # SiLU(x) = h + h tanh(h), h = x/2: one MUFU op, one FMA
                xg_l = xg_l + xg_l * tl.inline_asm_elementwise(
                    "tanh.approx.f32 $0, $1;", "=r,r", [xg_l], dtype=tl.float32, is_pure=True, pack=1)
                xg_c = 0.5 * xg_c    # SiLU(x) = h + h tanh(h), h = x/2: one MUFU op, one FMA
                xg_c = xg_c + xg_c * tl.inline_asm_elementwise(
                    "tanh.approx.f32 $0, $1;", "=r,r", [xg_c], dtype=tl.float32, is_pure=True, pack=1)
                xg_r = 0.5 * xg_r    # SiLU(x) = h + h tanh(h), h = x/2: one MUFU op, one FMA
                xg_r = xg_r + xg_r * tl.inline_asm_elementwise(
                    "tanh.approx.f32 $0, $1;", "=r,r", [xg_r], dtype=tl.float32, is_pure=True, pack=1)
            else:
                xg_l = xg_l * tl.sigmoid(xg_l)
                xg_c = xg_c * tl.sigmoid(xg_c)
                xg_r = xg_r * tl.sigmoid(xg_r)
        done_g = (prev_g
                  + xg_l * (wg6 if HOIST_W else
                               tl.load(wg_ptr + 6 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                  + xg_c * (wg7 if HOIST_W else
                               tl.load(wg_ptr + 7 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                  + xg_r * (wg8 if HOIST_W else
                               tl.load(wg_ptr + 8 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]))
        prev_g = (cur_g
                  + xg_l * (wg3 if HOIST_W else
                               tl.load(wg_ptr + 3 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                  + xg_c * (wg4 if HOIST_W else
                               tl.load(wg_ptr + 4 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                  + xg_r * (wg5 if HOIST_W else
                               tl.load(wg_ptr + 5 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]))
        cur_g = (bias_g + xg_l * (wg0 if HOIST_W else
                            tl.load(wg_ptr + 0 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                 + xg_c * (wg1 if HOIST_W else
                              tl.load(wg_ptr + 1 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :])
                 + xg_r * (wg2 if HOIST_W else
                              tl.load(wg_ptr + 2 * 2 * F, mask=mask_c, other=0.0).to(tl.float32)[None, :]))
        if FAST_SIGMOID:
            done_g = 0.5 * done_g
            out = done_a * (done_g + done_g * tl.inline_asm_elementwise(
                "tanh.approx.f32 $0, $1;", "=r,r", [done_g], dtype=tl.float32, is_pure=True, pack=1))
        else:
            out = done_a * (done_g * tl.sigmoid(done_g))
        if FP8_OUT:   # E4M3 for an FP8 consumer (core/kernels/fp8_out.py): value / scale, saturated, RNE
            out = tl.clamp(out * inv_scale, -448.0, 448.0)
        m_o = (mask_w & (iv - 1 >= r0))[:, None] & mask_c[None, :]
        tl.store(o_base + ((iv - 1) * W + offs_w).to(tl.int64)[:, None] * s_op + offs_c[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=m_o)


def launch_shape(BT: int, H: int, W: int, F: int, device: torch.device) -> tuple[int, int, int, int]:
    """(BLOCK_W, BLOCK_C, rows per program, column blocks) for a (BT, H, W, 2F) input under CFG."""
    block_w = max(16, min(triton.next_power_of_2(max(W, 1)), CFG["block_w"]))
    block_c = max(16, min(CFG["block_c"], triton.next_power_of_2(max(F, 1))))
    n_wblocks = triton.cdiv(W, block_w)
    rows = CFG["rows"]
    if rows is None:
        # whole frames when that already gives enough programs, else shorter runs of rows (2 extra rows each)
        base = BT * n_wblocks * triton.cdiv(F, block_c)
        want = CFG["waves"] * sm_count(device)
        rows = H if base >= want else max(4, triton.cdiv(H * base, want))
    return block_w, block_c, max(1, min(rows, H)), n_wblocks


def dwconv3x3_glu_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         silu_input: bool = False, out: torch.Tensor | None = None,
                         out_scale: torch.Tensor | None = None) -> torch.Tensor:
    C = _check(x, weight, bias)
    BT, H, W, _ = x.shape
    F = C // 2
    # pixels of a frame must be one strided run: (H, W, C) contiguous per frame, any frame stride
    if x.stride(3) != 1 or x.stride(2) != C or x.stride(1) != W * C:
        x = x.contiguous()
    w = weight.reshape(C, 9).t().contiguous()     # (9, 2F): each tap's weights load as one contiguous vector
    b = bias.contiguous() if bias is not None else w
    out_dtype = x.dtype if out_scale is None else torch.float8_e4m3fn
    if out is None:
        out = empty((BT, H, W, F), out_dtype, x.device)
    elif tuple(out.shape) != (BT, H, W, F) or out.dtype != out_dtype or not out.is_contiguous():
        raise ValueError("out must be a contiguous (B*T, H, W, F) tensor in x.dtype (FP8 with out_scale)")
    scale = w if out_scale is None else out_scale.to(device=x.device, dtype=torch.float32).reshape(1)
    if BT * H * W * F == 0:
        return out
    block_w, block_c, rows, n_wblocks = launch_shape(BT, H, W, F, x.device)
    grid = (triton.cdiv(H, rows) * n_wblocks, triton.cdiv(F, block_c), BT)
    _dwconv_glu_rows_kernel.on(x.device)[grid](
        x, w, b, out, scale, H, W, F, rows, n_wblocks,
        x.stride(0), C, out.stride(0), F,
        HAS_BIAS=bias is not None, SILU_INPUT=bool(silu_input),
        FAST_SIGMOID=bool(CFG["fast_sigmoid"]) and x.is_cuda and x.element_size() == 2,
        HOIST_W=bool(CFG.get("hoist_w")),
        BLOCK_W=block_w, BLOCK_C=block_c, FP8_OUT=out_scale is not None,
        num_warps=CFG["num_warps"], **({"maxnreg": CFG["maxnreg"]} if CFG.get("maxnreg") else {}),
    )
    return out
