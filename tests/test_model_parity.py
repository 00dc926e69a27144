"""core/model vs diffusers' SanaVideoTransformer3DModel (test-only dependency) and the official numerics knobs.

diffusers is built with the same tiny config, every parameter randomised, written with save_pretrained and read back
from its safetensors file, so the real key names / shapes / conv layouts go through load_diffusers_state_dict."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from blockcausal_reference import randomize_parameters_, reference_forward
from safetensors.torch import load_file, save_file

from core.config import TransformerConfig, tiny_config
from core.errors import CheckpointError
from core.model import SanaVideoTransformer, TextContext
from core.model.convert import expected_diffusers_shapes
from core.model.rope import rope_axis_dims

diffusers = pytest.importorskip("diffusers")
SanaVideoTransformer3DModel = diffusers.SanaVideoTransformer3DModel

TOL = 1e-5
CONFIGS = {
    "tiny": tiny_config(),
    # d=112 like the released model: RoPE split 40/36/36
    "head112": tiny_config(num_attention_heads=1, attention_head_dim=112, num_cross_attention_heads=1,
                           cross_attention_head_dim=112, cross_attention_dim=112, num_layers=1, mlp_ratio=1.0),
    # d=28: split 12/8/8 (t larger than h, w as for 112); 720p-style patch (1,1,1)
    "head28_p111": tiny_config(num_attention_heads=1, attention_head_dim=28, num_cross_attention_heads=1,
                               cross_attention_head_dim=28, cross_attention_dim=28, patch_size=(1, 1, 1)),
}


pytestmark = pytest.mark.usefixtures("single_thread")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    err = ((a.double() - b.double()).norm() / b.double().norm()).item()
    if os.environ.get("SANA_PRINT_ERRORS"):
        print(f"rel err {err:.3e}")
    return err


def diffusers_model(cfg: TransformerConfig, seed: int = 0) -> SanaVideoTransformer3DModel:
    kwargs = {k: v for k, v in cfg.to_diffusers_dict().items() if not k.startswith("_")}
    model = SanaVideoTransformer3DModel(**kwargs).eval()
    randomize_parameters_(model, seed)
    return model


def saved_state_dict(model: SanaVideoTransformer3DModel, folder) -> dict[str, torch.Tensor]:
    model.save_pretrained(folder, safe_serialization=True)
    return load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))


def ours_from(sd: dict[str, torch.Tensor], cfg: TransformerConfig) -> SanaVideoTransformer:
    with torch.device("meta"):
        model = SanaVideoTransformer(cfg)
    model.load_diffusers_state_dict(sd, device="cpu", dtype=torch.float32)
    return model.eval()


def inputs(cfg: TransformerConfig, batch: int = 2, frames: int = 3, size: int = 8, tokens: int = 7, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, cfg.in_channels, frames, size, size, generator=gen)
    caption = torch.randn(batch, tokens, cfg.caption_channels, generator=gen)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    mask[0, 5:] = False
    mask[1, 2:] = False
    return latents, caption, mask


def run_diffusers(model, latents, caption, mask, timestep):
    return model(latents, caption, timestep, encoder_attention_mask=mask.float()).sample


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(diffusers model, its saved state dict) per config name, built once."""
    cache = {}

    def get(name):
        if name not in cache:
            cfg = CONFIGS[name]
            dm = diffusers_model(cfg)
            cache[name] = (dm, saved_state_dict(dm, tmp_path_factory.mktemp(name)))
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_diffusers_for_several_timesteps(pair, name):
    cfg = CONFIGS[name].with_numerics("diffusers")
    dm, sd = pair(name)
    ours = ours_from(sd, cfg)
    latents, caption, mask = inputs(cfg)
    with torch.no_grad():
        text = ours.encode_text(caption, mask)
        for t in ([0.0, 0.0], [1.0, 999.0], [500.0, 500.0], [10.0, 700.0]):
            timestep = torch.tensor(t)
            expected = run_diffusers(dm, latents, caption, mask, timestep)
            got = ours(latents, timestep, text)
            assert got.shape == expected.shape
            assert rel_err(got, expected) <= TOL, (name, t)


