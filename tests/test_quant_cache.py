"""First-launch preparation: recipe selection, cache build / hit, corrupted and stale caches, interrupted
calibration, self-test fallback, progress events, the CLI."""

import argparse
import json
import os

import pytest
import torch
from torch import nn

from core.errors import QuantizationError
from core.events import Cancelled, StageEvent
from quant import dispatch, matmul
from quant.cache import CacheKey, write_cache
from quant.modules import QuantLinear
from quant.prepare import prepare_model
from quant.recipe import Recipe, default_recipe


class _Attn(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d)


class _Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attn = _Attn(d)

    def forward(self, x):
        q, _, _ = self.attn.qkv(x).chunk(3, dim=-1)
        return x + self.attn.out(torch.relu(q))


class ToyDiT(nn.Module):
    """Same naming scheme as the SANA model (blocks.N.attn.qkv ...), plus an unquantized head."""

    def __init__(self, d=32, n=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleList(_Block(d) for _ in range(n))
        self.proj_out = nn.Linear(d, d)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.proj_out(x)


RECIPE = default_recipe(skip_first_blocks=0, skip_last_blocks=1)
X = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(5))


def loop(model):
    for i in range(3):
        model(X * (1 + i))


def _prepare(model, tmp_path, fmt="fp8", **kw):
    kw.setdefault("recipe", RECIPE)
    kw.setdefault("forward_loop", loop)
    kw.setdefault("calibrator", "hooks")
    return prepare_model(model, "cpu", fmt=fmt, cache_dir=tmp_path, **kw)


def _files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_recipe_selects_block_linears_of_the_tiny_sana_model():
    from core.config import tiny_config
    from core.model import SanaVideoTransformer
    with torch.device("meta"):
        model = SanaVideoTransformer(tiny_config(num_layers=6))
    names = default_recipe().select(model)
    assert {n.split(".")[1] for n in names} == {"2", "3"}            # first and last two blocks stay bf16
    per_block = sorted(n.split(".", 2)[2] for n in names if n.startswith("blocks.2."))
    assert per_block == sorted(["attn.qkv", "attn.out", "cross.q", "cross.out", "ffn.inverted", "ffn.point",
                                "ffn.temporal"])
    assert all(isinstance(model.get_submodule(n), nn.Linear) for n in names)
    assert not any(n.endswith("cross.kv") or n.startswith(("patch_embed", "proj_out", "time")) for n in names)


def test_recipe_is_data():
    data = default_recipe().to_dict()
    assert Recipe.from_dict(json.loads(json.dumps(data))) == default_recipe()
    assert default_recipe(skip_first_blocks=1).digest() != default_recipe().digest()
    with pytest.raises(QuantizationError, match="unknown keys"):
        Recipe.from_dict({**data, "layer": []})
    with pytest.raises(QuantizationError, match="activation_scales"):
        Recipe.from_dict({**data, "activation_scales": "sometimes"})


def test_named_recipes_and_recipe_files(tmp_path):
    from core.config import tiny_config
    from core.model import SanaVideoTransformer
    from quant.recipe import recipe_from_arg
    with torch.device("meta"):
        model = SanaVideoTransformer(tiny_config(num_layers=6))
    assert recipe_from_arg(None) is None and recipe_from_arg("") is None       # the caller's default
    assert recipe_from_arg("default") == default_recipe()
    every = recipe_from_arg("all-blocks")
    assert {n.split(".")[1] for n in every.select(model)} == {str(i) for i in range(6)}
    assert every.digest() != default_recipe().digest()                          # its own cache entry
    path = tmp_path / "r.json"
    path.write_text(json.dumps(default_recipe(skip_last_blocks=0).to_dict()))
    assert recipe_from_arg(str(path)) == default_recipe(skip_last_blocks=0)
    with pytest.raises(QuantizationError, match="all-blocks"):
        recipe_from_arg("fastest")


@pytest.mark.parametrize("fmt", ["fp8", "nvfp4"])
def test_build_then_hit_gives_identical_model(tmp_path, fmt):
    with torch.no_grad():
        want = ToyDiT()(X)
    a, rep_a = _prepare(ToyDiT(), tmp_path, fmt)
    assert not rep_a.cache_hit and rep_a.cache_path.exists() and rep_a.cache_bytes > 0
    assert rep_a.layers == ["blocks.0.attn.qkv", "blocks.0.attn.out", "blocks.1.attn.qkv", "blocks.1.attn.out"]
    assert isinstance(a.blocks[0].attn.qkv, QuantLinear) and isinstance(a.blocks[2].attn.qkv, nn.Linear)
    assert a.blocks[0].attn.out.input_scale is not None                 # static scale from calibration
    # the static scale is the calibrated input range (amax over the loop) in the format's convention
    amax = float((X * 3).abs().max())
    div = 448 * (6 if fmt == "nvfp4" else 1)
    assert a.blocks[0].attn.qkv.input_scale.item() == pytest.approx(amax / div, rel=1e-6)
    b, rep_b = _prepare(ToyDiT(), tmp_path, fmt)
    assert rep_b.cache_hit and rep_b.cache_path == rep_a.cache_path
    with torch.no_grad():
        out_a, out_b = a(X), b(X)
    assert torch.equal(out_a, out_b)
    rel = float((out_a - want).norm() / want.norm())
    assert 0 < rel < (0.2 if fmt == "nvfp4" else 0.05)
    assert _files(tmp_path) == [rep_a.cache_path.name]


