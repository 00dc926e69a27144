"""The self-attention residual with its gate folded into GEMMs: x + gate * (a @ W^T + b) with no elementwise pass.

The gate scales output channel j, so it folds into row j of the weight (gate_j * sum_k a_k W_jk = sum_k a_k gate_j W_jk)
and the residual x enters as the GEMM's C operand (cuBLAS beta = 1; its read is hidden behind the GEMM's math):

    x1 = addmm(x, a, (gate * W)^T)              = x + gate * (a @ W^T)                      (B, N, D)

The remaining per-sample constant c = gate * b is not added here: the next ops are linear in their input, so it folds
into their biases (see SanaVideoBlock): cross-attention's q projection sees x1 + c, i.e. bias b_q + W_q c, and its
output projection adds c to the residual, i.e. bias b_o + c. Why: in eager mode the plain `x + gate * (a W^T + b)`
costs two elementwise passes over (B, N, D) per block (~4 ms over 20 blocks of one 480p LongSANA block on an H100).
Gates and biases differ per sample (CFG halves), so each sample runs its own GEMM (batch is 1 or 2).
"""

from __future__ import annotations

import torch

from core.kernels.scale_rows import scale_rows


def gated_linear_residual(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor,
                          inplace: bool = False) -> torch.Tensor:
    """x, a (B, N, D_in->D); weight (D, D_in); gate (B, 1, D) -> x + gate * (a @ weight^T), (B, N, D).

    inplace=True accumulates into x itself (x must be contiguous per sample and not needed by the caller): a GEMM
    into a separate output first copies x there (PyTorch's addmm with out != input), a full extra pass."""
    b = x.shape[0]
    if tuple(gate.shape) != (b, 1, weight.shape[0]) or a.shape[:2] != x.shape[:2] or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"gated_linear_residual: x {tuple(x.shape)}, a {tuple(a.shape)}, weight "
                         f"{tuple(weight.shape)}, gate {tuple(gate.shape)} do not fit")
    out = x if inplace else torch.empty_like(x)
    for i in range(b):
        scaled = scale_rows(weight, gate[i, 0], a.dtype)                      # (D, D_in) gate-scaled rows
        if inplace:
            out[i].addmm_(a[i], scaled.t())
        else:
            torch.addmm(x[i], a[i], scaled.t(), out=out[i])
    return out


def linear_per_sample_bias(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (B, N, D_in), weight (D, D_in), bias (B, D) -> x @ weight^T + bias[i] for sample i, (B, N, D)."""
    b, n, _ = x.shape
    if tuple(bias.shape) != (b, weight.shape[0]):
        raise ValueError(f"per-sample bias must be {(b, weight.shape[0])}, got {tuple(bias.shape)}")
    out = x.new_empty((b, n, weight.shape[0]))
    for i in range(b):
        torch.addmm(bias[i].to(x.dtype), x[i], weight.t(), out=out[i])
    return out
