"""Samplers: block segments, the LongSANA schedule and loop, seeding, and step-by-step parity of the base sampler
with diffusers' DPMSolverMultistepScheduler."""

from __future__ import annotations

import pytest
import torch

from core.samplers import (
    LONGSANA_MODEL_TIMESTEPS,
    LONGSANA_TIMESTEPS,
    BlockNoise,
    FlowDPMSolver2M,
    block_generator,
    block_seed,
    block_segments,
    cfg_velocity_fn,
    classifier_free_guidance,
    denoise_block,
    flow_dpm_sigmas,
    flow_dpm_timesteps,
    latent_frames_for,
    longsana_schedule,
    longsana_sigma_table,
    sample_flow_dpm,
    video_frames_for,
)

# diffusers' scheduler trips a numpy 2 DeprecationWarning inside set_timesteps; it is not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# ------------------------------------------------------------------------------------------------ frames and blocks


def test_frame_counts():
    assert latent_frames_for(81) == 21 and latent_frames_for(961) == 241 and latent_frames_for(1) == 1
    assert video_frames_for(21) == 81 and video_frames_for(241) == 961
    for latent in range(1, 60):
        assert latent_frames_for(video_frames_for(latent)) == latent
    with pytest.raises(ValueError):
        latent_frames_for(0)


def test_block_segments_match_the_official_boundaries():
    # Literal boundaries of the official _create_autoregressive_segments (81 and 961 video frames, dossier 1.9).
    assert block_segments(21) == [(0, 11), (11, 21)]
    segs = block_segments(241)
    assert len(segs) == 24 and segs[0] == (0, 11) and segs[1] == (11, 21) and segs[-1] == (231, 241)
    assert block_segments(20) == [(0, 10), (10, 20)]
    assert block_segments(10) == [(0, 10)]
    assert block_segments(5) == [(0, 5)]          # shorter than one block: one block
    assert block_segments(29) == [(0, 19), (19, 29)]
    for n in range(1, 80):  # contiguous cover, first absorbs the remainder, all others are full
        segs = block_segments(n)
        assert segs[0][0] == 0 and segs[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(segs, segs[1:]))
        assert all(e - s == 10 for s, e in segs[1:])


# ------------------------------------------------------------------------------------------------ LongSANA schedule


def test_longsana_timesteps_and_bf16_rounding():
    assert LONGSANA_TIMESTEPS == (1000, 960, 889, 727)
    # The official `torch.ones(..., dtype=bfloat16) * t` rounds 889 -> 888 and 727 -> 728.
    assert LONGSANA_MODEL_TIMESTEPS == (1000.0, 960.0, 888.0, 728.0)
    steps = longsana_schedule()
    assert [s.timestep for s in steps] == [1000, 960, 889, 727]
    assert [s.model_timestep for s in steps] == [1000.0, 960.0, 888.0, 728.0]
    assert len(longsana_schedule((1000, 960, 889, 727, 0))) == 4  # the official trailing 0 is dropped


# Literal sigmas obtained by running the official FlowMatchScheduler(shift, sigma_min=0, extra_one_step=True)
# .set_timesteps(1000, training=True) table and its nearest-timestep lookups (NVlabs/Sana
# diffusion/scheduler/longlive_flow_euler_sampler.py): x0 sigma looked up at the bf16 model timestep, re-noise sigma
# looked up at the integer next timestep.
OFFICIAL_SIGMAS = {
    7.0: dict(
        sigma=[1.0, 0.9599574208259583, 0.8879598379135132, 0.7283996939659119],
        next_sigma=[0.9599574208259583, 0.8891531825065613, 0.7274096608161926, None],
    ),
    8.0: dict(
        sigma=[1.0, 0.9599999785423279, 0.8880963325500488, 0.7283279299736023],
        next_sigma=[0.9599999785423279, 0.8888888955116272, 0.7272727489471436, None],
    ),
}


@pytest.mark.parametrize("shift", [7.0, 8.0])
def test_longsana_sigmas_are_the_official_literals(shift):
    steps = longsana_schedule(shift=shift)
    assert [s.sigma for s in steps] == OFFICIAL_SIGMAS[shift]["sigma"]
    assert [s.next_sigma for s in steps] == OFFICIAL_SIGMAS[shift]["next_sigma"]
    sigmas, timesteps = longsana_sigma_table(shift)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (1000,) and float(sigmas[0]) == 1.0
    assert float(sigmas[-1]) > 0  # extra_one_step: sigma 0 itself is not in the table
    for s in steps:  # sigma ~ t / 1000 whatever the shift (the table is in shifted-time units)
        assert abs(s.sigma - s.model_timestep / 1000) < 1e-3


