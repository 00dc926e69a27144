"""NVFP4 / FP8 number formats and the cuBLAS scale swizzle, against independent references (CPU)."""

import pytest
import torch

from quant import formats
from quant.formats import (
    E2M1_MAGNITUDES,
    e2m1_decode,
    e2m1_encode,
    fp8_dequantize,
    fp8_quantize,
    nvfp4_dequantize,
    nvfp4_quantize,
    pack_nibbles,
    unpack_nibbles,
)
from quant.swizzle import from_blocked, swizzled_numel, to_blocked


def _rne_e2m1_reference(v: float) -> float:
    """Nearest E2M1 value by brute force; a tie goes to the magnitude with the even code (mantissa bit 0)."""
    mag = min(abs(v), 6.0)
    dists = [abs(mag - m) for m in E2M1_MAGNITUDES]
    best = min(dists)
    codes = [i for i, d in enumerate(dists) if d == best]
    code = next((c for c in codes if c % 2 == 0), codes[0])
    return E2M1_MAGNITUDES[code] * (-1.0 if v < 0 else 1.0)


def test_e2m1_ties_round_to_even():
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    got = e2m1_decode(e2m1_encode(ties))
    assert got.tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    assert e2m1_decode(e2m1_encode(-ties)).tolist() == [-0.0, -1.0, -1.0, -2.0, -2.0, -4.0, -4.0]


def test_e2m1_matches_brute_force_everywhere():
    grid = torch.linspace(-8, 8, 4097)  # step 1/256: hits every midpoint exactly
    values = torch.cat([grid, torch.tensor([6.0, 7.5, 100.0, -100.0, 1e-6, -1e-6])])
    got = e2m1_decode(e2m1_encode(values))
    want = torch.tensor([_rne_e2m1_reference(float(v)) for v in values])
    assert torch.equal(got, want)


def test_e2m1_codes_are_sign_magnitude():
    codes = e2m1_encode(torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.5, -6.0]))
    assert codes.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9, 15]


def test_nibble_order_low_first():
    q = nvfp4_quantize(torch.tensor([[6.0, 0.5] + [0.0] * 14]))
    assert q.data[0, 0].item() == 0x17  # 6.0 is code 7 (low nibble), 0.5 is code 1 (high nibble)
    codes = torch.randint(0, 16, (3, 10), dtype=torch.uint8)
    packed = pack_nibbles(codes)
    assert packed.shape == (3, 5)
    assert torch.equal(packed[:, 0], codes[:, 0] + 16 * codes[:, 1])
    assert torch.equal(unpack_nibbles(packed), codes)


def test_tensor_and_block_scales_follow_the_formulas():
    torch.manual_seed(0)
    x = torch.randn(8, 64) * torch.logspace(-2, 1, 8)[:, None]   # rows of very different ranges
    q = nvfp4_quantize(x)
    amax = x.abs().max()
    assert torch.allclose(q.global_scale, amax / (6 * 448))
    block_amax = x.view(8, 4, 16).abs().amax(-1)
    want = (block_amax / 6 / (amax / 2688)).clamp(2 ** -9, 448).to(torch.float8_e4m3fn)
    assert torch.equal(q.block_scale.view(torch.uint8), want.view(torch.uint8))
    # the block that holds the global max gets the largest scale and reproduces amax exactly
    assert q.block_scale.float().max() == 448
    deq = nvfp4_dequantize(q)
    assert torch.isclose(deq.abs().max(), amax, rtol=1e-6)
    # every element is e2m1 * block scale * tensor scale with the brute-force rounding
    scale = (q.block_scale.float() * q.global_scale).repeat_interleave(16, dim=1)
    ref = torch.tensor([_rne_e2m1_reference(float(v)) for v in (x / scale).flatten()]).view_as(x) * scale
    assert torch.allclose(deq, ref, rtol=0, atol=0)
    rel = (deq - x).norm() / x.norm()
    assert 0.01 < rel < 0.2  # 4-bit RTN error: non-zero, bounded


