"""Samplers: the LongSANA block sampler (4 steps per block, fresh noise) and the flow DPM-Solver++ 2M base sampler.

Both take a `velocity_fn(x, model_timestep, step_index) -> v` that returns the flow velocity for latents `x`
(same shape); `model_timestep` is the float the transformer receives (it floors it itself). All sampler arithmetic is
fp32 whatever the model dtype.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

VelocityFn = Callable[[torch.Tensor, float, int], torch.Tensor]
NoiseFn = Callable[[tuple[int, ...]], torch.Tensor]

LATENT_STRIDE_T = 4        # Wan2.1 VAE: 4 video frames per latent frame, plus the causal first frame
BLOCK_LATENT_FRAMES = 10   # official base_chunk_frames = data.num_frames (40) // vae_stride_t (4)


# ---------------------------------------------------------------------------------------------------- frames, blocks
def latent_frames_for(num_video_frames: int) -> int:
    """81 video frames -> 21 latent frames (causal VAE: the first frame alone, then groups of 4)."""
    if num_video_frames < 1:
        raise ValueError(f"need at least one video frame, got {num_video_frames}")
    return (num_video_frames - 1) // LATENT_STRIDE_T + 1


def video_frames_for(num_latent_frames: int) -> int:
    """21 latent frames -> 81 video frames."""
    if num_latent_frames < 1:
        raise ValueError(f"need at least one latent frame, got {num_latent_frames}")
    return (num_latent_frames - 1) * LATENT_STRIDE_T + 1


def block_segments(num_latent_frames: int, block_frames: int = BLOCK_LATENT_FRAMES) -> list[tuple[int, int]]:
    """Split latent frames into LongSANA blocks; the FIRST block absorbs the remainder.

    Same boundaries as the official `LongLiveFlowEuler._create_autoregressive_segments`: 21 -> [(0, 11), (11, 21)],
    241 -> 24 blocks. Fewer frames than one block -> a single block."""
    if num_latent_frames < 1:
        raise ValueError(f"need at least one latent frame, got {num_latent_frames}")
    if block_frames < 1:
        raise ValueError(f"block_frames must be positive, got {block_frames}")
    num_blocks, remainder = divmod(num_latent_frames, block_frames)
    bounds = [0]
    for i in range(num_blocks):
        bounds.append(bounds[-1] + block_frames + (remainder if i == 0 else 0))
    if bounds[-1] < num_latent_frames:  # only when there is no full block at all
        bounds.append(num_latent_frames)
    return list(zip(bounds[:-1], bounds[1:]))


# ---------------------------------------------------------------------------------------------------- LongSANA
# Official denoising_step_list (configs/sana_video_config/longsana/480ms/*.yaml and LongLiveFlowEuler's default)
# with the trailing 0 dropped.
LONGSANA_TIMESTEPS: tuple[int, ...] = (1000, 960, 889, 727)
# The official loop builds the model timestep as `torch.ones(..., dtype=model_dtype) * t`; in bf16 889 -> 888 and
# 727 -> 728. That rounded value is what the model sees AND what the x0 conversion looks its sigma up with.
LONGSANA_MODEL_TIMESTEPS: tuple[float, ...] = tuple(
    float(torch.tensor(t, dtype=torch.bfloat16)) for t in LONGSANA_TIMESTEPS
)
LONGSANA_FLOW_SHIFT = 7.0  # `scheduler.inference_flow_shift` of Sana_2000M_480px_adamW_fsdp_longsana.yaml
LONGSANA_TABLE_STEPS = 1000


def longsana_sigma_table(shift: float = LONGSANA_FLOW_SHIFT) -> tuple[torch.Tensor, torch.Tensor]:
    """The official 1000-entry (sigmas, timesteps) table, fp32, exactly as NVlabs/Sana computes it.

    Source: diffusion/scheduler/longlive_flow_euler_sampler.py, `SanaModelWrapper` builds
    `FlowMatchScheduler(shift, sigma_min=0.0, extra_one_step=True)` then `set_timesteps(1000, training=True)`:
    sigmas = linspace(1, 0, 1001)[:-1] (fp32), sigmas = shift*s / (1 + (shift-1)*s), timesteps = 1000*sigmas."""
    sigmas = torch.linspace(1.0, 0.0, LONGSANA_TABLE_STEPS + 1, dtype=torch.float32)[:-1]  # (1000,)
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    timesteps = sigmas * LONGSANA_TABLE_STEPS
    return sigmas, timesteps


def longsana_sigma_for_timestep(timestep: float, shift: float = LONGSANA_FLOW_SHIFT) -> float:
    """Nearest-timestep lookup (argmin |table_t - t|, first index on ties), as the official add_noise / x0 code."""
    sigmas, timesteps = longsana_sigma_table(shift)
    index = int(torch.argmin((timesteps.double() - float(timestep)).abs()))
    return float(sigmas[index])


@dataclass(frozen=True)
class LongSanaStep:
    timestep: int               # nominal official timestep (1000, 960, 889, 727)
    model_timestep: float       # what the model sees: bf16-rounded (1000, 960, 888, 728)
    sigma: float                # for x0 = x - sigma * v: lookup at model_timestep (official `_convert_flow_pred_to_x0`)
    next_sigma: float | None    # for re-noising to the next step: lookup at the NOMINAL next timestep (official
                                # `add_noise(..., next_timestep * ones(long))`, no bf16 rounding); None on the last step


def longsana_schedule(
    timesteps: tuple[int, ...] = LONGSANA_TIMESTEPS,
    shift: float = LONGSANA_FLOW_SHIFT,
    timestep_dtype: torch.dtype = torch.bfloat16,
) -> list[LongSanaStep]:
    """The per-step numbers of one LongSANA block. `timestep_dtype` is the official model dtype (bf16 checkpoint)."""
    timesteps = tuple(int(t) for t in timesteps)
    if timesteps and timesteps[-1] == 0:  # the official list ends with 0, which is dropped
        timesteps = timesteps[:-1]
    if not timesteps:
        raise ValueError("LongSANA needs at least one denoising step")
    steps = []
    for i, t in enumerate(timesteps):
        model_t = float(torch.tensor(float(t), dtype=timestep_dtype))
        next_sigma = longsana_sigma_for_timestep(timesteps[i + 1], shift) if i + 1 < len(timesteps) else None
        steps.append(LongSanaStep(t, model_t, longsana_sigma_for_timestep(model_t, shift), next_sigma))
    return steps


# Seeding rule. Every block owns a CPU torch.Generator seeded with block_seed(seed, block_index); its draws, in
# order, are the block's initial noise and then the fresh noise of each re-noise step. CPU generation makes the
# numbers identical on every device, and per-block seeding lets one block be regenerated alone (same seed -> same
# noise) without replaying the blocks before it.
def block_seed(seed: int, block_index: int) -> int:
    """A 63-bit seed from (seed, block_index): first 8 bytes of sha256(f"sana-video:{seed}:{block_index}")."""
    digest = hashlib.sha256(f"sana-video:{int(seed)}:{int(block_index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def block_generator(seed: int, block_index: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(block_seed(seed, block_index))


class BlockNoise:
    """Successive standard-normal draws from a CPU generator, moved to `device` (fp32)."""

    def __init__(self, generator: torch.Generator, device: str | torch.device = "cpu") -> None:
        self.generator = generator
        self.device = torch.device(device)

    @classmethod
    def for_block(cls, seed: int, block_index: int, device: str | torch.device = "cpu") -> BlockNoise:
        return cls(block_generator(seed, block_index), device)

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        noise = torch.randn(tuple(shape), generator=self.generator, dtype=torch.float32)  # on the CPU
        return noise.to(self.device)


def _as_noise_fn(generator_or_noise_fn: torch.Generator | NoiseFn, device: torch.device) -> NoiseFn:
    if isinstance(generator_or_noise_fn, torch.Generator):
        return BlockNoise(generator_or_noise_fn, device)
    return generator_or_noise_fn


def denoise_block(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    generator_or_noise_fn: torch.Generator | NoiseFn,
    steps: list[LongSanaStep] | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Denoise one LongSANA block from pure noise; returns x0 (fp32, same shape as `noise`).

    Per step: v = velocity_fn(x, model_timestep, i); x0 = x - sigma * v; unless last, x = (1 - s') x0 + s' eps with
    FRESH eps (s' = next_sigma). The official loop, not an ODE step. `on_step(i, x0)` sees every x0 prediction."""
    steps = longsana_schedule() if steps is None else steps
    noise_fn = _as_noise_fn(generator_or_noise_fn, noise.device)
    x = noise.float()  # (B, C, T, H, W)
    x0 = x
    for i, step in enumerate(steps):
        v = velocity_fn(x, step.model_timestep, i).float()  # (B, C, T, H, W)
        x0 = x - step.sigma * v
        if on_step is not None:
            on_step(i, x0)
        if step.next_sigma is None:
            break
        eps = noise_fn(tuple(x0.shape)).to(device=x0.device, dtype=torch.float32)
        x = (1.0 - step.next_sigma) * x0 + step.next_sigma * eps
    return x0


