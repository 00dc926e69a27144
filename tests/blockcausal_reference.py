"""Test-only explicit reference of the SANA-Video transformer with block-causal attention.

Written independently of core/model: it works on the diffusers-format state dict with plain convolutions, RoPE as a
complex multiply in float64 (the official LiteLAReLURope way), quadratic linear attention with an explicit
token-by-token block-causal mask (no running state), a masked-softmax cross-attention and the temporal conv as three
explicit taps. One call covers all frames with per-frame timesteps, so it is the one-pass form of LongSANA streaming:
clean previous chunks at t=0, the current chunk at t.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def randomize_parameters_(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter a random, well-scaled value (defaults such as zero tables / unit norms would hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
            if p.ndim >= 2 and "scale_shift_table" not in name:
                p.copy_(noise / math.sqrt(p[0].numel()))          # ~unit-variance activations
            elif "norm" in name:
                p.copy_(1.0 + 0.3 * noise)
            else:
                p.copy_(0.3 * noise)


def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope_complex(head_dim: int, frames: int, height: int, width: int, frame_offset: int) -> torch.Tensor:
    """(N, d/2) complex128 rotations, pairs ordered [t, h, w]."""
    h_dim = w_dim = 2 * (head_dim // 6)
    t_dim = head_dim - h_dim - w_dim
    parts = []
    grids = torch.meshgrid(torch.arange(frame_offset, frame_offset + frames), torch.arange(height),
                           torch.arange(width), indexing="ij")
    for dim, pos in zip((t_dim, h_dim, w_dim), grids):
        freqs = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        parts.append(pos.reshape(-1, 1).double() * freqs[None])
    angles = torch.cat(parts, dim=1)
    return torch.polar(torch.ones_like(angles), angles)


def _apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """x (B, N, H, d) real; rot (N, d/2) complex128."""
    xc = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(xc * rot[None, :, None, :]).flatten(-2).to(x.dtype)


def reference_forward(sd: dict[str, torch.Tensor], cfg, latents: torch.Tensor, frame_timesteps: torch.Tensor,
                      caption: torch.Tensor, mask: torch.Tensor, frame_chunk: torch.Tensor | None = None,
                      frame_offset: int = 0) -> torch.Tensor:
    """Velocity (B, C_out, T, H, W) in latents.dtype.

    frame_timesteps (B, T') per latent frame; frame_chunk (T',) chunk id of each frame (None: one chunk, i.e.
    bidirectional). Tokens of chunk i see tokens of chunks <= i; the temporal conv sees frame f-1 always and frame
    f+1 only inside the same chunk."""
    dt = latents.dtype
    w = {k: v.to(dt) for k, v in sd.items()}
    b = latents.shape[0]
    heads, d = cfg.num_attention_heads, cfg.attention_head_dim
    ch, cd = cfg.num_cross_attention_heads, cfg.cross_attention_head_dim
    dim = cfg.hidden_size

    x = F.conv3d(latents, w["patch_embedding.weight"], w["patch_embedding.bias"], stride=cfg.patch_size)
    tf, hf, wf = x.shape[2:]
    hw = hf * wf
    n = tf * hw
    x = x.flatten(2).transpose(1, 2)                                          # (B, N, D)
    if frame_chunk is None:
        frame_chunk = torch.zeros(tf, dtype=torch.long)
    token_chunk = frame_chunk.repeat_interleave(hw)                           # (N,)
    visible = (token_chunk[None, :] <= token_chunk[:, None]).to(dt)           # [query n, key m]

    # timestep embedding per frame
    t = frame_timesteps.to(torch.float64)
    if cfg.floor_timestep:
        t = t.trunc()
    freqs = torch.exp(-math.log(10000.0) * torch.arange(128, dtype=torch.float32) / 128)
    args = t.float()[..., None] * freqs
    sinus = torch.cat([args.cos(), args.sin()], dim=-1).to(dt)               # (B, T', 256)
    p = "time_embed.emb.timestep_embedder."
    emb = F.linear(F.silu(F.linear(sinus, w[p + "linear_1.weight"], w[p + "linear_1.bias"])),
                   w[p + "linear_2.weight"], w[p + "linear_2.bias"])          # (B, T', D)
    t0 = F.linear(F.silu(emb), w["time_embed.linear.weight"], w["time_embed.linear.bias"]).view(b, tf, 6, dim)
    t0_tok = t0.repeat_interleave(hw, dim=1)                                  # (B, N, 6, D)
    emb_tok = emb.repeat_interleave(hw, dim=1)                                # (B, N, D)

    y = F.linear(caption.to(dt), w["caption_projection.linear_1.weight"], w["caption_projection.linear_1.bias"])
    y = F.linear(F.gelu(y, approximate="tanh"), w["caption_projection.linear_2.weight"],
                 w["caption_projection.linear_2.bias"])
    y = _rms(y, w["caption_norm.weight"], cfg.caption_norm_eps)
    keep = mask.bool()[:, None, None, :]                                      # (B, 1, 1, L)

    rot = _rope_complex(d, tf, hf, wf, frame_offset)

    for i in range(cfg.num_layers):
        p = f"transformer_blocks.{i}."
        mod = w[p + "scale_shift_table"] + t0_tok                             # (B, N, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(2)

        h = F.layer_norm(x, (dim,), eps=cfg.norm_eps) * (1 + scale_msa) + shift_msa
        q = _rms(F.linear(h, w[p + "attn1.to_q.weight"]), w[p + "attn1.norm_q.weight"], cfg.qk_norm_eps)
        k = _rms(F.linear(h, w[p + "attn1.to_k.weight"]), w[p + "attn1.norm_k.weight"], cfg.qk_norm_eps)
        v = F.linear(h, w[p + "attn1.to_v.weight"])
        q, k, v = (z.view(b, n, heads, d) for z in (q, k, v))
        q, k = F.relu(q), F.relu(k)
        q_rot, k_rot = _apply_rope(q, rot), _apply_rope(k, rot)
        scores = torch.einsum("bnhc,bmhc->bhnm", q_rot, k_rot) * visible      # RoPE'd numerator weights
        norms = torch.einsum("bnhc,bmhc->bhnm", q, k) * visible               # un-rotated denominator weights
        num = torch.einsum("bhnm,bmhc->bnhc", scores, v)
        den = norms.sum(-1).transpose(1, 2)[..., None]                        # (B, N, H, 1)
        attn = (num / (den + cfg.linear_attn_eps)).reshape(b, n, dim)
        attn = F.linear(attn, w[p + "attn1.to_out.0.weight"], w[p + "attn1.to_out.0.bias"])
        x = x + gate_msa * attn

        q = _rms(F.linear(x, w[p + "attn2.to_q.weight"], w[p + "attn2.to_q.bias"]), w[p + "attn2.norm_q.weight"],
                 cfg.cross_norm_eps)
        k = _rms(F.linear(y, w[p + "attn2.to_k.weight"], w[p + "attn2.to_k.bias"]), w[p + "attn2.norm_k.weight"],
                 cfg.cross_norm_eps)
        v = F.linear(y, w[p + "attn2.to_v.weight"], w[p + "attn2.to_v.bias"])
        q = q.view(b, n, ch, cd).transpose(1, 2)
        k = k.view(b, -1, ch, cd).transpose(1, 2)
        v = v.view(b, -1, ch, cd).transpose(1, 2)
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(cd)
        probs = logits.masked_fill(~keep, float("-inf")).softmax(-1)
        cross = (probs @ v).transpose(1, 2).reshape(b, n, dim)
        x = x + F.linear(cross, w[p + "attn2.to_out.0.weight"], w[p + "attn2.to_out.0.bias"])

        h = F.layer_norm(x, (dim,), eps=cfg.norm_eps) * (1 + scale_mlp) + shift_mlp
        img = h.view(b * tf, hf, wf, dim).permute(0, 3, 1, 2)                # (B*T', D, H', W')
        img = F.silu(F.conv2d(img, w[p + "ff.conv_inverted.weight"], w[p + "ff.conv_inverted.bias"]))
        img = F.conv2d(img, w[p + "ff.conv_depth.weight"], w[p + "ff.conv_depth.bias"], padding=1,
                       groups=img.shape[1])
        val, gate = img.chunk(2, dim=1)
        img = F.conv2d(val * F.silu(gate), w[p + "ff.conv_point.weight"])    # (B*T', D, H', W')
        u = img.view(b, tf, dim, hw)
        taps = w[p + "ff.conv_temp.weight"][..., 0]                           # (D_out, D_in, 3)
        frames_out = []
        for f in range(tf):
            acc = u[:, f] + taps[:, :, 1] @ u[:, f]
            if f - 1 >= 0:                                                    # previous frame: any earlier chunk
                acc = acc + taps[:, :, 0] @ u[:, f - 1]
            if f + 1 < tf and frame_chunk[f + 1] == frame_chunk[f]:           # next frame: same chunk only
                acc = acc + taps[:, :, 2] @ u[:, f + 1]
            frames_out.append(acc)
        ffn = torch.stack(frames_out, dim=1).transpose(2, 3).reshape(b, n, dim)
        x = x + gate_mlp * ffn

    shift, scale = (w["scale_shift_table"][None, None] + emb_tok[:, :, None]).unbind(2)
    x = F.layer_norm(x, (dim,), eps=1e-6) * (1 + scale) + shift
    x = F.linear(x, w["proj_out.weight"], w["proj_out.bias"])
    pt, ph, pw = cfg.patch_size
    x = x.view(b, tf, hf, wf, pt, ph, pw, cfg.out_channels)
    return torch.einsum("bfhwopqc->bcfohpwq", x).reshape(b, cfg.out_channels, tf * pt, hf * ph, wf * pw)
