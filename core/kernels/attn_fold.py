"""Linear attention's state product folded into the out projection: the "apply" step becomes part of one GEMM.

core.kernels.linear_attention computes, per token n and head h (qn = q * q_rstd * q_weight, q's RMSNorm across heads),

    out[n, h, :] = (vk_h @ qr_h) / (den + eps),    qr_h = rope(relu(qn_h)),  den = k_sum_h . relu(qn_h)
    y[n, :]      = out[n].view(D) @ W_out^T                          (gate / bias handled by the caller)

vk_h is the same (d, d) matrix for every token of a sample, so it moves into the weight (exact in exact arithmetic):

    r[n, h, :]         = qr_h / (den + eps)                                   `linear_attn_ratio`     (B, N, H, d)
    M[b, o, h*d + j]   = gate[b, o] * sum_i W_out[o, h*d + i] * vk[b, h, i, j] `fold_out_projection`  (B, D_out, H*d)
    y[b]               = r[b].view(N, D) @ M[b]^T                              (the caller's GEMM; + bias)

Why: the apply kernel (a (d, d) product per token and head) is latency-bound (~0.15 ms per layer on an H100 at one
480p block, 255 registers); `r` is elementwise and memory-bound (read q, write r), and M is a tiny per-sample product
(D x D x d per head, ~1.1 GFLOP) whose cost hides next to the out-projection GEMM that runs anyway. The gate of the
gated residual (core.kernels.gate_fold) folds into M's rows for free.

`linear_attn_ratio` can also compute q's RMSNorm statistics itself (q_norm_eps given, q_rstd None): it reads each
token's whole q row anyway, so core.kernels.rms_norm.qk_rms_reciprocals need not compute q's 1/rms. The statistic is
that function's exactly: rsqrt(mean over all H*d channels of q^2 + q_norm_eps) in fp32 (fp64 for fp64 inputs).

Precision: both ops compute in fp32 (fp64 for fp64 inputs in the references) and round once to their output dtype.
"""

from __future__ import annotations

import torch

from core.kernels._triton import load_impl, wants_triton
from core.kernels.linear_attention import _acc, _normalized, rope_pairs
from core.kernels.rms_norm import rms_reciprocal_reference


def _check_ratio_args(q: torch.Tensor, k_sum: torch.Tensor, q_weight: torch.Tensor | None,
                      q_rstd: torch.Tensor | None, q_norm_eps: float | None) -> None:
    """The ratio's own arguments (q's and the RoPE tables' shapes: linear_attention_triton._check_rope)."""
    if q.dim() != 4:
        raise ValueError(f"q must be (B, N, H, d), got {tuple(q.shape)}")
    B, N, H, d = q.shape
    if tuple(k_sum.shape) != (B, H, d):
        raise ValueError(f"k_sum must be (B, H, d) = {(B, H, d)}, got {tuple(k_sum.shape)}")
    if q_weight is not None and q_weight.numel() != H * d:
        raise ValueError(f"q_weight must have H * d = {H * d} entries, got {tuple(q_weight.shape)}")
    if q_rstd is not None and tuple(q_rstd.shape) != (B, N):
        raise ValueError(f"q_rstd must be (B, N) = {(B, N)}, got {tuple(q_rstd.shape)}")
    if q_rstd is not None and q_norm_eps is not None:
        raise ValueError("give q_rstd (precomputed 1/rms) or q_norm_eps (computed here), not both")


def _check_fold_args(weight: torch.Tensor, vk: torch.Tensor, gate: torch.Tensor | None) -> None:
    if weight.dim() != 2 or vk.dim() != 4 or vk.shape[-1] != vk.shape[-2]:
        raise ValueError(f"weight must be (D_out, H*d) and vk (B, H, d, d), got {tuple(weight.shape)} and "
                         f"{tuple(vk.shape)}")
    B, H, d, _ = vk.shape
    if weight.shape[1] != H * d:
        raise ValueError(f"weight has {weight.shape[1]} input channels, vk {tuple(vk.shape)} needs H * d = {H * d}")
    if gate is not None and tuple(gate.shape) != (B, weight.shape[0]):
        raise ValueError(f"gate must be (B, D_out) = {(B, weight.shape[0])}, got {tuple(gate.shape)}")


def linear_attn_ratio_reference(q: torch.Tensor, k_sum: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                                eps: float, q_weight: torch.Tensor | None = None, q_rstd: torch.Tensor | None = None,
                                q_norm_eps: float | None = None) -> torch.Tensor:
    """r (B, N, H, d) in q.dtype: rope(relu(qn)) / (k_sum . relu(qn) + eps), qn = q * q_rstd * q_weight, where q_rstd
    is given (B, N), computed from q with q_norm_eps, or absent (1)."""
    _check_ratio_args(q, k_sum, q_weight, q_rstd, q_norm_eps)
    B, N, H, d = q.shape
    if q_norm_eps is not None:
        q_rstd = rms_reciprocal_reference(q.reshape(B, N, H * d), q_norm_eps)   # (B, N), as qk_rms_reciprocals
    q_relu = torch.relu(_normalized(q, q_rstd, q_weight))                  # (B, N, H, d) fp32 / fp64
    q_rot = rope_pairs(q_relu, cos, sin)
    den = torch.einsum("bhj,bnhj->bnh", _acc(k_sum).to(q_relu.dtype), q_relu)   # (B, N, H), unrotated
    return (q_rot / (den[..., None] + eps)).to(q.dtype)