# ---------------------------------------------------------------------------------------------------- base 5 s
BASE_FLOW_SHIFT = 8.0   # README commands and the diffusers conversion (the 480p yaml says 7.0)
BASE_STEPS = 50
BASE_GUIDANCE = 6.0
NUM_TRAIN_TIMESTEPS = 1000


def flow_dpm_sigmas_f64(num_steps: int = BASE_STEPS, shift: float = BASE_FLOW_SHIFT) -> np.ndarray:
    """`time_uniform_flow` sigmas without the final 0, float64: t = linspace(1, 1/1000, N+1), s = 1 - t,
    shifted s' = shift*s / (1 + (shift-1)*s), flipped so it runs from ~1 down, last (= 0) dropped. (N,)"""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    t = np.linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, num_steps + 1)
    s = 1.0 - t
    s = shift * s / (1 + (shift - 1) * s)
    return np.flip(s)[:-1].copy()


def flow_dpm_sigmas(num_steps: int = BASE_STEPS, shift: float = BASE_FLOW_SHIFT) -> torch.Tensor:
    """(N + 1,) fp32 sigmas, the last one 0 (final_sigmas_type "zero")."""
    s = flow_dpm_sigmas_f64(num_steps, shift)
    return torch.from_numpy(np.concatenate([s, [0.0]]).astype(np.float32))


