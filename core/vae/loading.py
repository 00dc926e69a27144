"""Load the Wan2.1 VAE decoder from the released formats; write tiny checkpoints in the same formats.

Sources:
  * a diffusers `vae/` folder: `config.json` + `diffusion_pytorch_model.safetensors` (or a model root holding `vae/`);
  * the official `Wan2.1_VAE.pth` (flat state dict of the Wan repo's `WanVAE_`, no config: the default config), or a
    folder holding it (the SANA-Video repos ship it as `vae/Wan2.1_VAE.pth`).
Encoder tensors in either file are skipped (image-to-video will need them later); any other missing, unexpected or
misshapen tensor raises CheckpointError naming them, before anything is assigned.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from core.config import ConfigError
from core.errors import CheckpointError
from core.fsutil import atomic_path, atomic_write_text
from core.pth import read_pth_state_dict
from core.vae.config import WanVAEConfig
from core.vae.keys import (
    is_encoder_key,
    is_official_encoder_key,
    official_to_diffusers_map,
    wan_decoder_parameter_shapes,
    wan_encoder_parameter_shapes,
)
from core.vae.streaming import WanStreamingDecoder
from core.vae.wan import WanVAEDecoder

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_CONFIG = "config.json"
OFFICIAL_WEIGHTS = "Wan2.1_VAE.pth"


# --- loading --------------------------------------------------------------------------------------------------------
def load_wan_vae(
    source: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: WanVAEConfig | None = None,
    frames_per_pass: int | None = None,
) -> WanStreamingDecoder:
    """Load the decoder from a diffusers vae folder, a model root with `vae/`, or an official `.pth`."""
    return WanStreamingDecoder(load_wan_vae_decoder(source, device, dtype, config), frames_per_pass=frames_per_pass)


def load_wan_vae_decoder(
    source: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: WanVAEConfig | None = None,
) -> WanVAEDecoder:
    path = Path(source)
    if path.is_dir():
        for folder in (path, path / "vae"):
            if (folder / DIFFUSERS_WEIGHTS).is_file():
                return _load_diffusers(folder / DIFFUSERS_WEIGHTS, folder / DIFFUSERS_CONFIG, device, dtype, config)
            if (folder / OFFICIAL_WEIGHTS).is_file():
                return _load_official(folder / OFFICIAL_WEIGHTS, device, dtype, config)
        raise CheckpointError(
            f"{path} holds no Wan VAE: expected {DIFFUSERS_CONFIG} + {DIFFUSERS_WEIGHTS} (diffusers) or "
            f"{OFFICIAL_WEIGHTS}, directly or in a vae/ subfolder"
        )
    if not path.is_file():
        raise CheckpointError(f"VAE checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return _load_diffusers(path, path.with_name(DIFFUSERS_CONFIG), device, dtype, config)
    return _load_official(path, device, dtype, config)


def _load_diffusers(weights: Path, config_path: Path, device, dtype, config: WanVAEConfig | None) -> WanVAEDecoder:
    if config is None:
        if not config_path.is_file():
            raise CheckpointError(f"VAE folder {weights.parent} has no {DIFFUSERS_CONFIG}")
        try:
            config = WanVAEConfig.from_json_file(config_path)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from exc
    expected = wan_decoder_parameter_shapes(config)
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as fh:
            names = list(fh.keys())
            decoder_names = [n for n in names if not is_encoder_key(n)]
            _check_names(weights, decoder_names, expected)
            shapes = {n: tuple(fh.get_slice(n).get_shape()) for n in decoder_names}
            _check_shapes(weights, shapes, expected)
            tensors = {n: fh.get_tensor(n).to(device=device, dtype=dtype) for n in decoder_names}
    except CheckpointError:
        raise
    except Exception as exc:  # truncated / not a safetensors file (safetensors raises its own error types)
        raise CheckpointError(f"cannot read VAE weights {weights}: {exc}") from exc
    return _assign(config, tensors)


def _load_official(path: Path, device, dtype, config: WanVAEConfig | None) -> WanVAEDecoder:
    config = config or WanVAEConfig()
    raw = read_pth_state_dict(path)
    name_map = official_to_diffusers_map(config, decoder_only=True)
    unexpected = sorted(k for k in raw if k not in name_map and not is_official_encoder_key(k))
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensors {_few(unexpected)} (not a Wan2.1 VAE with this config?)")
    renamed = {name_map[k]: v for k, v in raw.items() if k in name_map}
    expected = wan_decoder_parameter_shapes(config)
    missing = sorted(expected.keys() - renamed.keys())
    if missing:
        inverse = {v: k for k, v in name_map.items()}
        raise CheckpointError(f"{path}: missing tensors {_few([inverse[m] for m in missing])}")
    _check_shapes(path, {k: tuple(v.shape) for k, v in renamed.items()}, expected)
    # copy=True: do not keep parameters backed by the memory-mapped file (it could not be replaced on Windows)
    return _assign(config, {k: v.to(device=device, dtype=dtype, copy=True) for k, v in renamed.items()})


def _check_names(source: Path, names: list[str], expected: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(expected.keys() - set(names))
    unexpected = sorted(set(names) - expected.keys())
    problems = []
    if missing:
        problems.append(f"missing tensors {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {_few(unexpected)}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems) + " (config.json and weights do not match?)")


def _check_shapes(source: Path, shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    bad = [f"{n} {shapes[n]} != {expected[n]}" for n in sorted(shapes) if n in expected and shapes[n] != expected[n]]
    if bad:
        raise CheckpointError(f"{source}: misshapen tensors {_few(bad)}")


def _few(items: list[str], limit: int = 8) -> str:
    head = ", ".join(items[:limit])
    return head + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def decoder_from_state_dict(
    config: WanVAEConfig,
    state_dict: dict[str, torch.Tensor],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WanVAEDecoder:
    """Build the decoder from a diffusers-named state dict in memory (encoder tensors are skipped)."""
    tensors = {k: v for k, v in state_dict.items() if not is_encoder_key(k)}
    expected = wan_decoder_parameter_shapes(config)
    _check_names(Path("<state dict>"), list(tensors), expected)
    _check_shapes(Path("<state dict>"), {k: tuple(v.shape) for k, v in tensors.items()}, expected)
    return _assign(config, {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()})


def _assign(config: WanVAEConfig, tensors: dict[str, torch.Tensor]) -> WanVAEDecoder:
    with torch.device("meta"):  # no double allocation: the loaded tensors become the parameters
        model = WanVAEDecoder(config)
    model.load_state_dict({k: v.contiguous() for k, v in tensors.items()}, strict=True, assign=True)
    return model.eval().requires_grad_(False)


# --- writing (demo pack, tests) -------------------------------------------------------------------------------------
def write_diffusers_vae(
    folder: str | os.PathLike, config: WanVAEConfig | dict, state_dict: dict[str, torch.Tensor]
) -> Path:
    """Write `config.json` + `diffusion_pytorch_model.safetensors` exactly as diffusers' save_pretrained lays them
    out (sorted, indented JSON; safetensors metadata {"format": "pt"}). Atomic per file. Returns the folder."""
    cfg = config if isinstance(config, WanVAEConfig) else WanVAEConfig.from_dict(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(folder / DIFFUSERS_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write_text(folder / DIFFUSERS_CONFIG, json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    return folder


def random_wan_vae_state_dict(
    config: WanVAEConfig, seed: int = 0, include_encoder: bool = True, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Random values in EVERY tensor (gammas and biases too), scaled so activations stay O(1) and decoded pixels
    mostly inside (-1, 1). With include_encoder the dict is a complete diffusers AutoencoderKLWan state dict."""
    shapes = dict(wan_decoder_parameter_shapes(config))
    if include_encoder:
        shapes = {**wan_encoder_parameter_shapes(config), **shapes}
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        noise = torch.randn(shape, generator=gen)
        if name.endswith("gamma"):
            value = 1.0 + 0.2 * noise
        elif name.endswith("bias"):
            value = 0.05 * noise
        else:  # conv weight (out, in, *kernel): variance 1 / fan_in
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            value = noise / fan_in**0.5
        out[name] = value.to(dtype)
    return out
