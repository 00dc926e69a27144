"""Depthwise 3x3 conv (+ bias) fused with the GLU gate, on token-major features (GLUMBConvTemp's middle).

x (B*T, H, W, 2F): the inverted 1x1 conv's output, channels last. With `silu_input=True`, x is the pre-activation and
SiLU is applied on load (saves a full read + write of the 2F-wide tensor). With `halved_input=True` as well, x holds
the pre-activation divided by 2 (exactly: e.g. a GEMM with alpha = 1/2 and a halved bias), which is the h that
SiLU(x) = h + h tanh(h) starts from, so the kernel skips one multiply per loaded value. weight (2F, 1, 3, 3) as in diffusers /
nn.Conv2d (also accepted: (2F, 3, 3)); bias (2F,) or None. Zero padding 1 on the (post-SiLU) input.

    y = depthwise_conv3x3(x) + bias          (B*T, H, W, 2F)
    out = y[..., :F] * SiLU(y[..., F:])      (B*T, H, W, F)

Computed in fp32 (fp64 for fp64 inputs), one rounding to x.dtype; or, with `out_scale`, to FP8 E4M3 for an FP8
consumer (core/kernels/fp8_out.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_nn

from core.kernels._triton import load_impl, wants_triton
from core.kernels.fp8_out import cast_e4m3


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu_input: bool = False,
           halved_input: bool = False) -> int:
    if halved_input and not silu_input:
        raise ValueError("halved_input is the SiLU input's form: it needs silu_input=True")
    if x.dim() != 4 or x.shape[-1] % 2:
        raise ValueError(f"x must be (B*T, H, W, 2F), got {tuple(x.shape)}")
    C = x.shape[-1]
    if weight.numel() != C * 9 or weight.shape[0] != C:
        raise ValueError(f"weight must be ({C}, 1, 3, 3), got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (C,):
        raise ValueError(f"bias must be ({C},), got {tuple(bias.shape)}")
    return C


def dwconv3x3_glu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                            silu_input: bool = False, out_scale: torch.Tensor | None = None,
                            halved_input: bool = False) -> torch.Tensor:
    C = _check(x, weight, bias, silu_input, halved_input)
    xf = _acc(x)
    if halved_input:
        xf = xf * 2                                                          # exact
    if silu_input:
        xf = F_nn.silu(xf)
    BT, H, W, _ = x.shape
    w = _acc(weight).reshape(C, 9)
    xp = F_nn.pad(xf, (0, 0, 1, 1, 1, 1))                                    # zero padding of H and W
    y = torch.zeros_like(xf) if bias is None else _acc(bias).expand_as(xf).clone()
    for tap in range(9):                                                     # cross-correlation, like nn.Conv2d
        dh, dw = divmod(tap, 3)
        y = y + xp[:, dh:dh + H, dw:dw + W, :] * w[:, tap]                  # (BT, H, W, 2F)
    a, g = y.chunk(2, dim=-1)
    out = a * F_nn.silu(g)                                                   # (BT, H, W, F)
    return out.to(x.dtype) if out_scale is None else cast_e4m3(out, out_scale)


_IMPL = "core.kernels.dwconv_glu_triton"


def _impl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu_input: bool,
          out_scale: torch.Tensor | None = None, halved_input: bool = False) -> torch.Tensor:
    impl = load_impl(_IMPL) if x.is_cuda else None
    if impl is None:
        return dwconv3x3_glu_reference(x, weight, bias, silu_input, out_scale, halved_input)
    return impl.dwconv3x3_glu_triton(x, weight, bias, silu_input, out_scale=out_scale, halved_input=halved_input)


@torch.library.custom_op("sana_video::dwconv3x3_glu", mutates_args=())
def _op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu_input: bool,
        out_scale: torch.Tensor | None = None, halved_input: bool = False) -> torch.Tensor:
    return _impl(x, weight, bias, silu_input, out_scale, halved_input)


@_op.register_fake
def _op_fake(x, weight, bias, silu_input, out_scale=None, halved_input=False):
    dtype = x.dtype if out_scale is None else torch.float8_e4m3fn
    return x.new_empty((*x.shape[:-1], x.shape[-1] // 2), dtype=dtype)


def dwconv3x3_glu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  silu_input: bool = False, out_scale: torch.Tensor | None = None,
                  halved_input: bool = False) -> torch.Tensor:
    """Dispatch: Triton on CUDA, the reference elsewhere. Returns a contiguous (B*T, H, W, F) tensor in x.dtype
    (FP8 E4M3 with `out_scale`)."""
    if not wants_triton(x, weight, *([] if bias is None else [bias])):
        return dwconv3x3_glu_reference(x, weight, bias, silu_input, out_scale, halved_input)
    if torch.compiler.is_compiling():
        return _op(x, weight, bias, bool(silu_input), out_scale, bool(halved_input))
    return _impl(x, weight, bias, silu_input, out_scale, halved_input)
