"""Cross-checks against NVIDIA ModelOpt (optional dependency: skipped when `nvidia-modelopt` is not installed).

Importing modelopt takes several seconds, so everything that needs it lives in this one file."""

import warnings

import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    mtq = pytest.importorskip("modelopt.torch.quantization")

from modelopt.torch.quantization.qtensor import NVFP4QTensor  # noqa: E402
from torch import nn  # noqa: E402

from quant.calibrate import calibrate_with_hooks, calibrate_with_modelopt  # noqa: E402
from quant.formats import nvfp4_dequantize, nvfp4_quantize  # noqa: E402
from quant.prepare import prepare_model  # noqa: E402
from quant.recipe import default_recipe  # noqa: E402


def test_dequantized_values_equal_modelopt_nvfp4():
    torch.manual_seed(2)
    w = (torch.randn(64, 256) * torch.rand(64, 1) * 3).to(torch.bfloat16)
    w[3, :16] = 0  # a zero block
    w[5, 16:32] *= 1e-6  # a tiny block
    qt, block_scale, global_scale = NVFP4QTensor.quantize(w.clone(), 16)
    ours = nvfp4_quantize(w)
    assert torch.allclose(ours.global_scale, global_scale.float())
    assert torch.equal(ours.block_scale.view(torch.uint8), block_scale.view(torch.uint8))
    theirs = qt.dequantize(dtype=torch.float32, scale=block_scale, double_scale=global_scale, block_sizes={-1: 16})
    assert torch.equal(nvfp4_dequantize(ours), theirs)
    # same nibble order; bytes may differ only where fp32 division lands exactly on a rounding midpoint
    assert (ours.data != qt._quantized_data).float().mean() < 0.005


class _Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(nn.ModuleDict({"ffn": nn.ModuleDict({
            "inverted": nn.Linear(32, 64), "point": nn.Linear(64, 32, bias=False)})}) for _ in range(2))
        self.proj_out = nn.Linear(32, 32)  # ModelOpt disables '*proj_out*' by default; we never select it

    def forward(self, x):
        for b in self.blocks:
            x = x + b["ffn"]["point"](torch.relu(b["ffn"]["inverted"](x)))
        return self.proj_out(x)


X = [torch.randn(4, 32, generator=torch.Generator().manual_seed(i)) * (i + 1) for i in range(3)]


def _loop(model):
    for x in X:
        model(x)


@pytest.mark.parametrize("fmt", ["nvfp4", "fp8"])
def test_modelopt_amax_equals_hook_amax_and_leaves_the_model_plain(fmt):
    model = _Blocks()
    names = default_recipe(skip_first_blocks=0, skip_last_blocks=0).select(model)
    assert names == ["blocks.0.ffn.inverted", "blocks.0.ffn.point", "blocks.1.ffn.inverted", "blocks.1.ffn.point"]
    passes = []
    theirs = calibrate_with_modelopt(model, names, _loop, fmt, on_pass=passes.append)
    ours = calibrate_with_hooks(model, names, _loop)
    assert theirs == pytest.approx(ours, rel=1e-6)
    assert theirs["blocks.0.ffn.inverted"] == pytest.approx(float(X[2].abs().max()), rel=1e-6)
    assert passes == [1, 2, 3]
    assert all(type(m) in (_Blocks, nn.ModuleList, nn.ModuleDict, nn.Linear) for m in model.modules())


def test_prepare_with_modelopt_calibrator(tmp_path):
    model, report = prepare_model(_Blocks(), "cpu", fmt="nvfp4", recipe=default_recipe(skip_first_blocks=0,
                                  skip_last_blocks=0), forward_loop=_loop, cache_dir=tmp_path, calibrator="modelopt")
    assert report.calibrator.startswith("modelopt-") and len(report.layers) == 4
    assert model.blocks[1]["ffn"]["point"].input_scale.item() > 0
