"""ReLU linear attention with 3D RoPE on the numerator only (LiteLAReLURope / CachedCausalAttention semantics).

Layout is token-major: q, k, v are (B, N, H, d) after the across-heads RMSNorm, before ReLU. RoPE tables cos/sin are
(N, d/2) float32, one angle per interleaved pair (x[2i], x[2i+1]).

    kr = rope(relu(k)), qr = rope(relu(q))
    vk    = sum_n v_n kr_n^T          (B, H, d, d) fp32    -- state numerator, vk[b,h,i,j] = sum_n v[n,i] kr[n,j]
    k_sum = sum_n relu(k_n)           (B, H, d)    fp32    -- unrotated: the denominator ignores RoPE
    out_n = (vk @ qr_n) / (k_sum . relu(q_n) + eps)

`state` and `apply` can normalize k / q themselves: with `k_rstd` / `q_rstd` (B, N) fp32 (1/rms of each token's k or q
across heads) and `k_weight` / `q_weight` (H*d,), they use k * k_rstd * k_weight, i.e. RMSNorm(k) * weight, computed as
k is loaded (q likewise). Why: the model then never writes normalized copies of q and k
(core.kernels.rms_norm.qk_rms_reciprocals computes only the two 1/rms vectors).

The streaming form adds the previous blocks' (vk, k_sum) before `apply`; see core/model for the state object.
"""

from __future__ import annotations

import torch

from core.kernels._triton import load_impl, wants_triton
from core.kernels.fp8_out import cast_e4m3


def _acc(x: torch.Tensor) -> torch.Tensor:
    """Accumulation precision: at least fp32 (fp64 inputs stay fp64 so float64 references are exact)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def rope_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of the last dim. x (B, N, H, d); cos/sin (N, d/2). Returns x's dtype promoted with fp32."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]                  # (B, N, H, d/2)
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = torch.stack((x_even * c - x_odd * s, x_even * s + x_odd * c), dim=-1)  # (B, N, H, d/2, 2)
    return out.flatten(-2)


def _normalized(x: torch.Tensor, rstd: torch.Tensor | None, weight: torch.Tensor | None) -> torch.Tensor:
    """x (B, N, H, d) * rstd (B, N) * weight (H*d,) in the accumulation precision (either may be None)."""
    xf = _acc(x)
    if rstd is not None:
        xf = xf * _acc(rstd)[..., None, None]
    if weight is not None:
        xf = xf * _acc(weight).view(x.shape[-2], x.shape[-1])
    return xf


def linear_attn_state_reference(k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                                k_weight: torch.Tensor | None = None, k_rstd: torch.Tensor | None = None
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """This chunk's own contribution: vk (B, H, d, d) fp32 and k_sum (B, H, d) fp32 (for k * k_rstd * k_weight)."""
    k_relu = torch.relu(_normalized(k, k_rstd, k_weight))
    k_rot = rope_pairs(k_relu, cos, sin)                        # (B, N, H, d) fp32
    vk = torch.einsum("bnhi,bnhj->bhij", _acc(v), k_rot)      # (B, H, d, d)
    k_sum = k_relu.sum(dim=1)                                   # (B, H, d)
    return vk, k_sum


def linear_attn_apply_reference(q: torch.Tensor, vk: torch.Tensor, k_sum: torch.Tensor, cos: torch.Tensor,
                                sin: torch.Tensor, eps: float, out_scale: torch.Tensor | None = None,
                                q_weight: torch.Tensor | None = None, q_rstd: torch.Tensor | None = None
                                ) -> torch.Tensor:
    """out (B, N, H, d) in q.dtype from the total state (this chunk + previous blocks); with `out_scale`, FP8 E4M3
    (core.kernels.fp8_out); with `q_rstd` (B, N) and / or `q_weight` (H*d,), for the query q * q_rstd * q_weight."""
    q_relu = torch.relu(_normalized(q, q_rstd, q_weight))
    q_rot = rope_pairs(q_relu, cos, sin)                        # (B, N, H, d)
    num = torch.einsum("bhij,bnhj->bnhi", vk.to(q_rot.dtype), q_rot)            # (B, N, H, d)
    den = torch.einsum("bhj,bnhj->bnh", k_sum.to(q_relu.dtype), q_relu)          # (B, N, H)
    out = num / (den[..., None] + eps)
    return out.to(q.dtype) if out_scale is None else cast_e4m3(out, out_scale)


# ---- dispatch: Triton on CUDA (through a custom op so torch.compile sees one opaque node), reference elsewhere ----

_IMPL = "core.kernels.linear_attention_triton"


