"""NVFP4 and FP8 (E4M3) number formats in plain PyTorch: encode, decode, pack, quantize, dequantize.

Conventions follow ModelOpt's unified export and torchao (reference/nvfp4-and-fp8.md 2.1-2.2), so our tensors are
interchangeable with theirs:

- NVFP4: E2M1 elements (sign bit 3, magnitude code 0..7 -> {0, .5, 1, 1.5, 2, 3, 4, 6}), round to nearest even;
  two elements per byte, element 2i in the LOW nibble; one E4M3 scale per 16 consecutive elements along K; one FP32
  tensor scale `s_g = amax / (6 * 448)`. Dequantized value = e2m1 * fp32(block_scale) * s_g.
- FP8: float8_e4m3fn with one FP32 per-tensor scale `amax / 448`.

Everything here runs on any device and is the numerical reference for the fast paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.kernels.fp8_out import E4M3_MAX, cast_e4m3

NVFP4_BLOCK = 16
E2M1_MAX = 6.0
# ModelOpt clamps block scales to [2^-9, 448] before the E4M3 cast (2^-9 is the smallest E4M3 subnormal).
E4M3_MIN_SCALE = 2.0 ** -9

# Magnitudes of codes 0..7; code | 8 is the negative value.
E2M1_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def e2m1_table(device: torch.device | str | None = None) -> torch.Tensor:
    """The 16 E2M1 values indexed by 4-bit code: (16,) fp32."""
    mags = torch.tensor(E2M1_MAGNITUDES, dtype=torch.float32, device=device)
    return torch.cat([mags, -mags])


def e2m1_encode(x: torch.Tensor) -> torch.Tensor:
    """Round already-scaled values to E2M1 codes (uint8 0..15), nearest even, saturating at +-6.

    The magnitude code counts the midpoints below |x|. At a midpoint the even code wins: `>` keeps a tie low
    (0.25->0, 1.25->1.0, 2.5->2.0, 5->4.0), `>=` moves it up (0.75->1.0, 1.75->2.0, 3.5->4.0). Plain comparisons, so
    torch.compile fuses it. NaN is not representable in E2M1; callers never pass it (scales are finite and clamped)."""
    mag = x.float().abs()
    code = ((mag > 0.25).to(torch.uint8) + (mag >= 0.75).to(torch.uint8) + (mag > 1.25).to(torch.uint8)
            + (mag >= 1.75).to(torch.uint8) + (mag > 2.5).to(torch.uint8) + (mag >= 3.5).to(torch.uint8)
            + (mag > 5.0).to(torch.uint8))
    sign = (x < 0).to(torch.uint8) << 3  # -0 is kept as code 8, like ModelOpt
    return code | sign


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8 0..15) -> fp32 values."""
    return e2m1_table(codes.device)[codes.long()]


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """(..., K) uint8 codes -> (..., K/2) bytes; element 2i in the low nibble, 2i+1 in the high nibble."""
    if codes.shape[-1] % 2:
        raise ValueError(f"last dimension {codes.shape[-1]} must be even to pack two E2M1 values per byte")
    return (codes[..., 0::2] & 0x0F) | ((codes[..., 1::2] & 0x0F) << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """(..., K/2) bytes -> (..., K) uint8 codes (inverse of pack_nibbles)."""
    lo = packed & 0x0F
    hi = packed >> 4
    return torch.stack([lo, hi], dim=-1).flatten(-2)


def nvfp4_global_scale(amax: torch.Tensor | float) -> torch.Tensor:
    """FP32 second-level scale amax / (6*448); an all-zero tensor gets 1.0 so nothing divides by zero."""
    amax = torch.as_tensor(amax, dtype=torch.float32)
    scale = amax / (E2M1_MAX * E4M3_MAX)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def nvfp4_block_scales(x: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
    """(..., K) -> (..., K/16) float8_e4m3fn block scales: amax_block / 6 / s_g, zero blocks -> 1, clamped."""
    blocks = x.float().unflatten(-1, (-1, NVFP4_BLOCK))            # (..., K/16, 16)
    block_amax = blocks.abs().amax(dim=-1)                          # (..., K/16)
    scale = block_amax / (E2M1_MAX * global_scale.to(x.device).float())
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # all-zero block: any scale works, use 1
    return scale.clamp(E4M3_MIN_SCALE, E4M3_MAX).to(torch.float8_e4m3fn)


@dataclass
class NVFP4Tensor:
    """A packed NVFP4 matrix: data (R, K/2) uint8, block_scale (R, K/16) e4m3 (row-major, NOT swizzled),
    global_scale () fp32."""
    data: torch.Tensor
    block_scale: torch.Tensor
    global_scale: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return (self.data.shape[0], self.data.shape[1] * 2)


def nvfp4_quantize(x: torch.Tensor, global_scale: torch.Tensor | None = None) -> NVFP4Tensor:
    """(R, K) float -> NVFP4. `global_scale` None = from this tensor's amax (weights); given = static (activations
    with a calibrated scale: values above the calibrated range saturate)."""
    if x.shape[-1] % NVFP4_BLOCK:
        raise ValueError(f"NVFP4 needs K divisible by {NVFP4_BLOCK}, got K={x.shape[-1]}")
    xf = x.float()
    if global_scale is None:
        global_scale = nvfp4_global_scale(xf.abs().amax())
    global_scale = global_scale.to(device=x.device, dtype=torch.float32)
    block_scale = nvfp4_block_scales(xf, global_scale)                                 # (R, K/16)
    denom = block_scale.float() * global_scale                                         # (R, K/16)
    scaled = (xf.unflatten(-1, (-1, NVFP4_BLOCK)) / denom.unsqueeze(-1)).flatten(-2)   # (R, K)
    codes = e2m1_encode(scaled)            # |v| > 5 encodes as 6: saturation needs no explicit clamp
    return NVFP4Tensor(pack_nibbles(codes), block_scale, global_scale)


def nvfp4_dequantize(q: NVFP4Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """NVFP4 -> (R, K) values in `dtype` (computed in fp32)."""
    values = e2m1_decode(unpack_nibbles(q.data))                                      # (R, K)
    scale = q.block_scale.float() * q.global_scale.float()                            # (R, K/16)
    out = values.unflatten(-1, (-1, NVFP4_BLOCK)) * scale.unsqueeze(-1)
    return out.flatten(-2).to(dtype)


def fp8_scale(amax: torch.Tensor | float) -> torch.Tensor:
    """FP32 per-tensor E4M3 scale amax / 448; zero amax -> 1."""
    amax = torch.as_tensor(amax, dtype=torch.float32)
    scale = amax / E4M3_MAX
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def fp8_quantize(x: torch.Tensor, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x float -> (float8_e4m3fn data, fp32 scale); saturates at +-448 (the cast itself would give NaN)."""
    if scale is None:
        scale = fp8_scale(x.detach().abs().amax().float())
    scale = scale.to(device=x.device, dtype=torch.float32)
    data = cast_e4m3(x.float(), scale)
    return data, scale


def fp8_dequantize(data: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (data.float() * scale.float()).to(dtype)
