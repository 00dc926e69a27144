"""Wan2.1 VAE decoder: parity with diffusers' AutoencoderKLWan (the reference), streaming, loaders, cache, preview.

All on the CPU in float32 with the tiny config and random values in every tensor (gammas and biases included).
diffusers is a test-only dependency: it is the reference here, never imported by core/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from core.errors import CheckpointError, ProjectError
from core.vae import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    WanStreamingDecoder,
    WanVAEConfig,
    decoder_from_state_dict,
    diffusers_to_official_key,
    latent_to_rgb_preview,
    load_wan_vae,
    random_wan_vae_state_dict,
    tiny_wan_vae_config,
    to_official_state_dict,
    wan_vae_parameter_shapes,
    write_diffusers_vae,
)
from core.vae.preview import WAN21_LATENT_RGB_BIAS, WAN21_LATENT_RGB_FACTORS
from core.vae.streaming import GPU_FAST_SETTINGS

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLWan  # noqa: E402
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers  # noqa: E402

# 13 latent frames -> 49 pixel frames of 16x24: long enough for blocks of 10 with a remainder, short enough for CPU.
LATENT_T, LATENT_H, LATENT_W = 13, 2, 3


def _diffusers_kwargs(cfg: WanVAEConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if not k.startswith("_")}


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


@pytest.fixture(scope="module")
def cfg() -> WanVAEConfig:
    return tiny_wan_vae_config()


@pytest.fixture(scope="module")
def state_dict(cfg) -> dict[str, torch.Tensor]:
    return random_wan_vae_state_dict(cfg, seed=1234)


@pytest.fixture(scope="module")
def reference(cfg, state_dict) -> AutoencoderKLWan:
    vae = AutoencoderKLWan(**_diffusers_kwargs(cfg)).eval()
    vae.load_state_dict(state_dict, strict=True)  # random values in every tensor, encoder included
    return vae


@pytest.fixture(scope="module")
def raw_latents() -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    return torch.randn(1, 16, LATENT_T, LATENT_H, LATENT_W, generator=gen) * 1.5


@pytest.fixture(scope="module")
def reference_frames(reference, raw_latents) -> torch.Tensor:
    with torch.no_grad():
        return reference.decode(raw_latents).sample  # one call: diffusers' whole-video decode


@pytest.fixture(scope="module")
def decoder(cfg, state_dict) -> WanStreamingDecoder:
    # every block in one pass through the network (the cost of a tiny decode is per pass, not per frame)
    return WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict), frames_per_pass=64)


def _assert_matches(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> None:
    assert got.shape == want.shape
    assert got.dtype == torch.float32
    err = _rel_err(got, want)
    assert err <= tol, f"relative error {err:.3e} > {tol:g}"


def test_reference_output_is_informative(reference_frames):
    # if random weights saturated the clamp, equality would prove little
    assert reference_frames.shape == (1, 3, 49, 16, 24)
    assert (reference_frames.abs() < 0.999).float().mean() > 0.5
    assert reference_frames.std() > 0.1


def test_parameter_shapes_match_diffusers(cfg):
    ref = AutoencoderKLWan(**_diffusers_kwargs(cfg))
    assert wan_vae_parameter_shapes(cfg) == {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def test_parameter_shapes_match_diffusers_released_config():
    cfg = WanVAEConfig()  # Wan2.1 release: base_dim 96
    with torch.device("meta"):
        ref = AutoencoderKLWan(**_diffusers_kwargs(cfg))
    assert wan_vae_parameter_shapes(cfg) == {k: tuple(v.shape) for k, v in ref.state_dict().items()}


@pytest.mark.parametrize(
    "splits",
    [
        [1] * LATENT_T,  # blocks of 1
        [4, 3, 3, 3],  # blocks of 3, the first takes the remainder (LongSANA: 21 -> 11 + 10)
        [3, 3, 3, 3, 1],  # plain blocks of 3
        [3, 10],  # blocks of 10, remainder first
        [10, 3],  # plain blocks of 10
        [LATENT_T],  # whole video in one call
    ],
    ids=["blocks1", "blocks3-remainder-first", "blocks3-plain", "blocks10-remainder-first", "blocks10-plain", "whole"],
)
def test_streaming_decode_equals_diffusers_whole_decode(decoder, raw_latents, reference_frames, splits):
    decoder.reset()
    pieces, start = [], 0
    for n in splits:
        block = decoder.decode_block(raw_latents[:, :, start:start + n], normalized=False)
        expected_frames = 1 + 4 * (n - 1) if start == 0 else 4 * n
        assert block.shape[2] == expected_frames
        pieces.append(block)
        start += n
    _assert_matches(torch.cat(pieces, dim=2), reference_frames)


@pytest.mark.parametrize("frames_per_pass", [1, 5])
def test_frames_per_pass_does_not_change_frames(cfg, state_dict, raw_latents, reference_frames, frames_per_pass):
    # 1 = diffusers' own frame-by-frame schedule (the GPU default); 5 splits blocks unevenly
    dec = WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict), frames_per_pass=frames_per_pass)
    pieces = [dec.decode_block(raw_latents[:, :, :3], normalized=False),
              dec.decode_block(raw_latents[:, :, 3:], normalized=False)]
    _assert_matches(torch.cat(pieces, dim=2), reference_frames)


def test_normalized_latents_are_denormalized_with_wan_statistics(decoder, reference, raw_latents):
    mean = torch.tensor(WAN21_LATENTS_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN21_LATENTS_STD).view(1, 16, 1, 1, 1)
    z_n = raw_latents[:, :, :6] / 2
    with torch.no_grad():
        want = reference.decode(z_n * std + mean).sample  # what diffusers' SanaVideo pipeline does before decode
    _assert_matches(decoder.decode_full(z_n, normalized=True), want)


def test_batch_of_two_videos(decoder, reference):
    z = torch.randn(2, 16, 5, 2, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = reference.decode(z).sample
    decoder.reset()
    got = torch.cat([decoder.decode_block(z[:, :, :2], normalized=False),
                     decoder.decode_block(z[:, :, 2:], normalized=False)], dim=2)
    _assert_matches(got, want)


def test_block_that_does_not_continue_the_video_is_refused(decoder, raw_latents):
    decoder.reset()
    decoder.decode_block(raw_latents[:, :, :2], normalized=False)
    with pytest.raises(ValueError, match="reset"):
        decoder.decode_block(torch.zeros(1, 16, 1, 4, 4), normalized=False)
    decoder.reset()
    assert decoder.decode_block(torch.zeros(1, 16, 1, 4, 4), normalized=False).shape == (1, 3, 1, 32, 32)


def test_failed_block_leaves_the_cache_at_the_block_start(decoder, raw_latents, reference_frames, monkeypatch):
    decoder.reset()
    head = decoder.decode_block(raw_latents[:, :, :4], normalized=False)
    up = decoder.model.decoder.up_blocks[1]
    calls = {"n": 0}
    original = type(up).forward

    def failing_forward(self, *args, **kwargs):  # fails after earlier layers already advanced their caches
        calls["n"] += 1
        raise RuntimeError("simulated out of memory")

    monkeypatch.setattr(type(up), "forward", failing_forward)
    with pytest.raises(RuntimeError, match="simulated"):
        decoder.decode_block(raw_latents[:, :, 4:], normalized=False)
    monkeypatch.setattr(type(up), "forward", original)
    assert calls["n"] == 1 and decoder.latent_frames_done == 4
    tail = decoder.decode_block(raw_latents[:, :, 4:], normalized=False)  # the retry continues the video
    _assert_matches(torch.cat([head, tail], dim=2), reference_frames)


def test_reset_starts_a_new_video(decoder, raw_latents, reference_frames):
    decoder.reset()
    decoder.decode_block(raw_latents[:, :, :4], normalized=False)
    decoder.reset()
    first = decoder.decode_block(raw_latents[:, :, :1], normalized=False)
    _assert_matches(first, reference_frames[:, :, :1])


def test_cache_save_restore_mid_video(cfg, state_dict, decoder, raw_latents, reference_frames):
    decoder.reset()
    head = decoder.decode_block(raw_latents[:, :, :7], normalized=False)
    # through bytes, as a project stores it (safetensors), then into a fresh decoder as after a restart
    saved = load_safetensors_bytes(save_safetensors_bytes({k: v.cpu() for k, v in decoder.save_cache().items()}))
    decoder.decode_block(raw_latents[:, :, 7:9], normalized=False)  # the original decoder moves on: no aliasing
    resumed = WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict), frames_per_pass=64)
    resumed.restore_cache(saved)
    assert resumed.latent_frames_done == 7
    tail = resumed.decode_block(raw_latents[:, :, 7:], normalized=False)
    _assert_matches(torch.cat([head, tail], dim=2), reference_frames)


def test_cache_after_first_frame_only_restores(cfg, state_dict, decoder, raw_latents, reference_frames):
    decoder.reset()
    head = decoder.decode_block(raw_latents[:, :, :1], normalized=False)
    resumed = WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict), frames_per_pass=64)
    resumed.restore_cache(decoder.save_cache())
    tail = resumed.decode_block(raw_latents[:, :, 1:], normalized=False)
    _assert_matches(torch.cat([head, tail], dim=2), reference_frames)


def test_cache_from_another_decoder_is_refused(decoder, raw_latents):
    decoder.reset()
    decoder.decode_block(raw_latents[:, :, :3], normalized=False)
    saved = decoder.save_cache()
    other_cfg = WanVAEConfig(base_dim=8)
    other = WanStreamingDecoder(decoder_from_state_dict(other_cfg, random_wan_vae_state_dict(other_cfg)))
    with pytest.raises(ProjectError, match="shape"):
        other.restore_cache(saved)
    broken = dict(saved)
    broken.pop("conv.decoder.conv_in")
    with pytest.raises(ProjectError, match="lacks"):
        decoder.restore_cache(broken)
    with pytest.raises(ProjectError, match="latent_frames_done"):
        decoder.restore_cache({k: v for k, v in saved.items() if k != "latent_frames_done"})
    with pytest.raises(ProjectError, match="does not know"):
        decoder.restore_cache({**saved, "conv.decoder.nonexistent": saved["conv.decoder.conv_in"]})


# --- fast path (GPU speed options; same function) -------------------------------------------------------------------
def test_fast_path_equals_diffusers_and_streams(cfg, state_dict, reference, raw_latents, reference_frames):
    # fast=True without Triton (CPU, no interpreter): channels_last_3d, preallocated context buffers, conv-side
    # padding, PyTorch norm + SiLU into the buffer; blocks of uneven size, a save/restore between two decoders
    dec = WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict), frames_per_pass=3, fast=True, subpixel=True)
    assert dec.model.fast and dec.model.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last_3d)
    head = torch.cat([dec.decode_block(raw_latents[:, :, :1], normalized=False),
                      dec.decode_block(raw_latents[:, :, 1:6], normalized=False)], dim=2)
    resumed = WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict), frames_per_pass=64, fast=True)
    resumed.restore_cache(load_safetensors_bytes(save_safetensors_bytes(
        {k: v.cpu() for k, v in dec.save_cache().items()})))
    tail = resumed.decode_block(raw_latents[:, :, 6:], normalized=False)
    assert tail.is_contiguous()
    _assert_matches(torch.cat([head, tail], dim=2), reference_frames)
    # a batch of two videos through the fast path (per-batch strides in the kernels' fallbacks and views)
    z = torch.randn(2, 16, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = reference.decode(z).sample
    _assert_matches(dec.decode_full(z, normalized=False), want)
    # the reference path and the fast path keep interchangeable caches
    dec.reset()
    head = torch.cat([dec.decode_block(raw_latents[:, :, :1], normalized=False),
                      dec.decode_block(raw_latents[:, :, 1:6], normalized=False)], dim=2)
    plain = WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict), frames_per_pass=64)
    plain.restore_cache(dec.save_cache())
    _assert_matches(torch.cat([head, plain.decode_block(raw_latents[:, :, 6:], normalized=False)], dim=2),
                    reference_frames)


def test_speed_options(cfg, state_dict, raw_latents, reference_frames):
    dec = WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict), frames_per_pass=64, dtype=torch.bfloat16)
    assert dec.dtype == torch.bfloat16 and not dec.model.fast
    got = dec.decode_full(raw_latents, normalized=False)
    assert got.dtype == torch.bfloat16
    assert _rel_err(got.float(), reference_frames) < 5e-2  # bf16 weights and activations (fp32 norms)
    fast = WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict), **GPU_FAST_SETTINGS)  # the GPU recipe
    assert fast.model.fast and fast.dtype == torch.bfloat16
    assert _rel_err(fast.decode_full(raw_latents, normalized=False).float(), reference_frames) < 5e-2
    with pytest.raises(ValueError, match="compile"):
        WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict), fast=True, compile=True)
    # configure(fast=False) restores the reference layout
    model = decoder_from_state_dict(cfg, state_dict).configure(fast=True).configure(fast=False)
    assert not model.fast and model.decoder.conv_in.weight.is_contiguous()


_INTERPRETER_CHECK = r"""
import torch
from core.vae import WanStreamingDecoder, decoder_from_state_dict, random_wan_vae_state_dict, tiny_wan_vae_config
from core.vae.norm_silu_triton import rms_silu_into
from core.vae.wan import RMSNorm
from diffusers import AutoencoderKLWan