def test_rope_split_matches_diffusers():
    for d in (16, 24, 28, 112):
        rope = diffusers.models.transformers.transformer_sana_video.WanRotaryPosEmbed(d, (1, 2, 2), 16)
        assert rope_axis_dims(d) == (rope.t_dim, rope.h_dim, rope.w_dim)
    assert rope_axis_dims(112) == (40, 36, 36)


def test_fractional_timesteps_and_floor_knob(pair):
    dm, sd = pair("tiny")
    base = CONFIGS["tiny"].with_numerics("diffusers")
    latents, caption, mask = inputs(base)
    t = torch.tensor([500.7, 3.2])
    with torch.no_grad():
        exact = ours_from(sd, dataclasses.replace(base, floor_timestep=False))
        floored = ours_from(sd, dataclasses.replace(base, floor_timestep=True))
        text = exact.encode_text(caption, mask)
        d_frac = run_diffusers(dm, latents, caption, mask, t)
        d_floor = run_diffusers(dm, latents, caption, mask, t.floor())
        # diffusers embeds fractional timesteps as they are
        assert rel_err(exact(latents, t, text), d_frac) <= TOL
        # the official model truncates them first (timestep.long())
        assert rel_err(floored(latents, t, text), d_floor) <= TOL
        assert rel_err(floored(latents, t, text), d_frac) > 1e-4
        # integer timesteps do not depend on the knob
        ti = torch.tensor([500.0, 3.0])
        assert rel_err(floored(latents, ti, text), exact(latents, ti, text)) == 0.0


def test_per_frame_timesteps_match_diffusers_per_token(pair):
    dm, sd = pair("tiny")
    cfg = CONFIGS["tiny"].with_numerics("diffusers")
    ours = ours_from(sd, cfg)
    latents, caption, mask = inputs(cfg, frames=4)
    per_frame = torch.tensor([[0.0, 0.0, 800.0, 800.0], [0.0, 250.0, 250.0, 999.0]])
    tokens_per_frame = (latents.shape[3] // 2) * (latents.shape[4] // 2)
    with torch.no_grad():
        expected = run_diffusers(dm, latents, caption, mask, per_frame.repeat_interleave(tokens_per_frame, dim=1))
        got = ours(latents, per_frame, ours.encode_text(caption, mask))
    assert rel_err(got, expected) <= TOL


def test_explicit_reference_matches_diffusers(pair):
    """The block-causal reference used by the streaming tests, with one chunk, is the bidirectional model."""
    dm, sd = pair("tiny")
    cfg = CONFIGS["tiny"].with_numerics("diffusers")
    latents, caption, mask = inputs(cfg)
    t = torch.tensor([10.0, 700.0])
    with torch.no_grad():
        expected = run_diffusers(dm, latents, caption, mask, t)
        got = reference_forward(sd, cfg, latents, t[:, None].expand(2, 3), caption, mask)
    assert rel_err(got, expected) <= TOL


def test_diffusers_state_dict_is_exact_inverse(pair, tmp_path):
    _, sd = pair("tiny")
    ours = ours_from(sd, CONFIGS["tiny"])
    back = ours.diffusers_state_dict()
    assert set(back) == set(sd)
    for key, tensor in sd.items():
        assert back[key].shape == tensor.shape and torch.equal(back[key], tensor), key
    save_file(back, str(tmp_path / "roundtrip.safetensors"))     # writers can save it directly (no shared storage)


def test_released_480p_key_map_and_parameter_count():
    cfg = TransformerConfig()
    with torch.device("meta"):
        theirs = SanaVideoTransformer3DModel(**{k: v for k, v in cfg.to_diffusers_dict().items()
                                               if not k.startswith("_")})
        ours = SanaVideoTransformer(cfg)
    assert {k: tuple(v.shape) for k, v in theirs.state_dict().items()} == expected_diffusers_shapes(cfg)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) == 2_056_862_144


