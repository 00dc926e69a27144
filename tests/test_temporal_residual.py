"""core.kernels.temporal_residual: the shifted-GEMM tail equals the stacked-GEMM formula, and MixFFN picks it only for
a plain, unhooked temporal Linear with one gate per sample."""

from __future__ import annotations

import random

import pytest
import torch

from core.kernels import temporal_residual as tr


@pytest.fixture
def gen():
    seed = random.SystemRandom().randrange(2**31)
    return torch.Generator().manual_seed(seed)  # g.initial_seed() reproduces a failure


def randn(g, *shape, dtype=torch.float64, scale=1.0):
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def inputs(g, b, t, s, d, with_prev, dtype=torch.float64):
    x = randn(g, b, t * s, d, dtype=dtype)
    u = randn(g, b, t, s, d, dtype=dtype)
    gate = randn(g, b, 1, d, dtype=dtype)
    weight = randn(g, d, 3 * d, dtype=dtype, scale=d ** -0.5)
    prev = randn(g, b, s, d, dtype=dtype) if with_prev else None
    return x, u, gate, weight, prev


def rel_err(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.mark.parametrize("with_prev", [False, True])
@pytest.mark.parametrize("shape", [(1, 3, 4, 8), (2, 5, 6, 12), (1, 1, 4, 8), (2, 2, 1, 4)])
def test_fast_equals_reference_in_fp64(shape, with_prev, gen):
    args = inputs(gen, *shape, with_prev)
    ref = tr.temporal_gated_residual_reference(*args)
    got = tr.temporal_gated_residual_fast(*args)
    assert got.shape == ref.shape
    assert rel_err(got, ref) < 1e-13, f"seed {gen.initial_seed()}"


def test_reference_is_the_block_formula(gen):
    """Independent of both implementations: u_{t-1} and u_{t+1} by explicit frame indexing, zero past the ends."""
    x, u, gate, weight, prev = inputs(gen, 2, 4, 3, 6, True)
    d = u.shape[-1]
    w_prev, w_now, w_next = weight[:, :d], weight[:, d:2 * d], weight[:, 2 * d:]
    frames = []
    for f in range(u.shape[1]):
        before = prev if f == 0 else u[:, f - 1]
        after = torch.zeros_like(u[:, f]) if f == u.shape[1] - 1 else u[:, f + 1]
        frames.append(u[:, f] + before @ w_prev.t() + u[:, f] @ w_now.t() + after @ w_next.t())
    expected = x + gate * torch.cat(frames, dim=1)
    assert rel_err(tr.temporal_gated_residual_reference(x, u, gate, weight, prev), expected) < 1e-13


@pytest.mark.parametrize("with_prev", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fast_path_error_is_that_of_the_reference(dtype, with_prev, gen):
    """At low precision the fast path may round differently, but it is at most ~2x as wrong as the reference."""
    args64 = inputs(gen, 2, 4, 6, 32, with_prev)
    ref64 = tr.temporal_gated_residual_reference(*args64)
    low = [None if a is None else a.to(dtype) for a in args64]
    err_fast = rel_err(tr.temporal_gated_residual_fast(*low), ref64)
    err_ref = rel_err(tr.temporal_gated_residual_reference(*low), ref64)
    assert err_fast <= 2 * err_ref + 2**-22, f"{err_fast:.3e} vs reference {err_ref:.3e}, seed {gen.initial_seed()}"


def test_bad_shapes_raise(gen):
    x, u, gate, weight, prev = inputs(gen, 1, 3, 4, 8, True)
    with pytest.raises(ValueError, match="gate"):
        tr.temporal_gated_residual_fast(x, u, gate.expand(1, 3, 8), weight, prev)
    with pytest.raises(ValueError, match="temporal weight"):
        tr.temporal_gated_residual_fast(x, u, gate, weight[:, :16], prev)
    with pytest.raises(ValueError, match="previous frame"):
        tr.temporal_gated_residual_fast(x, u, gate, weight, prev[:, :2])


def test_custom_op_fake_matches_real(gen):
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = inputs(gen, 1, 3, 4, 8, True, dtype=torch.float32)
    real = tr._op(*args)
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = tr._op(*args)
    assert (fake.shape, fake.dtype) == (real.shape, real.dtype)


def _ffn(gen, d=8, hidden=12):
    from core.model.layers import MixFFN

    ffn = MixFFN(d, hidden).double()
    with torch.no_grad():
        for p in ffn.parameters():
            p.copy_(randn(gen, *p.shape, scale=0.3))
    return ffn


@pytest.mark.parametrize("per_frame_gate", [False, True])
def test_mixffn_fused_tail_equals_module_path(per_frame_gate, gen):
    ffn = _ffn(gen)
    b, t, hh, ww, d = 2, 3, 2, 3, 8
    residual, x = randn(gen, b, t * hh * ww, d), randn(gen, b, t * hh * ww, d)
    gate = randn(gen, b, t if per_frame_gate else 1, d)
    prev = randn(gen, b, hh * ww, d)
    with torch.no_grad():
        got, u = ffn(residual, x, gate, t, hh, ww, prev)
        from core.model.layers import gated
        expected = residual + gated(ffn._temporal_via_module(u, prev), gate, t)
    assert rel_err(got, expected) < 1e-13


def test_mixffn_calls_a_hooked_temporal_module(gen):
    """Calibration hooks (ours and ModelOpt's) must see the temporal layer's input, so a hooked layer is called."""
    ffn = _ffn(gen)
    seen = []
    handle = ffn.temporal.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape))
    b, t, hh, ww, d = 1, 2, 2, 2, 8
    residual, x, gate = randn(gen, b, t * hh * ww, d), randn(gen, b, t * hh * ww, d), randn(gen, b, 1, d)
    with torch.no_grad():
        hooked, _ = ffn(residual, x, gate, t, hh, ww)
        handle.remove()
        fused, _ = ffn(residual, x, gate, t, hh, ww)
    assert seen == [torch.Size([b, t, hh * ww, 3 * d])]
    assert rel_err(hooked, fused) < 1e-13


