"""Key / layout map between diffusers' SanaVideoTransformer3DModel state dict and our internal modules.

One `Rule` per internal parameter lists the diffusers tensors it is made of and how (see `KINDS`). The same table
drives loading (diffusers -> internal), saving (internal -> diffusers) and the expected-key check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from core.config import TransformerConfig

# how the diffusers tensors become one internal tensor
#   same:     identical shape
#   reshape:  same memory order, different shape (1x1 convs and the patch Conv3d as Linears)
#   cat0:     concatenated along dim 0 (fused q|k|v, fused k|v)
#   temporal: Conv2d (D, D, 3, 1) -> Linear (D, 3D), column block k = tap k (tap 0 multiplies frame t-1)
KINDS = ("same", "reshape", "cat0", "temporal")


@dataclass(frozen=True)
class Rule:
    internal: str
    internal_shape: tuple[int, ...]
    sources: tuple[tuple[str, tuple[int, ...]], ...]   # (diffusers key, diffusers shape)
    kind: str


def conversion_rules(cfg: TransformerConfig) -> list[Rule]:
    d = cfg.hidden_size
    f = cfg.ffn_hidden
    p = cfg.patch_volume
    c_in, c_out = cfg.in_channels, cfg.out_channels
    rules: list[Rule] = []

    def same(internal: str, dkey: str, shape: tuple[int, ...]) -> None:
        rules.append(Rule(internal, shape, ((dkey, shape),), "same"))

    def reshape(internal: str, ishape: tuple[int, ...], dkey: str, dshape: tuple[int, ...]) -> None:
        assert math.prod(ishape) == math.prod(dshape)
        rules.append(Rule(internal, ishape, ((dkey, dshape),), "reshape"))

    def cat0(internal: str, dkeys: list[str], part_shape: tuple[int, ...]) -> None:
        ishape = (part_shape[0] * len(dkeys),) + part_shape[1:]
        rules.append(Rule(internal, ishape, tuple((k, part_shape) for k in dkeys), "cat0"))

    reshape("patch_embed.weight", (d, c_in * p), "patch_embedding.weight", (d, c_in, *cfg.patch_size))
    same("patch_embed.bias", "patch_embedding.bias", (d,))
    same("time_embedder.linear_1.weight", "time_embed.emb.timestep_embedder.linear_1.weight", (d, 256))
    same("time_embedder.linear_1.bias", "time_embed.emb.timestep_embedder.linear_1.bias", (d,))
    same("time_embedder.linear_2.weight", "time_embed.emb.timestep_embedder.linear_2.weight", (d, d))
    same("time_embedder.linear_2.bias", "time_embed.emb.timestep_embedder.linear_2.bias", (d,))
    same("time_modulation.weight", "time_embed.linear.weight", (6 * d, d))
    same("time_modulation.bias", "time_embed.linear.bias", (6 * d,))
    same("caption_proj.linear_1.weight", "caption_projection.linear_1.weight", (d, cfg.caption_channels))
    same("caption_proj.linear_1.bias", "caption_projection.linear_1.bias", (d,))
    same("caption_proj.linear_2.weight", "caption_projection.linear_2.weight", (d, d))
    same("caption_proj.linear_2.bias", "caption_projection.linear_2.bias", (d,))
    same("caption_norm.weight", "caption_norm.weight", (d,))

    for i in range(cfg.num_layers):
        b, src = f"blocks.{i}.", f"transformer_blocks.{i}."
        same(b + "scale_shift_table", src + "scale_shift_table", (6, d))
        cat0(b + "attn.qkv.weight", [src + f"attn1.to_{n}.weight" for n in "qkv"], (d, d))
        same(b + "attn.norm_q.weight", src + "attn1.norm_q.weight", (d,))
        same(b + "attn.norm_k.weight", src + "attn1.norm_k.weight", (d,))
        same(b + "attn.out.weight", src + "attn1.to_out.0.weight", (d, d))
        same(b + "attn.out.bias", src + "attn1.to_out.0.bias", (d,))
        same(b + "cross.q.weight", src + "attn2.to_q.weight", (d, d))
        same(b + "cross.q.bias", src + "attn2.to_q.bias", (d,))
        cat0(b + "cross.kv.weight", [src + "attn2.to_k.weight", src + "attn2.to_v.weight"], (d, d))
        cat0(b + "cross.kv.bias", [src + "attn2.to_k.bias", src + "attn2.to_v.bias"], (d,))
        same(b + "cross.norm_q.weight", src + "attn2.norm_q.weight", (d,))
        same(b + "cross.norm_k.weight", src + "attn2.norm_k.weight", (d,))
        same(b + "cross.out.weight", src + "attn2.to_out.0.weight", (d, d))
        same(b + "cross.out.bias", src + "attn2.to_out.0.bias", (d,))
        reshape(b + "ffn.inverted.weight", (2 * f, d), src + "ff.conv_inverted.weight", (2 * f, d, 1, 1))
        same(b + "ffn.inverted.bias", src + "ff.conv_inverted.bias", (2 * f,))
        same(b + "ffn.depthwise.weight", src + "ff.conv_depth.weight", (2 * f, 1, 3, 3))
        same(b + "ffn.depthwise.bias", src + "ff.conv_depth.bias", (2 * f,))
        reshape(b + "ffn.point.weight", (d, f), src + "ff.conv_point.weight", (d, f, 1, 1))
        rules.append(Rule(b + "ffn.temporal.weight", (d, 3 * d), ((src + "ff.conv_temp.weight", (d, d, 3, 1)),),
                          "temporal"))

    same("final_scale_shift_table", "scale_shift_table", (2, d))
    same("proj_out.weight", "proj_out.weight", (p * c_out, d))
    same("proj_out.bias", "proj_out.bias", (p * c_out,))
    return rules


def expected_diffusers_shapes(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    return {key: shape for rule in conversion_rules(cfg) for key, shape in rule.sources}


def to_internal(rule: Rule, parts: list[torch.Tensor], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Build one internal tensor on `device`/`dtype`; each source byte is copied once (no intermediate copies)."""
    if rule.kind == "same":
        return parts[0].to(device=device, dtype=dtype)
    if rule.kind == "reshape":
        return parts[0].reshape(rule.internal_shape).to(device=device, dtype=dtype)
    out = torch.empty(rule.internal_shape, device=device, dtype=dtype)
    if rule.kind == "cat0":
        offset = 0
        for part in parts:
            out[offset:offset + part.shape[0]].copy_(part)
            offset += part.shape[0]
        return out
    if rule.kind == "temporal":
        d = rule.internal_shape[0]
        out.view(d, 3, d).copy_(parts[0][..., 0].permute(0, 2, 1))     # out[o, k*D + i] = conv[o, i, k, 0]
        return out
    raise AssertionError(rule.kind)


def to_diffusers(rule: Rule, tensor: torch.Tensor) -> list[torch.Tensor]:
    """Inverse of `to_internal`: fresh contiguous tensors (no storage shared between returned entries)."""
    shapes = [shape for _, shape in rule.sources]
    if rule.kind == "same":
        return [tensor]
    if rule.kind == "reshape":
        return [tensor.reshape(shapes[0])]
    if rule.kind == "cat0":
        return [part.clone() for part in tensor.split([s[0] for s in shapes], dim=0)]
    if rule.kind == "temporal":
        d = rule.internal_shape[0]
        return [tensor.view(d, 3, d).permute(0, 2, 1).unsqueeze(-1).contiguous()]
    raise AssertionError(rule.kind)
