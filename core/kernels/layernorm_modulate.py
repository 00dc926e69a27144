"""LayerNorm (no affine) followed by the AdaLN-single modulation `x_norm * (1 + scale) + shift` (t2i_modulate).

x (B, N, D). shift / scale, each one of:
- (B, D) or (B, 1, D): one modulation per sample (the usual single timestep);
- (B, N, D): per token (I2V: frame 0 at t=0);
- (B, T, 1, D): per latent frame, N = T * tokens_per_frame (frame-aware timesteps).
Computed in fp32 (or fp64 for fp64 inputs) and rounded once to x.dtype. The official code rounds the LayerNorm
output to bf16 before modulating; rounding once is slightly more accurate and otherwise the same function.

`add_layernorm_modulate(x, y, gate, shift, scale, eps)` fuses the residual update that precedes each norm in a block:
x_new = x + gate * y (gate None: x + y; gate shaped like shift/scale), rounded to x.dtype, then the normalised and
modulated x_new. One pass instead of a residual pass plus a norm pass.

`out_scale` (a 0-d fp32 tensor, optional): the normalised output is written as FP8 E4M3 (value / scale, saturated;
core/kernels/fp8_out.py) for an FP8 GEMM that reads it; the residual x_new stays in x.dtype.
"""

from __future__ import annotations

import torch

from core.kernels._triton import load_impl, wants_triton
from core.kernels.fp8_out import cast_e4m3


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def modulation_groups(m: torch.Tensor, batch: int, tokens: int, dim: int) -> torch.Tensor:
    """Normalise a shift/scale tensor to (B, G, D) with G dividing N (tokens n use group n // (N // G))."""
    if m.dim() == 2:
        m = m[:, None, :]
    elif m.dim() == 4:
        if m.shape[2] != 1:
            raise ValueError(f"per-frame modulation must be (B, T, 1, D), got {tuple(m.shape)}")
        m = m[:, :, 0, :]
    if m.dim() != 3 or m.shape[0] != batch or m.shape[2] != dim:
        raise ValueError(f"modulation shape {tuple(m.shape)} does not fit x (B={batch}, N={tokens}, D={dim})")
    groups = m.shape[1]
    if groups == 0 or tokens % groups:
        raise ValueError(f"modulation has {groups} groups, which does not divide N={tokens}")
    return m


def layernorm_modulate_reference(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
                                 out_scale: torch.Tensor | None = None) -> torch.Tensor:
    B, N, D = x.shape
    shift_g = _acc(modulation_groups(shift, B, N, D))                   # (B, G, D)
    scale_g = _acc(modulation_groups(scale, B, N, D))
    if shift_g.shape[1] != scale_g.shape[1]:
        raise ValueError("shift and scale must have the same modulation groups")
    G = shift_g.shape[1]
    xf = _acc(x)
    mean = xf.mean(dim=-1, keepdim=True)
    var = (xf - mean).square().mean(dim=-1, keepdim=True)
    y = ((xf - mean) * torch.rsqrt(var + eps)).view(B, G, N // G, D)
    y = (y * (1 + scale_g[:, :, None, :]) + shift_g[:, :, None, :]).view(B, N, D)
    return y.to(x.dtype) if out_scale is None else cast_e4m3(y, out_scale)


def add_layernorm_modulate_reference(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, shift: torch.Tensor,
                                     scale: torch.Tensor, eps: float, out_scale: torch.Tensor | None = None
                                     ) -> tuple[torch.Tensor, torch.Tensor]:
    B, N, D = x.shape
    if y.shape != x.shape:
        raise ValueError(f"y {tuple(y.shape)} must match x {tuple(x.shape)}")
    if gate is None:
        x_new = _acc(x) + _acc(y)
    else:
        gate_g = _acc(modulation_groups(gate, B, N, D))                     # (B, G, D)
        G = gate_g.shape[1]
        x_new = _acc(x) + (_acc(y).view(B, G, N // G, D) * gate_g[:, :, None, :]).view(B, N, D)
    x_new = x_new.to(x.dtype)                    # the residual stream is stored in x.dtype; the norm reads that
    return x_new, layernorm_modulate_reference(x_new, shift, scale, eps, out_scale)


_IMPL = "core.kernels.layernorm_modulate_triton"


def _impl(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
          out_scale: torch.Tensor | None = None) -> torch.Tensor:
    impl = load_impl(_IMPL) if x.is_cuda else None
    if impl is None:
        return layernorm_modulate_reference(x, shift, scale, eps, out_scale)
    return impl.layernorm_modulate_triton(x, shift, scale, eps, out_scale=out_scale)


@torch.library.custom_op("sana_video::layernorm_modulate", mutates_args=())
def _op(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
        out_scale: torch.Tensor | None = None) -> torch.Tensor:
    return _impl(x, shift, scale, eps, out_scale)


def _h_fake(x: torch.Tensor, out_scale: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(x.shape, dtype=x.dtype if out_scale is None else torch.float8_e4m3fn)


@_op.register_fake
def _op_fake(x, shift, scale, eps, out_scale=None):
    return _h_fake(x, out_scale)


def _add_impl(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, shift: torch.Tensor, scale: torch.Tensor,
              eps: float, out_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    impl = load_impl(_IMPL) if x.is_cuda else None
    if impl is None:
        return add_layernorm_modulate_reference(x, y, gate, shift, scale, eps, out_scale)
    return impl.add_layernorm_modulate_triton(x, y, gate, shift, scale, eps, out_scale=out_scale)


@torch.library.custom_op("sana_video::add_layernorm_modulate", mutates_args=())
def _add_op(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, shift: torch.Tensor, scale: torch.Tensor,
            eps: float, out_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    return _add_impl(x, y, gate, shift, scale, eps, out_scale)


@_add_op.register_fake
def _add_op_fake(x, y, gate, shift, scale, eps, out_scale=None):
    return x.new_empty(x.shape), _h_fake(x, out_scale)


def add_layernorm_modulate(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, shift: torch.Tensor,
                           scale: torch.Tensor, eps: float, out_scale: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + gate * y, layernorm_modulate(x + gate * y, shift, scale, eps)); new contiguous (B, N, D) tensors (the
    second in FP8 E4M3 with `out_scale`)."""
    tensors = [x, y, shift, scale] + ([] if gate is None else [gate])
    if not wants_triton(*tensors):
        return add_layernorm_modulate_reference(x, y, gate, shift, scale, eps, out_scale)
    if torch.compiler.is_compiling():
        return _add_op(x, y, gate, shift, scale, float(eps), out_scale)
    return _add_impl(x, y, gate, shift, scale, eps, out_scale)


def layernorm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
                       out_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA, the reference elsewhere. Returns a new contiguous (B, N, D) tensor (FP8 E4M3
    with `out_scale`)."""
    if not wants_triton(x, shift, scale):
        return layernorm_modulate_reference(x, shift, scale, eps, out_scale)
    if torch.compiler.is_compiling():
        return _op(x, shift, scale, float(eps), out_scale)
    return _impl(x, shift, scale, eps, out_scale)
