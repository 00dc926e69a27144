"""A calibration forward loop through the LongSANA block sampler, built from core pieces only (no engine).

The caller encodes the prompts (text encoder lives elsewhere) and passes (caption, mask) pairs; the loop denoises
`num_blocks` short blocks per prompt with streaming state, as generation does, so the activation ranges come from
the same code path the quantized model will run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from core.samplers import BlockNoise, denoise_block, longsana_schedule

# A short, varied built-in prompt set (motion, people, scenery, close-ups, text-free) for first-launch calibration.
CALIBRATION_PROMPTS: tuple[str, ...] = (
    "A golden retriever runs along a beach at sunset, waves breaking behind it, slow motion.",
    "A busy city street at night in the rain, neon reflections on wet asphalt, cars passing.",
    "Close-up of a woman's face as she laughs, soft window light, shallow depth of field.",
    "Aerial shot over a snowy mountain range with clouds drifting between the peaks.",
    "A chef tosses vegetables in a flaming wok in a small restaurant kitchen.",
    "Time-lapse of a flower blooming on a dark background, studio lighting.",
    "An astronaut floats inside a space station, Earth visible through the window.",
    "A red sports car drifts around a corner on a mountain road, dust flying.",
)


def passes_per_prompt(num_blocks: int, steps: int | None = None) -> int:
    """Forward calls the loop makes per prompt (denoising steps + one cache pass between blocks)."""
    steps = len(longsana_schedule()) if steps is None else steps
    return num_blocks * steps + max(0, num_blocks - 1)


def make_longsana_forward_loop(texts: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
                               latent_shape: tuple[int, int, int, int], num_blocks: int = 2, seed: int = 0):
    """texts: (caption (1, L, caption_channels), mask (1, L) or None) per prompt; latent_shape (C, T, H, W) of one
    block. Returns forward_loop(model) for quant.prepare_model / quant.calibrate."""
    steps = longsana_schedule()

    def forward_loop(model: nn.Module) -> None:
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            for p, (caption, mask) in enumerate(texts):
                text = model.encode_text(caption, mask)
                state = model.empty_state(batch=1)
                frame_offset = 0
                for b in range(num_blocks):
                    noise_fn = BlockNoise.for_block(seed + p, b, device)
                    noise = noise_fn((1, *latent_shape))

                    def velocity(x, t, _i, text=text, state=state, frame_offset=frame_offset):
                        ts = torch.full((x.shape[0],), float(t), device=device)
                        return model(x.to(dtype), ts, text, state=state, frame_offset=frame_offset)

                    clean = denoise_block(velocity, noise, noise_fn, steps)
                    if b + 1 < num_blocks:
                        state = state.add(model.cache_pass(clean.to(dtype), text, state, frame_offset))
                    frame_offset += latent_shape[1]

    return forward_loop
