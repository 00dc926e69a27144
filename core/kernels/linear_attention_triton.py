"""Triton kernels for ReLU linear attention with RoPE on the numerator (math: core/kernels/linear_attention.py).

Layout: q, k, v (B, N, H, d) token-major, any strides with a contiguous last dim (views of the fused qkv projection
work without a copy); cos/sin (N, d/2) fp32; interleaved RoPE pairs (x[2j], x[2j+1]).

Rows load as contiguous (BLOCK_N, D_PAD) tiles (16-byte vector loads; version 1 loaded x[..., 0::2] and x[..., 1::2]
as two strided gathers); the pairs are separated in registers (reshape to (BLOCK_N, D_PAD/2, 2) + split), rotated
elementwise, and interleaved again (join), so the state is one (d, d) product in its natural layout and the apply
output one contiguous tile. d = 112 is padded to 128 (pairs 56 -> 64) with masks.

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
from core.kernels.fp8_out import kernel_scale

# Launch settings (tuned on an H100 at one 480p block's sizes; see docs/perf-notes.md). Module-level so that the
# bench can sweep them. The fp32 mode (non-bf16 inputs, not the hot path) uses smaller tiles so its fp32 operand
# buffers fit in shared memory.
# (bench/dit.py --sweep, runs 2-5: state 0.21-0.30 ms, apply 0.25-0.32 ms; version 1 took 0.79 / 0.53 ms)
STATE_CFG = {"block_n": 32, "num_warps": 4, "num_stages": 3, "waves": 4}
APPLY_CFG = {"block_n": 128, "num_warps": 8, "num_stages": 2, "waves": 4}
_FP32_BLOCK_N = 32


@Kernel
def _state_kernel(k_ptr, v_ptr, cos_ptr, sin_ptr, vk_ptr, ks_ptr, kw_ptr, kr_ptr,
                  N, H, tokens_per_split,
                  s_kb, s_kn, s_kh, s_vb, s_vn, s_vh, s_rb, s_split,
                  D: tl.constexpr, HALF: tl.constexpr, D_PAD: tl.constexpr, HALF_PAD: tl.constexpr,
                  BLOCK_N: tl.constexpr, MODE: tl.constexpr, HAS_KNORM: tl.constexpr = False):
    # One program: one (batch, head) and one contiguous range of tokens; writes that range's partial state.
    # Rows of k and v load as whole contiguous (BLOCK_N, D_PAD) tiles; the RoPE pairs are separated in registers
    # (reshape + split) and interleaved again (join) so that one (D, BLOCK_N) x (BLOCK_N, D) product per bf16 piece
    # builds the full d x d state in its natural layout.
    split = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, N)

    offs_d = tl.arange(0, D_PAD)                          # channel index
    offs_j = tl.arange(0, HALF_PAD)                       # pair index
    mask_d = offs_d < D
    mask_j = offs_j < HALF
    k_base = k_ptr + b * s_kb + h * s_kh
    v_base = v_ptr + b * s_vb + h * s_vh

    acc = tl.zeros((D_PAD, D_PAD), dtype=tl.float32)      # vk[i, j] = sum_n v[n, i] kr[n, j]
    ks = tl.zeros((D_PAD,), dtype=tl.float32)
    if HAS_KNORM:   # k's RMSNorm across heads, applied on load: this head's weights, each token's 1/rms
        kw = tl.load(kw_ptr + h * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < end
        rows = offs_n.to(tl.int64)
        m_nd = mask_n[:, None] & mask_d[None, :]
        kk = tl.load(k_base + rows[:, None] * s_kn + offs_d[None, :], mask=m_nd, other=0.0).to(tl.float32)
        if HAS_KNORM:   # relu(r k w) = r relu(k w) for the 1/rms r > 0
            kr_n = tl.load(kr_ptr + b * s_rb + rows, mask=mask_n, other=0.0)
            kk = tl.maximum(kk * kw[None, :], 0.0) * kr_n[:, None]
        else:
            kk = tl.maximum(kk, 0.0)                                                      # (BLOCK_N, D_PAD)
        ks += tl.sum(kk, axis=0)
        ke, ko = tl.split(tl.reshape(kk, (BLOCK_N, HALF_PAD, 2)))                         # (BLOCK_N, HALF_PAD)
        m_nj = mask_n[:, None] & mask_j[None, :]
        cs_off = rows[:, None] * HALF + offs_j[None, :]
        c = tl.load(cos_ptr + cs_off, mask=m_nj, other=0.0)
        s = tl.load(sin_ptr + cs_off, mask=m_nj, other=0.0)
        kr = tl.reshape(tl.join(ke * c - ko * s, ke * s + ko * c), (BLOCK_N, D_PAD))    # rotated, interleaved
        vv = tl.load(v_base + rows[:, None] * s_vn + offs_d[None, :], mask=m_nd, other=0.0)
        vt = tl.trans(vv)                                                                 # (D_PAD, BLOCK_N)
        if MODE == 0:
            acc = tl.dot(vt.to(tl.float32), kr, acc, input_precision="ieee")
        else:
            # three bf16 pieces per rotated key: kr = p1 + p2 + p3 up to 2^-24 relative; v is bf16 (exact)
            p1 = kr.to(tl.bfloat16)
            r1 = kr - p1.to(tl.float32)
            p2 = r1.to(tl.bfloat16)
            p3 = (r1 - p2.to(tl.float32)).to(tl.bfloat16)
            if MODE == 1:
                vtb = vt.to(tl.bfloat16)
                acc = tl.dot(vtb, p3, acc)
                acc = tl.dot(vtb, p2, acc)
                acc = tl.dot(vtb, p1, acc)
            else:
                vtf = vt.to(tl.bfloat16).to(tl.float32)
                acc = tl.dot(vtf, p3.to(tl.float32), acc, input_precision="ieee")
                acc = tl.dot(vtf, p2.to(tl.float32), acc, input_precision="ieee")
                acc = tl.dot(vtf, p1.to(tl.float32), acc, input_precision="ieee")

    # partial outputs: vk (B*H, D, D) and k_sum (B*H, D) of this split, `s_split` elements apart between splits
    vk_base = vk_ptr + split.to(tl.int64) * s_split + bh.to(tl.int64) * (D * D)
    tl.store(vk_base + offs_d[:, None] * D + offs_d[None, :], acc, mask=mask_d[:, None] & mask_d[None, :])
    tl.store(ks_ptr + split.to(tl.int64) * s_split + bh.to(tl.int64) * D + offs_d, ks, mask=mask_d)


@Kernel
def _sum_splits_kernel(part_ptr, prev_vk_ptr, prev_ks_ptr, own_vk_ptr, own_ks_ptr, tot_vk_ptr, tot_ks_ptr,
                       M_VK, M, splits, s_split, HAS_PREV: tl.constexpr, BLOCK: tl.constexpr):
    # One pass over the partial states (split, M): element m < M_VK belongs to vk, the rest to k_sum. Writes this
    # chunk's own sums and, with HAS_PREV, the totals with the previous blocks' state. Splits are added in order
    # (deterministic); four loads are issued before they are added, so that a thread waits for memory once per
    # four splits instead of once per split (a masked-off split adds 0).
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    zero = offs * 0      # split conditions as vectors: the interpreter cannot mask with a scalar
    for sp in range(0, splits, 4):
        p = part_ptr + sp * s_split + offs
        a0 = tl.load(p, mask=mask, other=0.0)
        a1 = tl.load(p + s_split, mask=mask & (zero + sp + 1 < splits), other=0.0)
        a2 = tl.load(p + 2 * s_split, mask=mask & (zero + sp + 2 < splits), other=0.0)
        a3 = tl.load(p + 3 * s_split, mask=mask & (zero + sp + 3 < splits), other=0.0)
        acc = (((acc + a0) + a1) + a2) + a3
    is_vk = offs < M_VK
    m_vk = mask & is_vk
    m_ks = mask & (offs >= M_VK)
    tl.store(own_vk_ptr + offs, acc, mask=m_vk)
    tl.store(own_ks_ptr + (offs - M_VK), acc, mask=m_ks)
    if HAS_PREV:
        prev = (tl.load(prev_vk_ptr + offs, mask=m_vk, other=0.0)
                + tl.load(prev_ks_ptr + (offs - M_VK), mask=m_ks, other=0.0))
        tl.store(tot_vk_ptr + offs, acc + prev, mask=m_vk)
        tl.store(tot_ks_ptr + (offs - M_VK), acc + prev, mask=m_ks)


@Kernel
def _apply_kernel(q_ptr, vk_ptr, ks_ptr, cos_ptr, sin_ptr, out_ptr, scale_ptr, qw_ptr, qr_ptr,
                  N, H, tokens_per_prog, eps,
                  s_qb, s_qn, s_qh, s_ob, s_on, s_oh, s_rb,
                  D: tl.constexpr, HALF: tl.constexpr, D_PAD: tl.constexpr, HALF_PAD: tl.constexpr,
                  BLOCK_N: tl.constexpr, MODE: tl.constexpr, FP8_OUT: tl.constexpr = False,
                  HAS_QW: tl.constexpr = False, HAS_QRSTD: tl.constexpr = False, EXACT_DIV: tl.constexpr = True):
    # One program: one (batch, head) and a contiguous range of tokens; the head's state is loaded once.
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    start = pid_n * tokens_per_prog
    end = tl.minimum(start + tokens_per_prog, N)

    offs_d = tl.arange(0, D_PAD)
    offs_j = tl.arange(0, HALF_PAD)
    mask_d = offs_d < D
    mask_j = offs_j < HALF

    # transposed state: vkt[j, i] = vk[i, j], so that num = qr @ vkt
    st_base = vk_ptr + bh.to(tl.int64) * (D * D)
    vkt = tl.load(st_base + offs_d[None, :] * D + offs_d[:, None], mask=mask_d[:, None] & mask_d[None, :],
                  other=0.0)                                                              # (D_PAD, D_PAD) fp32
    ks = tl.load(ks_ptr + bh.to(tl.int64) * D + offs_d, mask=mask_d, other=0.0)
    if HAS_QW:   # the q RMSNorm's weight for this head's channels
        qw = tl.load(qw_ptr + h * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if MODE != 0:
        # two bf16 pieces per state entry, split once per program
        s1 = vkt.to(tl.bfloat16)
        s2 = (vkt - s1.to(tl.float32)).to(tl.bfloat16)

    q_base = q_ptr + b * s_qb + h * s_qh
    o_base = out_ptr + b * s_ob + h * s_oh
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < end
        rows = offs_n.to(tl.int64)
        m_nd = mask_n[:, None] & mask_d[None, :]
        qq = tl.load(q_base + rows[:, None] * s_qn + offs_d[None, :], mask=m_nd, other=0.0)
        qq = qq.to(tl.float32)
        if HAS_QW:
            qq = qq * qw[None, :]
        # q's RMSNorm across heads (HAS_QRSTD) scales each token by its 1/rms r > 0: relu(r q w) = r relu(q w), so r
        # enters once per row below instead of once per element
        qq = tl.maximum(qq, 0.0)                                                          # (BLOCK_N, D_PAD)
        den = tl.sum(qq * ks[None, :], axis=1)                                            # unrotated
        qe, qo = tl.split(tl.reshape(qq, (BLOCK_N, HALF_PAD, 2)))
        m_nj = mask_n[:, None] & mask_j[None, :]
        cs_off = rows[:, None] * HALF + offs_j[None, :]
        c = tl.load(cos_ptr + cs_off, mask=m_nj, other=0.0)
        s = tl.load(sin_ptr + cs_off, mask=m_nj, other=0.0)
        qr = tl.reshape(tl.join(qe * c - qo * s, qe * s + qo * c), (BLOCK_N, D_PAD))
        if MODE == 0:
            num = tl.dot(qr, vkt, input_precision="ieee")
        else:
            q1 = qr.to(tl.bfloat16)
            q2 = (qr - q1.to(tl.float32)).to(tl.bfloat16)
            if MODE == 1:
                num = tl.dot(q1, s2)
                num = tl.dot(q2, s1, num)
                num = tl.dot(q1, s1, num)
            else:
                num = tl.dot(q1.to(tl.float32), s2.to(tl.float32), input_precision="ieee")
                num = tl.dot(q2.to(tl.float32), s1.to(tl.float32), num, input_precision="ieee")
                num = tl.dot(q1.to(tl.float32), s1.to(tl.float32), num, input_precision="ieee")
        o_ptrs = o_base + rows[:, None] * s_on + offs_d[None, :]
        # out = r num / (r den + eps) with r = q's 1/rms (1 without q_rstd)
        if HAS_QRSTD:
            r = tl.load(qr_ptr + b * s_rb + rows, mask=mask_n, other=1.0)                 # (BLOCK_N,)
            den_r = r * den + eps
        else:
            r = tl.full((BLOCK_N,), 1.0, tl.float32)
            den_r = den + eps
        if FP8_OUT:   # E4M3 for an FP8 consumer (core/kernels/fp8_out.py): value / scale, saturated, RNE
            out = tl.clamp(num * (r / (den_r * tl.load(scale_ptr)))[:, None], -448.0, 448.0,
                           propagate_nan=tl.PropagateNan.ALL)
        elif EXACT_DIV:
            # fp32 outputs: IEEE division per element (Triton's `/` is a 2-ulp approximation), as exact as the
            # reference's
            out = tl.div_rn(num * r[:, None], tl.broadcast_to(den_r[:, None], (BLOCK_N, D_PAD)))
        else:
            # 16-bit outputs: one IEEE division per row and a multiply per element (~1 fp32 ulp more error, far
            # below the output's rounding; the per-element division was ~a quarter of the kernel's instructions)
            out = num * tl.div_rn(r, den_r)[:, None]                                       # (BLOCK_N, D_PAD)
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=m_nd)


def _token_split(N: int, block_n: int, waves: int, heads: int, device: torch.device) -> tuple[int, int]:
    """(programs per head, tokens per program, a multiple of block_n) so that heads x programs fill `waves` waves."""
    n_blocks = triton.cdiv(N, block_n)
    programs = max(1, min(n_blocks, triton.cdiv(waves * sm_count(device), heads)))
    tokens = triton.cdiv(n_blocks, programs) * block_n
    return triton.cdiv(N, tokens), tokens


def _pads(d: int) -> tuple[int, int]:
    # tl.dot needs every dimension >= 16; pairs are the two halves of the padded row (reshape (.., D_PAD/2, 2)).
    # At least 32: Triton 3.6 fails to compile the pair split of a 16-wide row (d <= 16 is test-only anyway).
    d_pad = max(32, triton.next_power_of_2(d))
    return d_pad, d_pad // 2


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


def _norm_on_load_args(name: str, weight: torch.Tensor | None, rstd: torch.Tensor | None, B: int, N: int, H: int,
                       d: int, placeholder: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The kernels' arguments for an RMSNorm applied on load: (weight (H*d,), rstd (B, N) fp32 with a contiguous last
    dim, rstd's batch stride); `placeholder` stands in for what is absent (its kernel flag is off)."""
    if weight is not None and weight.numel() != H * d:
        raise ValueError(f"{name}_weight must have H * d = {H * d} entries, got {tuple(weight.shape)}")
    if rstd is not None and tuple(rstd.shape) != (B, N):
        raise ValueError(f"{name}_rstd must be (B, N) = {(B, N)}, got {tuple(rstd.shape)}")
    w = placeholder if weight is None else weight.contiguous()
    r = placeholder if rstd is None else _last_dim_contiguous(rstd.to(torch.float32))
    return w, r, r.stride(0) if rstd is not None else 0