@pytest.mark.parametrize("with_prev", [False, True])
def test_in_place_equals_out_of_place(with_prev, gen):
    x, u, gate, weight, prev = inputs(gen, 2, 3, 4, 8, with_prev)
    expected = tr.temporal_gated_residual_fast(x, u, gate, weight, prev)
    x_own = x.clone()
    got = tr.temporal_gated_residual(x_own, u, gate, weight, prev, inplace=True)
    assert got.data_ptr() == x_own.data_ptr()
    assert rel_err(got, expected) < 1e-14


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixffn_halved_preactivation_changes_no_bit(gen, monkeypatch):
    """On CUDA in eager bf16 the inverted GEMM writes its output / 2 (alpha = 1/2, halved bias) for the fused dwconv
    kernel; the FFN's result is the same bits as with the plain inverted layer."""
    from core.kernels import dwconv_glu
    from core.model import layers

    d, hidden = 64, 96
    ffn = layers.MixFFN(d, hidden)
    with torch.no_grad():
        for p in ffn.parameters():
            p.copy_(randn(gen, *p.shape, scale=0.3))
    ffn = ffn.to("cuda", torch.bfloat16)
    b, t, hh, ww = 1, 3, 6, 10
    residual = randn(gen, b, t * hh * ww, d, dtype=torch.bfloat16).cuda()
    x = randn(gen, b, t * hh * ww, d, dtype=torch.bfloat16).cuda()
    gate = randn(gen, b, 1, d, dtype=torch.bfloat16).cuda()
    seen = []
    real = dwconv_glu.dwconv3x3_glu
    monkeypatch.setattr(layers, "dwconv3x3_glu", lambda *a, **k: seen.append(k["halved_input"]) or real(*a, **k))
    with torch.no_grad():
        monkeypatch.setitem(layers.MIXFFN_CFG, "halved_preactivation", True)
        halved, _ = ffn(residual, x, gate, t, hh, ww)
        monkeypatch.setitem(layers.MIXFFN_CFG, "halved_preactivation", False)
        plain, _ = ffn(residual, x, gate, t, hh, ww)
    assert seen == [True, False]
    assert torch.equal(halved, plain)