def _state_impl(k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                k_weight: torch.Tensor | None = None, k_rstd: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    impl = load_impl(_IMPL) if k.is_cuda else None
    if impl is None:
        return linear_attn_state_reference(k, v, cos, sin, k_weight, k_rstd)
    return impl.linear_attn_state_triton(k, v, cos, sin, k_weight=k_weight, k_rstd=k_rstd)


def _apply_impl(q: torch.Tensor, vk: torch.Tensor, k_sum: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                eps: float, out_scale: torch.Tensor | None = None, q_weight: torch.Tensor | None = None,
                q_rstd: torch.Tensor | None = None) -> torch.Tensor:
    impl = load_impl(_IMPL) if q.is_cuda else None
    if impl is None:
        return linear_attn_apply_reference(q, vk, k_sum, cos, sin, eps, out_scale, q_weight, q_rstd)
    return impl.linear_attn_apply_triton(q, vk, k_sum, cos, sin, eps, out_scale=out_scale, q_weight=q_weight,
                                         q_rstd=q_rstd)


@torch.library.custom_op("sana_video::linear_attn_state", mutates_args=())
def _state_op(k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              k_weight: torch.Tensor | None = None, k_rstd: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    vk, k_sum = _state_impl(k, v, cos, sin, k_weight, k_rstd)
    return vk.clone() if vk._base is not None else vk, k_sum.clone() if k_sum._base is not None else k_sum


@_state_op.register_fake
def _state_fake(k, v, cos, sin, k_weight=None, k_rstd=None):
    B, _, H, d = k.shape
    return k.new_empty((B, H, d, d), dtype=torch.float32), k.new_empty((B, H, d), dtype=torch.float32)


@torch.library.custom_op("sana_video::linear_attn_apply", mutates_args=())
def _apply_op(q: torch.Tensor, vk: torch.Tensor, k_sum: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              eps: float, out_scale: torch.Tensor | None = None, q_weight: torch.Tensor | None = None,
              q_rstd: torch.Tensor | None = None) -> torch.Tensor:
    return _apply_impl(q, vk, k_sum, cos, sin, eps, out_scale, q_weight, q_rstd)


@_apply_op.register_fake
def _apply_fake(q, vk, k_sum, cos, sin, eps, out_scale=None, q_weight=None, q_rstd=None):
    return q.new_empty(q.shape, dtype=q.dtype if out_scale is None else torch.float8_e4m3fn)


def linear_attn_state(k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      k_weight: torch.Tensor | None = None, k_rstd: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch: Triton kernel on CUDA when available, else the reference. k_rstd, k_weight: k's RMSNorm applied on
    load (module docstring)."""
    extra = [t for t in (k_weight, k_rstd) if t is not None]
    if not wants_triton(k, v, cos, sin, *extra):
        return linear_attn_state_reference(k, v, cos, sin, k_weight, k_rstd)
    if torch.compiler.is_compiling():
        return _state_op(k, v, cos, sin, k_weight, k_rstd)
    return _state_impl(k, v, cos, sin, k_weight, k_rstd)


def linear_attn_state_totals(k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                             prev_vk: torch.Tensor, prev_k_sum: torch.Tensor, k_weight: torch.Tensor | None = None,
                             k_rstd: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The streaming form: (own vk, own k_sum, vk + prev_vk, k_sum + prev_k_sum), i.e. this chunk's state and the
    totals with the previous blocks' (official: vk += cum_vk). On CUDA one pass sums the kernel's partial states and
    adds the previous ones."""
    extra = [t for t in (k_weight, k_rstd) if t is not None]
    if wants_triton(k, v, cos, sin, prev_vk, prev_k_sum, *extra) and not torch.compiler.is_compiling():
        impl = load_impl(_IMPL)
        if impl is not None:
            return impl.linear_attn_state_totals_triton(k, v, cos, sin, prev_vk, prev_k_sum, k_weight=k_weight,
                                                        k_rstd=k_rstd)
    own_vk, own_k_sum = linear_attn_state(k, v, cos, sin, k_weight, k_rstd)
    return own_vk, own_k_sum, own_vk + prev_vk, own_k_sum + prev_k_sum


def linear_attn_apply(q: torch.Tensor, vk: torch.Tensor, k_sum: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      eps: float, out_scale: torch.Tensor | None = None, q_weight: torch.Tensor | None = None,
                      q_rstd: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA when available, else the reference. out_scale: FP8 E4M3 output; q_rstd,
    q_weight: q's RMSNorm applied on load (module docstring)."""
    extra = [t for t in (q_weight, q_rstd) if t is not None]
    if not wants_triton(q, vk, k_sum, cos, sin, *extra):
        return linear_attn_apply_reference(q, vk, k_sum, cos, sin, eps, out_scale, q_weight, q_rstd)
    if torch.compiler.is_compiling():
        return _apply_op(q, vk, k_sum, cos, sin, float(eps), out_scale, q_weight, q_rstd)
    return _apply_impl(q, vk, k_sum, cos, sin, eps, out_scale, q_weight, q_rstd)
