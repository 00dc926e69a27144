"""The Wan2.1 VAE decoder (post_quant_conv + causal 3D decoder), our own implementation.

Parameter names and shapes are IDENTICAL to the decoder side of diffusers' `AutoencoderKLWan` (`post_quant_conv.*`,
`decoder.*`), so a diffusers `vae/` folder loads directly. The encoder side of that file (`encoder.*`, `quant_conv.*`)
is ignored on purpose: text-to-video only decodes. Image-to-video will need the encoder later (its key names and
shapes are listed in `core.vae.keys.wan_encoder_parameter_shapes`).

Causality. Every temporal operation of the decoder is causal: 3-frame causal convolutions (zero padding in front,
`CACHE_T = 2` frames of context) and the temporal upsamplers' `time_conv`. All other layers (RMS norms over channels,
the mid-block attention over the pixels of ONE frame, 2D upsampling convs) act on each frame alone. So decoding a
video in pieces with a per-conv cache of the last 2 input frames gives the same frames as decoding it whole, and a
piece may hold any number of latent frames.

The one exception to "plain causal conv": the temporal upsampler does not upsample the very first frame of the video
(diffusers / official Wan: `feat_cache[idx] = "Rep"` on the first chunk). That frame passes through unchanged, so
latent frame 0 yields 1 pixel frame and every later latent frame yields 4; the `time_conv` then sees the stream of
frames after the first one, with zero padding in front. `first_chunk=True` marks the call that contains frame 0.

Two execution paths compute the same function. The reference path (default) is the one checked against diffusers
on the CPU (<= 1e-5 in fp32). `WanVAEDecoder.configure(fast=True)` switches to the GPU fast path: channels_last_3d
activations, one preallocated causal-context buffer per conv (no torch.cat / F.pad copies), RMS norm + SiLU (+ the
previous conv's bias) fused into one Triton pass that writes into that buffer, conv biases of residual blocks fused
into the residual add, and optionally (subpixel=True) the 2x upsamplers as four 2x2 convs on the small input. Only
rounding differs (fp32: ~1e-6 relative). Numbers: bench/vae.py.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

from core.vae.config import WanVAEConfig

CACHE_T = 2  # frames of context a kernel-3 causal conv needs from the previous chunk

# name of a causal conv (its module path) -> its last <= CACHE_T input frames, (B, C, <=2, H, W)
ConvCache = dict[str, torch.Tensor]


def _format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last_3d for tensors laid out that way (the fast path), else the default layout."""
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_contiguous(memory_format=torch.channels_last_3d) else x.contiguous(memory_format=torch.channels_last_3d)


@functools.lru_cache(maxsize=1)
def _fast_kernels():
    """The module core.vae.norm_silu_triton, or None where Triton cannot be imported (then PyTorch ops)."""
    try:
        import core.vae.norm_silu_triton as kernels
    except Exception:  # ImportError, or a broken Triton / driver: the unfused ops compute the same function
        return None
    return kernels