def test_default_shift_is_the_longsana_yaml_value():
    assert [s.sigma for s in longsana_schedule()] == OFFICIAL_SIGMAS[7.0]["sigma"]


# ------------------------------------------------------------------------------------------------ LongSANA loop


def test_denoise_block_follows_the_official_loop():
    shape = (1, 4, 3, 2, 5)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(shape, generator=gen)
    weight = torch.randn(4, 4, generator=gen) * 0.5
    seen = []

    def velocity_fn(x, t, i):
        seen.append((x.clone(), t, i))
        return torch.einsum("ij,bjthw->bithw", weight, x) + t / 1000

    fresh = [torch.randn(shape, generator=gen) for _ in range(3)]
    draws = iter(fresh)
    out = denoise_block(velocity_fn, noise, lambda s: next(draws))

    # by hand, with the literal official sigmas (shift 7)
    sig, nxt = OFFICIAL_SIGMAS[7.0]["sigma"], OFFICIAL_SIGMAS[7.0]["next_sigma"]
    x = noise
    for i, t in enumerate([1000.0, 960.0, 888.0, 728.0]):
        assert seen[i][1] == t and seen[i][2] == i
        torch.testing.assert_close(seen[i][0], x, rtol=0, atol=0)
        v = torch.einsum("ij,bjthw->bithw", weight, x) + t / 1000
        x0 = x - sig[i] * v
        if i < 3:
            x = (1 - nxt[i]) * x0 + nxt[i] * fresh[i]
    assert len(seen) == 4
    torch.testing.assert_close(out, x0, rtol=1e-6, atol=1e-6)


def test_denoise_block_draws_fresh_noise_from_the_generator():
    shape = (1, 2, 2, 2, 2)
    noise = torch.zeros(shape)
    steps_seen = []
    out_a = denoise_block(lambda x, t, i: steps_seen.append(x.clone()) or torch.zeros_like(x), noise,
                          block_generator(5, 1))
    # velocity 0 -> x0 = x; each re-noised x is (1 - s') x0 + s' eps, eps the generator's next draw
    gen = block_generator(5, 1)
    eps = [torch.randn(shape, generator=gen) for _ in range(3)]
    assert not torch.equal(eps[0], eps[1])
    nxt = OFFICIAL_SIGMAS[7.0]["next_sigma"]
    expected = torch.zeros(shape)
    for i in range(3):
        expected = (1 - nxt[i]) * expected + nxt[i] * eps[i]
        torch.testing.assert_close(steps_seen[i + 1], expected, rtol=1e-6, atol=1e-6)
    out_b = denoise_block(lambda x, t, i: torch.zeros_like(x), noise, block_generator(5, 1))
    assert torch.equal(out_a, out_b)


def test_block_noise_is_deterministic_per_seed_and_block():
    shape = (1, 16, 3, 4, 6)
    a = BlockNoise.for_block(7, 2)(shape)
    b = BlockNoise.for_block(7, 2)(shape)
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert not torch.equal(a, BlockNoise.for_block(7, 3)(shape))
    assert not torch.equal(a, BlockNoise.for_block(8, 2)(shape))
    # the rule: a CPU generator seeded with block_seed(seed, block); successive calls continue the stream
    gen = torch.Generator().manual_seed(block_seed(7, 2))
    ref = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    noise = BlockNoise.for_block(7, 2)
    assert torch.equal(noise(shape), ref[0]) and torch.equal(noise(shape), ref[1])
    # frozen values: projects saved today must regenerate the same noise tomorrow
    assert block_seed(0, 0) == 3658684855458661899
    assert block_seed(42, 3) == 2882963538414202349
    assert 0 <= block_seed(2**40, 10**6) < 2**63
    assert len({block_seed(s, b) for s in range(20) for b in range(20)}) == 400


@pytest.mark.gpu
def test_block_noise_is_identical_on_the_gpu():
    shape = (1, 16, 2, 4, 4)
    cpu = BlockNoise.for_block(3, 1, "cpu")(shape)
    gpu = BlockNoise.for_block(3, 1, "cuda")(shape)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


# ------------------------------------------------------------------------------------------------ base sampler


def _diffusers_scheduler(num_steps: int, shift: float = 8.0):
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift, solver_order=2,
        algorithm_type="dpmsolver++", lower_order_final=True, final_sigmas_type="zero",
    )
    scheduler.set_timesteps(num_steps)
    return scheduler


