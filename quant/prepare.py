"""First-launch preparation: plan -> cache lookup (verify + self-test) or calibrate + pack + write -> swap layers.

`prepare_model` is what the engine's `model_transform(model, device)` hook calls (see `make_model_transform`); it
reports progress as core.events.StageEvent("quantize", detail, percent).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.errors import QuantizationError
from core.events import Cancelled, StageEvent
from quant.cache import CacheInvalid, CacheKey, default_cache_root, discard, model_fingerprint, read_cache, write_cache
from quant.calibrate import ForwardLoop, calibrate, modelopt_version, resolve_calibrator
from quant.dispatch import ExecutionPlan, fallback_plan, plan_for_device
from quant.modules import QuantLinear, replace_linears
from quant.pack import check_packable, flatten_packed, pack_model, unflatten_packed
from quant.recipe import Recipe, default_recipe

log = logging.getLogger("quant")

Progress = Callable[[StageEvent], None]

# Self-test tolerances. Kernel vs emulation differ only by accumulation order and the bf16 output rounding;
# the dequantized weight vs the bf16 weight is RTN error: ~0.10 (NVFP4) / ~0.03 (FP8) relative on Gaussian weights.
KERNEL_REL_TOL = 2e-2
WEIGHT_REL_TOL = {"nvfp4": 0.2, "fp8": 0.08}


@dataclass
class PrepareReport:
    plan: ExecutionPlan
    layers: list[str] = field(default_factory=list)
    cache_path: Path | None = None
    cache_hit: bool = False
    cache_bytes: int = 0
    calibrator: str = "none"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _emit(progress: Progress | None, detail: str, percent: float | None) -> None:
    if progress is not None:
        progress(StageEvent("quantize", detail, None if percent is None else round(float(percent), 1)))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@dataclass(frozen=True)
class SelfTestFailure:
    reason: str
    stale: bool  # True: the packed weights are not this model's (rebuild); False: the backend is broken here


def self_test(layer: QuantLinear, original_weight: torch.Tensor | None, seed: int = 0,
              dtype: torch.dtype = torch.bfloat16) -> SelfTestFailure | None:
    """One-layer check: backend vs emulated output on a fixed input; dequantized vs original weight.
    Returns None when it passes."""
    device = layer.weight.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(128, layer.in_features, generator=gen)
    if layer.input_scale is not None:  # keep inside the calibrated range so saturation does not dominate
        amax = float(layer.input_scale) * (6 * 448 if layer.fmt == "nvfp4" else 448)
        x = x * (amax / 4)
    x = x.to(device=device, dtype=dtype)
    try:
        with torch.no_grad():
            got = layer(x)
            want = layer.forward_emulated(x)
    except Exception as exc:  # noqa: BLE001 - any kernel failure means this backend is unusable here
        return SelfTestFailure(f"{layer.backend} kernel failed: {type(exc).__name__}: {exc}", stale=False)
    if not torch.isfinite(got).all():
        return SelfTestFailure(f"{layer.backend} produced non-finite values", stale=False)
    err = _rel(got, want)
    if err > KERNEL_REL_TOL:
        return SelfTestFailure(f"{layer.backend} output differs from emulation by {err:.3g} (> {KERNEL_REL_TOL})",
                               stale=False)
    if original_weight is not None:
        werr = _rel(layer.dequantized_weight(), original_weight.to(device))
        if werr > WEIGHT_REL_TOL[layer.fmt]:
            return SelfTestFailure(f"stale: packed weight differs from the model's by {werr:.3g}", stale=True)
    return None


def prepare_model(model: nn.Module, device: torch.device | str | None = None, *, fmt: str = "auto",
                  recipe: Recipe | None = None, forward_loop: ForwardLoop | None = None,
                  model_hash: str | None = None, cache_dir: str | Path | None = None, calibrator: str = "auto",
                  low_vram: bool = False, rebuild: bool = False, progress: Progress | None = None,
                  expected_passes: int | None = None) -> tuple[nn.Module, PrepareReport]:
    """Quantize `model` in place for `device` and return (model, report).

    forward_loop: runs calibration data through the model (needed for static activation scales; without it the
        recipe falls back to dynamic activation scales). expected_passes: how many forward calls it makes, for the
        progress percentage. model_hash: identity of the weights (computed from the tensors when None)."""
    started = time.perf_counter()
    if device is None:
        device = next(model.parameters()).device
    plan = plan_for_device(device, fmt, low_vram)
    report = PrepareReport(plan)
    if not plan.active:
        _emit(progress, f"bf16 ({plan.reason})", 100)
        return model, report
    recipe = recipe or default_recipe()
    names = recipe.select(model)
    unpackable = check_packable(model, names, plan.format)
    if unpackable:
        report.notes.append(f"kept {len(unpackable)} layers in bf16 (shapes not multiples of 16/32)")
        names = [n for n in names if n not in unpackable]
    report.layers = names
    if not names:
        report.notes.append("the recipe selects no layer of this model")
        _emit(progress, "no layer to quantize", 100)
        return model, report

    if recipe.activation_scales == "static" and forward_loop is None:
        report.notes.append("no calibration loop given: dynamic activation scales")
        recipe = dataclasses.replace(recipe, activation_scales="dynamic")
    calib_name = "none"
    if recipe.activation_scales == "static":
        calib_name = resolve_calibrator(calibrator)
        if calib_name == "modelopt":
            calib_name = f"modelopt-{modelopt_version()}"
    model_hash = model_hash or model_fingerprint(model)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()

    calibrated: dict[str, float] = {}  # activation amax, format independent: computed at most once
    while True:
        key = CacheKey.create(model_hash, recipe.digest(), plan.format, calib_name)
        path = root / key.filename()
        report.cache_path, report.calibrator, report.cache_hit = path, calib_name, False
        packed = None
        if path.exists() and not rebuild:
            _emit(progress, "verifying quantized weights", 2)
            try:
                flat, _meta = read_cache(path, key)
                packed = unflatten_packed(flat, names)
                report.cache_hit = True
            except (CacheInvalid, KeyError) as exc:
                discard(path, str(exc))
                report.notes.append(f"cache rebuilt: {exc}")
        if packed is None:
            packed = _build(model, names, plan.format, recipe, forward_loop, calibrator, progress, expected_passes,
                            calibrated)
            try:
                report.cache_bytes = write_cache(path, key, flatten_packed(packed), {
                    "layers": names, "recipe": recipe.to_dict(), "created": time.time()})
                _emit(progress, "quantized weights saved", 96)
            except OSError as exc:  # read-only or full disk: run quantized anyway, rebuild next launch
                log.warning("could not write the quantized cache %s: %s", path, exc)
                report.notes.append(f"cache not saved: {exc}")
        else:
            report.cache_bytes = path.stat().st_size

        first = names[0]
        linear = model.get_submodule(first)
        test_layer = QuantLinear.from_linear(linear, plan.format, plan.backend, packed[first])
        failure = self_test(test_layer, linear.weight.detach(), dtype=linear.weight.dtype)
        del test_layer
        if failure is None:
            break
        problem = failure.reason
        if report.cache_hit and failure.stale:
            discard(path, problem)
            report.notes.append(f"cache rebuilt: {problem}")
            rebuild = True
            continue
        new_plan = fallback_plan(plan)
        log.warning("quantized self-test failed on %s (%s): %s; now %s", plan.device, plan.backend, problem,
                    new_plan.reason)
        report.notes.append(f"self-test failed ({problem}); {new_plan.reason}")
        plan = report.plan = new_plan
        if not plan.active:
            _emit(progress, "bf16 (quantized self-test failed)", 100)
            report.seconds = time.perf_counter() - started
            return model, report
        rebuild = False

    _emit(progress, f"{plan.format} {plan.backend}: {len(names)} layers", 98)
    replace_linears(model, packed, plan.format, plan.backend)
    report.seconds = time.perf_counter() - started
    _emit(progress, "quantization ready", 100)
    log.info("quantized %d layers to %s (%s, cache %s, %.1f s)", len(names), plan.format, plan.backend,
             "hit" if report.cache_hit else "built", report.seconds)
    return model, report


def _build(model, names, fmt, recipe, forward_loop, calibrator, progress, expected_passes, calibrated):
    amax = None
    if recipe.activation_scales == "static" and calibrated:
        amax = calibrated
    elif recipe.activation_scales == "static":
        _emit(progress, "calibrating activation ranges", 5)

        def on_pass(n: int) -> None:
            if expected_passes:
                _emit(progress, f"calibration pass {n}/{expected_passes}", 5 + 55 * min(1.0, n / expected_passes))

        try:
            amax, _ = calibrate(model, names, forward_loop, fmt, calibrator, on_pass)
            calibrated.update(amax)
        except (QuantizationError, Cancelled):
            raise
        except Exception as exc:  # KeyboardInterrupt is not an Exception and passes through untouched
            raise QuantizationError(f"calibration failed: {type(exc).__name__}: {exc}") from exc

    def on_layer(i: int, n: int) -> None:
        _emit(progress, f"packing {fmt} weights {i}/{n}", 60 + 35 * i / n)

    return pack_model(model, names, fmt, amax, on_layer)


# calibration run of the engine hook: a few built-in prompts, two short LongSANA blocks each
CALIB_PROMPTS = 4
CALIB_BLOCKS = 2
CALIB_LATENT_FRAMES = 2


def make_model_transform(fmt: str = "auto", **kwargs):
    """The engine's `model_transform(model, device, context) -> (model, precision or None)` hook (core.engine).

    Calibrates with the engine's own text encoder (`context["encode_prompts"]`) through the LongSANA loop at the
    engine's latent size, then runs `prepare_model` (cached after the first launch). The precision is None when the
    plan keeps the model as it is (CPU, GPUs without FP8/FP4)."""
    from quant.calib_loop import CALIBRATION_PROMPTS, make_longsana_forward_loop

    def transform(model: nn.Module, device: torch.device | str, context: dict):
        h, w = context["latent_hw"]
        texts = context["encode_prompts"](list(CALIBRATION_PROMPTS[:CALIB_PROMPTS]))
        loop = make_longsana_forward_loop(texts, (model.cfg.in_channels, CALIB_LATENT_FRAMES, h, w),
                                          num_blocks=CALIB_BLOCKS)
        model, report = prepare_model(model, device, fmt=fmt, forward_loop=loop, progress=context.get("progress"),
                                      expected_passes=CALIB_PROMPTS * CALIB_BLOCKS * 5, **kwargs)
        return model, (report.plan.format if getattr(report.plan, "active", False) else None)

    return transform