gen = torch.Generator().manual_seed(11)
# the kernel alone: B=2, a time slice of a NaN-poisoned buffer, C not a power of two
norm = RMSNorm(12, images=False)
with torch.no_grad():
    norm.gamma.copy_(1 + 0.3 * torch.randn(norm.gamma.shape, generator=gen))
x = torch.randn(2, 12, 3, 5, 7, generator=gen).contiguous(memory_format=torch.channels_last_3d)
buf = torch.full((2, 12, 5, 5, 7), float("nan")).contiguous(memory_format=torch.channels_last_3d)
rms_silu_into(x, norm.gamma, norm.scale, buf[:, :, 2:])
want = torch.nn.functional.silu(norm(x.double()))
err = ((buf[:, :, 2:].double() - want).norm() / want.norm()).item()
assert err < 1e-6, err
assert torch.isnan(buf[:, :, :2]).all(), "wrote outside its slice"
bias = torch.randn(12, generator=gen)
rms_silu_into(x, norm.gamma, norm.scale, buf[:, :, 2:], bias=bias)
want = torch.nn.functional.silu(norm(x.double() + bias.double().view(1, -1, 1, 1, 1)))
err = ((buf[:, :, 2:].double() - want).norm() / want.norm()).item()
assert err < 1e-6, err
from core.vae.norm_silu_triton import bias_residual_
h = torch.randn(2, 12, 3, 5, 7, generator=gen).contiguous(memory_format=torch.channels_last_3d)
s = torch.randn(2, 12, 3, 5, 7, generator=gen).contiguous(memory_format=torch.channels_last_3d)
want = h + bias.view(1, -1, 1, 1, 1) + s
assert torch.allclose(bias_residual_(h, bias, s), want, atol=1e-6) and torch.allclose(h, want, atol=1e-6)
# the whole fast path through the interpreted kernel vs diffusers
cfg = tiny_wan_vae_config()
sd = random_wan_vae_state_dict(cfg, seed=5)
ref = AutoencoderKLWan(**{k: v for k, v in cfg.to_dict().items() if not k.startswith("_")}).eval()
ref.load_state_dict(sd)
z = torch.randn(1, 16, 3, 2, 2, generator=gen) * 1.5
with torch.no_grad():
    want = ref.decode(z).sample