# ---------------------------------------------------------------- load errors

@pytest.mark.parametrize("problem", ["missing", "unexpected", "misshapen"])
def test_load_errors_name_the_key_and_leave_the_model_alone(pair, problem):
    _, sd = pair("tiny")
    sd = dict(sd)
    key = "transformer_blocks.1.ff.conv_temp.weight"
    if problem == "missing":
        del sd[key]
    elif problem == "unexpected":
        key = "transformer_blocks.1.ff.extra.weight"
        sd[key] = torch.zeros(3)
    else:
        sd[key] = torch.zeros(32, 32, 2, 1)
    with torch.device("meta"):
        meta_model = SanaVideoTransformer(CONFIGS["tiny"])
    with pytest.raises(CheckpointError, match=problem) as info:
        meta_model.load_diffusers_state_dict(sd, device="cpu")
    assert key in str(info.value)
    assert all(p.device.type == "meta" for p in meta_model.parameters())

    real = SanaVideoTransformer(CONFIGS["tiny"])
    before = {k: v.clone() for k, v in real.state_dict().items()}
    with pytest.raises(CheckpointError):
        real.load_diffusers_state_dict(sd)
    assert all(torch.equal(before[k], v) for k, v in real.state_dict().items())


def test_load_assigns_target_dtype_without_leftovers(pair):
    _, sd = pair("tiny")
    with torch.device("meta"):
        model = SanaVideoTransformer(CONFIGS["tiny"])
    model.load_diffusers_state_dict(sd, device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    latents, caption, mask = inputs(CONFIGS["tiny"])
    with torch.no_grad():
        out = model(latents, torch.tensor([10.0, 500.0]), model.encode_text(caption, mask))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# ---------------------------------------------------------------- official numerics

def test_official_cross_norm_eps_reaches_cross_attention(pair):
    """Shrink the cross-attention q/k projections so their RMS is ~1e-3: then RMSNorm eps 1e-6 vs 1e-5 matters.
    diffusers with its cross q/k RMSNorm eps patched to 1e-6 must equal our 'official' model."""
    cfg = CONFIGS["tiny"].with_numerics("official")
    dm = diffusers_model(cfg, seed=3)
    with torch.no_grad():
        for block in dm.transformer_blocks:
            for lin in (block.attn2.to_q, block.attn2.to_k):
                lin.weight.mul_(1e-3)
                lin.bias.mul_(1e-3)
    sd = {k: v.clone() for k, v in dm.state_dict().items()}
    ours = ours_from(sd, cfg)
    latents, caption, mask = inputs(cfg)
    t = torch.tensor([10.0, 700.0])
    with torch.no_grad():
        got = ours(latents, t, ours.encode_text(caption, mask))
        unpatched = run_diffusers(dm, latents, caption, mask, t)
        for block in dm.transformer_blocks:
            block.attn2.norm_q.eps = cfg.cross_norm_eps
            block.attn2.norm_k.eps = cfg.cross_norm_eps
        patched = run_diffusers(dm, latents, caption, mask, t)
    assert cfg.cross_norm_eps == 1e-6
    assert rel_err(got, patched) <= TOL
    assert rel_err(got, unpatched) > 1e-3          # the check is sensitive to the eps


def test_official_linear_attention_eps_reaches_the_denominator():
    """Shrink the self-attention q/k RMSNorm weights so the linear-attention denominator is ~1e-8: then eps 1e-8
    (official) vs 1e-15 (diffusers) changes the output. Compare with the explicit reference's num / (den + eps)."""
    official = tiny_config().with_numerics("official")
    model = SanaVideoTransformer(official).eval()
    randomize_parameters_(model, seed=5)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.norm_q.weight.mul_(1e-4)
            block.attn.norm_k.weight.mul_(1e-4)
    sd = model.diffusers_state_dict()
    latents, caption, mask = inputs(official)
    t = torch.tensor([10.0, 700.0])
    frame_t = t[:, None].expand(2, latents.shape[2])
    with torch.no_grad():
        got = model(latents, t, model.encode_text(caption, mask))
        ref_official = reference_forward(sd, official, latents, frame_t, caption, mask)
        ref_tiny_eps = reference_forward(sd, official.with_numerics("diffusers"), latents, frame_t, caption, mask)
        diffusers_numerics = SanaVideoTransformer(official.with_numerics("diffusers")).eval()
        diffusers_numerics.load_diffusers_state_dict(sd)
        got_diffusers = diffusers_numerics(latents, t, diffusers_numerics.encode_text(caption, mask))
    assert official.linear_attn_eps == 1e-8
    assert rel_err(got, ref_official) <= TOL
    assert rel_err(got, ref_tiny_eps) > 1e-3       # the check is sensitive to the eps
    assert rel_err(got_diffusers, ref_tiny_eps) <= TOL


# ---------------------------------------------------------------- text contexts and devices

def test_text_context_broadcast_and_cat_match_batched_encoding(pair):
    _, sd = pair("tiny")
    ours = ours_from(sd, CONFIGS["tiny"])
    latents, caption, mask = inputs(CONFIGS["tiny"])
    t = torch.tensor([10.0, 700.0])
    with torch.no_grad():
        batched = ours(latents, t, ours.encode_text(caption, mask))
        parts = TextContext.cat([ours.encode_text(caption[:1], mask[:1]), ours.encode_text(caption[1:], mask[1:])])
        assert rel_err(ours(latents, t, parts), batched) <= TOL
        single = ours.encode_text(caption[:1], mask[:1])            # one prompt for a batch of 2
        repeated = ours.encode_text(caption[:1].expand(2, -1, -1), mask[:1].expand(2, -1))
        assert rel_err(ours(latents, t, single), ours(latents, t, repeated)) <= TOL


def cpu_and_cuda_models(pair, dtype):
    """The tiny pair's model on the CPU in float32 and on CUDA in `dtype`, loaded from the same diffusers state dict,
    with the CPU model's output on the shared inputs."""
    _, sd = pair("tiny")
    cfg = CONFIGS["tiny"]
    cpu = ours_from(sd, cfg)
    with torch.device("meta"):
        gpu = SanaVideoTransformer(cfg)
    gpu.load_diffusers_state_dict(sd, device="cuda", dtype=dtype)
    latents, caption, mask = inputs(cfg)
    t = torch.tensor([10.0, 700.0])
    with torch.no_grad():
        expected = cpu(latents, t, cpu.encode_text(caption, mask))
    return gpu, (latents.cuda(), t.cuda(), caption.cuda(), mask.cuda()), expected


@pytest.mark.gpu
def test_cuda_bfloat16_close_to_cpu_float32(pair):
    gpu, (latents, t, caption, mask), expected = cpu_and_cuda_models(pair, torch.bfloat16)
    with torch.no_grad():
        text = gpu.encode_text(caption, mask)
        got = gpu(latents, t, text)
        state = gpu.empty_state(2).add(gpu.cache_pass(latents, text, None, 0))
        streamed = gpu(latents, t, text, state=state, frame_offset=3)
    assert got.dtype == torch.float32 and got.device.type == "cuda"
    assert rel_err(got.cpu(), expected) < 3e-2
    assert state.vk.dtype == torch.float32 and state.tconv_frame.dtype == torch.bfloat16
    assert torch.isfinite(streamed).all()


@pytest.mark.gpu
def test_cuda_float32_eager_path_equals_cpu_float32(pair):
    """The CUDA eager path (Triton kernels, gate folds, in-place residual GEMMs, the q / k norms applied inside the
    attention kernels) computes the same function as the CPU reference path, to float32 precision."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False   # true fp32 products
    try:
        gpu, (latents, t, caption, mask), expected = cpu_and_cuda_models(pair, torch.float32)
        with torch.no_grad():
            got = gpu(latents, t, gpu.encode_text(caption, mask))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert rel_err(got.cpu(), expected) <= 1e-5
