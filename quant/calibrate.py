"""Activation-range calibration: the max |input| (amax) of every selected Linear over a forward loop.

`forward_loop(model)` belongs to the caller (typically a few short prompts through the LongSANA sampler); quant does
not know the engine. Two calibrators give the same numbers for the `max` algorithm:

- "modelopt": NVIDIA ModelOpt (optional dependency). A deep copy of the model goes through `mtq.quantize` with the
  NVFP4 or FP8 config; only the selected layers' input quantizers are enabled for `mtq.calibrate(..., "max")`;
  their `input_quantizer.amax` is read and the ModelOpt copy is dropped. During max calibration ModelOpt collects
  statistics with quantization off, so the activations seen are the bf16 model's.
- "hooks": forward pre-hooks on the selected layers (no dependency), removed afterwards.

Nothing is written to disk here, so an interrupted loop (exception, Cancelled, KeyboardInterrupt) leaves no trace.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import sys
import warnings
from collections.abc import Callable

import torch
from torch import nn

from core.errors import QuantizationError

log = logging.getLogger("quant")

ForwardLoop = Callable[[nn.Module], None]
CALIBRATORS = ("auto", "modelopt", "hooks")


def modelopt_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("nvidia-modelopt")
    except Exception:  # noqa: BLE001 - not installed or broken metadata: treat as absent
        return None


def resolve_calibrator(name: str) -> str:
    if name not in CALIBRATORS:
        raise QuantizationError(f"unknown calibrator {name!r} (one of {CALIBRATORS})")
    if name == "auto":
        return "modelopt" if modelopt_version() else "hooks"
    if name == "modelopt" and not modelopt_version():
        raise QuantizationError("calibrator 'modelopt' needs NVIDIA ModelOpt: pip install nvidia-modelopt")
    return name


def calibrate_with_hooks(model: nn.Module, names: list[str], forward_loop: ForwardLoop,
                         on_pass: Callable[[int], None] | None = None) -> dict[str, float]:
    amax: dict[str, torch.Tensor] = {}
    passes = [0]

    def make_hook(name: str, count: bool):
        def hook(_module, args):
            x = args[0].detach()
            current = x.abs().amax().float()
            amax[name] = current if name not in amax else torch.maximum(amax[name], current)
            if count:
                passes[0] += 1
                if on_pass is not None:
                    on_pass(passes[0])
        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(make_hook(n, i == 0)) for i, n in enumerate(names)]
    try:
        with torch.no_grad():
            forward_loop(model)
    finally:
        for h in handles:
            h.remove()
    return _finish(amax, names)


def _modelopt_config(fmt: str, device: torch.device):
    import modelopt.torch.quantization as mtq
    # ModelOpt's NVFP4 fake quant asserts on CPU tensors; range collection is format independent (per-tensor max),
    # so on CPU the FP8 config collects the very same amax.
    if fmt == "nvfp4" and device.type == "cuda":
        return mtq.NVFP4_DEFAULT_CFG
    return mtq.FP8_DEFAULT_CFG


def calibrate_with_modelopt(model: nn.Module, names: list[str], forward_loop: ForwardLoop, fmt: str,
                            on_pass: Callable[[int], None] | None = None) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # modelopt warns about untested transformers versions at import
        import modelopt.torch.quantization as mtq
    device = next(model.parameters()).device
    calib = copy.deepcopy(model)  # mtq converts modules in place; the caller's model must stay plain
    try:
        with contextlib.redirect_stdout(sys.stderr):  # ModelOpt prints progress; keep stdout for our results
            mtq.quantize(calib, _modelopt_config(fmt, device), forward_loop=None)   # insert quantizers only
        wanted = set(names)
        for name, module in calib.named_modules():
            for attr in ("input_quantizer", "weight_quantizer", "output_quantizer"):
                quantizer = getattr(module, attr, None)
                if quantizer is None:
                    continue
                if attr == "input_quantizer" and name in wanted:
                    quantizer.enable()
                    quantizer.reset_amax()
                else:
                    quantizer.disable()
        missing = [n for n in names if not hasattr(calib.get_submodule(n), "input_quantizer")]
        if missing:
            raise QuantizationError(f"ModelOpt did not wrap these layers: {missing[:5]}")
        handle = None
        if on_pass is not None and names:
            passes = [0]

            def count(_m, _a):
                passes[0] += 1
                on_pass(passes[0])
            handle = calib.get_submodule(names[0]).register_forward_pre_hook(count)
        try:
            with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
                mtq.calibrate(calib, algorithm="max", forward_loop=forward_loop)
        finally:
            if handle is not None:
                handle.remove()
        amax = {}
        for name in names:
            value = calib.get_submodule(name).input_quantizer.amax
            if value is not None:
                amax[name] = value.detach().float().reshape(-1).max()
        return _finish(amax, names)
    finally:
        del calib
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _finish(amax: dict[str, torch.Tensor], names: list[str]) -> dict[str, float]:
    missing = [n for n in names if n not in amax]
    if missing:
        raise QuantizationError(
            f"calibration saw no input for {len(missing)} layer(s), e.g. {missing[:3]}: the forward loop must run "
            f"the model")
    out = {n: float(amax[n]) for n in names}
    bad = [n for n, v in out.items() if not (v == v and v != float("inf"))]
    if bad:
        raise QuantizationError(f"calibration produced non-finite activation ranges for {bad[:3]}")
    return out


def calibrate(model: nn.Module, names: list[str], forward_loop: ForwardLoop, fmt: str, calibrator: str = "auto",
              on_pass: Callable[[int], None] | None = None) -> tuple[dict[str, float], str]:
    """Per-layer input amax for `names`; returns (amax, calibrator actually used)."""
    used = resolve_calibrator(calibrator)
    log.info("calibrating %d layers with %s", len(names), used)
    if used == "modelopt":
        return calibrate_with_modelopt(model, names, forward_loop, fmt, on_pass), used
    return calibrate_with_hooks(model, names, forward_loop, on_pass), used
