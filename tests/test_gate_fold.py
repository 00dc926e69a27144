"""core.kernels.gate_fold and the block's folded self-attention residual (gate and linear-attention state folded into
the out GEMM, core/kernels/attn_fold.py): same results as the plain formula."""

from __future__ import annotations

import random

import pytest
import torch
from blockcausal_reference import randomize_parameters_

from core.config import tiny_config
from core.kernels.gate_fold import linear_per_sample_bias
from core.model.layers import SanaVideoBlock


@pytest.fixture
def gen():
    seed = random.SystemRandom().randrange(2**31)
    return torch.Generator().manual_seed(seed)


def randn(g, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def rel_err(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def test_per_sample_bias(gen):
    a = randn(gen, 2, 7, 5)
    w, bias = randn(gen, 6, 5), randn(gen, 2, 6)
    assert rel_err(linear_per_sample_bias(a, w, bias), a @ w.t() + bias[:, None]) < 1e-14
    with pytest.raises(ValueError):
        linear_per_sample_bias(a, w, bias[:1])


def block_and_inputs(gen, dtype):
    """A tiny block in `dtype` and its inputs; RoPE tables stay fp32 (fp64 for fp64), as the model passes them."""
    cfg = tiny_config()
    block = SanaVideoBlock(cfg).double().eval()
    randomize_parameters_(block, int(torch.randint(0, 2**31, (1,), generator=gen)))
    d, heads, cross_heads = cfg.hidden_size, cfg.num_attention_heads, cfg.num_cross_attention_heads
    frames, hh, ww = 2, 2, 3
    n = frames * hh * ww
    x, t_mod = randn(gen, 2, n, d, dtype=dtype), randn(gen, 2, 1, 6, d, dtype=dtype)
    k = randn(gen, 2, cross_heads, 5, d // cross_heads, dtype=dtype)
    v = randn(gen, 2, cross_heads, 5, d // cross_heads, dtype=dtype)
    angles = torch.rand(n, d // heads // 2, generator=gen, dtype=torch.float64) * 3
    table = torch.float64 if dtype == torch.float64 else torch.float32
    return block.to(dtype), [x, t_mod, k, v, None, angles.cos().to(table), angles.sin().to(table), (frames, hh, ww)]


def run_block(block, args, fold: bool, monkeypatch):
    with monkeypatch.context() as m:
        if not fold:
            m.setattr(SanaVideoBlock, "_fold_attention_gate", lambda self, gate: False)
        with torch.no_grad():
            return block(*args)[0]


def test_folded_block_equals_the_plain_block(gen, monkeypatch):
    block, args = block_and_inputs(gen, torch.float64)
    with torch.no_grad():
        assert block._fold_attention_gate(args[1][:, :, 2])
    folded = run_block(block, args, True, monkeypatch)
    plain = run_block(block, args, False, monkeypatch)
    assert rel_err(folded, plain) < 1e-13, f"seed {gen.initial_seed()}"


def test_folded_block_error_in_bf16_is_that_of_the_plain_block(gen, monkeypatch):
    block64, args64 = block_and_inputs(gen, torch.float64)
    ref = run_block(block64, args64, False, monkeypatch)
    block, args = block_and_inputs(gen.manual_seed(gen.initial_seed()), torch.bfloat16)
    err_fold = rel_err(run_block(block, args, True, monkeypatch), ref)
    err_plain = rel_err(run_block(block, args, False, monkeypatch), ref)
    assert err_fold <= 2 * err_plain + 2**-22, f"{err_fold:.3e} vs {err_plain:.3e}, seed {gen.initial_seed()}"


def test_hooked_projection_is_called_as_a_module(gen, monkeypatch):
    """Calibration hooks must see the out / cross projections' inputs, so hooks turn the folding off."""
    block, args = block_and_inputs(gen, torch.float64)
    seen = []
    handle = block.attn.out.register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape))
    with torch.no_grad():
        assert not block._fold_attention_gate(args[1][:, :, 2])
    with torch.no_grad():
        hooked = block(*args)[0]
    handle.remove()
    assert len(seen) == 1
    assert rel_err(hooked, run_block(block, args, True, monkeypatch)) < 1e-13


def test_fused_paths_step_aside_for_autograd():
    """With autograd recording (e.g. someone fine-tuning), the model takes the plain paths: backward works, and the
    forward equals the inference one."""
    from core.model import SanaVideoTransformer

    cfg = tiny_config()
    model = SanaVideoTransformer(cfg).double().eval()
    randomize_parameters_(model, 0)
    g = torch.Generator().manual_seed(0)
    caption = torch.randn(1, 4, cfg.caption_channels, generator=g, dtype=torch.float64)
    x = torch.randn(1, cfg.in_channels, 2, 4, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        fused = model(x, 500.0, model.encode_text(caption))
    out = model(x, 500.0, model.encode_text(caption))
    out.sum().backward()
    assert model.blocks[0].attn.out.weight.grad is not None
    assert rel_err(out.detach(), fused) < 1e-12


def test_block_in_place_equals_out_of_place_and_leaves_the_input_alone_by_default(gen):
    block, args = block_and_inputs(gen, torch.float64)
    x = args[0]
    x_before = x.clone()
    with torch.no_grad():
        assert block._fold_attention_gate(args[1][:, :, 2])
        out_of_place = block(*args)[0]
        assert torch.equal(x, x_before)                       # inplace=False (default): the caller's x is untouched
        in_place = block(x.clone(), *args[1:], inplace=True)[0]
    assert rel_err(in_place, out_of_place) < 1e-14, f"seed {gen.initial_seed()}"


def test_hooked_cross_attention_module_is_called(gen, monkeypatch):
    """The folded path adds cross-attention through `accumulate`, not the module call; a hook on the module turns
    folding off so that the hook still sees every call."""
    block, args = block_and_inputs(gen, torch.float64)
    seen = []
    handle = block.cross.register_forward_hook(lambda _m, _a, out: seen.append(out.shape))
    with torch.no_grad():
        assert not block._fold_attention_gate(args[1][:, :, 2])
        hooked = block(*args)[0]
    handle.remove()
    assert len(seen) == 1
    assert rel_err(hooked, run_block(block, args, True, monkeypatch)) < 1e-13
