"""Transformer configuration: the released diffusers `config.json` fields plus our numerics knobs.

The diffusers `transformer/config.json` is the single source of truth for shapes; the official `.pth` has no config,
so its variants are named presets (480p / 720p / LongSANA) that produce the same dataclass.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError


@dataclass(frozen=True)
class TransformerConfig:
    # --- fields of diffusers' SanaVideoTransformer3DModel config.json ---
    in_channels: int = 16
    out_channels: int = 16
    num_attention_heads: int = 20
    attention_head_dim: int = 112
    num_layers: int = 20
    num_cross_attention_heads: int = 20
    cross_attention_head_dim: int = 112
    cross_attention_dim: int = 2240
    caption_channels: int = 2304
    mlp_ratio: float = 3.0
    patch_size: tuple[int, int, int] = (1, 2, 2)
    norm_eps: float = 1e-6
    rope_max_seq_len: int = 1024
    sample_size: int = 30
    qk_norm: str = "rms_norm_across_heads"
    # --- numerics that differ between the official code and diffusers (reference/sana-video.md 13) ---
    # official LiteLAReLURope eps 1e-8, diffusers SanaLinearAttnProcessor3_0 eps 1e-15
    linear_attn_eps: float = 1e-8
    # official MultiHeadCrossAttention q/k RMSNorm eps 1e-6, diffusers 1e-5
    cross_norm_eps: float = 1e-6
    # self-attention q/k RMSNorm and caption RMSNorm eps (both codebases: 1e-5)
    qk_norm_eps: float = 1e-5
    caption_norm_eps: float = 1e-5
    # official model truncates timesteps to integers before the sinusoidal embedding
    floor_timestep: bool = True

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def ffn_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def patch_volume(self) -> int:
        pt, ph, pw = self.patch_size
        return pt * ph * pw

    def validate(self) -> TransformerConfig:
        problems = []
        if self.hidden_size != self.cross_attention_dim:
            problems.append(
                f"num_attention_heads*attention_head_dim = {self.hidden_size} must equal cross_attention_dim "
                f"{self.cross_attention_dim}"
            )
        if self.num_cross_attention_heads * self.cross_attention_head_dim != self.hidden_size:
            problems.append("num_cross_attention_heads*cross_attention_head_dim must equal the hidden size")
        if self.attention_head_dim % 2:
            problems.append(f"attention_head_dim {self.attention_head_dim} must be even (RoPE pairs)")
        if self.qk_norm != "rms_norm_across_heads":
            problems.append(f"qk_norm {self.qk_norm!r} is not supported (only 'rms_norm_across_heads')")
        if len(self.patch_size) != 3 or any(int(p) < 1 for p in self.patch_size):
            problems.append(f"patch_size {self.patch_size} must be three positive integers")
        for name in ("in_channels", "out_channels", "num_layers", "num_attention_heads", "caption_channels"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be positive")
        if problems:
            raise ConfigError("invalid transformer config: " + "; ".join(problems))
        return self

    # ---- conversions ----
    _DIFFUSERS_ONLY_KEYS = ("_class_name", "_diffusers_version", "_name_or_path", "attention_bias",
                            "norm_elementwise_affine", "guidance_embeds", "timestep_scale", "qk_norm_eps",
                            "dropout", "interpolation_scale", "guidance_embeds_scale")

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> TransformerConfig:
        """Build from a diffusers config dict; unknown keys are an error unless they are known diffusers extras."""
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        unknown = []
        for key, value in data.items():
            if key in names:
                kwargs[key] = value
            elif key.startswith("_") or key in cls._DIFFUSERS_ONLY_KEYS:
                continue
            else:
                unknown.append(key)
        if unknown:
            raise ConfigError(f"unknown transformer config keys: {sorted(unknown)}")
        if data.get("attention_bias"):
            raise ConfigError("attention_bias=true is not a released SANA-Video configuration")
        if data.get("guidance_embeds"):
            raise ConfigError("guidance_embeds=true is not a released SANA-Video configuration")
        kwargs.update(overrides)
        if "patch_size" in kwargs:
            ps = kwargs["patch_size"]
            if isinstance(ps, int):
                ps = (1, ps, ps)
            kwargs["patch_size"] = tuple(int(p) for p in ps)
        try:
            cfg = cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - dataclass signature errors
            raise ConfigError(str(exc)) from exc
        return cfg.validate()

    @classmethod
    def from_json_file(cls, path: str | Path, **overrides: Any) -> TransformerConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"transformer config not found: {path}") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"transformer config {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, **overrides)

    def to_diffusers_dict(self) -> dict[str, Any]:
        """The config.json diffusers writes for this model (numerics knobs are not part of it)."""
        return {
            "_class_name": "SanaVideoTransformer3DModel",
            "attention_bias": False,
            "attention_head_dim": self.attention_head_dim,
            "caption_channels": self.caption_channels,
            "cross_attention_dim": self.cross_attention_dim,
            "cross_attention_head_dim": self.cross_attention_head_dim,
            "guidance_embeds": False,
            "in_channels": self.in_channels,
            "mlp_ratio": self.mlp_ratio,
            "norm_elementwise_affine": False,
            "norm_eps": self.norm_eps,
            "num_attention_heads": self.num_attention_heads,
            "num_cross_attention_heads": self.num_cross_attention_heads,
            "num_layers": self.num_layers,
            "out_channels": self.out_channels,
            "patch_size": list(self.patch_size),
            "qk_norm": self.qk_norm,
            "rope_max_seq_len": self.rope_max_seq_len,
            "sample_size": self.sample_size,
        }

    def with_numerics(self, numerics: str) -> TransformerConfig:
        """'official' = NVlabs/Sana semantics (what the checkpoints were trained with); 'diffusers' = diffusers'."""
        if numerics == "official":
            return dataclasses.replace(self, linear_attn_eps=1e-8, cross_norm_eps=1e-6)
        if numerics == "diffusers":
            return dataclasses.replace(self, linear_attn_eps=1e-15, cross_norm_eps=1e-5)
        raise ConfigError(f"unknown numerics {numerics!r} (expected 'official' or 'diffusers')")


# Released presets (reference/sana-video.md 1.2). LongSANA shares the 480p shapes and key names.
PRESETS: dict[str, TransformerConfig] = {
    "480p": TransformerConfig(),
    "720p": TransformerConfig(in_channels=128, out_channels=128, patch_size=(1, 1, 1), sample_size=22),
}


def tiny_config(**overrides: Any) -> TransformerConfig:
    """A few-thousand-parameter config with the released structure, for tests and the demo pack."""
    base = dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=24,
        mlp_ratio=3.0, patch_size=(1, 2, 2), sample_size=8,
    )
    base.update(overrides)
    return TransformerConfig(**base).validate()


__all__ = ["ConfigError", "TransformerConfig", "PRESETS", "tiny_config", "field"]
