"""Instant latent -> RGB preview (no VAE pass): a fixed linear map of the 16 Wan2.1 latent channels to RGB.

The factors are ComfyUI's `Wan21` latent format (comfyanonymous/ComfyUI, `comfy/latent_formats.py`, class `Wan21`:
`latent_rgb_factors`, `latent_rgb_factors_bias`), also used by other Wan front-ends. ComfyUI's `Latent2RGBPreviewer`
(`latent_preview.py`) applies them to the model-space latent (its `Wan21.process_in` = (z - mean) / std, i.e. our
normalised DiT latent) and reads the result as an image in [-1, 1]. A 16x3 matrix product per latent pixel: well
under a millisecond for a 60x104 frame.
"""

from __future__ import annotations

import torch

from core.vae.config import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD

# rows: latent channel 0..15; columns: R, G, B
WAN21_LATENT_RGB_FACTORS = (
    (-0.1299, -0.1692, 0.2932),
    (0.0671, 0.0406, 0.0442),
    (0.3568, 0.2548, 0.1747),
    (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328),
    (0.0296, -0.0956, -0.0665),
    (-0.3477, -0.4059, -0.2925),
    (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364),
    (-0.1293, 0.0740, 0.1636),
    (0.0680, 0.3019, 0.1128),
    (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699),
    (0.0060, -0.0633, 0.0005),
    (0.3477, 0.2275, 0.2950),
    (0.1984, 0.0913, 0.1861),
)
WAN21_LATENT_RGB_BIAS = (-0.1835, -0.0868, -0.3360)


def latent_to_rgb_preview(latents: torch.Tensor, normalized: bool = True, upscale: int = 1) -> torch.Tensor:
    """latents (16, T, h, w) (or (1, 16, T, h, w)) -> uint8 (T, h*upscale, w*upscale, 3) on the CPU.

    normalized=True: DiT-space latents z_n (what the sampler produces); False: raw VAE latents z.
    upscale: nearest-neighbour factor for display (8 gives the decoded resolution)."""
    if latents.dim() == 5 and latents.shape[0] == 1:
        latents = latents[0]
    if latents.dim() != 4 or latents.shape[0] != len(WAN21_LATENT_RGB_FACTORS):
        raise ValueError(f"latents must be (16, T, h, w), got {tuple(latents.shape)}")
    x = latents.detach().float()
    dev = x.device
    if not normalized:
        mean = torch.tensor(WAN21_LATENTS_MEAN, device=dev).view(16, 1, 1, 1)
        std = torch.tensor(WAN21_LATENTS_STD, device=dev).view(16, 1, 1, 1)
        x = (x - mean) / std
    factors = torch.tensor(WAN21_LATENT_RGB_FACTORS, device=dev)  # (16, 3)
    bias = torch.tensor(WAN21_LATENT_RGB_BIAS, device=dev)
    rgb = torch.einsum("cthw,cr->thwr", x, factors) + bias  # (T, h, w, 3) in about [-1, 1]
    image = ((rgb + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    if upscale > 1:
        image = image.repeat_interleave(upscale, dim=1).repeat_interleave(upscale, dim=2)
    return image.cpu()
