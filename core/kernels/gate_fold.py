"""The self-attention residual with its gate folded into GEMMs: x + gate * (a @ W^T + b) with no elementwise pass.

The gate scales output channel j, so it folds into row j of the weight (gate_j * sum_k a_k W_jk = sum_k a_k gate_j W_jk)
and the residual x enters as the GEMM's C operand (cuBLAS beta = 1; its read is hidden behind the GEMM's math). The
block goes one step further: the linear-attention state is folded into the same per-sample weight
(core/kernels/attn_fold.py), so that x1 = x + r @ m^T = x + gate * (a @ W^T) is one in-place GEMM per sample.

The remaining per-sample constant c = gate * b is not added there: the next ops are linear in their input, so it folds
into their biases (see SanaVideoBlock): cross-attention's q projection sees x1 + c, i.e. bias b_q + W_q c
(`linear_per_sample_bias` here), and its output projection adds c to the residual, i.e. bias b_o + c. Why: in eager
mode the plain `x + gate * (a W^T + b)` costs two elementwise passes over (B, N, D) per block (~4 ms over 20 blocks
of one 480p LongSANA block on an H100). Gates and biases differ per sample (CFG halves), so each sample runs its own
GEMM (batch is 1 or 2).
"""

from __future__ import annotations

import torch


def linear_per_sample_bias(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (B, N, D_in), weight (D, D_in), bias (B, D) -> x @ weight^T + bias[i] for sample i, (B, N, D)."""
    b, n, _ = x.shape
    if tuple(bias.shape) != (b, weight.shape[0]):
        raise ValueError(f"per-sample bias must be {(b, weight.shape[0])}, got {tuple(bias.shape)}")
    out = x.new_empty((b, n, weight.shape[0]))
    for i in range(b):
        torch.addmm(bias[i].to(x.dtype), x[i], weight.t(), out=out[i])
    return out
