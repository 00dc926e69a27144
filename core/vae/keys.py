"""Key names and shapes of the Wan2.1 VAE in the two released formats.

diffusers (`AutoencoderKLWan`, `vae/diffusion_pytorch_model.safetensors`) and the official Wan repo
(`Wan2.1_VAE.pth`, a flat state dict of `WanVAE_`) hold the same tensors with the same shapes under different names.
Source of the map: diffusers `scripts/convert_wan_to_diffusers.py::convert_vae` (commit 7d5682739a1e), identical to
`diffusers.loaders.single_file_utils.convert_wan_vae_to_diffusers` in diffusers 0.42.1:

    conv1.* / conv2.*                      <-> quant_conv.* / post_quant_conv.*
    {en,de}coder.conv1.*                   <-> {en,de}coder.conv_in.*
    {en,de}coder.middle.0 / .2 (residual)  <-> {en,de}coder.mid_block.resnets.0 / .1
    {en,de}coder.middle.1 (attention)      <-> {en,de}coder.mid_block.attentions.0
    {en,de}coder.head.0.gamma / head.2.*   <-> {en,de}coder.norm_out.gamma / conv_out.*
    residual.0.gamma / residual.2.* / residual.3.gamma / residual.6.* / shortcut.*
                                           <-> norm1.gamma / conv1.* / norm2.gamma / conv2.* / conv_shortcut.*
    encoder.downsamples.k                  <-> encoder.down_blocks.k  (same flat index)
    decoder.upsamples.n (flat list: per stage num_res_blocks+1 residual blocks, then one resampler)
                                           <-> decoder.up_blocks.i.resnets.j / decoder.up_blocks.i.upsamplers.0
The diffusers script hard-codes the flat indices of the released config (0-2, 4-6, 8-10, 12-14 residual; 3, 7, 11
resamplers); we derive them from the config: n = i * (num_res_blocks + 2) + j, resampler at j = num_res_blocks + 1.
"""

from __future__ import annotations

import re

import torch

from core.vae.config import WanVAEConfig
from core.vae.wan import WanVAEDecoder

_RESIDUAL_TO_OFFICIAL = {
    "norm1.gamma": "residual.0.gamma",
    "conv1.weight": "residual.2.weight",
    "conv1.bias": "residual.2.bias",
    "norm2.gamma": "residual.3.gamma",
    "conv2.weight": "residual.6.weight",
    "conv2.bias": "residual.6.bias",
    "conv_shortcut.weight": "shortcut.weight",
    "conv_shortcut.bias": "shortcut.bias",
}


def is_encoder_key(diffusers_key: str) -> bool:
    """Encoder-side tensors (ignored by the decoder; image-to-video will need them)."""
    return diffusers_key.startswith(("encoder.", "quant_conv."))


def is_official_encoder_key(official_key: str) -> bool:
    return official_key.startswith(("encoder.", "conv1."))


