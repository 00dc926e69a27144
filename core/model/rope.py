"""3D rotary position tables (WanRotaryPosEmbed semantics) in the token-major layout.

Head dim d is split into a temporal, a height and a width part: h_dim = w_dim = 2*(d//6), t_dim = d - 2*h_dim
(40/36/36 for d=112). Each axis uses its own frequencies 1/theta^(arange(0, dim, 2)/dim); the tables hold one
angle per interleaved pair (x[2i], x[2i+1]) ordered [t pairs, h pairs, w pairs]. Angles are computed in float64
(as diffusers and the official code do) and stored as float32.

Positions are latent-grid indices after patchify. The temporal position is ABSOLUTE (frame_offset + f), which is
what LongSANA's CausalWanRotaryPosEmbed does; diffusers' causal branch restarts at 0 and is not followed here.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

ROPE_THETA = 10000.0


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """(t_dim, h_dim, w_dim) for one attention head."""
    h_dim = w_dim = 2 * (head_dim // 6)
    t_dim = head_dim - h_dim - w_dim
    return t_dim, h_dim, w_dim


def _axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """positions (P,) float64 -> angles (P, dim/2) float64."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim))
    return torch.outer(positions, freqs)


def build_rope_tables(head_dim: int, frames: int, height: int, width: int, frame_offset: int = 0,
                      device: torch.device | str | None = None, theta: float = ROPE_THETA
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (frames*height*width, head_dim/2), float32, tokens in (f, h, w) row-major order."""
    t_dim, h_dim, w_dim = rope_axis_dims(head_dim)
    f64 = dict(dtype=torch.float64, device=device)
    ang_t = _axis_angles(torch.arange(frame_offset, frame_offset + frames, **f64), t_dim, theta)  # (T, t/2)
    ang_h = _axis_angles(torch.arange(height, **f64), h_dim, theta)                                 # (H, h/2)
    ang_w = _axis_angles(torch.arange(width, **f64), w_dim, theta)                                  # (W, w/2)
    angles = torch.cat([
        ang_t[:, None, None, :].expand(frames, height, width, -1),
        ang_h[None, :, None, :].expand(frames, height, width, -1),
        ang_w[None, None, :, :].expand(frames, height, width, -1),
    ], dim=-1).reshape(frames * height * width, head_dim // 2)                                      # (N, d/2)
    return angles.cos().float(), angles.sin().float()


class RopeTableCache:
    """Small LRU of (cos, sin) tables keyed by (T', H', W', frame_offset, device).

    Lives outside the transformer blocks so that compiled blocks only ever see plain tensors."""

    def __init__(self, head_dim: int, max_positions: int, max_entries: int = 8) -> None:
        self.head_dim = head_dim
        self.max_positions = max_positions
        self.max_entries = max_entries
        self._tables: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def get(self, frames: int, height: int, width: int, frame_offset: int, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor]:
        if frame_offset < 0:
            raise ValueError(f"frame_offset must be >= 0, got {frame_offset}")
        if frame_offset + frames > self.max_positions or height > self.max_positions or width > self.max_positions:
            raise ValueError(
                f"RoPE positions exceed rope_max_seq_len={self.max_positions}: frames "
                f"{frame_offset}..{frame_offset + frames - 1}, grid {height}x{width} (the model was trained with "
                f"at most {self.max_positions} positions per axis)")
        device = torch.device(device)
        key = (frames, height, width, frame_offset, str(device))
        hit = self._tables.get(key)
        if hit is not None:
            self._tables.move_to_end(key)
            return hit
        tables = build_rope_tables(self.head_dim, frames, height, width, frame_offset, device)
        self._tables[key] = tables
        while len(self._tables) > self.max_entries:
            self._tables.popitem(last=False)
        return tables

    def clear(self) -> None:
        self._tables.clear()
