"""The embedded default: a tiny RANDOM model pack written by the project itself in the released folder formats.

It exists so that the whole pipeline (CLI or GUI -> engine -> MP4) runs on any machine without a GPU or network.
Its output is noise-like video from random weights; every output made with it is labelled as such.
The pack is the diffusers pipeline layout (transformer/, vae/, text_encoder/, tokenizer/) plus studio.json, loaded
through exactly the same code as a real downloaded model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from core.config import TransformerConfig, tiny_config
from core.fsutil import atomic_write_text

DEMO_PACK_VERSION = 2
DEMO_LABEL = "DEMO - tiny random weights: the output is noise, not a real video"
DEMO_HEIGHT, DEMO_WIDTH = 64, 112         # latent 8 x 14, 4 x 7 tokens per latent frame: seconds on a CPU
TEXT_HIDDEN = 32
_SEED = 1234


def demo_transformer_config() -> TransformerConfig:
    # 16 latent channels so the real Wan latent statistics and preview factors apply
    return tiny_config(in_channels=16, out_channels=16, caption_channels=TEXT_HIDDEN, num_attention_heads=2,
                       attention_head_dim=24, cross_attention_head_dim=24, cross_attention_dim=48, num_layers=2)


def random_transformer_state_dict(cfg: TransformerConfig, seed: int = _SEED) -> dict[str, torch.Tensor]:
    """Random values in every diffusers tensor: weights N(0, 1/fan_in), biases and tables small, norm weights ~1."""
    from core.checkpoints import expected_diffusers_shapes

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in sorted(expected_diffusers_shapes(cfg).items()):
        noise = torch.randn(shape, generator=gen)
        if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or name == "caption_norm.weight":
            value = 1.0 + 0.1 * noise
        elif "scale_shift_table" in name:
            value = 0.1 * noise
        elif name.endswith("bias"):
            value = 0.02 * noise
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            value = noise / math.sqrt(fan_in)
        out[name] = value.contiguous()
    return out


def write_demo_pack(folder: str | os.PathLike, seed: int = _SEED) -> Path:
    """Write the pack into `folder` (created; must not exist or be empty)."""
    from core.checkpoints import write_diffusers_transformer
    from core.text_encoder import write_tiny_text_encoder
    from core.vae import random_wan_vae_state_dict, tiny_wan_vae_config, write_diffusers_vae

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = demo_transformer_config()
    write_diffusers_transformer(folder / "transformer", cfg, random_transformer_state_dict(cfg, seed))
    vae_cfg = tiny_wan_vae_config()
    write_diffusers_vae(folder / "vae", vae_cfg, random_wan_vae_state_dict(vae_cfg, seed=seed))
    write_tiny_text_encoder(folder / "text_encoder", folder / "tokenizer", hidden_size=TEXT_HIDDEN, seed=seed)
    meta = {
        "id": "demo", "is_demo": True, "label": DEMO_LABEL, "sampler": "longsana", "preset": "tiny",
        "height": DEMO_HEIGHT, "width": DEMO_WIDTH, "fps": 16, "revision": f"demo-v{DEMO_PACK_VERSION}-seed{seed}",
        "pack_version": DEMO_PACK_VERSION,
    }
    # studio.json last: its presence marks a complete pack
    atomic_write_text(folder / "studio.json", json.dumps(meta, indent=2) + "\n")
    return folder


def ensure_demo_pack(root: str | os.PathLike | None = None) -> Path:
    """The demo pack folder, written on first use. Built in a scratch folder and renamed, so a crash mid-write never
    leaves a half pack that looks complete."""
    from core.paths import demo_pack_dir

    target = Path(root) if root is not None else demo_pack_dir()
    target = target / f"v{DEMO_PACK_VERSION}"
    if (target / "studio.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        write_demo_pack(scratch)
        try:
            os.replace(scratch, target)
        except OSError:
            if not (target / "studio.json").is_file():  # another process won the race with a complete pack
                shutil.rmtree(target, ignore_errors=True)
                os.replace(scratch, target)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target
