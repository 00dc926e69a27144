"""Which format and matmul backend to use on a device; decided once per device and logged.

| device                      | auto format | backend                                                    |
| sm_100 / sm_120 (Blackwell) | nvfp4       | scaled_mm: torch._scaled_mm with float4_e2m1fn_x2 operands |
| sm_89 / sm_90 (Ada, Hopper) | fp8         | scaled_mm: torch._scaled_mm FP8 per-tensor                 |
| older CUDA, CPU             | none (bf16) | none; with low_vram: nvfp4 weight storage + dequant        |

An explicit format the device cannot multiply natively runs as "dequant" on CUDA (weight storage only) and as
"emulated" on CPU (the reference, for tests and tools).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger("quant")

FORMAT_CHOICES = ("auto", "nvfp4", "fp8", "none")

_logged: set[tuple] = set()


@dataclass(frozen=True)
class ExecutionPlan:
    format: str | None          # "nvfp4", "fp8", or None (keep bf16 nn.Linear)
    backend: str                # "scaled_mm", "dequant", "emulated", or "none"
    device: str
    capability: tuple[int, int] | None
    reason: str

    @property
    def active(self) -> bool:
        return self.format is not None


def device_capability(device: torch.device | str) -> tuple[int, int] | None:
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(device))


def _native_formats(cap: tuple[int, int] | None) -> tuple[str, ...]:
    if cap is None:
        return ()
    if cap[0] in (10, 11, 12):
        return ("nvfp4", "fp8")
    if cap >= (8, 9):
        return ("fp8",)
    return ()


def plan_for_device(device: torch.device | str, requested: str = "auto", low_vram: bool = False) -> ExecutionPlan:
    if requested not in FORMAT_CHOICES:
        raise ValueError(f"unknown quantization format {requested!r} (one of {FORMAT_CHOICES})")
    device = torch.device(device)
    cap = device_capability(device)
    native = _native_formats(cap)
    arch = f"sm_{cap[0]}{cap[1]}" if cap else device.type
    if requested == "none":
        plan = ExecutionPlan(None, "none", str(device), cap, "quantization switched off")
    elif requested == "auto":
        if native:
            plan = ExecutionPlan(native[0], "scaled_mm", str(device), cap,
                                 f"{arch} has {native[0].upper()} tensor cores")
        elif low_vram and device.type == "cuda":
            plan = ExecutionPlan("nvfp4", "dequant", str(device), cap,
                                 f"{arch} has no FP8/FP4 tensor cores; NVFP4 weight storage to save memory")
        else:
            plan = ExecutionPlan(None, "none", str(device), cap, f"{arch} has no FP8/FP4 tensor cores; bf16")
    elif requested in native:
        plan = ExecutionPlan(requested, "scaled_mm", str(device), cap, f"{arch} runs {requested.upper()} natively")
    elif device.type == "cuda":
        plan = ExecutionPlan(requested, "dequant", str(device), cap,
                             f"{arch} cannot multiply {requested.upper()}; weights stored packed, dequantized per call")
    else:
        plan = ExecutionPlan(requested, "emulated", str(device), cap,
                             f"{requested.upper()} emulated on {arch} (reference numerics, slow)")
    key = (plan.device, plan.format, plan.backend, cap)
    if key not in _logged:
        _logged.add(key)
        log.info("quantization on %s: format=%s backend=%s (%s)", plan.device, plan.format or "bf16", plan.backend,
                 plan.reason)
    return plan


def fallback_plan(plan: ExecutionPlan) -> ExecutionPlan:
    """The next plan to try when `plan` failed its self-test (e.g. a cuBLAS/driver without FP4 support)."""
    if plan.format == "nvfp4" and plan.backend == "scaled_mm" and "fp8" in _native_formats(plan.capability):
        return ExecutionPlan("fp8", "scaled_mm", plan.device, plan.capability,
                             "NVFP4 self-test failed, falling back to FP8")
    if plan.backend == "scaled_mm":
        return ExecutionPlan(plan.format, "dequant", plan.device, plan.capability,
                             f"{plan.format} scaled_mm self-test failed, dequantizing instead")
    return ExecutionPlan(None, "none", plan.device, plan.capability, "quantized self-test failed; bf16")
