"""The elementwise glue of a block whose GEMMs read FP8 E4M3 (quant/ FP8 layers, core/kernels/fp8_out.py).

In the bf16 block the residual updates ride the GEMMs themselves (cuBLAS beta = 1, gate folded into weight rows;
core.kernels.gate_fold, temporal_residual). An FP8 GEMM (`torch._scaled_mm`) has no C operand and its weight is
fixed, so there the updates are elementwise passes; these kernels make each one a single pass that also writes the
FP8 copy the next GEMM reads, instead of PyTorch's multiply, add and cast passes plus a concatenation:

- `gated_residual(x, a, gate, b=None, out_scale=None)`:
      x_new = x + gate * (a + b)        (b optional), rounded to x.dtype
      xq    = x_new / out_scale as E4M3 (saturated at +-448, nearest even), from the rounded x_new
  x, a, b (B, N, D); gate (B, G, D), token n uses gate group n // (N / G) (per sample: G = 1; per frame: G = T).
  Used after the self-attention out projection (xq feeds cross-attention's q projection) and for the FFN tail
  x + gate * (u + Conv_t(u)) (no xq).
- `stack_taps_e4m3(u, prev, out_scale)`: [u_{t-1}, u_t, u_{t+1}] / out_scale as E4M3, (B, T, S, 3D) from u (B, T, S, D),
  the temporal conv's input for one FP8 GEMM of K = 3D; the frame before the first is `prev` (B, S, D) or zero, the
  frame after the last is zero (core.kernels.temporal_residual.stack_temporal_taps is the same in high precision).

Computed in fp32 (fp64 for fp64 inputs in the references).
"""

from __future__ import annotations

import torch

from core.kernels._triton import load_impl, wants_triton
from core.kernels.fp8_out import cast_e4m3
from core.kernels.temporal_residual import stack_temporal_taps

_IMPL = "core.kernels.fp8_residual_triton"


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def gate_groups(gate: torch.Tensor, batch: int, tokens: int, dim: int) -> torch.Tensor:
    """gate (B, G, D) with G dividing N, checked."""
    if gate.dim() != 3 or gate.shape[0] != batch or gate.shape[2] != dim or gate.shape[1] == 0 \
            or tokens % gate.shape[1]:
        raise ValueError(f"gate {tuple(gate.shape)} must be (B, G, D) with G dividing N for x (B={batch}, N={tokens}, "
                         f"D={dim})")
    return gate


def _check_residual(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor | None) -> None:
    if x.dim() != 3 or a.shape != x.shape or (b is not None and b.shape != x.shape):
        raise ValueError(f"x, a (and b) must be the same (B, N, D): {tuple(x.shape)}, {tuple(a.shape)}"
                         + ("" if b is None else f", {tuple(b.shape)}"))


def _check_taps(u: torch.Tensor, prev: torch.Tensor | None) -> None:
    if u.dim() != 4 or (prev is not None and tuple(prev.shape) != (u.shape[0], u.shape[2], u.shape[3])):
        raise ValueError(f"u must be (B, T, S, D) and prev (B, S, D), got {tuple(u.shape)} and "
                         f"{None if prev is None else tuple(prev.shape)}")


def gated_residual_reference(x: torch.Tensor, a: torch.Tensor, gate: torch.Tensor, b: torch.Tensor | None = None,
                             out_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x_new (B, N, D) in x.dtype, xq (B, N, D) E4M3 or None); a new tensor, x is not changed."""
    _check_residual(x, a, b)
    B, N, D = x.shape
    g = _acc(gate_groups(gate, B, N, D))                                      # (B, G, D)
    G = g.shape[1]
    update = _acc(a) if b is None else _acc(a) + _acc(b)
    x_new = (_acc(x) + (update.view(B, G, N // G, D) * g[:, :, None, :]).view(B, N, D)).to(x.dtype)
    return x_new, None if out_scale is None else cast_e4m3(x_new, out_scale)


def stack_taps_e4m3_reference(u: torch.Tensor, prev: torch.Tensor | None, out_scale: torch.Tensor) -> torch.Tensor:
    _check_taps(u, prev)
    return cast_e4m3(stack_temporal_taps(u, prev), out_scale)


def gated_residual(x: torch.Tensor, a: torch.Tensor, gate: torch.Tensor, b: torch.Tensor | None = None,
                   out_scale: torch.Tensor | None = None, inplace: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Dispatch: Triton on CUDA, the reference elsewhere. inplace=True writes x_new into x (contiguous, the caller's
    to change) and returns it; otherwise x_new is a new tensor."""
    tensors = [x, a, gate] + ([] if b is None else [b])
    impl = load_impl(_IMPL) if wants_triton(*tensors) and x.dtype != torch.float64 else None
    if impl is None:
        x_new, xq = gated_residual_reference(x, a, gate, b, out_scale)
        if inplace:
            x.copy_(x_new)
            x_new = x
        return x_new, xq
    _check_residual(x, a, b)
    gate_groups(gate, *x.shape)
    return impl.gated_residual_triton(x, a, gate, b, out_scale, inplace)


def stack_taps_e4m3(u: torch.Tensor, prev: torch.Tensor | None, out_scale: torch.Tensor) -> torch.Tensor:
    """Dispatch: Triton on CUDA, the reference elsewhere. Returns a new contiguous (B, T, S, 3D) E4M3 tensor."""
    tensors = [u] + ([] if prev is None else [prev])
    impl = load_impl(_IMPL) if wants_triton(*tensors) and u.dtype != torch.float64 else None
    if impl is None:
        return stack_taps_e4m3_reference(u, prev, out_scale)
    _check_taps(u, prev)
    return impl.stack_taps_e4m3_triton(u, prev, out_scale)
