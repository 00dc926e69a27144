"""Triton kernels for linear attention folded into the out projection; math in core/kernels/attn_fold.py.

`_ratio_kernel` (memory-bound: read q, write r): one program per (tile of BLOCK_N tokens, sample), looping over the
heads. With q's RMSNorm statistic computed here, a first loop sums each token's squares over all heads (the re-read in
the second loop comes from L2: a program's rows are a few tens of KB). Rows load as contiguous (BLOCK_N, D_PAD)
tiles; RoPE pairs are separated in registers (reshape + split) and interleaved again (join), as in
linear_attention_triton. d = 112 pads to 128 (pairs 56 -> 64) with masks. cos/sin are the same for every head: loaded
once per program.

`_fold_kernel` (tiny product): one program per (chunk of output rows, head, sample); loads vk[b, h] once, then one
(BLOCK_O, d) x (d, d) product per tile of rows. It must be fp32-accurate, as the reference: in the bf16 mode (MODE 1)
the weight is bf16 (exact) and the fp32 vk is split into bf16 pieces (vk = p1 + p2 [+ p3]) multiplied on bf16 tensor
cores with fp32 accumulation: two pieces (~2^-17 relative) for 16-bit outputs, three (exact up to fp32 accumulation)
for fp32 outputs. MODE 0: plain fp32 products (fp32 / fp16 weights); MODE 2: MODE 1's arithmetic in fp32 for the CPU
interpreter (core/kernels/_triton.py dot_mode).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from core.kernels._triton import Kernel, dot_mode, empty, sm_count
from core.kernels.attn_fold import _check_fold_args, _check_ratio_args
from core.kernels.linear_attention_triton import _check_rope, _last_dim_contiguous, _pads

# Launch settings, module-level so that a bench can sweep them (untuned guesses: ratio is a streaming kernel, fold is
# ~10 MB of weight in and out per sample).
RATIO_CFG = {"block_n": 32, "num_warps": 4}
FOLD_CFG = {"block_o": 64, "num_warps": 4, "num_stages": 2, "waves": 2}
# the fp32 mode (fp32 / fp16 weights, not the hot path) multiplies on CUDA cores: smaller tiles, more warps, or the
# (BLOCK_O, d) x (d, d) product spills (sm_90, Triton 3.9: 64 rows x 4 warps spill 13 KB of stack; 32 x 8 none)
_FP32_FOLD_CFG = {"block_o": 32, "num_warps": 8}

# RSTD modes of the ratio kernel
_NO_RSTD, _GIVEN_RSTD, _COMPUTED_RSTD = 0, 1, 2


@Kernel
def _ratio_kernel(q_ptr, ks_ptr, cos_ptr, sin_ptr, out_ptr, qw_ptr, qr_ptr,
                  N, H, eps, norm_eps,
                  s_qb, s_qn, s_qh, s_rb,
                  D: tl.constexpr, HALF: tl.constexpr, D_PAD: tl.constexpr, HALF_PAD: tl.constexpr,
                  BLOCK_N: tl.constexpr, HAS_QW: tl.constexpr, RSTD: tl.constexpr, EXACT_DIV: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    rows = offs_n.to(tl.int64)
    offs_d = tl.arange(0, D_PAD)                          # channel index within a head
    offs_j = tl.arange(0, HALF_PAD)                       # pair index
    mask_d = offs_d < D
    m_nd = mask_n[:, None] & mask_d[None, :]
    q_rows = q_ptr + b * s_qb + rows[:, None] * s_qn + offs_d[None, :]     # head 0 of each token

    # rstd: each token's 1/rms of q across heads (q's RMSNorm); relu(rstd q w) = rstd relu(q w) for rstd > 0, so it
    # enters once per row below instead of once per element
    if RSTD == 2:
        ss = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for h in range(0, H):
            x = tl.load(q_rows + h * s_qh, mask=m_nd, other=0.0).to(tl.float32)
            ss += tl.sum(x * x, axis=1)
        # as core.kernels.rms_norm_triton: IEEE sqrt and division (tl.rsqrt is approximate)
        rstd = tl.div_rn(1.0, tl.sqrt_rn(ss / (H * D) + norm_eps))
    elif RSTD == 1:
        rstd = tl.load(qr_ptr + b * s_rb + rows, mask=mask_n, other=1.0)
    else:
        rstd = tl.full((BLOCK_N,), 1.0, tl.float32)

    m_nj = mask_n[:, None] & (offs_j < HALF)[None, :]
    cs_off = rows[:, None] * HALF + offs_j[None, :]
    c = tl.load(cos_ptr + cs_off, mask=m_nj, other=0.0)                    # (BLOCK_N, HALF_PAD), all heads
    s = tl.load(sin_ptr + cs_off, mask=m_nj, other=0.0)
    o_rows = out_ptr + (b * N + rows)[:, None] * (H * D) + offs_d[None, :]  # r is contiguous (B, N, H, d)
    for h in range(0, H):
        qq = tl.load(q_rows + h * s_qh, mask=m_nd, other=0.0).to(tl.float32)              # (BLOCK_N, D_PAD)
        if HAS_QW:
            qq = qq * tl.load(qw_ptr + h * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
        qq = tl.maximum(qq, 0.0)
        ks = tl.load(ks_ptr + (b * H + h) * D + offs_d, mask=mask_d, other=0.0)
        den = tl.sum(qq * ks[None, :], axis=1)                                             # unrotated
        qe, qo = tl.split(tl.reshape(qq, (BLOCK_N, HALF_PAD, 2)))
        qr = tl.reshape(tl.join(qe * c - qo * s, qe * s + qo * c), (BLOCK_N, D_PAD))      # rotated, interleaved
        den_r = rstd * den + eps                                               # rstd qr / (rstd den + eps)
        if EXACT_DIV:
            # fp32 outputs: IEEE division per element (Triton's `/` is a 2-ulp approximation)
            out = tl.div_rn(qr * rstd[:, None], tl.broadcast_to(den_r[:, None], (BLOCK_N, D_PAD)))
        else:
            # 16-bit outputs: one IEEE division per row (~1 fp32 ulp more error, far below the output's rounding)
            out = qr * tl.div_rn(rstd, den_r)[:, None]
        tl.store(o_rows + h * D, out.to(out_ptr.dtype.element_ty), mask=m_nd)


@Kernel
def _fold_kernel(w_ptr, vk_ptr, g_ptr, out_ptr,
                 D_out, H, rows_per_prog, s_w, s_gb,
                 D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_O: tl.constexpr, MODE: tl.constexpr,
                 PIECES: tl.constexpr, HAS_GATE: tl.constexpr):
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_d = tl.arange(0, D_PAD)
    mask_d = offs_d < D
    # vk[b, h] in its natural (i, j) layout: M's row o is W's row o (head h's channels i) times vk
    vk = tl.load(vk_ptr + (b * H + h) * (D * D) + offs_d[:, None] * D + offs_d[None, :],
                 mask=mask_d[:, None] & mask_d[None, :], other=0.0)                       # (D_PAD, D_PAD) fp32
    if MODE != 0:
        # bf16 pieces of vk, split once per program
        p1 = vk.to(tl.bfloat16)
        res = vk - p1.to(tl.float32)
        p2 = res.to(tl.bfloat16)
        if PIECES == 3:
            p3 = (res - p2.to(tl.float32)).to(tl.bfloat16)

    start = tl.program_id(0) * rows_per_prog
    end = tl.minimum(start + rows_per_prog, D_out)
    HD = H * D
    for o0 in range(start, end, BLOCK_O):
        offs_o = o0 + tl.arange(0, BLOCK_O)
        mask_o = offs_o < end
        rows = offs_o.to(tl.int64)
        m_od = mask_o[:, None] & mask_d[None, :]
        w = tl.load(w_ptr + rows[:, None] * s_w + h * D + offs_d[None, :], mask=m_od, other=0.0)   # (BLOCK_O, D_PAD)
        if MODE == 0:
            acc = tl.dot(w.to(tl.float32), vk, input_precision="ieee")
        elif MODE == 1:
            wb = w.to(tl.bfloat16)                        # exact: MODE 1 means bf16 weights
            if PIECES == 3:
                acc = tl.dot(wb, p3)
                acc = tl.dot(wb, p2, acc)
            else:
                acc = tl.dot(wb, p2)
            acc = tl.dot(wb, p1, acc)                     # smallest pieces first
        else:
            wf = w.to(tl.bfloat16).to(tl.float32)
            if PIECES == 3:
                acc = tl.dot(wf, p3.to(tl.float32), input_precision="ieee")
                acc = tl.dot(wf, p2.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(wf, p2.to(tl.float32), input_precision="ieee")
            acc = tl.dot(wf, p1.to(tl.float32), acc, input_precision="ieee")
        if HAS_GATE:
            acc = acc * tl.load(g_ptr + b * s_gb + rows, mask=mask_o, other=0.0).to(tl.float32)[:, None]
        tl.store(out_ptr + (b * D_out + rows)[:, None] * HD + h * D + offs_d[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=m_od)


def linear_attn_ratio_triton(q: torch.Tensor, k_sum: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float,
                             q_weight: torch.Tensor | None = None, q_rstd: torch.Tensor | None = None,
                             q_norm_eps: float | None = None) -> torch.Tensor:
    """r (B, N, H, d) contiguous in q.dtype (same contract as attn_fold.linear_attn_ratio_reference)."""
    _check_ratio_args(q, k_sum, q_weight, q_rstd, q_norm_eps)
    cos, sin = _check_rope("q", q, cos, sin)                              # fp32, contiguous
    B, N, H, d = q.shape
    q = _last_dim_contiguous(q)
    device = q.device
    k_sum = k_sum.to(torch.float32).contiguous()
    qw = k_sum if q_weight is None else q_weight.contiguous()              # placeholders: their flag is off
    qr = k_sum if q_rstd is None else _last_dim_contiguous(q_rstd.to(torch.float32))
    out = empty((B, N, H, d), q.dtype, device)
    if B * N * H == 0:
        return out
    rstd_mode = _GIVEN_RSTD if q_rstd is not None else _COMPUTED_RSTD if q_norm_eps is not None else _NO_RSTD
    d_pad, half_pad = _pads(d)
    block_n = RATIO_CFG["block_n"]
    _ratio_kernel.on(device)[(triton.cdiv(N, block_n), B)](
        q, k_sum, cos, sin, out, qw, qr,
        N, H, float(eps), 0.0 if q_norm_eps is None else float(q_norm_eps),
        q.stride(0), q.stride(1), q.stride(2), qr.stride(0) if q_rstd is not None else 0,
        D=d, HALF=d // 2, D_PAD=d_pad, HALF_PAD=half_pad, BLOCK_N=block_n, HAS_QW=q_weight is not None,
        RSTD=rstd_mode, EXACT_DIV=out.element_size() >= 4, num_warps=RATIO_CFG["num_warps"],
    )
    return out


def fold_out_projection_triton(weight: torch.Tensor, vk: torch.Tensor, gate: torch.Tensor | None = None,
                               out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """M (B, D_out, H*d) contiguous in out_dtype (default weight.dtype); same contract as the reference."""
    _check_fold_args(weight, vk, gate)
    B, H, d, _ = vk.shape
    D_out = weight.shape[0]
    weight = _last_dim_contiguous(weight)
    vk = vk.to(torch.float32).contiguous()
    g = vk if gate is None else _last_dim_contiguous(gate)
    out_dtype = out_dtype or weight.dtype
    device = weight.device
    out = empty((B, D_out, H * d), out_dtype, device)
    if out.numel() == 0:
        return out
    d_pad, _ = _pads(d)
    mode = dot_mode(weight.dtype, device)
    cfg = FOLD_CFG if mode != 0 else {**FOLD_CFG, **_FP32_FOLD_CFG}
    block_o = cfg["block_o"]
    # programs per (sample, head): enough for `waves` waves; each loads and splits its vk[b, h] once
    n_tiles = triton.cdiv(D_out, block_o)
    progs = max(1, min(n_tiles, triton.cdiv(cfg["waves"] * sm_count(device), B * H)))
    rows_per_prog = triton.cdiv(n_tiles, progs) * block_o
    _fold_kernel.on(device)[(triton.cdiv(D_out, rows_per_prog), H, B)](
        weight, vk, g, out,
        D_out, H, rows_per_prog, weight.stride(0), g.stride(0) if gate is not None else 0,
        D=d, D_PAD=d_pad, BLOCK_O=block_o, MODE=mode,
        PIECES=3 if out.element_size() >= 4 else 2, HAS_GATE=gate is not None,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out
