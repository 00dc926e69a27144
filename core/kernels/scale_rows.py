"""Gate-scaled weight rows for the GEMM-folded residual updates (core.kernels.gate_fold, temporal_residual).

    out[j, k] = gate[j] * (weight[j, k] + [k == identity_col + j])          (R, C), rounded once to out_dtype

weight (R, C), gate (R,); identity_col None, or the column where an identity block starts (the temporal tail's
centre tap, whose residual `u` joins the GEMM as u times the identity). Computed in fp32 (fp64 for fp64 inputs).
Why a kernel: PyTorch's broadcast multiply `weight * gate[:, None]` runs its unvectorized elementwise path (~31 us
for the 2240 x 6720 temporal weight on an H100, about half the bandwidth), and the identity took a second launch.
"""

from __future__ import annotations

import torch

from core.kernels._triton import load_impl, wants_triton


def _check(weight: torch.Tensor, gate: torch.Tensor, identity_col: int | None) -> None:
    if weight.dim() != 2 or tuple(gate.shape) != (weight.shape[0],):
        raise ValueError(f"weight must be (R, C) and gate (R,), got {tuple(weight.shape)} and {tuple(gate.shape)}")
    if identity_col is not None and not 0 <= identity_col <= weight.shape[1] - weight.shape[0]:
        raise ValueError(f"identity block at column {identity_col} does not fit a {tuple(weight.shape)} weight")


def scale_rows_reference(weight: torch.Tensor, gate: torch.Tensor, out_dtype: torch.dtype,
                         identity_col: int | None = None) -> torch.Tensor:
    _check(weight, gate, identity_col)
    acc = torch.promote_types(weight.dtype, torch.float32)
    w = weight.to(acc)
    if identity_col is not None:
        w = w.clone()
        w.diagonal(offset=identity_col).add_(1)
    return (w * gate.to(acc)[:, None]).to(out_dtype)


def scale_rows(weight: torch.Tensor, gate: torch.Tensor, out_dtype: torch.dtype,
               identity_col: int | None = None) -> torch.Tensor:
    """Dispatch: Triton on CUDA, the reference elsewhere. Returns a contiguous (R, C) tensor in out_dtype."""
    # the kernel computes in fp32: fp64 weights (tests, references) take the reference
    fits = weight.dtype != torch.float64 and gate.dtype != torch.float64
    impl = load_impl("core.kernels.scale_rows_triton") if fits and wants_triton(weight, gate) else None
    if impl is None:
        return scale_rows_reference(weight, gate, out_dtype, identity_col)
    _check(weight, gate, identity_col)
    return impl.scale_rows_triton(weight, gate, out_dtype, identity_col)
