"""Text encoder: official prompt handling on the tiny random Gemma-2, checked by hand and against diffusers."""

from __future__ import annotations

import json
import types
import warnings

import pytest
import torch

from core.text_encoder import (
    DEFAULT_CHI_VARIANT,
    DEFAULT_NEGATIVE_PROMPT,
    IMAGE_CHI,
    MAX_TEXT_TOKENS,
    VIDEO_CHI,
    PromptTruncatedWarning,
    TextEncoder,
    motion_suffix,
    write_tiny_text_encoder,
)

HIDDEN = 24


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_gemma")
    te_dir, tok_dir = root / "text_encoder", root / "tokenizer"
    write_tiny_text_encoder(te_dir, tok_dir, hidden_size=HIDDEN, seed=3)
    return te_dir, tok_dir


@pytest.fixture(scope="module")
def encoder(tiny_dirs):
    return TextEncoder.from_pretrained(*tiny_dirs, device="cpu")


def _count_forwards(model):
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_tiny_writer_uses_the_hf_layout(tiny_dirs, encoder):
    te_dir, tok_dir = tiny_dirs
    assert (te_dir / "config.json").is_file() and (te_dir / "model.safetensors").is_file()
    assert (tok_dir / "tokenizer.json").is_file() and (tok_dir / "tokenizer_config.json").is_file()
    config = json.loads((te_dir / "config.json").read_text())
    assert config["model_type"] == "gemma2" and config["hidden_size"] == HIDDEN
    assert not list(te_dir.parent.glob(".*"))  # no scratch folders or temp files left behind
    from transformers import Gemma2Model

    assert isinstance(encoder.model, Gemma2Model)
    assert encoder.model.config._attn_implementation == "eager"  # soft-capping needs eager attention
    assert encoder.dtype == torch.float32 and encoder.hidden_size == HIDDEN
    # Gemma's special-token layout: BOS prepended, no EOS
    ids = encoder.tokenizer.encode("a cat")
    assert ids[0] == encoder.tokenizer.bos_token_id == 2 and encoder.tokenizer.pad_token_id == 0
    assert ids[-1] != encoder.tokenizer.eos_token_id


def test_tiny_writer_is_deterministic(tmp_path, tiny_dirs):
    write_tiny_text_encoder(tmp_path / "te", tmp_path / "tok", hidden_size=HIDDEN, seed=3)
    assert (tmp_path / "te" / "model.safetensors").read_bytes() == (tiny_dirs[0] / "model.safetensors").read_bytes()


def test_chi_defaults_and_motion_suffix(encoder):
    assert DEFAULT_CHI_VARIANT == "image"
    assert len(IMAGE_CHI) == len(VIDEO_CHI) == 8
    assert "suitable for image generation" in IMAGE_CHI[0] and "suitable for video generation" in VIDEO_CHI[0]
    assert IMAGE_CHI[-1] == VIDEO_CHI[-1] == "User Prompt: "
    assert encoder.chi_text == "\n".join(IMAGE_CHI)
    assert motion_suffix(30) == " motion score: 30."
    assert motion_suffix(10.7) == " motion score: 10."
    assert encoder.positive_text("  A cat sleeping ", motion_score=30) == (
        "\n".join(IMAGE_CHI) + "A cat sleeping motion score: 30."
    )
    n_chi = len(encoder.tokenizer.encode("\n".join(IMAGE_CHI)))
    assert encoder.positive_max_length == n_chi + MAX_TEXT_TOKENS - 2