dec = WanStreamingDecoder(decoder_from_state_dict(cfg, sd), frames_per_pass=2, fast=True, subpixel=True)
got = torch.cat([dec.decode_block(z[:, :, :1], normalized=False), dec.decode_block(z[:, :, 1:], normalized=False)], 2)
err = ((got.double() - want.double()).norm() / want.double().norm()).item()
assert err < 1e-5, err
print("ok", err)
"""


def test_fused_norm_silu_kernel_through_the_triton_interpreter():
    # TRITON_INTERPRET must be set before Triton is first imported: a fresh process
    pytest.importorskip("triton")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


# --- loaders / writers --------------------------------------------------------------------------------------------
def test_diffusers_save_pretrained_folder_loads(tmp_path, reference, raw_latents, reference_frames):
    reference.save_pretrained(tmp_path / "vae")
    dec = load_wan_vae(tmp_path / "vae", device="cpu", dtype=torch.float32, frames_per_pass=64)
    _assert_matches(dec.decode_full(raw_latents, normalized=False), reference_frames)
    # a model root holding vae/ works too
    assert load_wan_vae(tmp_path).config == dec.config


def test_written_folder_loads_into_diffusers(tmp_path, cfg, state_dict, reference_frames, raw_latents):
    write_diffusers_vae(tmp_path / "vae", cfg, state_dict)
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderKLWan" and config["base_dim"] == cfg.base_dim
    theirs = AutoencoderKLWan.from_pretrained(tmp_path / "vae").eval()
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(tensor, state_dict[name]), name
    ours = load_wan_vae(tmp_path / "vae", frames_per_pass=64)
    assert ours.config == cfg
    _assert_matches(ours.decode_full(raw_latents, normalized=False), reference_frames)


def test_official_key_map_inverts_diffusers_converter_released_config():
    # every key of the released model: ours (diffusers -> official) followed by diffusers' own converter
    # (official -> diffusers) must give the identity
    cfg = WanVAEConfig()
    names = wan_vae_parameter_shapes(cfg)
    official = to_official_state_dict({k: torch.empty(0) for k in names}, cfg)
    assert len(official) == len(names)
    assert set(convert_wan_vae_to_diffusers(official)) == set(names)
    back = convert_wan_vae_to_diffusers({k: torch.tensor(float(i)) for i, k in enumerate(official)})
    forward = {k: i for i, k in enumerate(official)}
    for dname, value in back.items():
        assert forward[diffusers_to_official_key(dname, cfg)] == int(value.item()), dname


def test_official_pth_loads(tmp_path, cfg, state_dict, raw_latents, reference_frames):
    official = to_official_state_dict(state_dict, cfg)
    assert convert_wan_vae_to_diffusers(official).keys() == state_dict.keys()
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save(dict(official), path)
    dec = load_wan_vae(path, config=cfg, frames_per_pass=64)
    _assert_matches(dec.decode_full(raw_latents, normalized=False), reference_frames)
    # a folder holding vae/Wan2.1_VAE.pth (SANA-Video repo layout) resolves too
    (tmp_path / "root" / "vae").mkdir(parents=True)
    path.rename(tmp_path / "root" / "vae" / "Wan2.1_VAE.pth")
    assert load_wan_vae(tmp_path / "root", config=cfg).config == cfg


def test_official_pth_without_config_uses_released_shapes(tmp_path, cfg, state_dict):
    torch.save(to_official_state_dict(state_dict, cfg), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="misshapen"):
        load_wan_vae(tmp_path / "tiny.pth")  # default config = base_dim 96


def _corrupt(state_dict: dict, kind: str) -> tuple[dict, str]:
    sd = dict(state_dict)
    if kind == "missing":
        del sd["decoder.up_blocks.1.upsamplers.0.time_conv.weight"]
        return sd, "decoder.up_blocks.1.upsamplers.0.time_conv.weight"
    if kind == "unexpected":
        sd["decoder.extra_layer.weight"] = torch.zeros(2)
        return sd, "decoder.extra_layer.weight"
    sd["decoder.conv_out.bias"] = torch.zeros(4)
    return sd, "decoder.conv_out.bias"


@pytest.mark.parametrize("kind", ["missing", "unexpected", "misshapen"])
def test_bad_keys_in_diffusers_folder_raise(tmp_path, cfg, state_dict, kind):
    sd, name = _corrupt(state_dict, kind)
    write_diffusers_vae(tmp_path, cfg, sd)
    with pytest.raises(CheckpointError, match=kind) as info:
        load_wan_vae(tmp_path)
    assert name in str(info.value)


@pytest.mark.parametrize("kind", ["missing", "unexpected", "misshapen"])
def test_bad_keys_in_official_pth_raise(tmp_path, cfg, state_dict, kind):
    sd, name = _corrupt(state_dict, kind)
    official = {}
    for k, v in sd.items():
        try:
            official[to_official_state_dict({k: v}, cfg).popitem()[0]] = v
        except KeyError:  # a name with no official counterpart stays as it is (unexpected)
            official[k] = v
    torch.save(official, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=kind):
        load_wan_vae(tmp_path / "bad.pth", config=cfg)


def test_unreadable_sources_raise(tmp_path, cfg, state_dict):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_wan_vae(tmp_path / "nothing.pth")
    with pytest.raises(CheckpointError, match="holds no Wan VAE"):
        load_wan_vae(tmp_path)
    write_diffusers_vae(tmp_path / "vae", cfg, state_dict)
    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated download
    with pytest.raises(CheckpointError):
        load_wan_vae(tmp_path / "vae")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="state dict"):
        load_wan_vae(tmp_path / "junk.pth")


def test_wan22_config_is_refused(tmp_path, cfg, state_dict):
    write_diffusers_vae(tmp_path, cfg, state_dict)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(is_residual=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="Wan2.2"):
        load_wan_vae(tmp_path)


def test_tiny_config_is_the_released_structure(cfg):
    released = WanVAEConfig()
    assert (cfg.z_dim, cfg.dim_mult, cfg.num_res_blocks, cfg.temperal_downsample) == (
        released.z_dim, released.dim_mult, released.num_res_blocks, released.temperal_downsample)
    assert cfg.pixel_frames(21) == 81 and cfg.spatial_upsampling == 8


# --- preview --------------------------------------------------------------------------------------------------------
def test_preview_is_the_linear_map_of_normalized_latents():
    gen = torch.Generator().manual_seed(0)
    z_n = torch.randn(16, 3, 4, 5, generator=gen)
    image = latent_to_rgb_preview(z_n)
    assert image.dtype == torch.uint8 and image.shape == (3, 4, 5, 3)
    factors = torch.tensor(WAN21_LATENT_RGB_FACTORS, dtype=torch.float64)
    bias = torch.tensor(WAN21_LATENT_RGB_BIAS, dtype=torch.float64)
    t, y, x = 2, 3, 1
    rgb = z_n[:, t, y, x].double() @ factors + bias
    want = ((rgb + 1) * 127.5).round().clamp(0, 255)
    assert torch.equal(image[t, y, x].double(), want)
    # raw latents give the same picture once normalised with the Wan statistics
    mean = torch.tensor(WAN21_LATENTS_MEAN).view(16, 1, 1, 1)
    std = torch.tensor(WAN21_LATENTS_STD).view(16, 1, 1, 1)
    raw = latent_to_rgb_preview(z_n * std + mean, normalized=False)
    assert (raw.int() - image.int()).abs().max() <= 1
    big = latent_to_rgb_preview(z_n[None], upscale=8)
    assert big.shape == (3, 32, 40, 3)
    assert torch.equal(big[:, ::8, ::8], image) and torch.equal(big[:, 7::8, 7::8], image)


def test_preview_is_cheap():
    z = torch.randn(16, 21, 60, 104)  # a whole 480p video
    latent_to_rgb_preview(z)
    start = time.perf_counter()
    latent_to_rgb_preview(z)
    assert time.perf_counter() - start < 0.5  # milliseconds on an idle CPU; a VAE pass takes seconds


# --- GPU (the lead runs these) --------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_cuda_decode_matches_cpu(cfg, state_dict, raw_latents, reference_frames):
    # cuDNN conv3d path (the CPU uses 2D convs per temporal tap); TF32 off so fp32 means fp32
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        dec = WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict, device="cuda"))
        assert dec.frames_per_pass == 1
        got = torch.cat([dec.decode_block(raw_latents[:, :, :3], normalized=False),
                         dec.decode_block(raw_latents[:, :, 3:], normalized=False)], dim=2)
        _assert_matches(got.cpu(), reference_frames, tol=1e-4)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
    half = WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict, device="cuda", dtype=torch.bfloat16))
    got16 = half.decode_full(raw_latents, normalized=False)
    assert got16.dtype == torch.bfloat16
    assert _rel_err(got16.float().cpu(), reference_frames) < 5e-2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_fast_path(cfg, state_dict, raw_latents, reference_frames, dtype):
    # the compiled Triton norm + SiLU kernel, channels_last_3d cuDNN convs, cudnn.benchmark, blocks of uneven size
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        dec = WanStreamingDecoder(decoder_from_state_dict(cfg, state_dict, device="cuda"), frames_per_pass=4,
                                  dtype=dtype, fast=True, cudnn_benchmark=True, subpixel=True)
        got = torch.cat([dec.decode_block(raw_latents[:, :, :3], normalized=False),
                         dec.decode_block(raw_latents[:, :, 3:], normalized=False)], dim=2).float().cpu()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
    assert torch.isfinite(got).all()
    assert _rel_err(got, reference_frames) < (1e-4 if dtype == torch.float32 else 5e-2)
