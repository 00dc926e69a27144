"""Wan2.1 VAE configuration: the fields of diffusers' `AutoencoderKLWan` `vae/config.json`.

The diffusers config is the source of truth for shapes. The official `Wan2.1_VAE.pth` carries no config; it is the
default (`WanVAEConfig()`), which equals the released `Wan-AI/Wan2.1-T2V-1.3B-Diffusers` `vae/config.json`.
Only the Wan2.1 layout is supported (`is_residual=False`, no `patch_size`): the Wan2.2 VAE is a different network.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import ConfigError

# Per-channel latent statistics of the Wan2.1 VAE (diffusers AutoencoderKLWan defaults, official WanVAE `mean`/`std`).
# The DiT works in z_n = (z - mean) / std; the decoder needs z = z_n * std + mean.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)

# What diffusers writes at the top of a model config.json; we write the same so diffusers loads our folders.
DIFFUSERS_CLASS_NAME = "AutoencoderKLWan"
DIFFUSERS_VERSION_WRITTEN = "0.42.1"


@dataclass(frozen=True)
class WanVAEConfig:
    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)  # (sic) diffusers' spelling
    dropout: float = 0.0
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    is_residual: bool = False
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int | None = None
    scale_factor_temporal: int = 4
    scale_factor_spatial: int = 8
    # keys of the source config.json we do not model (kept so a round trip writes them back)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.is_residual or self.patch_size not in (None, 1):
            raise ConfigError(
                "this VAE config describes the Wan2.2 VAE (is_residual / patch_size); only the Wan2.1 VAE is supported"
            )
        if len(self.dim_mult) < 2 or len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ConfigError(
                f"VAE config: temperal_downsample needs len(dim_mult)-1 = {len(self.dim_mult) - 1} entries, "
                f"got {len(self.temperal_downsample)}"
            )
        if self.attn_scales:
            raise ConfigError("VAE config: attn_scales must be empty for the Wan2.1 VAE (the decoder has no such blocks)")
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ConfigError(
                f"VAE config: latents_mean/latents_std need z_dim={self.z_dim} entries, "
                f"got {len(self.latents_mean)}/{len(self.latents_std)}"
            )
        if any(s <= 0 for s in self.latents_std):
            raise ConfigError("VAE config: latents_std entries must be positive")
        for name in ("base_dim", "z_dim", "num_res_blocks", "in_channels", "out_channels"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"VAE config: {name} must be positive")

    # --- derived shapes -----------------------------------------------------------------------------------------
    @property
    def decoder_dim(self) -> int:
        return self.base_dim if self.decoder_base_dim is None else self.decoder_base_dim

    @property
    def temperal_upsample(self) -> tuple[bool, ...]:
        return tuple(reversed(self.temperal_downsample))

    @property
    def temporal_upsampling(self) -> int:
        """Pixel frames per latent frame after the first (4 for Wan2.1)."""
        return 2 ** sum(self.temperal_upsample)

    @property
    def spatial_upsampling(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from `latent_frames` latent frames of one video: 1 + 4 (T - 1)."""
        return 0 if latent_frames <= 0 else 1 + self.temporal_upsampling * (latent_frames - 1)

    # --- diffusers config.json ----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WanVAEConfig:
        if not isinstance(data, dict):
            raise ConfigError("VAE config.json must hold a JSON object")
        class_name = data.get("_class_name")
        if class_name not in (None, DIFFUSERS_CLASS_NAME):
            raise ConfigError(f"VAE config.json is for {class_name!r}, expected {DIFFUSERS_CLASS_NAME!r}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                kwargs[key] = tuple(value) if isinstance(value, list) else value
            elif not key.startswith("_"):
                extra[key] = value
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as exc:  # wrong value types
            raise ConfigError(f"VAE config.json is malformed: {exc}") from exc

    @classmethod
    def from_json_file(cls, path: str | Path) -> WanVAEConfig:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read VAE config {path}: {exc}") from exc
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The diffusers config.json content (what `save_pretrained` writes)."""
        out: dict[str, Any] = {"_class_name": DIFFUSERS_CLASS_NAME, "_diffusers_version": DIFFUSERS_VERSION_WRITTEN}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out.update(self.extra)
        return out


def tiny_wan_vae_config() -> WanVAEConfig:
    """Same structure as the released Wan2.1 VAE (4 stages, 2 res blocks + mid attention, temporal x4, spatial x8,
    z_dim 16, same latent statistics) with base_dim 4 (channels 16/16/16/8/4 instead of 384/384/384/192/96), so a
    demo decodes 21 latent frames of 16x28 (81 frames of 128x224) on a CPU in a few seconds (~65 GMAC at
    base_dim 8 was too slow on 2 shared cores; 4 is ~1/3 of that)."""
    return WanVAEConfig(base_dim=4)
