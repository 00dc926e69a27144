"""Shared plumbing for the Triton kernels: when to use them, how to launch them, and test hooks.

Why the indirection:
- Triton is optional. The `*_triton` modules import it at their top; the dispatchers import those modules only on the
  first CUDA call (`load_impl`), and a failing import (no Triton, broken install, no driver) falls back to the
  PyTorch reference with one warning instead of an exception.
- `triton.jit` decides at decoration time whether a kernel is compiled or interpreted (TRITON_INTERPRET). `Kernel`
  decides at launch time instead: CUDA tensors get the compiled kernel, CPU tensors Triton's interpreter. Tests can
  therefore run the real kernel bodies on the CPU no matter which module imported Triton first, and the process-wide
  TRITON_INTERPRET setting never changes what other code gets (dispatchers never send CPU tensors to Triton).
- torch.compile must not trace into a Python launcher, so the dispatchers wrap each launcher in a torch custom op
  (`custom_op`) that dynamo treats as one opaque node with a fake (shape-only) implementation.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

# Set SANA_VIDEO_DISABLE_TRITON=1 to force the PyTorch references everywhere (A/B timing, debugging).
_DISABLED = os.environ.get("SANA_VIDEO_DISABLE_TRITON", "0") not in ("", "0", "false", "False")

_impl_cache: dict[str, Any] = {}

# Test hook: when not None, `empty` fills new outputs / workspaces with this value, so an element the kernel forgot
# to write shows up (NaN poisons any sum it reaches).
POISON: float | None = None


def triton_disabled() -> bool:
    return _DISABLED


def wants_triton(*tensors: torch.Tensor) -> bool:
    """The dispatchers' rule: Triton only when every tensor is on CUDA and Triton is not switched off."""
    if _DISABLED:
        return False
    return all(t.is_cuda for t in tensors)


def load_impl(module_name: str) -> Any | None:
    """Import a `core.kernels.*_triton` module once; None (with one warning) when it cannot be imported."""
    if module_name in _impl_cache:
        return _impl_cache[module_name]
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, but also RuntimeError / OSError from a broken Triton or driver
        warnings.warn(f"Triton kernels unavailable ({module_name}: {type(exc).__name__}: {exc}); "
                      "using the PyTorch reference implementation", RuntimeWarning, stacklevel=2)
        module = None
    _impl_cache[module_name] = module
    return module


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocation for kernel outputs and workspaces (poisoned under the test hook)."""
    if POISON is None:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.full(shape, POISON, dtype=dtype, device=device)


_sm_counts: dict[int, int] = {}


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (a nominal 4 on the CPU, enough to exercise split paths in tests)."""
    if device.type != "cuda":
        return 4
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _sm_counts:
        _sm_counts[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _sm_counts[index]


class Kernel:
    """A Triton kernel compiled for CUDA launches and interpreted for CPU launches.

    Use as a decorator in the `*_triton` modules instead of `triton.jit`; launch with `kernel[grid](..., tensor)`
    through `kernel.on(device)[grid](...)`. Kernel bodies must not call other jit functions (the interpreted and
    compiled flavours cannot call each other), so each kernel is self-contained."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self._compiled = None
        self._interpreted = None

    def on(self, device: torch.device):
        if device.type == "cuda":
            if self._compiled is None:
                # JITFunction directly: triton.jit would hand back an interpreted kernel while TRITON_INTERPRET=1
                # is set (e.g. by a CPU test module), and CUDA tensors must always get the compiled one
                try:
                    from triton.runtime.jit import JITFunction
                except ImportError:  # pragma: no cover - older layouts
                    import triton

                    self._compiled = triton.jit(self.fn)
                else:
                    self._compiled = JITFunction(self.fn)
            return self._compiled
        if self._interpreted is None:
            from triton.runtime.interpreter import InterpretedFunction

            self._interpreted = InterpretedFunction(self.fn)
        return self._interpreted


def dot_mode(dtype: torch.dtype, device: torch.device) -> int:
    """How the linear-attention kernels do their fp32-accurate matrix products (see linear_attention_triton).

    0: plain fp32 products (input_precision='ieee'); used for fp32/fp16 inputs, accurate but slower on GPU.
    1: bf16 tensor-core products on operands split into bf16 pieces (the bf16 hot path).
    2: the same pieces, multiplied in fp32: Triton's interpreter cannot multiply bf16 operands, so CPU tests run the
       identical arithmetic this way.
    """
    if dtype != torch.bfloat16:
        return 0
    return 1 if device.type == "cuda" else 2
