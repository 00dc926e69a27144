"""Cross-attention drops trailing text padding (and the bias once no padding is left) without changing the result."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from blockcausal_reference import randomize_parameters_

from core.config import tiny_config
from core.model import SanaVideoTransformer
from core.model.transformer import prefix_lengths


def test_prefix_lengths():
    m = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    assert prefix_lengths(m) == (2, 4, 0)
    assert prefix_lengths(torch.tensor([[1, 0, 1, 0]], dtype=torch.bool)) is None


def model_and_text(mask_rows, tokens=6):
    cfg = tiny_config()
    model = SanaVideoTransformer(cfg).double().eval()
    randomize_parameters_(model, 0)
    gen = torch.Generator().manual_seed(3)
    caption = torch.randn(len(mask_rows), tokens, cfg.caption_channels, generator=gen, dtype=torch.float64)
    mask = torch.tensor(mask_rows, dtype=torch.bool)
    with torch.no_grad():
        text = model.encode_text(caption, mask)
    latents = torch.randn(len(mask_rows), cfg.in_channels, 2, 4, 4, generator=gen, dtype=torch.float64)
    return model, text, latents


@pytest.mark.parametrize("rows, span, has_bias", [
    ([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]], 4, False),        # common padding: trimmed, no bias left
    ([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], 6, True),         # nothing to trim, the bias stays
    ([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], 4, True),         # trimmed to the longer row, bias for the shorter
    ([[1, 0, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1]], 6, True),         # not a prefix mask: untouched
    ([[0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]], 6, True),         # an empty row: untouched
])
def test_trimmed_cross_attention_equals_the_full_masked_one(rows, span, has_bias):
    model, text, latents = model_and_text(rows)
    got_span, bias = text.cross_attention_span()
    assert got_span == span and (bias is not None) == has_bias
    untrimmed = dataclasses.replace(text, lengths=None)
    assert untrimmed.cross_attention_span() == (6, untrimmed.bias)
    with torch.no_grad():
        fast = model(latents, 500.0, text)
        full = model(latents, 500.0, untrimmed)
    assert ((fast - full).norm() / full.norm()).item() < 1e-12


def test_lengths_follow_batching():
    _, text, _ = model_and_text([[1, 1, 1, 0, 0, 0]])
    assert text.for_batch(3).lengths == (3, 3, 3)
    assert type(text).cat([text, text]).lengths == (3, 3)
    assert type(text).cat([text, dataclasses.replace(text, lengths=None)]).lengths is None
