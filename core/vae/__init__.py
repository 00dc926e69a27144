"""Wan2.1 VAE decoder (own implementation) with a streaming causal cache, loaders/writers, latent RGB preview."""

from core.vae.config import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, WanVAEConfig, tiny_wan_vae_config
from core.vae.keys import (
    diffusers_to_official_key,
    official_to_diffusers_map,
    to_official_state_dict,
    wan_decoder_parameter_shapes,
    wan_encoder_parameter_shapes,
    wan_vae_parameter_shapes,
)
from core.vae.loading import (
    decoder_from_state_dict,
    load_wan_vae,
    load_wan_vae_decoder,
    random_wan_vae_state_dict,
    write_diffusers_vae,
)
from core.vae.preview import latent_to_rgb_preview
from core.vae.streaming import WanStreamingDecoder
from core.vae.wan import WanVAEDecoder

__all__ = [
    "WAN21_LATENTS_MEAN", "WAN21_LATENTS_STD", "WanVAEConfig", "tiny_wan_vae_config",
    "WanVAEDecoder", "WanStreamingDecoder",
    "load_wan_vae", "load_wan_vae_decoder", "decoder_from_state_dict", "write_diffusers_vae", "random_wan_vae_state_dict",
    "diffusers_to_official_key", "official_to_diffusers_map", "to_official_state_dict",
    "wan_decoder_parameter_shapes", "wan_encoder_parameter_shapes", "wan_vae_parameter_shapes",
    "latent_to_rgb_preview",
]
