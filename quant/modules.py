"""QuantLinear: a drop-in replacement for nn.Linear holding packed NVFP4 or FP8 weights.

State dict names follow ModelOpt's unified HF export: `weight` (NVFP4: uint8 (N, K/2); FP8: e4m3 (N, K)),
`weight_scale` (NVFP4: e4m3 (N, K/16) un-swizzled; FP8: fp32 scalar), `weight_scale_2` (NVFP4: fp32 scalar),
`input_scale` (fp32 scalar, absent with dynamic activation scales), `bias` (kept in the model's dtype).
"""

from __future__ import annotations

import torch
from torch import nn

from quant import matmul
from quant.formats import NVFP4Tensor
from quant.swizzle import to_blocked

BACKENDS = ("emulated", "scaled_mm", "dequant")


class QuantLinear(nn.Module):
    def __init__(self, fmt: str, backend: str, tensors: dict[str, torch.Tensor], bias: torch.Tensor | None,
                 in_features: int, out_features: int) -> None:
        super().__init__()
        if fmt not in ("nvfp4", "fp8"):
            raise ValueError(f"unknown quantized format {fmt!r}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (one of {BACKENDS})")
        self.fmt, self.backend = fmt, backend
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", tensors["weight"])
        self.register_buffer("weight_scale", tensors["weight_scale"])
        if fmt == "nvfp4":
            self.register_buffer("weight_scale_2", tensors["weight_scale_2"])
        input_scale = tensors.get("input_scale")
        self.register_buffer("input_scale", input_scale)        # None = dynamic activation scale
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self._swizzled: torch.Tensor | None = None               # cuBLAS layout of weight_scale, built on first use
        expected_k = in_features // 2 if fmt == "nvfp4" else in_features
        if tuple(self.weight.shape) != (out_features, expected_k):
            raise ValueError(f"packed weight shape {tuple(self.weight.shape)} does not match "
                             f"({out_features}, {expected_k}) for {fmt}")

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str, backend: str, tensors: dict[str, torch.Tensor]) -> QuantLinear:
        device = linear.weight.device if linear.weight.device.type != "meta" else tensors["weight"].device
        moved = {k: v.to(device) for k, v in tensors.items()}
        return cls(fmt, backend, moved, linear.bias, linear.in_features, linear.out_features)

    def _apply(self, fn, recurse=True):
        """Device moves apply to the packed tensors, dtype casts do not: `model.to(torch.bfloat16)` would otherwise
        turn float8 weights into bf16 and round the fp32 scales (float8 counts as floating point)."""
        originals = {name: buf for name, buf in self._buffers.items() if buf is not None}
        super()._apply(fn, recurse)
        for name, old in originals.items():
            new = self._buffers[name]
            if new.dtype != old.dtype:
                self._buffers[name] = old.to(new.device)
        self._swizzled = None
        return self

    def nvfp4_weight(self) -> NVFP4Tensor:
        return NVFP4Tensor(self.weight, self.weight_scale, self.weight_scale_2)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.fmt == "nvfp4":
            from quant.formats import nvfp4_dequantize
            return nvfp4_dequantize(self.nvfp4_weight(), dtype)
        return (self.weight.float() * self.weight_scale.float()).to(dtype)

    @property
    def fp8_input_scale(self) -> torch.Tensor | None:
        """The static scale of pre-quantized FP8 E4M3 input this layer takes (core/kernels/fp8_out.py), so that the
        kernel producing its input can write FP8 directly: calibrated FP8 layers on the `_scaled_mm` backend only."""
        if self.fmt == "fp8" and self.backend == "scaled_mm" and self.input_scale is not None:
            return self.input_scale
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)                                     # (M, K)
        if x2.dtype == torch.float8_e4m3fn:
            if self.fp8_input_scale is None:
                raise ValueError(f"{self.fmt}/{self.backend} layer without a static FP8 input scale got FP8 input")
            out_dtype = self.bias.dtype if self.bias is not None and self.bias.dtype == torch.float16 else torch.bfloat16
            y = matmul.scaled_mm_fp8_prequantized(x2, self.weight, self.weight_scale, self.input_scale, self.bias,
                                                  out_dtype)
        else:
            y = self._forward_2d(x2, self.backend)
        return y.reshape(*lead, self.out_features)

    def forward_emulated(self, x: torch.Tensor) -> torch.Tensor:
        """The reference result of this layer's backend, in fp32 math (self-tests compare against it): W4A4 / W8A8
        emulation for "scaled_mm" and "emulated", weight-only dequantization for "dequant"."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self.backend == "dequant":
            y = x2.float() @ self.dequantized_weight().t()
            y = (y if self.bias is None else y + self.bias.float()).to(x.dtype)
        else:
            y = self._forward_2d(x2, "emulated")
        return y.reshape(*lead, self.out_features)

    def _forward_2d(self, x: torch.Tensor, backend: str) -> torch.Tensor:
        if self.fmt == "nvfp4":
            if backend == "scaled_mm":
                if self._swizzled is None or self._swizzled.device != self.weight.device:
                    self._swizzled = to_blocked(self.weight_scale)
                return matmul.scaled_mm_nvfp4_linear(x, self.weight, self._swizzled, self.weight_scale_2,
                                                     self.input_scale, self.bias)
            if backend == "dequant":
                return matmul.dequant_nvfp4_linear(x, self.nvfp4_weight(), self.bias)
            return matmul.emulated_nvfp4_linear(x, self.nvfp4_weight(), self.input_scale, self.bias)
        if backend == "scaled_mm":
            return matmul.scaled_mm_fp8_linear(x, self.weight, self.weight_scale, self.input_scale, self.bias)
        if backend == "dequant":
            return matmul.dequant_fp8_linear(x, self.weight, self.weight_scale, self.bias)
        return matmul.emulated_fp8_linear(x, self.weight, self.weight_scale, self.input_scale, self.bias)

    def extra_repr(self) -> str:
        scales = "static" if self.input_scale is not None else "dynamic"
        return (f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt}, "
                f"backend={self.backend}, activation_scale={scales}, bias={self.bias is not None}")


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def replace_linears(model: nn.Module, packed: dict[str, dict[str, torch.Tensor]], fmt: str,
                    backend: str) -> nn.Module:
    """Swap each named nn.Linear for a QuantLinear built from its packed tensors, in place; returns the model."""
    for name, tensors in packed.items():
        parent, child = _parent(model, name)
        linear = getattr(parent, child)
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{name} is a {type(linear).__name__}, not nn.Linear")
        setattr(parent, child, QuantLinear.from_linear(linear, fmt, backend, tensors))
    return model