def test_progress_events(tmp_path):
    events = []
    _prepare(ToyDiT(), tmp_path, progress=events.append, expected_passes=3)
    assert events and all(isinstance(e, StageEvent) and e.stage == "quantize" for e in events)
    percents = [e.percent for e in events]
    assert percents == sorted(percents) and percents[-1] == 100
    assert any("calibration pass 3/3" in e.detail for e in events)


def _flip_byte_near_end(path):
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupted_cache_is_detected_and_rebuilt(tmp_path, damage):
    _, first = _prepare(ToyDiT(), tmp_path)
    path = first.cache_path
    if damage == "flip":
        _flip_byte_near_end(path)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"not a safetensors file")
    model, again = _prepare(ToyDiT(), tmp_path)
    assert not again.cache_hit and any("cache rebuilt" in n for n in again.notes)
    _, third = _prepare(ToyDiT(), tmp_path)
    assert third.cache_hit                                              # the rebuilt file is good
    with torch.no_grad():
        fresh = _prepare(ToyDiT(), tmp_path / "fresh")[0](X)
        assert torch.equal(model(X), fresh)


def test_stale_cache_other_weights_get_another_key(tmp_path):
    _, first = _prepare(ToyDiT(seed=0), tmp_path)
    _, other = _prepare(ToyDiT(seed=1), tmp_path)
    assert not other.cache_hit and other.cache_path != first.cache_path


def test_stale_cache_under_the_same_key_fails_the_self_test(tmp_path):
    """A caller-supplied model hash that lies (weights changed, same hash) is caught by the one-layer self-test."""
    _, first = _prepare(ToyDiT(seed=0), tmp_path, model_hash="abc123")
    model, second = _prepare(ToyDiT(seed=1), tmp_path, model_hash="abc123")
    assert not second.cache_hit and any("stale" in n for n in second.notes)
    want = ToyDiT(seed=1)(X)
    with torch.no_grad():
        assert float((model(X) - want).norm() / want.norm()) < 0.05


def test_cache_with_foreign_metadata_is_rebuilt(tmp_path):
    _, first = _prepare(ToyDiT(), tmp_path)
    key = CacheKey.create("somebody-else", "r", "fp8", "hooks")
    write_cache(first.cache_path, key, {"x": torch.zeros(2)}, {})
    _, again = _prepare(ToyDiT(), tmp_path)
    assert not again.cache_hit and any("stale" in n for n in again.notes)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, Cancelled, RuntimeError])
def test_interrupted_calibration_leaves_no_cache(tmp_path, exc):
    calls = []

    def interrupted(model):
        model(X)
        calls.append(1)
        raise exc("stop")

    model = ToyDiT()
    expected = QuantizationError if exc is RuntimeError else exc
    with pytest.raises(expected):
        _prepare(model, tmp_path, forward_loop=interrupted)
    assert calls and _files(tmp_path) == []                           # no cache, no temporary file
    assert all(not isinstance(m, QuantLinear) for m in model.modules())
    assert all(not m._forward_pre_hooks for m in model.modules())     # calibration hooks removed


def test_no_forward_loop_means_dynamic_activation_scales(tmp_path):
    model, report = _prepare(ToyDiT(), tmp_path, forward_loop=None)
    assert model.blocks[0].attn.qkv.input_scale is None
    assert report.calibrator == "none" and any("dynamic" in n for n in report.notes)


def test_failed_kernel_self_test_falls_back(tmp_path, monkeypatch):
    """A scaled_mm backend that crashes (say a cuBLAS without FP8 support) is never used."""
    def broken(*args, **kwargs):
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED")
    monkeypatch.setattr(matmul, "scaled_mm_fp8_linear", broken)
    plan = dispatch.ExecutionPlan("fp8", "scaled_mm", "cpu", None, "test")
    monkeypatch.setattr("quant.prepare.plan_for_device", lambda *a, **k: plan)
    model, report = _prepare(ToyDiT(), tmp_path)
    assert report.plan.backend == "dequant"
    assert model.blocks[0].attn.qkv.backend == "dequant"
    assert any("CUBLAS_STATUS_NOT_SUPPORTED" in n for n in report.notes)


