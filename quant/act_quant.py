"""Activation quantizers of the fast paths: quant.formats arithmetic, fused by torch.compile on CUDA.

In eager mode the FP8 cast of an activation is four elementwise passes (upcast, divide, clamp, cast: ~27 bytes of
memory traffic per element), which costs more than the FP8 GEMM saves; compiled it is one pass (read bf16, write
fp8). Compilation needs Triton; when it is missing or fails, the eager functions (same numbers) are used and that is
logged once.
"""

from __future__ import annotations

import logging

import torch

from core.kernels.fp8_out import cast_e4m3
from quant.formats import nvfp4_quantize

log = logging.getLogger("quant")

_compiled: dict[str, object] = {}
_state = {"enabled": True}


def set_compile(enabled: bool) -> None:
    """Switch torch.compile of the activation quantizers on or off (for A/B timing and debugging)."""
    _state["enabled"] = bool(enabled)


def fp8_cast_eager(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale saturated to +-448, as float8_e4m3fn (the arithmetic of quant.formats.fp8_quantize)."""
    return cast_e4m3(x.float(), scale)


def nvfp4_quantize_eager(x: torch.Tensor, global_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = nvfp4_quantize(x, global_scale)
    return q.data, q.block_scale


def _use_compiled(x: torch.Tensor) -> bool:
    if not (_state["enabled"] and x.is_cuda):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _run(name: str, eager, x: torch.Tensor, *args):
    if torch.compiler.is_compiling():   # inside a compiled model: inductor fuses the plain ops with their producer
        return eager(x, *args)
    if _use_compiled(x):
        fn = _compiled.get(name)
        if fn is None:
            fn = _compiled[name] = torch.compile(eager, dynamic=True, fullgraph=True)
        try:
            return fn(x, *args)
        except Exception as exc:  # noqa: BLE001 - compiler or driver trouble: eager gives the same numbers
            log.warning("torch.compile of the %s activation quantizer failed (%s: %s); using eager", name,
                        type(exc).__name__, exc)
            _state["enabled"] = False
    return eager(x, *args)


def fp8_cast(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(M, K) float -> (M, K) float8_e4m3fn with a per-tensor scale."""
    return _run("fp8", fp8_cast_eager, x, scale)


def nvfp4_quantize_activation(x: torch.Tensor, global_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) float -> packed (M, K/2) uint8 and un-swizzled (M, K/16) E4M3 block scales."""
    return _run("nvfp4", nvfp4_quantize_eager, x, global_scale)