def flow_dpm_timesteps(num_steps: int = BASE_STEPS, shift: float = BASE_FLOW_SHIFT) -> torch.Tensor:
    """(N,) int64 model timesteps floor(1000 * sigma), from the float64 sigmas."""
    s = flow_dpm_sigmas_f64(num_steps, shift)
    return torch.from_numpy((s * NUM_TRAIN_TIMESTEPS).astype(np.int64))


class FlowDPMSolver2M:
    """Multistep DPM-Solver++ (2M, midpoint) on flow matching: alpha = 1 - sigma, data prediction x0 = x - sigma*v.

    First step first-order, then second-order; the final step (to sigma 0) is first-order and returns x0."""

    def __init__(self, num_steps: int = BASE_STEPS, shift: float = BASE_FLOW_SHIFT) -> None:
        self.sigmas = flow_dpm_sigmas(num_steps, shift)        # (N + 1,) fp32
        self.timesteps = flow_dpm_timesteps(num_steps, shift)  # (N,) int64
        self.num_steps = num_steps
        self._prev_x0: torch.Tensor | None = None
        self._index = 0

    @staticmethod
    def _lambda(sigma: torch.Tensor) -> torch.Tensor:
        # half log-SNR for flow: log(alpha) - log(sigma), alpha = 1 - sigma
        return torch.log(1 - sigma) - torch.log(sigma)

    def step(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One solver step from x at sigmas[i] with velocity v; returns x at sigmas[i + 1] (fp32)."""
        i = self._index
        if i >= self.num_steps:
            raise RuntimeError("the solver has already taken all its steps")
        x = x.float()
        sigma_s, sigma_t = self.sigmas[i], self.sigmas[i + 1]  # 0-dim fp32
        x0 = x - sigma_s * v.float()
        if sigma_t == 0:
            out = x0  # first-order update with alpha_t = 1, sigma_t = 0 is exactly x0
        else:
            alpha_t = 1 - sigma_t
            h = self._lambda(sigma_t) - self._lambda(sigma_s)
            phi = torch.exp(-h) - 1.0  # (exp(-h) - 1), negative
            if self._prev_x0 is None:  # first order (DDIM-like)
                out = (sigma_t / sigma_s) * x - (alpha_t * phi) * x0
            else:  # second order, midpoint
                h_0 = self._lambda(sigma_s) - self._lambda(self.sigmas[i - 1])
                r0 = h_0 / h
                d1 = (1.0 / r0) * (x0 - self._prev_x0)
                out = (sigma_t / sigma_s) * x - (alpha_t * phi) * x0 - 0.5 * (alpha_t * phi) * d1
        self._prev_x0 = x0
        self._index += 1
        return out


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """u + s * (c - u) in fp32."""
    uncond, cond = uncond.float(), cond.float()
    return uncond + scale * (cond - uncond)


def cfg_velocity_fn(
    batched_model_fn: Callable[[torch.Tensor, float, int], torch.Tensor], scale: float
) -> VelocityFn:
    """Wrap a model called on the batch [uncond, cond] (2B, ...) into a guided velocity_fn on (B, ...).

    With scale == 1 the uncond pass is skipped: batched_model_fn is then called on (B, ...) only."""

    def velocity(x: torch.Tensor, model_timestep: float, step_index: int) -> torch.Tensor:
        if scale == 1.0:
            return batched_model_fn(x, model_timestep, step_index).float()
        out = batched_model_fn(torch.cat([x, x], dim=0), model_timestep, step_index)  # (2B, ...)
        uncond, cond = out.chunk(2, dim=0)
        return classifier_free_guidance(uncond, cond, scale)

    return velocity


def sample_flow_dpm(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    num_steps: int = BASE_STEPS,
    shift: float = BASE_FLOW_SHIFT,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run the base sampler from `noise` (sigma ~ 1); the model timestep of step i is floor(1000 * sigma_i).

    `on_step(i, x)` sees the latents after every step. Returns the final x0 (fp32)."""
    solver = FlowDPMSolver2M(num_steps, shift)
    x = noise.float()
    for i in range(num_steps):
        v = velocity_fn(x, float(solver.timesteps[i]), i)
        x = solver.step(v, x)
        if on_step is not None:
            on_step(i, x)
    return x
