"""The cuBLAS "1D block scaling factors" layout (PyTorch's SWIZZLE_32_4_4) that _scaled_mm needs for NVFP4 scales.

A (R, C) block-scale matrix (R rows of the operand, C = K/16) is zero-padded to (ceil(R/128)*128, ceil(C/4)*4),
cut into 128x4 tiles taken row-tile-major, and each tile is stored as 32 rows of [rows r, r+32, r+64, r+96] x 4
scales. _scaled_mm checks numel == round_up(R, 128) * round_up(C, 4).
"""

from __future__ import annotations

import torch


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def swizzled_numel(rows: int, cols: int) -> int:
    return _round_up(rows, 128) * _round_up(cols, 4)


def to_blocked(scales: torch.Tensor) -> torch.Tensor:
    """(R, C) -> flat (round_up(R,128) * round_up(C,4),) in the 128x4 swizzled order (padding is zero)."""
    rows, cols = scales.shape
    padded_rows, padded_cols = _round_up(rows, 128), _round_up(cols, 4)
    padded = scales
    if (padded_rows, padded_cols) != (rows, cols):
        # e4m3 has no zeros() kernels everywhere; pad through its uint8 view
        raw = scales.view(torch.uint8) if scales.dtype == torch.float8_e4m3fn else scales
        buf = torch.zeros(padded_rows, padded_cols, dtype=raw.dtype, device=scales.device)
        buf[:rows, :cols] = raw
        padded = buf.view(scales.dtype) if scales.dtype == torch.float8_e4m3fn else buf
    src = padded.view(torch.uint8) if padded.dtype == torch.float8_e4m3fn else padded
    tiles = src.view(padded_rows // 128, 128, padded_cols // 4, 4).permute(0, 2, 1, 3)   # (Rt, Ct, 128, 4)
    out = tiles.reshape(-1, 4, 32, 4).transpose(1, 2).reshape(-1, 32, 16).flatten()      # per tile: (32, 4x4)
    return out.view(scales.dtype) if scales.dtype == torch.float8_e4m3fn else out


def from_blocked(blocked: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of to_blocked: flat swizzled scales -> (rows, cols), padding dropped."""
    padded_rows, padded_cols = _round_up(rows, 128), _round_up(cols, 4)
    if blocked.numel() != padded_rows * padded_cols:
        raise ValueError(f"{blocked.numel()} swizzled scales cannot hold a ({rows}, {cols}) matrix "
                         f"(expected {padded_rows * padded_cols})")
    src = blocked.view(torch.uint8) if blocked.dtype == torch.float8_e4m3fn else blocked
    tiles = src.reshape(-1, 32, 4, 4).transpose(1, 2)                                   # (T, 4, 32, 4)
    tiles = tiles.reshape(padded_rows // 128, padded_cols // 4, 128, 4).permute(0, 2, 1, 3)
    out = tiles.reshape(padded_rows, padded_cols)[:rows, :cols].contiguous()
    return out.view(blocked.dtype) if blocked.dtype == torch.float8_e4m3fn else out