def test_selection_equals_doing_it_by_hand(encoder):
    prompts = ["A red fox runs through fresh snow.", "Waves crash against dark cliffs at night"]
    out = encoder.encode(prompts, motion_score=30)
    assert out.embeds.shape == (2, MAX_TEXT_TOKENS, HIDDEN) and out.mask.shape == (2, MAX_TEXT_TOKENS)
    assert out.mask.dtype == torch.bool and out.truncated == [False, False]

    tok, model = encoder.tokenizer, encoder.model
    chi = "\n".join(IMAGE_CHI)
    texts = [chi + p + " motion score: 30." for p in prompts]
    max_len = len(tok.encode(chi)) + 300 - 2
    batch = tok(texts, max_length=max_len, padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    index = [0] + list(range(max_len - 299, max_len))  # BOS + the last 299 positions
    torch.testing.assert_close(out.embeds, hidden[:, index], rtol=0, atol=0)
    assert torch.equal(out.mask, batch.attention_mask[:, index].bool())
    # the prompt tokens (and the motion suffix) are inside the kept window
    assert out.mask[:, 0].all() and out.mask.sum(1).tolist() == [
        1 + int(batch.attention_mask[i, index[1:]].sum()) for i in range(2)
    ]


def test_matches_diffusers_encode_prompt(tiny_dirs):
    """diffusers SanaVideoPipeline.encode_prompt (video CHI, lowercasing) on the same tiny Gemma."""
    from diffusers import SanaVideoPipeline

    enc = TextEncoder.from_pretrained(*tiny_dirs, device="cpu", chi="video", lowercase=True)
    pipe = types.SimpleNamespace(tokenizer=enc.tokenizer, text_encoder=enc.model, _execution_device="cpu")
    pipe._text_preprocessing = lambda text, clean_caption=False: SanaVideoPipeline._text_preprocessing(
        pipe, text, clean_caption
    )
    pipe._get_gemma_prompt_embeds = lambda **kw: SanaVideoPipeline._get_gemma_prompt_embeds(pipe, **kw)
    prompt = "A Small Robot walks down a neon city street"
    with torch.no_grad():
        p_emb, p_mask, n_emb, n_mask = SanaVideoPipeline.encode_prompt(
            pipe, prompt + " motion score: 30.", do_classifier_free_guidance=True,
            negative_prompt=DEFAULT_NEGATIVE_PROMPT, device=torch.device("cpu"),
            complex_human_instruction=list(VIDEO_CHI),
        )
    ours = enc.encode([prompt], motion_score=30)
    neg = enc.encode_negative()
    torch.testing.assert_close(ours.embeds, p_emb, rtol=0, atol=0)
    assert torch.equal(ours.mask, p_mask.bool())
    torch.testing.assert_close(neg.embeds, n_emb, rtol=0, atol=0)
    assert torch.equal(neg.mask, n_mask.bool())


def test_cache_hit_returns_identical_tensors_without_rerunning(tiny_dirs):
    enc = TextEncoder.from_pretrained(*tiny_dirs, device="cpu", cache_size=2)
    calls, handle = _count_forwards(enc.model)
    try:
        first = enc.encode(["A cat sleeping"])
        assert len(calls) == 1
        again = enc.encode(["A cat sleeping"])
        assert len(calls) == 1  # no new forward pass
        assert torch.equal(again.embeds, first.embeds) and torch.equal(again.mask, first.mask)
        # a different motion score is a different text -> a miss
        enc.encode(["A cat sleeping"], motion_score=30)
        assert len(calls) == 2
        # mixed batch: only the new prompt runs, the cached one is reused in place
        mixed = enc.encode(["A new prompt here", "A cat sleeping"])
        assert len(calls) == 3
        assert torch.equal(mixed.embeds[1:], first.embeds)
        # LRU with room for 2: "A cat sleeping" (ms 10) was used last, "ms 30" was evicted
        enc.encode(["A cat sleeping"], motion_score=30)
        assert len(calls) == 4
    finally:
        handle.remove()


def test_truncation_warns_and_is_reported(encoder):
    long_prompt = " ".join(["the red fox runs through fresh snow"] * 60)  # ~420 words
    with pytest.warns(PromptTruncatedWarning, match="cut off"):
        out = encoder.encode([long_prompt, "A cat sleeping"])
    assert out.truncated == [True, False]
    assert out.mask.all(dim=1).tolist() == [True, False]  # the long one fills the whole window
    with pytest.warns(PromptTruncatedWarning):  # a cache hit still reports it
        again = encoder.encode([long_prompt])
    assert again.truncated == [True]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        assert encoder.encode(["A short prompt"]).truncated == [False]


def test_negative_prompt_shape_and_no_selection(encoder):
    neg = encoder.encode_negative()
    assert neg.embeds.shape == (1, MAX_TEXT_TOKENS, HIDDEN) and neg.mask.shape == (1, MAX_TEXT_TOKENS)
    assert neg.truncated == [False] and neg.texts == [DEFAULT_NEGATIVE_PROMPT]
    tok = encoder.tokenizer
    batch = tok([DEFAULT_NEGATIVE_PROMPT], max_length=300, padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    torch.testing.assert_close(neg.embeds, hidden, rtol=0, atol=0)
    assert int(neg.mask.sum()) == len(tok.encode(DEFAULT_NEGATIVE_PROMPT))  # BOS + tokens, left-aligned
    assert neg.mask[0, : int(neg.mask.sum())].all()


def test_offload_after_encode_moves_the_encoder_to_cpu(tiny_dirs, monkeypatch):
    enc = TextEncoder.from_pretrained(*tiny_dirs, device="cpu", offload_after_encode=True)
    moves = []
    real_to = enc.model.to
    monkeypatch.setattr(enc.model, "to", lambda *a, **k: (moves.append((a, k)), real_to(*a, **k))[1])
    enc.encode(["A cat sleeping"])
    assert moves and moves[-1][0] == ("cpu",)


def test_missing_folder_is_a_checkpoint_error(tmp_path):
    from core.errors import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        TextEncoder.from_pretrained(tmp_path / "nope", tmp_path / "nope", device="cpu")


def test_loads_a_causal_lm_checkpoint_and_rejects_missing_tensors(tmp_path, tiny_dirs):
    """The official Efficient-Large-Model/gemma-2-2b-it repo is a Gemma2ForCausalLM ("model." keys): only the
    decoder is taken. A checkpoint with a tensor missing is refused instead of being filled with random values."""
    from safetensors.torch import load_file, save_file
    from transformers import Gemma2ForCausalLM

    from core.errors import CheckpointError
    from core.text_encoder import build_tiny_tokenizer, tiny_gemma_config

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    causal = Gemma2ForCausalLM(tiny_gemma_config(HIDDEN, len(tok), num_layers=1))
    causal.save_pretrained(tmp_path / "causal")
    enc = TextEncoder.from_pretrained(tmp_path / "causal", tiny_dirs[1], device="cpu")
    assert torch.equal(enc.model.layers[0].mlp.down_proj.weight, causal.model.layers[0].mlp.down_proj.weight)

    weights = load_file(tmp_path / "causal" / "model.safetensors")
    del weights["model.layers.0.mlp.down_proj.weight"]
    save_file(weights, tmp_path / "causal" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="down_proj"):
        TextEncoder.from_pretrained(tmp_path / "causal", tiny_dirs[1], device="cpu")
