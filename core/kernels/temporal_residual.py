"""The Mix-FFN's temporal tail fused with the block's gated residual update.

u (B, T, S, D): post-point-conv features (S = H'W' tokens per frame); weight (D, 3D): the dense (3, 1) temporal conv
as a Linear whose column blocks are the taps for u_{t-1}, u_t, u_{t+1}; gate (B, 1, D): one gate per sample (the
usual single timestep); prev (B, S, D) or None: the frame before the first one (streaming), zero when None; the
frame after the last one is always zero (CachedGLUMBConvTemp).

    out = x + gate * (u + [u_{t-1}, u_t, u_{t+1}] @ weight^T)              (B, T*S, D)

The reference builds the stacked (B, T, S, 3D) tensor and runs one GEMM, then three elementwise passes. The fast path
builds nothing and makes no elementwise pass over the activations: three GEMMs, the first with x as its C operand
(cuBLAS beta = 1) and the other two accumulating in place into frame-shifted row ranges of `out`. That is exact
algebra, not an approximation:
- the gate scales output channel j, so it folds into row j of the weight: gate_j * sum_k u_k W_jk = sum_k u_k (gate_j W_jk);
- the residual's own `u` is u times the identity, so it joins the centre tap: gate * (u + u W_now^T) = u (gate (W_now + I))^T;
- token-major rows are frame after frame, so "the previous frame" of rows [S, T*S) is rows [0, (T-1)*S) of u.
Why: the concatenation writes and re-reads a 3D-wide tensor per layer, and the GEMM epilogue's read of x is hidden
behind the GEMM's math (a compute-bound GEMM), so the tail costs GEMMs only (an `x + gate * u` pass cost ~0.11 ms per
layer of a 480p block on an H100).
Rounding differs from the reference only in order (bf16: each gate-scaled weight, the centre diagonal gate (W_jj + 1)
included, is rounded once; the reference rounds the GEMM output, the sum and the product instead). This is for plain
16/32-bit weights only: an FP8 centre tap could not hold W_jj + 1 to better than 1/16.
"""

from __future__ import annotations

import torch

from core.kernels.scale_rows import scale_rows


def _check(x: torch.Tensor, u: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor,
           prev: torch.Tensor | None) -> None:
    if u.dim() != 4:
        raise ValueError(f"u must be (B, T, S, D), got {tuple(u.shape)}")
    b, t, s, d = u.shape
    if tuple(x.shape) != (b, t * s, d):
        raise ValueError(f"x {tuple(x.shape)} does not match u {tuple(u.shape)}")
    if tuple(gate.shape) != (b, 1, d):
        raise ValueError(f"gate must be (B, 1, D) = {(b, 1, d)}, got {tuple(gate.shape)}")
    if tuple(weight.shape) != (d, 3 * d):
        raise ValueError(f"temporal weight must be (D, 3D) = {(d, 3 * d)}, got {tuple(weight.shape)}")
    if prev is not None and tuple(prev.shape) != (b, s, d):
        raise ValueError(f"previous frame must be (B, S, D) = {(b, s, d)}, got {tuple(prev.shape)}")


def stack_temporal_taps(u: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
    """u (B, T, S, D) -> [u_{t-1}, u_t, u_{t+1}] (B, T, S, 3D): the temporal conv's input for a Linear(3D, D); the
    frame before the first is `prev` (or zero), the frame after the last is zero."""
    b, _, s, d = u.shape
    left = u.new_zeros(b, 1, s, d) if prev is None else prev[:, None].to(u.dtype)
    right = u.new_zeros(b, 1, s, d)
    padded = torch.cat([left, u, right], dim=1)                               # (B, T+2, S, D)
    return torch.cat([padded[:, :-2], u, padded[:, 2:]], dim=-1)              # (B, T, S, 3D)


def temporal_gated_residual_reference(x: torch.Tensor, u: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor,
                                      prev: torch.Tensor | None) -> torch.Tensor:
    """The plain formula: stack [u_{t-1}, u_t, u_{t+1}], one GEMM, residual."""
    _check(x, u, gate, weight, prev)
    b, t, s, d = u.shape
    y = u + stack_temporal_taps(u, prev) @ weight.t()                         # (B, T, S, D)
    return x + gate * y.view(b, t * s, d)


def temporal_gated_residual_fast(x: torch.Tensor, u: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor,
                                 prev: torch.Tensor | None, inplace: bool = False) -> torch.Tensor:
    """Shifted in-place GEMMs with the gate folded into the weight (module docstring); same result as the reference.
    inplace=True accumulates into x itself (contiguous, not needed by the caller; saves the copy of x that a GEMM
    into a separate output makes first)."""
    _check(x, u, gate, weight, prev)
    b, t, s, d = u.shape
    n = t * s
    u2 = u.reshape(b, n, d)                                                   # (B, N, D) view
    out = x if inplace else torch.empty_like(x)
    for i in range(b):   # gates differ per sample (CFG halves may differ); batch is 1 or 2 here
        # (D, 3D) gate-scaled rows, with the residual's own u term as the identity in the centre tap:
        # gate_j (W_jj + 1), each entry rounded once
        w = scale_rows(weight, gate[i, 0], u.dtype, identity_col=d)
        w_prev, w_now, w_next = (w[:, j * d:(j + 1) * d].t() for j in range(3))   # (D_in, D_out) strided views
        o = out[i]                                                            # (N, D) contiguous rows
        if inplace:
            o.addmm_(u2[i], w_now)                                            # x + gate * (u + u W_now^T)
        else:
            torch.addmm(x[i], u2[i], w_now, out=o)
        if t > 1:
            o[s:].addmm_(u2[i, :n - s], w_prev)                               # frame f gets u_{f-1} for f >= 1
            o[:n - s].addmm_(u2[i, s:], w_next)                               # frame f gets u_{f+1} for f <= T-2
        if prev is not None:
            o[:s].addmm_(prev[i].to(u.dtype), w_prev)                         # frame 0 gets the streamed frame
    return out


@torch.library.custom_op("sana_video::temporal_gated_residual", mutates_args=())
def _op(x: torch.Tensor, u: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor,
        prev: torch.Tensor | None) -> torch.Tensor:
    return temporal_gated_residual_fast(x, u, gate, weight, prev)


@_op.register_fake
def _op_fake(x, u, gate, weight, prev):
    return torch.empty_like(x)


def temporal_gated_residual(x: torch.Tensor, u: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor,
                            prev: torch.Tensor | None, inplace: bool = False) -> torch.Tensor:
    """The fast path; under torch.compile one opaque op (inductor would turn the in-place slice updates into copies;
    `inplace` is ignored there)."""
    if torch.compiler.is_compiling():
        return _op(x, u, gate, weight, prev)
    return temporal_gated_residual_fast(x, u, gate, weight, prev, inplace and x.is_contiguous())