def _nearest_2x(frames: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 2H, 2W), nearest neighbour (for factor 2, nearest-exact == nearest: a pure copy,
    exact in any dtype). channels_last input (fast path): one strided copy of a broadcast view, in the same
    layout (measured: the upsample kernel took ~4x a copy's time on channels_last bf16)."""
    if frames.dim() == 4 and not frames.is_contiguous() and frames.is_contiguous(memory_format=torch.channels_last):
        n, c, h, w = frames.shape
        nhwc = frames.permute(0, 2, 3, 1)  # (N, H, W, C), a contiguous view
        up = nhwc[:, :, None, :, None, :].expand(n, h, 2, w, 2, c).reshape(n, 2 * h, 2 * w, c)
        return up.permute(0, 3, 1, 2)  # (N, C, 2H, 2W) channels_last
    return F.interpolate(frames, scale_factor=2.0, mode="nearest-exact")


def _bias_residual(h: torch.Tensor, bias: torch.Tensor | None, shortcut: torch.Tensor) -> torch.Tensor:
    """h + bias (per channel) + shortcut; one in-place Triton pass over h where it can (fast path)."""
    if bias is None:
        return h.add_(shortcut)
    kernels = _fast_kernels() if h.is_cuda or os.environ.get("TRITON_INTERPRET") == "1" else None
    if kernels is not None:
        try:
            return kernels.bias_residual_(h, bias, shortcut)
        except ValueError:  # layouts differ: the PyTorch ops
            pass
    return h.add_(bias.view(1, -1, 1, 1, 1)).add_(shortcut)


class CausalConv3d(nn.Conv3d):
    """Conv3d that pads time only in front (causal) and reads/writes its context frames in a ConvCache.

    Spatial padding is symmetric zero padding as in nn.Conv3d. Stride 1 only (the decoder has no strided conv).
    `cache_key` is set by the owning decoder."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size, padding=0) -> None:
        super().__init__(in_ch, out_ch, kernel_size, padding=0)
        pt, ph, pw = (padding, padding, padding) if isinstance(padding, int) else padding
        self.time_pad = 2 * pt  # all temporal padding goes in front
        self.spatial_pad = (pw, pw, ph, ph)
        self.cache_key = ""
        self.fast = False  # set by WanVAEDecoder.configure
        self.taps2d = False
        self.defer_bias = False

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None, pre_norm: RMSNorm | None = None,
                input_bias: torch.Tensor | None = None, add_bias: bool = True) -> torch.Tensor:
        # x (B, C, T, H, W) -> (B, C_out, T, H, W); with pre_norm the conv's input is silu(pre_norm(x)).
        # Fast path only: input_bias = a previous conv's deferred bias (added to x first); add_bias=False leaves this
        # conv's bias to the caller (fused into the next elementwise pass).
        if self.fast:
            return self._forward_fast(x, cache, pre_norm, input_bias, add_bias)
        assert input_bias is None and add_bias, "bias deferral is a fast-path feature"
        if pre_norm is not None:
            x = F.silu(pre_norm(x))
        if self.time_pad == 0:  # kernel 1 in time: no context (post_quant_conv, conv_shortcut)
            return super().forward(F.pad(x, self.spatial_pad) if any(self.spatial_pad) else x)
        previous = cache.get(self.cache_key) if cache is not None else None
        context = x if previous is None else torch.cat([previous.to(x.dtype), x], dim=2)
        if cache is not None:
            # clone: a slice would keep the whole (large) context tensor alive
            cache[self.cache_key] = context[:, :, -self.time_pad:].clone()
        missing = self.time_pad - (context.shape[2] - x.shape[2])  # zero frames in front at the video start
        padded = F.pad(context, (*self.spatial_pad, missing, 0))
        if padded.device.type == "cpu":
            return self._conv_as_2d(padded)
        return super().forward(padded)

    def _forward_fast(self, x: torch.Tensor, cache: ConvCache | None, pre_norm: RMSNorm | None,
                      input_bias: torch.Tensor | None = None, add_bias: bool = True) -> torch.Tensor:
        """GPU fast path (WanVAEDecoder.configure(fast=True)): channels_last_3d tensors, one preallocated context
        buffer per call instead of torch.cat + F.pad copies, the norm + SiLU written straight into it by one Triton
        kernel, spatial zero padding done by the conv itself. Same function; different rounding order only."""
        x = _channels_last(x)
        b, c, t, h, w = x.shape
        ph, pw = self.spatial_pad[2], self.spatial_pad[0]
        pad = self.time_pad
        bias = self.bias if add_bias else None
        if input_bias is not None and (pre_norm is None or pad == 0):
            raise NotImplementedError("the fast path defers a bias only into a following norm")
        if pad == 0:  # 1x1x1 convs (post_quant_conv, conv_shortcut): no context
            y = F.silu(pre_norm(x)) if pre_norm is not None else x
            return F.conv3d(y, self.weight, bias, padding=(0, ph, pw))
        previous = cache.get(self.cache_key) if cache is not None else None
        n_prev = 0 if previous is None else previous.shape[2]
        # ctx (B, C, pad + T, H, W): [zeros at the video start | cached frames | silu(norm(x))]
        ctx = torch.empty((b, c, pad + t, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last_3d)
        if n_prev < pad:
            ctx[:, :, :pad - n_prev].zero_()
        if n_prev:
            ctx[:, :, pad - n_prev:pad].copy_(previous)
        body = ctx[:, :, pad:]
        if pre_norm is None:
            body.copy_(x)
        else:
            pre_norm.silu_into(x, body, bias=input_bias)
        if cache is not None:
            keep = min(pad, n_prev + t)  # real frames only: the cache never stores the zero padding
            cache[self.cache_key] = ctx[:, :, pad + t - keep:].clone()
        if self.taps2d and b == 1:
            return self._conv_taps_views(ctx, t, (ph, pw), bias)
        return F.conv3d(ctx, self.weight, bias, padding=(0, ph, pw))

    def _conv_taps_views(self, ctx: torch.Tensor, t: int, padding: tuple[int, int], bias: torch.Tensor | None
                         ) -> torch.Tensor:
        """Experimental alternative to cuDNN conv3d: one channels_last conv2d per temporal tap over views of the
        context (no copies: a channels_last_3d (1, C, T', H, W) tensor is a channels_last (T', C, H, W) one)."""
        frames = ctx[0].transpose(0, 1)  # (T', C, H, W) channels_last view
        key = (self.weight.dtype, self.weight.device)
        if getattr(self, "_tap_weights_key", None) != key:
            self._tap_weights = [self.weight[:, :, k].contiguous(memory_format=torch.channels_last)
                                 for k in range(self.kernel_size[0])]
            self._tap_weights_key = key
        out = None
        for k, weight in enumerate(self._tap_weights):
            y = F.conv2d(frames[k:k + t], weight, bias if k == 0 else None, padding=padding)
            out = y if out is None else out.add_(y)
        return out.transpose(0, 1).unsqueeze(0)  # (1, C_out, T, H, W) channels_last_3d

    def _conv_as_2d(self, padded: torch.Tensor) -> torch.Tensor:
        """The same convolution as a sum over temporal taps of 2D convs: PyTorch's CPU conv3d falls back to a slow
        unfold path for these shapes, conv2d uses oneDNN (3-4x faster). Equal up to float summation order."""
        # padded (B, C, T + kt - 1, H', W') -> (B, C_out, T, H, W)
        b, c, tp, hp, wp = padded.shape
        kt = self.kernel_size[0]
        t = tp - kt + 1
        frames = padded.transpose(1, 2).contiguous()  # (B, T+kt-1, C, H', W'): time slices are contiguous
        out = None
        for k in range(kt):
            taps = frames[:, k:k + t].reshape(b * t, c, hp, wp)
            y = F.conv2d(taps, self.weight[:, :, k], self.bias if k == 0 else None)
            out = y if out is None else out.add_(y)
        return out.view(b, t, *out.shape[1:]).transpose(1, 2)


class RMSNorm(nn.Module):
    """x / ||x||_channels * sqrt(C) * gamma (diffusers WanRMS_norm, bias=False). Normalises in fp32 for half dtypes."""

    def __init__(self, dim: int, images: bool) -> None:
        super().__init__()
        # gamma (C, 1, 1, 1) for video tensors, (C, 1, 1) for the per-frame attention input: diffusers' shapes
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))
        self.scale = dim**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # = F.normalize(x, dim=1) (x / max(||x||, 1e-12)) written out: F.normalize's vector_norm is ~10x slower on CPU
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        inv_norm = (xf * xf).sum(dim=1, keepdim=True).clamp_min_(1e-24).rsqrt_()
        return (xf * inv_norm).to(x.dtype) * (self.gamma * self.scale)

    def silu_into(self, x: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """out[...] = silu(self(x + bias)) (bias per channel, optional); one fused Triton pass for channels_last_3d
        video tensors where Triton loads (CUDA; CPU only under TRITON_INTERPRET=1, for tests), else the PyTorch ops.
        out may be a slice of a buffer."""
        # Triton is imported only for CUDA tensors (or under the interpreter): never on a CPU-only run
        kernels = _fast_kernels() if x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1" else None
        if kernels is not None:
            try:
                kernels.rms_silu_into(x, self.gamma, self.scale, out, silu=True, bias=bias)
                return
            except ValueError:  # not channels_last_3d-dense: take the PyTorch ops
                pass
        if bias is not None:
            x = x + bias.view(1, -1, 1, 1, 1)
        out.copy_(F.silu(self(x)))


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm1 = RMSNorm(in_dim, images=False)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1)
        self.norm2 = RMSNorm(out_dim, images=False)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        if self.conv1.fast and self.conv1.defer_bias:
            # conv1's bias goes into norm2's kernel, conv2's into the residual add: two fewer passes
            h = self.conv1(x, cache, pre_norm=self.norm1, add_bias=False)
            h = self.conv2(h, cache, pre_norm=self.norm2, input_bias=self.conv1.bias, add_bias=False)
            return _bias_residual(h, self.conv2.bias, _channels_last(shortcut))
        h = self.conv1(x, cache, pre_norm=self.norm1)  # conv1(silu(norm1(x)))
        h = self.conv2(h, cache, pre_norm=self.norm2)  # dropout is identity at inference
        return h + shortcut


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W pixels of each frame separately (no temporal mixing)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(frames))  # (bt, 3c, h, w); channels [q | k | v]
        qkv = qkv.flatten(2).transpose(1, 2).unsqueeze(1)  # (bt, 1, hw, 3c); a view for channels_last
        q, k, v = qkv.chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())  # (bt, 1, hw, c)
        out = out.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        out = self.proj(out)
        return x + out.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)


class Upsample(nn.Module):
    """2x spatial upsampling (nearest + 3x3 conv to dim/2 channels); `upsample3d` also doubles time causally."""

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        # nn.Sequential only for the key name `resample.1.*` (index 0 is the parameterless nearest upsampling)
        self.resample = nn.Sequential(nn.Identity(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0)) if temporal else None
        self.subpixel = False  # set by WanVAEDecoder.configure (fast path option)
        self._parity_weights_key = None

    def _upsample_conv_subpixel(self, frames: torch.Tensor) -> torch.Tensor:
        """conv3x3(nearest_2x(frames)) without building the 4x larger upsampled tensor: output pixel (2i+a, 2j+b)
        only sees input rows {i-1, i} (a=0) or {i, i+1} (a=1), with the 3x3 taps summed onto 2x2 (a=0: [W0, W1+W2],
        a=1: [W0+W1, W2]; columns alike). Four 2x2 convs: 16 instead of 36 multiply-adds per output pixel and
        channel pair. Same function; the summed weights are rounded once to the model dtype."""
        # frames (N, C, H, W) channels_last -> (N, C/2, 2H, 2W) channels_last
        conv = self.resample[1]
        key = (conv.weight.dtype, conv.weight.device)
        if self._parity_weights_key != key:
            w = conv.weight.detach().double()  # (Co, C, 3, 3)
            rows = [torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2]], 2),
                    torch.stack([w[:, :, 0] + w[:, :, 1], w[:, :, 2]], 2)]  # (Co, C, 2, 3) per row parity
            self._parity_weights = [
                [torch.stack([r[..., 0], r[..., 1] + r[..., 2]], 3) if b == 0 else
                 torch.stack([r[..., 0] + r[..., 1], r[..., 2]], 3) for b in range(2)] for r in rows]
            self._parity_weights = [[k.to(conv.weight.dtype).contiguous(memory_format=torch.channels_last)
                                     for k in row] for row in self._parity_weights]
            self._parity_weights_key = key
        n, c, h, w = frames.shape
        co = conv.out_channels
        out = torch.empty((n, co, 2 * h, 2 * w), dtype=frames.dtype, device=frames.device,
                          memory_format=torch.channels_last)
        out6 = out.permute(0, 2, 3, 1).view(n, h, 2, w, 2, co)  # (N, H, a, W, b, Co) view of out
        bias = conv.bias.view(1, 1, 1, co)
        for a in range(2):
            for b in range(2):
                # padding 1 gives (H+1, W+1) outputs; row i of parity a is output row i + a
                y = F.conv2d(frames, self._parity_weights[a][b], None, padding=1)
                torch.add(y[:, :, a:a + h, b:b + w].permute(0, 2, 3, 1), bias, out=out6[:, :, a, :, b, :])
        return out

    def _double_time(self, x: torch.Tensor, cache: ConvCache, first_chunk: bool) -> torch.Tensor:
        # x (B, C, T, H, W) -> (B, C, T', H, W), T' = 2T, or 2T - 1 when x holds the video's first frame
        head = x[:, :, :1] if first_chunk else None  # the first frame is not upsampled (diffusers' "Rep")
        rest = x[:, :, 1:] if first_chunk else x
        if rest.shape[2] == 0:
            return head
        b, c, t, h, w = rest.shape
        y = self.time_conv(rest, cache)  # (B, 2C, t, H, W): output channels [frame 2i | frame 2i+1]
        n_head = 0 if head is None else 1
        # out (B, C, n_head + 2t, H, W) in the memory format of y (channels_last_3d on the fast path): pure copies
        out = torch.empty((b, c, n_head + 2 * t, h, w), dtype=y.dtype, device=y.device, memory_format=_format_of(y))
        if head is not None:
            out[:, :, :1].copy_(head)
        out[:, :, n_head::2].copy_(y[:, :c])
        out[:, :, n_head + 1::2].copy_(y[:, c:])
        return out

    def forward(self, x: torch.Tensor, cache: ConvCache, first_chunk: bool) -> torch.Tensor:
        if self.temporal:
            x = self._double_time(x, cache, first_chunk)
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        if self.subpixel and frames.is_contiguous(memory_format=torch.channels_last):
            frames = self._upsample_conv_subpixel(frames)  # (bt, c/2, 2h, 2w)
        else:
            frames = self.resample[1](_nearest_2x(frames))  # (bt, c/2, 2h, 2w)
        return frames.view(b, t, c // 2, 2 * h, 2 * w).permute(0, 2, 1, 3, 4)


class MidBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim), ResidualBlock(dim, dim)])
        self.attentions = nn.ModuleList([AttentionBlock(dim)])

    def forward(self, x: torch.Tensor, cache: ConvCache) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        x = self.attentions[0](x)
        return self.resnets[1](x, cache)


class UpBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, upsample: str | None) -> None:
        super().__init__()
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList([ResidualBlock(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.upsamplers = (
            nn.ModuleList([Upsample(out_dim, temporal=upsample == "upsample3d")]) if upsample is not None else None
        )

    def forward(self, x: torch.Tensor, cache: ConvCache, first_chunk: bool) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, cache, first_chunk)
        return x


class Decoder3d(nn.Module):
    """diffusers WanDecoder3d (Wan2.1 layout): conv_in, mid_block, up_blocks, norm_out, conv_out."""

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        dim = cfg.decoder_dim
        mult = list(cfg.dim_mult)
        dims = [dim * u for u in [mult[-1]] + mult[::-1]]  # e.g. 96: [384, 384, 384, 192, 96]
        self.conv_in = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.mid_block = MidBlock(dims[0])
        blocks = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # the previous block's upsampler halved the channels
            last = i == len(mult) - 1
            upsample = None if last else ("upsample3d" if cfg.temperal_upsample[i] else "upsample2d")
            blocks.append(UpBlock(in_dim, out_dim, cfg.num_res_blocks, upsample))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1], images=False)
        self.conv_out = CausalConv3d(dims[-1], cfg.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: ConvCache, first_chunk: bool) -> torch.Tensor:
        # x (B, z_dim, t, h, w) -> (B, 3, 4t or 4t-3 on the first chunk, 8h, 8w); not clamped
        x = self.conv_in(x, cache)
        x = self.mid_block(x, cache)
        for block in self.up_blocks:
            x = block(x, cache, first_chunk)
        return self.conv_out(x, cache, pre_norm=self.norm_out)  # conv_out(silu(norm_out(x)))


class WanVAEDecoder(nn.Module):
    """post_quant_conv + decoder of the Wan2.1 VAE; state_dict keys are diffusers' decoder-side keys."""

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        self.config = cfg
        self.post_quant_conv = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)
        for name, module in self.named_modules():
            if isinstance(module, CausalConv3d):
                module.cache_key = name

    @property
    def fast(self) -> bool:
        return self.decoder.conv_in.fast

    def configure(self, fast: bool, taps2d: bool = False, defer_bias: bool = True, subpixel: bool = False
                  ) -> WanVAEDecoder:
        """fast=True: the GPU fast path (channels_last_3d activations and conv weights, preallocated causal context
        buffers, fused RMS norm + SiLU in Triton, conv-side spatial padding). Computes the same function; only the
        summation order differs (fp32: ~1e-6 relative). fast=False: the reference path (default, exact on CPU).
        taps2d (with fast, experimental): the 3-frame convs as per-tap conv2d instead of cuDNN conv3d.
        defer_bias (with fast): residual blocks add conv biases inside the next norm / the residual add (measured:
        cuDNN's separate bias pass over channels_last outputs is slow).
        subpixel (with fast): each 2x upsampler's nearest + 3x3 conv as four 2x2 convs on the small input."""
        for module in self.modules():
            if isinstance(module, Upsample):
                module.subpixel = fast and subpixel
                module._parity_weights_key = None
        for module in self.modules():
            if isinstance(module, CausalConv3d):
                module.fast = fast
                module.taps2d = fast and taps2d
                module.defer_bias = fast and defer_bias
                module._tap_weights_key = None
        fmt3d, fmt2d = (torch.channels_last_3d, torch.channels_last) if fast else (torch.contiguous_format,) * 2
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Conv3d, nn.Conv2d)):  # plain assignment keeps the Parameter object
                    module.weight.data = module.weight.data.contiguous(
                        memory_format=fmt3d if module.weight.dim() == 5 else fmt2d)
        return self

    def cached_conv_names(self) -> list[str]:
        """Causal convs that keep context frames between chunks, in execution order."""
        return [n for n, m in self.named_modules() if isinstance(m, CausalConv3d) and m.time_pad > 0]

    def forward(self, z: torch.Tensor, cache: ConvCache, first_chunk: bool) -> torch.Tensor:
        # z (B, z_dim, t, h, w) raw (denormalised) latents -> frames (B, 3, F, 8h, 8w) clamped to [-1, 1]
        if self.fast:
            z = _channels_last(z)
        x = self.post_quant_conv(z)
        return self.decoder(x, cache, first_chunk).clamp_(-1.0, 1.0)
