"""SanaVideoTransformer: our token-major implementation of SANA-Video 2B's Linear DiT (see docs/architecture.md,
"core/model contract"). Loads diffusers-format weights; the math follows the official NVlabs code, with the
numerics knobs of TransformerConfig selecting official or diffusers epsilons and timestep flooring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.config import TransformerConfig
from core.kernels.layernorm_modulate import layernorm_modulate
from core.model.convert import conversion_rules, to_diffusers, to_internal
from core.model.layers import (
    TEXT_MASK_BIAS,
    CaptionProjection,
    RMSNorm,
    SanaVideoBlock,
    TimestepEmbedder,
    eager_kernels,
    layer_norm,
    modulate,
)
from core.model.rope import RopeTableCache
from core.model.state import BlockContribution, StreamState

# T2IFinalLayer / diffusers norm_out hard-code this eps (independent of config.norm_eps)
FINAL_NORM_EPS = 1e-6


def prefix_lengths(mask: torch.Tensor) -> tuple[int, ...] | None:
    """Per row of a (B, L) bool mask, its number of valid tokens if they all come first; None if any row is not so."""
    counts = mask.sum(dim=1)                                                  # (B,)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not bool((mask == (positions[None, :] < counts[:, None])).all()):
        return None
    return tuple(int(c) for c in counts.tolist())


@dataclass(frozen=True)
class TextContext:
    """A prompt, encoded once and reused for every step and block.

    caption (B, L, D): projected + RMSNorm'ed caption; mask (B, L) bool; bias (B, 1, 1, L) additive SDPA bias;
    keys / values: per layer (B, heads, L, head_dim) cross-attention K (RMSNorm'ed) and V; lengths: per row, the
    number of valid tokens when each row's mask is a prefix (valid tokens first, padding after), else None."""

    caption: torch.Tensor
    mask: torch.Tensor
    bias: torch.Tensor
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    lengths: tuple[int, ...] | None = None

    def cross_attention_span(self) -> tuple[int, torch.Tensor | None]:
        """(how many leading text tokens cross-attention needs, the additive bias for them or None).

        A masked key gets bias -1e4, so its softmax weight exp(score - 1e4 - max) underflows to exactly 0 in the
        fp32 softmax: trailing padding can be dropped, and with no padding left the bias too. Why: fewer keys, and
        SDPA without a bias tensor runs its fastest kernels. A row with no valid token is left alone (its softmax
        over all-masked keys is not zero), as is a mask that is not a prefix."""
        full = self.caption.shape[1]
        if self.lengths is None or min(self.lengths) == 0:
            return full, self.bias
        longest = max(self.lengths)
        if min(self.lengths) == longest:
            return longest, None
        return longest, self.bias[..., :longest]

    @property
    def batch(self) -> int:
        return self.caption.shape[0]

    def for_batch(self, batch: int) -> TextContext:
        """This context for `batch` samples: itself, or a broadcast view of a single prompt."""
        if self.batch == batch:
            return self
        if self.batch != 1:
            raise ValueError(f"text batch {self.batch} does not match latent batch {batch}")

        def grow(t: torch.Tensor) -> torch.Tensor:
            return t.expand(batch, *t.shape[1:])

        return TextContext(grow(self.caption), grow(self.mask), grow(self.bias),
                           tuple(grow(k) for k in self.keys), tuple(grow(v) for v in self.values),
                           None if self.lengths is None else self.lengths * batch)

    @staticmethod
    def cat(contexts: Sequence[TextContext]) -> TextContext:
        """Stack prompts along the batch (e.g. [negative, positive] for CFG); token counts must match."""
        lengths = {c.caption.shape[1] for c in contexts}
        if len(lengths) != 1:
            raise ValueError(f"cannot batch text contexts of different lengths {sorted(lengths)}")
        return TextContext(
            torch.cat([c.caption for c in contexts]), torch.cat([c.mask for c in contexts]),
            torch.cat([c.bias for c in contexts]),
            tuple(torch.cat(ks) for ks in zip(*(c.keys for c in contexts))),
            tuple(torch.cat(vs) for vs in zip(*(c.values for c in contexts))),
            None if any(c.lengths is None for c in contexts) else sum((c.lengths for c in contexts), ()),
        )


class SanaVideoTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg = cfg.validate()
        d = cfg.hidden_size
        self.patch_embed = nn.Linear(cfg.in_channels * cfg.patch_volume, d)   # Conv3d kernel=stride=patch
        self.time_embedder = TimestepEmbedder(d)
        self.time_modulation = nn.Linear(d, 6 * d)                             # AdaLN-single t_block
        self.caption_proj = CaptionProjection(cfg.caption_channels, d)
        self.caption_norm = RMSNorm(d, cfg.caption_norm_eps)
        self.blocks = nn.ModuleList(SanaVideoBlock(cfg) for _ in range(cfg.num_layers))
        self.final_scale_shift_table = nn.Parameter(torch.zeros(2, d))
        self.proj_out = nn.Linear(d, cfg.patch_volume * cfg.out_channels)
        self._rope = RopeTableCache(cfg.attention_head_dim, cfg.rope_max_seq_len)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embed.weight.device

    # ------------------------------------------------------------------ text
    def encode_text(self, caption: torch.Tensor, mask: torch.Tensor | None = None) -> TextContext:
        """caption (B, L, caption_channels), mask (B, L) bool / 0-1 -> TextContext."""
        dtype = self.dtype
        y = self.caption_norm(self.caption_proj(caption.to(device=self.device, dtype=dtype)))   # (B, L, D)
        b, tokens, _ = y.shape
        if mask is None:
            mask = torch.ones(b, tokens, dtype=torch.bool, device=y.device)
        mask = mask.to(y.device).bool()
        if tuple(mask.shape) != (b, tokens):
            raise ValueError(f"text mask {tuple(mask.shape)} does not match caption {(b, tokens)}")
        bias = ((1 - mask.to(dtype)) * TEXT_MASK_BIAS).view(b, 1, 1, tokens)
        kv = [block.cross.text_kv(y) for block in self.blocks]
        return TextContext(y, mask, bias, tuple(k for k, _ in kv), tuple(v for _, v in kv), prefix_lengths(mask))

    # ------------------------------------------------------------------ pieces
    def _patchify(self, latents: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """(B, C, T, H, W) -> tokens (B, N, C*pt*ph*pw) in (f, h, w) order, grid (T', H', W')."""
        b, c, t, h, w = latents.shape
        pt, ph, pw = self.cfg.patch_size
        if c != self.cfg.in_channels or t % pt or h % ph or w % pw:
            raise ValueError(f"latents {tuple(latents.shape)} do not fit in_channels={self.cfg.in_channels} and "
                             f"patch_size={self.cfg.patch_size}")
        grid = (t // pt, h // ph, w // pw)
        x = latents.to(self.dtype).view(b, c, grid[0], pt, grid[1], ph, grid[2], pw)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, grid[0] * grid[1] * grid[2], c * pt * ph * pw)
        return x, grid

    def _unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, N, pt*ph*pw*C) with C fastest -> (B, C, T, H, W)."""
        b = x.shape[0]
        f, h, w = grid
        pt, ph, pw = self.cfg.patch_size
        x = x.view(b, f, h, w, pt, ph, pw, self.cfg.out_channels).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, self.cfg.out_channels, f * pt, h * ph, w * pw)

    def _embed_timestep(self, timestep, batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """timestep scalar, (B,), (B, 1) or per-frame (B, T') -> t (B, T'', D) and AdaLN-single (B, T'', 6, D)."""
        t = torch.as_tensor(timestep, device=self.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim == 1:
            t = t[:, None]
        if t.ndim != 2 or t.shape[0] != batch or t.shape[1] not in (1, frames):
            raise ValueError(f"timestep {tuple(t.shape)} must be (B,) or (B, T') with B={batch}, T'={frames}")
        if self.cfg.floor_timestep and t.is_floating_point():
            t = torch.trunc(t)          # official: timestep.long().to(float32)
        steps = t.shape[1]
        emb = self.time_embedder(t.reshape(-1).float(), self.dtype).view(batch, steps, -1)     # (B, T'', D)
        t_mod = self.time_modulation(F.silu(emb)).view(batch, steps, 6, -1)                    # (B, T'', 6, D)
        return emb, t_mod

    def _final(self, x: torch.Tensor, emb: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        shift, scale = (self.final_scale_shift_table.to(emb.dtype)[None, None] + emb[:, :, None]).unbind(dim=2)
        if eager_kernels(x) and x.dtype == emb.dtype:   # one pass; the plain ops take three (0.27 ms at 480p, H100)
            x = layernorm_modulate(x, shift, scale, FINAL_NORM_EPS)
        else:
            x = modulate(layer_norm(x, FINAL_NORM_EPS), shift, scale, grid[0]).to(emb.dtype)
        return self._unpatchify(self.proj_out(x), grid)

    def rope_tables(self, latents_shape: Sequence[int], frame_offset: int, device: torch.device | str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (cos, sin) RoPE tables (N, d/2) fp32 that forward uses for latents of this shape at this offset."""
        pt, ph, pw = self.cfg.patch_size
        _, _, t, h, w = latents_shape
        return self._rope.get(t // pt, h // ph, w // pw, frame_offset, device)

    def _run_blocks(self, latents, timestep, text: TextContext, state: StreamState | None, frame_offset: int,
                    collect: bool, rope: tuple[torch.Tensor, torch.Tensor] | None = None):
        patches, grid = self._patchify(latents)
        x = self.patch_embed(patches)                                          # (B, N, D)
        b = x.shape[0]
        emb, t_mod = self._embed_timestep(timestep, b, grid[0])
        cos, sin = self._rope.get(*grid, frame_offset, x.device) if rope is None else rope
        text = text.for_batch(b)
        if len(text.keys) != len(self.blocks):
            raise ValueError(f"text context has {len(text.keys)} layers, model has {len(self.blocks)}")
        if state is not None and (state.num_layers != len(self.blocks) or state.batch != b):
            raise ValueError(f"state ({state.num_layers} layers, batch {state.batch}) does not match the model "
                             f"({len(self.blocks)} layers) and batch {b}")
        text_len, text_bias = text.cross_attention_span()
        vk_all = k_sum_all = frame_all = None
        for i, block in enumerate(self.blocks):
            prev = state.layer(i) if state is not None else (None, None, None)
            # inplace: the block may update x in place; x is this loop's own tensor (patch embedding, then each
            # block's output) and is not used again
            x, own_vk, own_k_sum, u = block(x, t_mod, text.keys[i][:, :, :text_len], text.values[i][:, :, :text_len],
                                            text_bias, cos, sin, grid, *prev, inplace=True)
            if collect:
                if vk_all is None:   # allocate once: (L, ...) stacks of this block's own terms
                    n = len(self.blocks)
                    vk_all = own_vk.new_empty((n, *own_vk.shape))
                    k_sum_all = own_k_sum.new_empty((n, *own_k_sum.shape))
                    frame_all = u.new_empty((n, b, *u.shape[2:]))
                vk_all[i].copy_(own_vk)
                k_sum_all[i].copy_(own_k_sum)
                frame_all[i].copy_(u[:, -1])
        return x, emb, grid, (vk_all, k_sum_all, frame_all)

    # ------------------------------------------------------------------ public passes
    def forward(self, latents: torch.Tensor, timestep, text: TextContext, state: StreamState | None = None,
                frame_offset: int = 0, *, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Flow velocity (B, C_out, T, H, W) in latents.dtype.

        state None: bidirectional over the T frames. state given: chunk-causal streaming (previous blocks' linear
        attention sums + this chunk; temporal conv sees the previous block's last frame); the state is only read.
        frame_offset: absolute (patchified) latent frame index of latents[:, :, 0], used by RoPE.
        rope: the tables of `rope_tables(latents.shape, frame_offset, ...)` passed in (then frame_offset is not
        read); CUDA-graph replay (core/model/graphed.py) keeps them in fixed buffers."""
        x, emb, grid, _ = self._run_blocks(latents, timestep, text, state, frame_offset, collect=False, rope=rope)
        return self._final(x, emb, grid).to(latents.dtype)

    def cache_pass(self, clean_latents: torch.Tensor, text: TextContext, state: StreamState | None = None,
                   frame_offset: int = 0) -> BlockContribution:
        """The clean t=0 pass over a finished block (official save_kv_cache path): returns this block's own vk,
        k_sum and its last frame of post-point-conv FFN features; `state` (previous blocks) is only read."""
        b = clean_latents.shape[0]
        zeros = torch.zeros(b, device=self.device)
        _, _, _, (vk, k_sum, frame) = self._run_blocks(clean_latents, zeros, text, state, frame_offset,
                                                       collect=True)
        # detached: a state must never chain autograd graphs from block to block
        return BlockContribution(vk.detach(), k_sum.detach(), frame.detach())

    def empty_state(self, batch: int = 1) -> StreamState:
        return StreamState.empty(self.cfg, batch=batch, device=self.device)

    # ------------------------------------------------------------------ weights
    def load_diffusers_state_dict(self, sd: Mapping[str, torch.Tensor], device: torch.device | str | None = None,
                                  dtype: torch.dtype | None = None) -> None:
        """Check and assign diffusers-format weights (works on a meta-device model; no double allocation).

        device None: the model's device, or the checkpoint's when the model is on meta. dtype None: the checkpoint's
        dtype (that of patch_embedding.weight). Raises one CheckpointError naming every missing / unexpected /
        misshapen key; on error the model is left untouched."""
        # one validator for every entry point (core.checkpoints reads shapes/dtypes from file headers, no data)
        from core.checkpoints import validate_state_dict

        validate_state_dict(sd, self.cfg, source="transformer weights")
        dtypes = sd.dtypes() if hasattr(sd, "dtypes") else {"patch_embedding.weight": sd["patch_embedding.weight"].dtype}
        if device is None:
            device = sd["patch_embedding.weight"].device if self.device.type == "meta" else self.device
        device = torch.device(device)
        dtype = dtypes["patch_embedding.weight"] if dtype is None else dtype
        internal = {}
        for rule in conversion_rules(self.cfg):
            internal[rule.internal] = to_internal(rule, [sd[k] for k, _ in rule.sources], device, dtype)
        self.load_state_dict(internal, strict=True, assign=True)
        self._rope.clear()

    def diffusers_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights under diffusers key names and shapes (the inverse of load_diffusers_state_dict).

        Tensors that need no conversion share storage with the model; no two entries share storage, so the dict
        can be written with safetensors directly."""
        own = self.state_dict()
        out: dict[str, torch.Tensor] = {}
        for rule in conversion_rules(self.cfg):
            for (key, _), tensor in zip(rule.sources, to_diffusers(rule, own[rule.internal].detach())):
                out[key] = tensor
        return out