def test_flow_dpm_sigmas_and_timesteps_literals():
    # Literal values from the official time_uniform_flow schedule (dossier 2.1, shift 8, 50 steps).
    sigmas = flow_dpm_sigmas(50, 8.0)
    assert sigmas.shape == (51,) and float(sigmas[-1]) == 0.0
    assert abs(float(sigmas[0]) - 0.99987) < 1e-5 and abs(float(sigmas[1]) - 0.99733) < 1e-5
    assert abs(float(sigmas[-3]) - 0.2498) < 1e-4 and abs(float(sigmas[-2]) - 0.1402) < 1e-4
    assert flow_dpm_timesteps(50, 8.0)[:5].tolist() == [999, 997, 994, 991, 989]


@pytest.mark.parametrize("num_steps,shift", [(50, 8.0), (12, 8.0), (7, 3.0), (2, 8.0), (1, 8.0)])
def test_flow_dpm_schedule_matches_diffusers(num_steps, shift):
    ref = _diffusers_scheduler(num_steps, shift)
    assert torch.equal(flow_dpm_sigmas(num_steps, shift), ref.sigmas)
    assert torch.equal(flow_dpm_timesteps(num_steps, shift), ref.timesteps)


def _random_velocity_fn(seed: int):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(4, 4, generator=gen) * 0.4
    bias = torch.randn(1, 4, 1, 1, 1, generator=gen)

    def velocity(x, t, i):
        # nonlinear in x, depends on t and on the step through a fixed pseudo-random term
        wobble = torch.sin(torch.arange(x.numel(), dtype=torch.float32).view_as(x) * (0.37 + 0.01 * i))
        return torch.einsum("ij,bjthw->bithw", weight, torch.tanh(x)) + bias * (float(t) / 1000) + 0.1 * wobble

    return velocity


@pytest.mark.parametrize("num_steps", [50, 6])
def test_flow_dpm_steps_match_diffusers_step_by_step(num_steps):
    ref = _diffusers_scheduler(num_steps)
    ours = FlowDPMSolver2M(num_steps, 8.0)
    velocity = _random_velocity_fn(num_steps)
    x_ref = torch.randn(1, 4, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    x_ours = x_ref.clone()
    for i, t in enumerate(ref.timesteps):
        assert int(ours.timesteps[i]) == int(t)
        x_ref = ref.step(velocity(x_ref, t, i), t, x_ref).prev_sample
        x_ours = ours.step(velocity(x_ours, ours.timesteps[i], i), x_ours)
        torch.testing.assert_close(x_ours, x_ref, rtol=1e-6, atol=1e-6, msg=f"step {i}")
    assert torch.isfinite(x_ours).all()


def test_sample_flow_dpm_matches_a_diffusers_loop_and_passes_integer_timesteps():
    num_steps = 20
    ref = _diffusers_scheduler(num_steps)
    velocity = _random_velocity_fn(3)
    noise = torch.randn(2, 4, 2, 3, 3, generator=torch.Generator().manual_seed(4))
    x = noise.clone()
    ref_after = []
    for i, t in enumerate(ref.timesteps):
        x = ref.step(velocity(x, t, i), t, x).prev_sample
        ref_after.append(x)
    seen_t, after = [], []

    def recording(x, t, i):
        seen_t.append(t)
        return velocity(x, t, i)

    out = sample_flow_dpm(recording, noise, num_steps, 8.0, on_step=lambda i, x: after.append(x.clone()))
    assert seen_t == [float(t) for t in ref.timesteps] and all(float(t).is_integer() for t in seen_t)
    for i, (a, b) in enumerate(zip(after, ref_after)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=f"step {i}")
    torch.testing.assert_close(out, x, rtol=1e-6, atol=1e-6)


def test_cfg_batches_uncond_then_cond_in_fp32():
    batches = []

    def batched_model(x, t, i):  # returns bf16 like a bf16 model: uncond rows = 1, cond rows = 3
        batches.append(x.shape[0])
        half = x.shape[0] // 2
        out = torch.cat([torch.ones_like(x[:half]), 3 * torch.ones_like(x[half:])]).to(torch.bfloat16)
        return out

    x = torch.zeros(2, 4, 1, 2, 2)
    v = cfg_velocity_fn(batched_model, 6.0)(x, 999.0, 0)
    assert batches == [4] and v.dtype == torch.float32
    assert torch.equal(v, torch.full_like(x, 1 + 6.0 * (3 - 1)))
    torch.testing.assert_close(
        classifier_free_guidance(torch.tensor([1.0]), torch.tensor([2.0]), 4.5), torch.tensor([5.5])
    )
    calls = []
    cfg_velocity_fn(lambda x, t, i: calls.append(x.shape[0]) or x, 1.0)(x, 999.0, 0)
    assert calls == [2]  # scale 1: no uncond pass