def wan_decoder_parameter_shapes(cfg: WanVAEConfig) -> dict[str, tuple[int, ...]]:
    """diffusers key -> shape for post_quant_conv + decoder (what our WanVAEDecoder holds)."""
    with torch.device("meta"):
        model = WanVAEDecoder(cfg)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def wan_encoder_parameter_shapes(cfg: WanVAEConfig) -> dict[str, tuple[int, ...]]:
    """diffusers key -> shape for encoder + quant_conv (diffusers WanEncoder3d, Wan2.1 layout, no attn_scales)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv3d(prefix: str, cin: int, cout: int, kernel: tuple[int, int, int]) -> None:
        shapes[f"{prefix}.weight"] = (cout, cin, *kernel)
        shapes[f"{prefix}.bias"] = (cout,)

    def residual(prefix: str, cin: int, cout: int) -> None:
        shapes[f"{prefix}.norm1.gamma"] = (cin, 1, 1, 1)
        conv3d(f"{prefix}.conv1", cin, cout, (3, 3, 3))
        shapes[f"{prefix}.norm2.gamma"] = (cout, 1, 1, 1)
        conv3d(f"{prefix}.conv2", cout, cout, (3, 3, 3))
        if cin != cout:
            conv3d(f"{prefix}.conv_shortcut", cin, cout, (1, 1, 1))

    dims = [cfg.base_dim * u for u in (1, *cfg.dim_mult)]
    conv3d("encoder.conv_in", cfg.in_channels, dims[0], (3, 3, 3))
    k = 0
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(cfg.num_res_blocks):
            residual(f"encoder.down_blocks.{k}", in_dim, out_dim)
            in_dim = out_dim
            k += 1
        if i != len(cfg.dim_mult) - 1:
            shapes[f"encoder.down_blocks.{k}.resample.1.weight"] = (out_dim, out_dim, 3, 3)
            shapes[f"encoder.down_blocks.{k}.resample.1.bias"] = (out_dim,)
            if cfg.temperal_downsample[i]:
                conv3d(f"encoder.down_blocks.{k}.time_conv", out_dim, out_dim, (3, 1, 1))
            k += 1
    mid = dims[-1]
    residual("encoder.mid_block.resnets.0", mid, mid)
    shapes["encoder.mid_block.attentions.0.norm.gamma"] = (mid, 1, 1)
    shapes["encoder.mid_block.attentions.0.to_qkv.weight"] = (3 * mid, mid, 1, 1)
    shapes["encoder.mid_block.attentions.0.to_qkv.bias"] = (3 * mid,)
    shapes["encoder.mid_block.attentions.0.proj.weight"] = (mid, mid, 1, 1)
    shapes["encoder.mid_block.attentions.0.proj.bias"] = (mid,)
    residual("encoder.mid_block.resnets.1", mid, mid)
    shapes["encoder.norm_out.gamma"] = (mid, 1, 1, 1)
    conv3d("encoder.conv_out", mid, 2 * cfg.z_dim, (3, 3, 3))
    conv3d("quant_conv", 2 * cfg.z_dim, 2 * cfg.z_dim, (1, 1, 1))
    return shapes


def wan_vae_parameter_shapes(cfg: WanVAEConfig) -> dict[str, tuple[int, ...]]:
    """All tensors of a diffusers AutoencoderKLWan state dict (encoder + decoder)."""
    return {**wan_encoder_parameter_shapes(cfg), **wan_decoder_parameter_shapes(cfg)}


def diffusers_to_official_key(key: str, cfg: WanVAEConfig) -> str:
    """Official `Wan2.1_VAE.pth` name of a diffusers AutoencoderKLWan tensor name."""
    if key.startswith("quant_conv."):
        return "conv1." + key[len("quant_conv."):]
    if key.startswith("post_quant_conv."):
        return "conv2." + key[len("post_quant_conv."):]
    side, _, rest = key.partition(".")
    if side not in ("encoder", "decoder"):
        raise KeyError(key)
    if rest.startswith("conv_in."):
        return f"{side}.conv1.{rest[len('conv_in.'):]}"
    if rest == "norm_out.gamma":
        return f"{side}.head.0.gamma"
    if rest.startswith("conv_out."):
        return f"{side}.head.2.{rest[len('conv_out.'):]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        return f"{side}.middle.{2 * int(m[1])}.{_RESIDUAL_TO_OFFICIAL[m[2]]}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        return f"{side}.middle.1.{m[1]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(.+)", rest):
        tail = _RESIDUAL_TO_OFFICIAL.get(m[2], m[2])  # resample.1.* / time_conv.* keep their names
        return f"encoder.downsamples.{m[1]}.{tail}"
    stride = cfg.num_res_blocks + 2
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"decoder.upsamples.{int(m[1]) * stride + int(m[2])}.{_RESIDUAL_TO_OFFICIAL[m[3]]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
        return f"decoder.upsamples.{int(m[1]) * stride + cfg.num_res_blocks + 1}.{m[2]}"
    raise KeyError(key)


def official_to_diffusers_map(cfg: WanVAEConfig, decoder_only: bool = False) -> dict[str, str]:
    """official name -> diffusers name for every tensor of the model (or only the decoder side)."""
    names = wan_decoder_parameter_shapes(cfg) if decoder_only else wan_vae_parameter_shapes(cfg)
    return {diffusers_to_official_key(name, cfg): name for name in names}


def to_official_state_dict(state_dict: dict[str, torch.Tensor], cfg: WanVAEConfig) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKLWan state dict to the official `Wan2.1_VAE.pth` names (writers, tests)."""
    return {diffusers_to_official_key(k, cfg): v for k, v in state_dict.items()}