def _state_totals(k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  k_weight: torch.Tensor | None, k_rstd: torch.Tensor | None,
                  prev_vk: torch.Tensor | None, prev_k_sum: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """(own vk, own k_sum) or, with the previous state, (own vk, own k_sum, vk, k_sum) with the totals."""
    cos, sin = _check_rope("k", k, cos, sin)
    if v.shape != k.shape:
        raise ValueError(f"v {tuple(v.shape)} must match k {tuple(k.shape)}")
    k, v = _last_dim_contiguous(k), _last_dim_contiguous(v)
    B, N, H, d = k.shape
    device = k.device
    with_prev = prev_vk is not None
    if with_prev:
        if tuple(prev_vk.shape) != (B, H, d, d) or tuple(prev_k_sum.shape) != (B, H, d):
            raise ValueError(f"previous state must be (B, H, d, d) / (B, H, d) = {(B, H, d, d)} / {(B, H, d)}, got "
                             f"{tuple(prev_vk.shape)} / {tuple(prev_k_sum.shape)}")
        prev_vk = prev_vk.to(torch.float32).contiguous()
        prev_k_sum = prev_k_sum.to(torch.float32).contiguous()
    if N == 0 or B * H == 0:
        own = (torch.zeros((B, H, d, d), dtype=torch.float32, device=device),
               torch.zeros((B, H, d), dtype=torch.float32, device=device))
        return (*own, prev_vk.clone(), prev_k_sum.clone()) if with_prev else own
    if (k_weight is None) != (k_rstd is None):
        raise ValueError("k_weight and k_rstd come together")
    kw, kr, kr_stride = _norm_on_load_args("k", k_weight, k_rstd, B, N, H, d, k)
    d_pad, half_pad = _pads(d)
    mode = dot_mode(v.dtype, device)
    cfg = STATE_CFG
    block_n = cfg["block_n"] if mode != 0 else _FP32_BLOCK_N
    # enough programs for a few waves: B*H is only 20-40, so the tokens are split and the partial states summed
    splits, tokens_per_split = _token_split(N, block_n, cfg["waves"], B * H, device)
    m_vk, m_ks = B * H * d * d, B * H * d
    part = empty((splits, m_vk + m_ks), torch.float32, device)          # per split: vk (B*H, d, d), then k_sum
    _state_kernel.on(device)[(splits, B * H)](
        k, v, cos, sin, part, part[:, m_vk:], kw, kr,
        N, H, tokens_per_split,
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        kr_stride, part.stride(0),
        D=d, HALF=d // 2, D_PAD=d_pad, HALF_PAD=half_pad, BLOCK_N=block_n, MODE=mode, HAS_KNORM=k_rstd is not None,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    if splits == 1 and not with_prev:
        return part[0, :m_vk].view(B, H, d, d), part[0, m_vk:].view(B, H, d)
    own_vk = empty((B, H, d, d), torch.float32, device)
    own_ks = empty((B, H, d), torch.float32, device)
    tot_vk = empty((B, H, d, d), torch.float32, device) if with_prev else own_vk
    tot_ks = empty((B, H, d), torch.float32, device) if with_prev else own_ks
    block = 512
    _sum_splits_kernel.on(device)[(triton.cdiv(m_vk + m_ks, block),)](
        part, prev_vk if with_prev else part, prev_k_sum if with_prev else part, own_vk, own_ks, tot_vk, tot_ks,
        m_vk, m_vk + m_ks, splits, part.stride(0), HAS_PREV=with_prev, BLOCK=block, num_warps=4,
    )
    return (own_vk, own_ks, tot_vk, tot_ks) if with_prev else (own_vk, own_ks)


def linear_attn_state_triton(k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                             k_weight: torch.Tensor | None = None, k_rstd: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """vk (B, H, d, d) fp32 and k_sum (B, H, d) fp32 of this chunk (same contract as the reference, k_weight and
    k_rstd included: both or neither)."""
    return _state_totals(k, v, cos, sin, k_weight, k_rstd, None, None)


def linear_attn_state_totals_triton(k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                                    prev_vk: torch.Tensor, prev_k_sum: torch.Tensor,
                                    k_weight: torch.Tensor | None = None, k_rstd: torch.Tensor | None = None
                                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(own vk, own k_sum, vk + prev_vk, k_sum + prev_k_sum): the chunk's state and the totals, the partial sums
    reduced and the previous state added in one pass."""
    return _state_totals(k, v, cos, sin, k_weight, k_rstd, prev_vk, prev_k_sum)


def linear_attn_apply_triton(q: torch.Tensor, vk: torch.Tensor, k_sum: torch.Tensor, cos: torch.Tensor,
                             sin: torch.Tensor, eps: float, out: torch.Tensor | None = None,
                             out_scale: torch.Tensor | None = None, q_weight: torch.Tensor | None = None,
                             q_rstd: torch.Tensor | None = None) -> torch.Tensor:
    """out (B, N, H, d) in q.dtype, or FP8 E4M3 with `out_scale` (same contract as the reference, q_weight and
    q_rstd included); `out` may be given (any strides, last dim 1)."""
    cos, sin = _check_rope("q", q, cos, sin)
    q = _last_dim_contiguous(q)
    B, N, H, d = q.shape
    if tuple(vk.shape) != (B, H, d, d) or tuple(k_sum.shape) != (B, H, d):
        raise ValueError(f"state shapes vk {tuple(vk.shape)} / k_sum {tuple(k_sum.shape)} do not match q {tuple(q.shape)}")
    device = q.device
    vk = vk.to(torch.float32).contiguous()
    k_sum = k_sum.to(torch.float32).contiguous()
    out_dtype = q.dtype if out_scale is None else torch.float8_e4m3fn
    if out is None:
        out = empty((B, N, H, d), out_dtype, device)
    elif tuple(out.shape) != (B, N, H, d) or out.stride(-1) != 1 or out.dtype != out_dtype:
        raise ValueError("out must be (B, N, H, d) in q.dtype (FP8 with out_scale) with a contiguous last dim")
    scale = vk if out_scale is None else kernel_scale(out_scale, device)
    qw, qr, qr_stride = _norm_on_load_args("q", q_weight, q_rstd, B, N, H, d, vk)
    if N == 0 or B * H == 0:
        return out
    d_pad, half_pad = _pads(d)
    mode = dot_mode(q.dtype, device)
    cfg = APPLY_CFG
    block_n = cfg["block_n"] if mode != 0 else _FP32_BLOCK_N
    # each program loads its head's state once, then streams several token tiles: a few waves of programs
    progs_n, tokens_per_prog = _token_split(N, block_n, cfg["waves"], B * H, device)
    _apply_kernel.on(device)[(progs_n, B * H)](
        q, vk, k_sum, cos, sin, out, scale, qw, qr,
        N, H, tokens_per_prog, float(eps),
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        qr_stride,
        D=d, HALF=d // 2, D_PAD=d_pad, HALF_PAD=half_pad, BLOCK_N=block_n, MODE=mode, FP8_OUT=out_scale is not None,
        HAS_QW=q_weight is not None, HAS_QRSTD=q_rstd is not None, EXACT_DIV=out.element_size() >= 4,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out
