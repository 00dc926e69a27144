"""Triton kernels for ReLU linear attention with RoPE on the numerator (math: core/kernels/linear_attention.py).

Layout: q, k, v (B, N, H, d) token-major, any strides with a contiguous last dim (views of the fused qkv projection
work without a copy); cos/sin (N, d/2) fp32; interleaved RoPE pairs (x[2j], x[2j+1]).

Pairs are handled as separate even / odd halves: loading x[..., 0::2] and x[..., 1::2] as two (BLOCK_N, HALF_PAD)
tiles makes the rotation elementwise, and the d x d state is built as two (d, d/2) column halves. d = 112 is padded to
128 (pairs 56 -> 64) with masks.

Accuracy: the references accumulate in fp32 from exact inputs, so the kernels must be fp32-accurate, not bf16-accurate.
A plain bf16 tensor-core product of the rotated keys would round them to bf16 (about 3e-3 relative error). Instead,
in the bf16 mode (MODE 1) every fp32 operand that is not already a bf16 value is split into bf16 pieces
(x = x1 + x2 [+ x3]) and the pieces are multiplied on bf16 tensor cores with fp32 accumulation:
- state: v is bf16 (exact); the rotated keys get three pieces, so v k_rot^T is exact up to fp32 accumulation.
- apply: the fp32 state and the rotated queries get two pieces each (3 products, hi*lo + lo*hi + hi*hi): error about
  2^-16 relative, far below the bf16 rounding of the output.
MODE 0 multiplies in plain fp32 (non-bf16 inputs); MODE 2 is MODE 1's arithmetic with fp32 operands, for the CPU
interpreter (which cannot multiply bf16 operands).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from core.kernels._triton import Kernel, dot_mode, empty, sm_count

# Token tile per loop step. The fp32 mode (non-bf16 inputs, not the hot path) uses half the tile so its fp32
# operand buffers stay well inside the 227 KB of shared memory a Hopper block may use.
_BLOCK_N = {0: 32, 1: 64, 2: 64}
_NUM_STAGES = 2


@Kernel
def _state_kernel(k_ptr, v_ptr, cos_ptr, sin_ptr, vk_ptr, ks_ptr,
                  N, H, tokens_per_split,
                  s_kb, s_kn, s_kh, s_vb, s_vn, s_vh,
                  D: tl.constexpr, HALF: tl.constexpr, D_PAD: tl.constexpr, HALF_PAD: tl.constexpr,
                  BLOCK_N: tl.constexpr, MODE: tl.constexpr):
    # One program: one (batch, head) and one contiguous range of tokens; writes that range's partial state.
    split = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, N)

    offs_j = tl.arange(0, HALF_PAD)                       # pair index
    offs_i = tl.arange(0, D_PAD)                          # v channel index
    mask_j = offs_j < HALF
    mask_i = offs_i < D
    k_base = k_ptr + b * s_kb + h * s_kh
    v_base = v_ptr + b * s_vb + h * s_vh

    acc_e = tl.zeros((D_PAD, HALF_PAD), dtype=tl.float32)   # vk[:, 0::2]
    acc_o = tl.zeros((D_PAD, HALF_PAD), dtype=tl.float32)   # vk[:, 1::2]
    ks_e = tl.zeros((HALF_PAD,), dtype=tl.float32)
    ks_o = tl.zeros((HALF_PAD,), dtype=tl.float32)

    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < end
        rows = offs_n.to(tl.int64)
        m_nj = mask_n[:, None] & mask_j[None, :]
        k_row = k_base + rows[:, None] * s_kn + 2 * offs_j[None, :]
        ke = tl.maximum(tl.load(k_row, mask=m_nj, other=0.0).to(tl.float32), 0.0)       # (BLOCK_N, HALF_PAD)
        ko = tl.maximum(tl.load(k_row + 1, mask=m_nj, other=0.0).to(tl.float32), 0.0)
        cs_off = rows[:, None] * HALF + offs_j[None, :]
        c = tl.load(cos_ptr + cs_off, mask=m_nj, other=0.0)
        s = tl.load(sin_ptr + cs_off, mask=m_nj, other=0.0)
        kr_e = ke * c - ko * s
        kr_o = ke * s + ko * c
        ks_e += tl.sum(ke, axis=0)
        ks_o += tl.sum(ko, axis=0)
        # v transposed: (D_PAD, BLOCK_N), masked rows/cols are 0 so they add nothing.
        vt = tl.load(v_base + offs_i[:, None] + rows[None, :] * s_vn,
                     mask=mask_i[:, None] & mask_n[None, :], other=0.0)
        if MODE == 0:
            vt32 = vt.to(tl.float32)
            acc_e = tl.dot(vt32, kr_e, acc_e, input_precision="ieee")
            acc_o = tl.dot(vt32, kr_o, acc_o, input_precision="ieee")
        else:
            # three bf16 pieces per rotated key: kr = p1 + p2 + p3 up to 2^-24 relative
            e1 = kr_e.to(tl.bfloat16)
            re = kr_e - e1.to(tl.float32)
            e2 = re.to(tl.bfloat16)
            e3 = (re - e2.to(tl.float32)).to(tl.bfloat16)
            o1 = kr_o.to(tl.bfloat16)
            ro = kr_o - o1.to(tl.float32)
            o2 = ro.to(tl.bfloat16)
            o3 = (ro - o2.to(tl.float32)).to(tl.bfloat16)
            if MODE == 1:
                vtb = vt.to(tl.bfloat16)
                acc_e = tl.dot(vtb, e3, acc_e)
                acc_e = tl.dot(vtb, e2, acc_e)
                acc_e = tl.dot(vtb, e1, acc_e)
                acc_o = tl.dot(vtb, o3, acc_o)
                acc_o = tl.dot(vtb, o2, acc_o)
                acc_o = tl.dot(vtb, o1, acc_o)
            else:
                vtf = vt.to(tl.bfloat16).to(tl.float32)
                acc_e = tl.dot(vtf, e3.to(tl.float32), acc_e, input_precision="ieee")
                acc_e = tl.dot(vtf, e2.to(tl.float32), acc_e, input_precision="ieee")
                acc_e = tl.dot(vtf, e1.to(tl.float32), acc_e, input_precision="ieee")
                acc_o = tl.dot(vtf, o3.to(tl.float32), acc_o, input_precision="ieee")
                acc_o = tl.dot(vtf, o2.to(tl.float32), acc_o, input_precision="ieee")
                acc_o = tl.dot(vtf, o1.to(tl.float32), acc_o, input_precision="ieee")

    # partial outputs: vk (split, B*H, D, D), k_sum (split, B*H, D)
    out_bh = split.to(tl.int64) * tl.num_programs(1) + bh
    vk_base = vk_ptr + out_bh * (D * D)
    m_ij = mask_i[:, None] & mask_j[None, :]
    vk_off = offs_i[:, None] * D + 2 * offs_j[None, :]
    tl.store(vk_base + vk_off, acc_e, mask=m_ij)
    tl.store(vk_base + vk_off + 1, acc_o, mask=m_ij)
    ks_base = ks_ptr + out_bh * D
    tl.store(ks_base + 2 * offs_j, ks_e, mask=mask_j)
    tl.store(ks_base + 2 * offs_j + 1, ks_o, mask=mask_j)


@Kernel
def _apply_kernel(q_ptr, vk_ptr, ks_ptr, cos_ptr, sin_ptr, out_ptr,
                  N, H, tokens_per_prog, eps,
                  s_qb, s_qn, s_qh, s_ob, s_on, s_oh,
                  D: tl.constexpr, HALF: tl.constexpr, D_PAD: tl.constexpr, HALF_PAD: tl.constexpr,
                  BLOCK_N: tl.constexpr, MODE: tl.constexpr):
    # One program: one (batch, head) and a contiguous range of tokens; the head's state is loaded once.
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    start = pid_n * tokens_per_prog
    end = tl.minimum(start + tokens_per_prog, N)

    offs_j = tl.arange(0, HALF_PAD)
    offs_i = tl.arange(0, D_PAD)
    mask_j = offs_j < HALF
    mask_i = offs_i < D

    # state columns split by pair parity, transposed: vkt_e[j, i] = vk[i, 2j]
    st_base = vk_ptr + bh.to(tl.int64) * (D * D)
    m_ji = mask_j[:, None] & mask_i[None, :]
    st_off = offs_i[None, :] * D + 2 * offs_j[:, None]
    vkt_e = tl.load(st_base + st_off, mask=m_ji, other=0.0)       # (HALF_PAD, D_PAD) fp32
    vkt_o = tl.load(st_base + st_off + 1, mask=m_ji, other=0.0)
    ks_base = ks_ptr + bh.to(tl.int64) * D
    ks_e = tl.load(ks_base + 2 * offs_j, mask=mask_j, other=0.0)
    ks_o = tl.load(ks_base + 2 * offs_j + 1, mask=mask_j, other=0.0)
    if MODE != 0:
        # two bf16 pieces per state entry, split once per program
        se1 = vkt_e.to(tl.bfloat16)
        se2 = (vkt_e - se1.to(tl.float32)).to(tl.bfloat16)
        so1 = vkt_o.to(tl.bfloat16)
        so2 = (vkt_o - so1.to(tl.float32)).to(tl.bfloat16)

    q_base = q_ptr + b * s_qb + h * s_qh
    o_base = out_ptr + b * s_ob + h * s_oh
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < end
        rows = offs_n.to(tl.int64)
        m_nj = mask_n[:, None] & mask_j[None, :]
        q_row = q_base + rows[:, None] * s_qn + 2 * offs_j[None, :]
        qe = tl.maximum(tl.load(q_row, mask=m_nj, other=0.0).to(tl.float32), 0.0)       # (BLOCK_N, HALF_PAD)
        qo = tl.maximum(tl.load(q_row + 1, mask=m_nj, other=0.0).to(tl.float32), 0.0)
        cs_off = rows[:, None] * HALF + offs_j[None, :]
        c = tl.load(cos_ptr + cs_off, mask=m_nj, other=0.0)
        s = tl.load(sin_ptr + cs_off, mask=m_nj, other=0.0)
        qr_e = qe * c - qo * s
        qr_o = qe * s + qo * c
        den = tl.sum(qe * ks_e[None, :], axis=1) + tl.sum(qo * ks_o[None, :], axis=1)    # (BLOCK_N,) unrotated
        if MODE == 0:
            num = tl.dot(qr_e, vkt_e, input_precision="ieee")
            num = tl.dot(qr_o, vkt_o, num, input_precision="ieee")
        else:
            qe1 = qr_e.to(tl.bfloat16)
            qe2 = (qr_e - qe1.to(tl.float32)).to(tl.bfloat16)
            qo1 = qr_o.to(tl.bfloat16)
            qo2 = (qr_o - qo1.to(tl.float32)).to(tl.bfloat16)
            if MODE == 1:
                num = tl.dot(qe1, se2)
                num = tl.dot(qe2, se1, num)
                num = tl.dot(qo1, so2, num)
                num = tl.dot(qo2, so1, num)
                num = tl.dot(qe1, se1, num)
                num = tl.dot(qo1, so1, num)
            else:
                num = tl.dot(qe1.to(tl.float32), se2.to(tl.float32), input_precision="ieee")
                num = tl.dot(qe2.to(tl.float32), se1.to(tl.float32), num, input_precision="ieee")
                num = tl.dot(qo1.to(tl.float32), so2.to(tl.float32), num, input_precision="ieee")
                num = tl.dot(qo2.to(tl.float32), so1.to(tl.float32), num, input_precision="ieee")
                num = tl.dot(qe1.to(tl.float32), se1.to(tl.float32), num, input_precision="ieee")
                num = tl.dot(qo1.to(tl.float32), so1.to(tl.float32), num, input_precision="ieee")
        # IEEE division (Triton's `/` is a 2-ulp approximation): fp32 outputs stay as exact as the reference's
        out = tl.div_rn(num, tl.broadcast_to(den[:, None] + eps, (BLOCK_N, D_PAD)))       # (BLOCK_N, D_PAD)
        o_ptrs = o_base + rows[:, None] * s_on + offs_i[None, :]
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask_n[:, None] & mask_i[None, :])


def _pads(d: int) -> tuple[int, int]:
    # tl.dot needs every dimension >= 16
    return max(16, triton.next_power_of_2(d)), max(16, triton.next_power_of_2(d // 2))


def _check_rope(name: str, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() != 4:
        raise ValueError(f"{name} must be (B, N, H, d), got {tuple(x.shape)}")
    _, n, _, d = x.shape
    if d % 2:
        raise ValueError(f"head dim {d} must be even (RoPE pairs)")
    if tuple(cos.shape) != (n, d // 2) or tuple(sin.shape) != (n, d // 2):
        raise ValueError(f"cos/sin must be (N, d/2) = {(n, d // 2)}, got {tuple(cos.shape)} / {tuple(sin.shape)}")
    return cos.to(torch.float32).contiguous(), sin.to(torch.float32).contiguous()


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def linear_attn_state_triton(k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """vk (B, H, d, d) fp32 and k_sum (B, H, d) fp32 of this chunk (same contract as the reference)."""
    cos, sin = _check_rope("k", k, cos, sin)
    if v.shape != k.shape:
        raise ValueError(f"v {tuple(v.shape)} must match k {tuple(k.shape)}")
    k, v = _last_dim_contiguous(k), _last_dim_contiguous(v)
    B, N, H, d = k.shape
    device = k.device
    if N == 0 or B * H == 0:
        return (torch.zeros((B, H, d, d), dtype=torch.float32, device=device),
                torch.zeros((B, H, d), dtype=torch.float32, device=device))
    d_pad, half_pad = _pads(d)
    mode = dot_mode(v.dtype, device)
    block_n = _BLOCK_N[mode]
    n_blocks = triton.cdiv(N, block_n)
    # enough programs for ~2 waves: B*H is only 20-40, so the tokens are split and the partial states summed
    splits = max(1, min(n_blocks, triton.cdiv(2 * sm_count(device), B * H)))
    tokens_per_split = triton.cdiv(n_blocks, splits) * block_n
    splits = triton.cdiv(N, tokens_per_split)
    vk_part = empty((splits, B * H, d, d), torch.float32, device)
    ks_part = empty((splits, B * H, d), torch.float32, device)
    _state_kernel.on(device)[(splits, B * H)](
        k, v, cos, sin, vk_part, ks_part,
        N, H, tokens_per_split,
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        D=d, HALF=d // 2, D_PAD=d_pad, HALF_PAD=half_pad, BLOCK_N=block_n, MODE=mode,
        num_warps=8, num_stages=_NUM_STAGES,
    )
    vk = vk_part[0] if splits == 1 else vk_part.sum(dim=0)
    k_sum = ks_part[0] if splits == 1 else ks_part.sum(dim=0)
    return vk.view(B, H, d, d), k_sum.view(B, H, d)


def linear_attn_apply_triton(q: torch.Tensor, vk: torch.Tensor, k_sum: torch.Tensor, cos: torch.Tensor,
                             sin: torch.Tensor, eps: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """out (B, N, H, d) in q.dtype (same contract as the reference); `out` may be given (any strides, last dim 1)."""
    cos, sin = _check_rope("q", q, cos, sin)
    q = _last_dim_contiguous(q)
    B, N, H, d = q.shape
    if tuple(vk.shape) != (B, H, d, d) or tuple(k_sum.shape) != (B, H, d):
        raise ValueError(f"state shapes vk {tuple(vk.shape)} / k_sum {tuple(k_sum.shape)} do not match q {tuple(q.shape)}")
    device = q.device
    vk = vk.to(torch.float32).contiguous()
    k_sum = k_sum.to(torch.float32).contiguous()
    if out is None:
        out = empty((B, N, H, d), q.dtype, device)
    elif tuple(out.shape) != (B, N, H, d) or out.stride(-1) != 1 or out.dtype != q.dtype:
        raise ValueError("out must be (B, N, H, d) in q.dtype with a contiguous last dim")
    if N == 0 or B * H == 0:
        return out
    d_pad, half_pad = _pads(d)
    mode = dot_mode(q.dtype, device)
    block_n = _BLOCK_N[mode]
    n_blocks = triton.cdiv(N, block_n)
    # each program loads its head's state once, then streams several token tiles: ~4 waves of programs
    progs_n = max(1, min(n_blocks, triton.cdiv(4 * sm_count(device), B * H)))
    tokens_per_prog = triton.cdiv(n_blocks, progs_n) * block_n
    progs_n = triton.cdiv(N, tokens_per_prog)
    _apply_kernel.on(device)[(progs_n, B * H)](
        q, vk, k_sum, cos, sin, out,
        N, H, tokens_per_prog, float(eps),
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        D=d, HALF=d // 2, D_PAD=d_pad, HALF_PAD=half_pad, BLOCK_N=block_n, MODE=mode,
        num_warps=8, num_stages=_NUM_STAGES,
    )
    return out