def test_zero_and_tiny_blocks():
    x = torch.zeros(2, 48)
    x[0, 16:32] = torch.linspace(-1, 1, 16)           # a normal block
    x[1, 32:48] = 1e-7 * torch.arange(1, 17)          # a tiny block, far below amax/448
    q = nvfp4_quantize(x)
    scales = q.block_scale.float()
    assert scales[0, 0] == 1.0 and scales[1, 0] == 1.0   # zero blocks get scale 1
    assert scales[1, 2] == 2 ** -9                       # tiny block: clamped to the smallest E4M3 subnormal
    deq = nvfp4_dequantize(q)
    assert torch.all(deq[0, :16] == 0) and torch.all(deq[:, :16] == 0)
    assert torch.isfinite(deq).all()
    all_zero = nvfp4_quantize(torch.zeros(4, 32))
    assert all_zero.global_scale.item() == 1.0
    assert torch.equal(nvfp4_dequantize(all_zero), torch.zeros(4, 32))


def test_static_activation_scale_saturates_above_calibrated_range():
    x = torch.tensor([[1.0, 10.0] + [0.5] * 14])
    q = nvfp4_quantize(x, formats.nvfp4_global_scale(2.0))   # calibrated amax 2, the 10 saturates to 2
    deq = nvfp4_dequantize(q)
    assert torch.isclose(deq[0, 1], torch.tensor(2.0))


def test_nvfp4_rejects_bad_k():
    with pytest.raises(ValueError, match="divisible by 16"):
        nvfp4_quantize(torch.ones(2, 24))


def test_fp8_per_tensor_matches_torch_cast():
    torch.manual_seed(1)
    x = torch.randn(16, 32) * 3
    data, scale = fp8_quantize(x)
    assert torch.isclose(scale, x.abs().max() / 448)
    assert torch.equal(data.view(torch.uint8), (x / scale).to(torch.float8_e4m3fn).view(torch.uint8))
    deq = fp8_dequantize(data, scale)
    assert (deq - x).norm() / x.norm() < 0.05
    # a static scale smaller than the data saturates instead of producing NaN
    data2, _ = fp8_quantize(x, torch.tensor(x.abs().max().item() / 448 / 4))
    assert torch.isfinite(data2.float()).all() and data2.float().abs().max() == 448


def _blocked_offset(r: int, c: int, cols_padded: int) -> int:
    """cuBLAS 1D block-scaling layout: 128x4 tiles row-tile-major, inside a tile (r%32)*16 + (r%128//32)*4 + c%4."""
    tile = (r // 128) * (cols_padded // 4) + c // 4
    return tile * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4


@pytest.mark.parametrize("rows,cols", [(128, 4), (200, 6), (1, 1), (300, 9)])
def test_swizzle_layout_and_round_trip(rows, cols):
    scales = (torch.arange(rows * cols) % 250 + 1).to(torch.float32).view(rows, cols) / 16
    e4m3 = scales.to(torch.float8_e4m3fn)
    blocked = to_blocked(e4m3)
    rp, cp = -(-rows // 128) * 128, -(-cols // 4) * 4
    assert blocked.numel() == swizzled_numel(rows, cols) == rp * cp   # the numel _scaled_mm checks
    flat = blocked.view(torch.uint8)
    raw = e4m3.view(torch.uint8)
    for r in range(rows):
        for c in range(cols):
            assert flat[_blocked_offset(r, c, cp)] == raw[r, c]
    # padding is zero
    written = {_blocked_offset(r, c, cp) for r in range(rows) for c in range(cols)}
    padding = torch.tensor(sorted(set(range(flat.numel())) - written), dtype=torch.long)
    if padding.numel():
        assert torch.all(flat[padding] == 0)
    assert torch.equal(from_blocked(blocked, rows, cols).view(torch.uint8), raw)