def fold_out_projection_reference(weight: torch.Tensor, vk: torch.Tensor, gate: torch.Tensor | None = None,
                                  out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """M (B, D_out, H*d) in out_dtype (default weight.dtype): M[b, o, h*d+j] = gate[b, o] sum_i W[o, h*d+i] vk[b,h,i,j]."""
    _check_fold_args(weight, vk, gate)
    B, H, d, _ = vk.shape
    acc = torch.promote_types(torch.promote_types(weight.dtype, vk.dtype), torch.float32)
    w = weight.to(acc).view(weight.shape[0], H, d)                         # (D_out, H, d)
    m = torch.einsum("ohi,bhij->bohj", w, vk.to(acc))                      # (B, D_out, H, d)
    if gate is not None:
        m = m * gate.to(acc)[:, :, None, None]
    return m.reshape(B, weight.shape[0], H * d).to(out_dtype or weight.dtype)


# ---- dispatch: Triton on CUDA (through a custom op so torch.compile sees one opaque node), reference elsewhere ----

_IMPL = "core.kernels.attn_fold_triton"


def _ratio_impl(q: torch.Tensor, k_sum: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float,
                q_weight: torch.Tensor | None = None, q_rstd: torch.Tensor | None = None,
                q_norm_eps: float | None = None) -> torch.Tensor:
    # the kernel computes in fp32: fp64 inputs (tests, references) take the reference
    impl = load_impl(_IMPL) if q.is_cuda and q.dtype != torch.float64 else None
    if impl is None:
        return linear_attn_ratio_reference(q, k_sum, cos, sin, eps, q_weight, q_rstd, q_norm_eps)
    return impl.linear_attn_ratio_triton(q, k_sum, cos, sin, eps, q_weight=q_weight, q_rstd=q_rstd,
                                         q_norm_eps=q_norm_eps)


def _fold_impl(weight: torch.Tensor, vk: torch.Tensor, gate: torch.Tensor | None = None,
               out_dtype: torch.dtype | None = None) -> torch.Tensor:
    fits = weight.dtype != torch.float64 and vk.dtype != torch.float64
    impl = load_impl(_IMPL) if weight.is_cuda and fits else None
    if impl is None:
        return fold_out_projection_reference(weight, vk, gate, out_dtype)
    return impl.fold_out_projection_triton(weight, vk, gate, out_dtype)


@torch.library.custom_op("sana_video::linear_attn_ratio", mutates_args=())
def _ratio_op(q: torch.Tensor, k_sum: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float,
              q_weight: torch.Tensor | None = None, q_rstd: torch.Tensor | None = None,
              q_norm_eps: float | None = None) -> torch.Tensor:
    return _ratio_impl(q, k_sum, cos, sin, eps, q_weight, q_rstd, q_norm_eps)


@_ratio_op.register_fake
def _ratio_fake(q, k_sum, cos, sin, eps, q_weight=None, q_rstd=None, q_norm_eps=None):
    return q.new_empty(q.shape)


@torch.library.custom_op("sana_video::fold_out_projection", mutates_args=())
def _fold_op(weight: torch.Tensor, vk: torch.Tensor, gate: torch.Tensor | None = None,
             out_dtype: torch.dtype | None = None) -> torch.Tensor:
    return _fold_impl(weight, vk, gate, out_dtype)


@_fold_op.register_fake
def _fold_fake(weight, vk, gate=None, out_dtype=None):
    B, H, d, _ = vk.shape
    return weight.new_empty((B, weight.shape[0], H * d), dtype=out_dtype or weight.dtype)


def linear_attn_ratio(q: torch.Tensor, k_sum: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float,
                      q_weight: torch.Tensor | None = None, q_rstd: torch.Tensor | None = None,
                      q_norm_eps: float | None = None) -> torch.Tensor:
    """Dispatch: Triton on CUDA when available, else the reference. Returns a contiguous (B, N, H, d) r in q.dtype.
    q (B, N, H, d) may be a view of the fused qkv projection (contiguous last dim); k_sum (B, H, d) fp32; cos/sin
    (N, d/2) fp32; q_weight (H*d,); q_rstd (B, N) fp32, or q_norm_eps to compute it here (module docstring)."""
    extra = [t for t in (q_weight, q_rstd) if t is not None]
    if not wants_triton(q, k_sum, cos, sin, *extra):
        return linear_attn_ratio_reference(q, k_sum, cos, sin, eps, q_weight, q_rstd, q_norm_eps)
    if torch.compiler.is_compiling():
        return _ratio_op(q, k_sum, cos, sin, float(eps), q_weight, q_rstd,
                         None if q_norm_eps is None else float(q_norm_eps))
    return _ratio_impl(q, k_sum, cos, sin, eps, q_weight, q_rstd, q_norm_eps)


def fold_out_projection(weight: torch.Tensor, vk: torch.Tensor, gate: torch.Tensor | None = None,
                        out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dispatch: Triton on CUDA when available, else the reference. weight (D_out, H*d) (nn.Linear layout), vk
    (B, H, d, d) fp32, gate (B, D_out) or None -> contiguous M (B, D_out, H*d) in out_dtype (default weight.dtype)."""
    if not wants_triton(weight, vk, *([] if gate is None else [gate])):
        return fold_out_projection_reference(weight, vk, gate, out_dtype)
    if torch.compiler.is_compiling():
        return _fold_op(weight, vk, gate, out_dtype)
    return _fold_impl(weight, vk, gate, out_dtype)