def test_blackwell_fp4_failure_falls_back_to_fp8_without_recalibrating(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED")
    monkeypatch.setattr(matmul, "scaled_mm_nvfp4_linear", broken)
    plan = dispatch.ExecutionPlan("nvfp4", "scaled_mm", "cpu", (12, 0), "test")
    monkeypatch.setattr("quant.prepare.plan_for_device", lambda *a, **k: plan)
    calls = []

    def counting_loop(model):
        calls.append(1)
        loop(model)

    model, report = _prepare(ToyDiT(), tmp_path, fmt="auto", forward_loop=counting_loop)
    assert report.plan.format == "fp8" and report.plan.backend in ("scaled_mm", "dequant")
    assert len(calls) == 1 and model.blocks[0].attn.qkv.fmt == "fp8"
    assert len(_files(tmp_path)) == 2                                           # the nvfp4 and the fp8 cache


def test_unwritable_cache_still_quantizes(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    model, report = _prepare(ToyDiT(), blocker / "cache")
    assert isinstance(model.blocks[0].attn.qkv, QuantLinear)
    assert any("cache not saved" in n for n in report.notes)


def test_cpu_auto_keeps_bf16_and_writes_nothing(tmp_path):
    model = ToyDiT()
    _, report = prepare_model(model, "cpu", fmt="auto", cache_dir=tmp_path, forward_loop=loop)
    assert report.plan.format is None and _files(tmp_path) == []
    assert all(not isinstance(m, QuantLinear) for m in model.modules())


def test_tiny_sana_end_to_end_with_longsana_loop(tmp_path):
    from core.config import tiny_config
    from core.model import SanaVideoTransformer
    from quant.calib_loop import make_longsana_forward_loop, passes_per_prompt
    cfg = tiny_config(num_layers=3)
    torch.manual_seed(0)
    model = SanaVideoTransformer(cfg)
    for p in model.parameters():
        nn.init.normal_(p, std=0.05)
    texts = [(torch.randn(1, 4, cfg.caption_channels), None)]
    forward_loop = make_longsana_forward_loop(texts, (cfg.in_channels, 1, 4, 4), num_blocks=1)
    x, t = torch.randn(1, cfg.in_channels, 2, 4, 4), torch.tensor([700.0])
    text = model.encode_text(*texts[0])
    with torch.no_grad():
        want = model(x, t, text)
    events = []
    model, report = prepare_model(model, "cpu", fmt="fp8", recipe=default_recipe(skip_first_blocks=1,
                                  skip_last_blocks=1), forward_loop=forward_loop, cache_dir=tmp_path,
                                  calibrator="hooks", progress=events.append, expected_passes=passes_per_prompt(1))
    assert len(report.layers) == 7 and report.calibrator == "hooks"
    with torch.no_grad():
        got = model(x, t, text)
    assert 0 < float((got - want).norm() / want.norm()) < 0.05
    assert events[-1].percent == 100


def test_cli_quantize(tmp_path, capsys):
    from core.config import tiny_config
    from core.model import SanaVideoTransformer
    from quant import cli
    cfg = tiny_config(num_layers=3)
    seen = {}

    def load_model(source, device):
        torch.manual_seed(0)
        return SanaVideoTransformer(cfg).to(device)

    def encode_prompts(source, prompts, device):
        seen["prompts"] = prompts
        return [(torch.randn(1, 4, cfg.caption_channels), None) for _ in prompts]

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.add_subcommand(sub, load_model=load_model, encode_prompts=encode_prompts)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(default_recipe(skip_first_blocks=1, skip_last_blocks=1).to_dict()))
    args = parser.parse_args(["quantize", "tiny", "--device", "cpu", "--format", "nvfp4", "--cache-dir",
                              str(tmp_path / "cache"), "--recipe", str(recipe), "--calibrator", "hooks",
                              "--prompts", "1", "--blocks", "1", "--calib-latent", "1x4x4", "--json"])
    assert args.func is cli.run
    assert cli.run(args) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["format"] == "nvfp4" and report["layers"] == 7 and report["calibrator"] == "hooks"
    assert os.path.exists(report["cache"]) and not report["cache_hit"]
    assert len(seen["prompts"]) == 1 and "100.0%" in captured.err
    assert cli.run(args) == 0 and json.loads(capsys.readouterr().out)["cache_hit"]
    bad = parser.parse_args(["quantize", "tiny", "--device", "cpu", "--format", "fp8", "--recipe",
                             str(tmp_path / "missing.json")])
    assert cli.run(bad) == 2
    assert "cannot read quantization recipe" in capsys.readouterr().err
