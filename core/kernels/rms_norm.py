"""RMSNorm over the last dim with an fp32 (fp64 for fp64 inputs) computation and one rounding to x.dtype.

`rms_norm(x, weight, eps)`: x (..., D), any strides with a contiguous last dim (e.g. a slice of the fused qkv
projection); weight (D,) or None. `qk_rms_reciprocals(qkv, D, eps)`: the statistics of the self-attention q/k norms
("rms_norm_across_heads": over all D = heads * head_dim channels) in one launch, reading q and k straight out of the
fused (..., 3D) projection: only each token's 1 / rms (fp32) of q and of k, because the linear-attention kernels apply
the normalization and the weights as they load q and k (saves writing normalized copies and reading them back).
The official RMSNorm rounds to bf16 before multiplying by the weight; rounding once is slightly more accurate and
otherwise the same function.
"""

from __future__ import annotations

import torch

from core.kernels._triton import load_impl, wants_triton


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    xf = _acc(x)
    y = xf * torch.rsqrt(xf.square().mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * _acc(weight)
    return y.to(x.dtype)


def rms_reciprocal_reference(x: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / sqrt(mean(x^2) + eps) over the last dim, fp32 (fp64 for fp64 inputs): (...,)."""
    xf = _acc(x)
    return torch.rsqrt(xf.square().mean(dim=-1) + eps)


def qk_rms_reciprocals_reference(qkv: torch.Tensor, D: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return rms_reciprocal_reference(qkv[..., :D], eps), rms_reciprocal_reference(qkv[..., D:2 * D], eps)


_IMPL = "core.kernels.rms_norm_triton"


def _rms_impl(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    impl = load_impl(_IMPL) if x.is_cuda else None
    if impl is None:
        return rms_norm_reference(x, weight, eps)
    return impl.rms_norm_triton(x, weight, eps)


def _qk_impl(qkv: torch.Tensor, D: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    impl = load_impl(_IMPL) if qkv.is_cuda else None
    if impl is None:
        return qk_rms_reciprocals_reference(qkv, D, eps)
    return impl.qk_rms_reciprocals_triton(qkv, D, eps)


@torch.library.custom_op("sana_video::rms_norm", mutates_args=())
def _rms_op(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    return _rms_impl(x, weight, eps)


@_rms_op.register_fake
def _rms_fake(x, weight, eps):
    return x.new_empty(x.shape)


@torch.library.custom_op("sana_video::qk_rms_reciprocals", mutates_args=())
def _qk_op(qkv: torch.Tensor, D: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    q_rstd, k_rstd = _qk_impl(qkv, D, eps)
    # custom ops may not return views of one buffer; the kernel writes both into one (2, ...) buffer
    return (q_rstd.clone(), k_rstd.clone()) if q_rstd._base is not None else (q_rstd, k_rstd)


@_qk_op.register_fake
def _qk_fake(qkv, D, eps):
    shape = qkv.shape[:-1]
    return qkv.new_empty(shape, dtype=torch.float32), qkv.new_empty(shape, dtype=torch.float32)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Dispatch: Triton on CUDA, the reference elsewhere. Returns a contiguous tensor of x's shape and dtype."""
    if not wants_triton(x, *([] if weight is None else [weight])):
        return rms_norm_reference(x, weight, eps)
    if torch.compiler.is_compiling():
        return _rms_op(x, weight, float(eps))
    return _rms_impl(x, weight, eps)


def qk_rms_reciprocals(qkv: torch.Tensor, D: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 / rms(qkv[..., :D]), 1 / rms(qkv[..., D:2D])), each (...,) fp32. RMSNorm(q) * w is then q * q_rstd * w,
    which core.kernels.linear_attention applies on load (k likewise)."""
    if not wants_triton(qkv):
        return qk_rms_reciprocals_reference(qkv, D, eps)
    if torch.compiler.is_compiling():
        return _qk_op(qkv, D, float(eps))
    return _qk_impl(qkv, D, eps)


def rms_reciprocal(x: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / rms(x) over the last dim, (...,) fp32: Triton on CUDA (eager callers only), the reference elsewhere. For
    k alone when q's 1/rms comes from the kernel that reads q (core.kernels.attn_fold)."""
    impl = load_impl(_IMPL) if wants_triton(x) and x.dtype != torch.float64 else None
    if impl is None:
        return rms_reciprocal_reference(x, eps)
    return impl.rms_reciprocal_triton(x, eps)
