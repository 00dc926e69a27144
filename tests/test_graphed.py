"""CUDA-graph replay of the forward (core/model/graphed.py): equals the eager forward call for call, captures one
graph per input signature, and reloads what changes between calls (latents, timestep, RoPE offset, text, stream
state, including in-place changes)."""

from __future__ import annotations

import pytest
import torch
from blockcausal_reference import randomize_parameters_

from core.config import tiny_config
from core.model import SanaVideoTransformer, StreamState
from core.model.graphed import GraphedForward

CFG = tiny_config()
SIZE = 8


def _model(device: str, dtype: torch.dtype) -> SanaVideoTransformer:
    model = SanaVideoTransformer(CFG).eval().requires_grad_(False)
    randomize_parameters_(model, 0)
    return model.to(device=device, dtype=dtype)


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


def _text(model: SanaVideoTransformer, seed: int, batch: int = 1, tokens: int = 6, valid: int = 4):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    mask[:, valid:] = False                                  # trailing padding, as real prompts have
    return model.encode_text(_randn(gen, batch, tokens, CFG.caption_channels), mask)


def _latents(seed: int, frames: int = 2, batch: int = 1, device: str = "cpu", dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return _randn(gen, batch, CFG.in_channels, frames, SIZE, SIZE).to(device=device, dtype=dtype)


def _state(model: SanaVideoTransformer, text, seed: int) -> StreamState:
    """The state after one cached 3-frame block (non-empty vk, k_sum and a previous frame)."""
    clean = _latents(seed, frames=3, device=str(model.device), dtype=model.dtype)
    return model.empty_state().add(model.cache_pass(clean, text, None, frame_offset=0))


def test_cpu_and_autograd_fall_back_to_the_eager_forward():
    model = _model("cpu", torch.float32)
    graphed = GraphedForward(model)
    with torch.no_grad():
        text = _text(model, 1)
        x, t = _latents(2), torch.tensor([500.0])
        assert torch.equal(graphed(x, t, text, None, 0), model(x, t, text, None, 0))
    assert graphed.captures == 0 and graphed.replays == 0


@pytest.mark.gpu
def test_graph_replay_equals_eager_and_reloads_changed_inputs():
    model = _model("cuda", torch.bfloat16)
    graphed = GraphedForward(model, max_graphs=2)
    with torch.no_grad():
        text_a, text_b = _text(model, 1), _text(model, 2)
        state_a, state_b = _state(model, text_a, 3), _state(model, text_b, 4)
        calls = [   # (latents seed, timestep, text, state, frame offset): one signature, everything else varies
            (10, 500.0, text_a, state_a, 3),
            (11, 250.0, text_a, state_a, 3),        # new latents and timestep
            (11, 250.0, text_b, state_a, 3),        # new text
            (11, 250.0, text_b, state_b, 3),        # new state
            (11, 250.0, text_b, state_b, 5),        # new RoPE offset
        ]
        outputs = []
        for seed, t, text, state, offset in calls:
            x = _latents(seed, device="cuda", dtype=torch.bfloat16)
            tt = torch.tensor([t], device="cuda")
            got = graphed(x, tt, text, state, offset)
            want = model(x, tt, text, state, offset)
            torch.testing.assert_close(got, want, rtol=0, atol=0)
            outputs.append(got)
        assert graphed.captures == 1 and graphed.replays == len(calls) - 1
        for k in range(1, len(outputs)):   # every change reached the graph: each output differs from the one before
            assert not torch.equal(outputs[k], outputs[k - 1]), f"call {k} did not change the output"

        # the same state object changed in place: its version counters make the graph reload it
        state_b.vk.mul_(0.5)
        got = graphed(x, tt, text_b, state_b, 5)
        torch.testing.assert_close(got, model(x, tt, text_b, state_b, 5), rtol=0, atol=0)
        assert not torch.equal(got, outputs[-1])

        # other signatures get their own graphs: no state (bidirectional), another frame count; least recently
        # used dropped beyond max_graphs
        got = graphed(x, tt, text_a, None, 0)
        torch.testing.assert_close(got, model(x, tt, text_a, None, 0), rtol=0, atol=0)
        x3 = _latents(12, frames=3, device="cuda", dtype=torch.bfloat16)
        got = graphed(x3, tt, text_a, state_a, 7)
        torch.testing.assert_close(got, model(x3, tt, text_a, state_a, 7), rtol=0, atol=0)
        assert graphed.captures == 3 and len(graphed._entries) == 2

        # another prompt length (same padded size) is another graph: how many text tokens cross-attention reads is
        # fixed in a graph; it shares the state buffers with the entries of the same state signature
        text_c = _text(model, 5, valid=5)
        got = graphed(x3, tt, text_c, state_a, 7)
        torch.testing.assert_close(got, model(x3, tt, text_c, state_a, 7), rtol=0, atol=0)
        assert graphed.captures == 4
        entries = list(graphed._entries.values())
        assert entries[0].state_buffers is entries[1].state_buffers

        # bad input: the model's clear error, and no half-made entry left behind
        with pytest.raises(ValueError, match="RoPE positions"):
            graphed(x, tt, text_a, state_a, CFG.rope_max_seq_len)
        with pytest.raises(ValueError, match="do not fit"):
            graphed(_latents(13, device="cuda", dtype=torch.bfloat16)[..., :7], tt, text_a, state_a, 0)
        assert len(graphed._entries) == 2


@pytest.mark.gpu
def test_failed_capture_runs_eagerly_and_restores_the_stream():
    """An op that cannot be captured (a host sync here) leaves that signature eager, with the same results, and the
    calling thread on its own stream."""
    model = _model("cuda", torch.bfloat16)
    graphed = GraphedForward(model)
    with torch.no_grad():
        text = _text(model, 1)
        state = _state(model, text, 3)

    def host_sync(module, args):
        args[0].sum().item()                   # not allowed while a stream is being captured

    handle = model.blocks[0].register_forward_pre_hook(host_sync)
    stream = torch.cuda.current_stream()
    try:
        with torch.no_grad():
            for seed in (1, 2):
                x = _latents(seed, device="cuda", dtype=torch.bfloat16)
                tt = torch.tensor([400.0], device="cuda")
                torch.testing.assert_close(graphed(x, tt, text, state, 3), model(x, tt, text, state, 3),
                                           rtol=0, atol=0)
                assert torch.cuda.current_stream() == stream
    finally:
        handle.remove()
    assert graphed.captures == 0 and [e.eager for e in graphed._entries.values()] == [True]


@pytest.mark.gpu
def test_inference_mode_runs_the_plain_forward():
    model = _model("cuda", torch.bfloat16)
    graphed = GraphedForward(model)
    with torch.inference_mode():
        text = _text(model, 1)
        x, tt = _latents(1, device="cuda", dtype=torch.bfloat16), torch.tensor([400.0], device="cuda")
        torch.testing.assert_close(graphed(x, tt, text, None, 0), model(x, tt, text, None, 0), rtol=0, atol=0)
    assert graphed.captures == 0 and not graphed._entries


@pytest.mark.gpu
def test_engine_with_cuda_graphs_makes_the_same_video(tmp_path, monkeypatch):
    from core.engine import Engine, GenerateRequest
    from core.events import BlockDoneEvent, CancelToken
    from core.timeline import Clip, Timeline

    monkeypatch.setenv("SANA_VIDEO_STUDIO_HOME", str(tmp_path))
    timeline = Timeline([Clip("a red ball", 2.5), Clip("a blue cube", 2.5)])

    def latents(engine):
        events = engine.generate(GenerateRequest(timeline, seed=5), CancelToken())
        return [e.latents for e in events if isinstance(e, BlockDoneEvent)]

    engine = Engine.load("demo", device="cuda")
    assert engine.cuda_graphs
    with_graphs = latents(engine)
    assert engine._graphed is not None and engine._graphed.replays > 0
    engine.cuda_graphs = False
    without = latents(engine)
    assert len(with_graphs) == len(without) == 2
    for a, b in zip(with_graphs, without):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # off when asked, with compiled blocks, and in low-VRAM mode (the graphs keep their memory)
    assert not Engine.load("demo", device="cuda", cuda_graphs=False).cuda_graphs
    assert not Engine.load("demo", device="cuda", compile=True).cuda_graphs
    engine.cuda_graphs, engine.vram_mode = True, "low"
    assert engine._denoiser() is engine.transformer


def test_engine_uses_graphs_only_on_gpus(tmp_path, monkeypatch):
    from core.engine import Engine

    monkeypatch.setenv("SANA_VIDEO_STUDIO_HOME", str(tmp_path))
    engine = Engine.load("demo", device="cpu")
    assert not engine.cuda_graphs and engine._denoiser() is engine.transformer
    engine.cuda_graphs = True                      # asked for on the CPU: still the plain forward
    assert engine._denoiser() is engine.transformer


def test_buffers_reload_only_what_changed():
    """The buffer loading that replay relies on (runs on the CPU): text and state are copied when another object or
    an in-place change comes, and left alone otherwise (no 150 MB state copy per step)."""
    from core.model.graphed import _Buffers, _Entry, _state_tensors

    model = _model("cpu", torch.float32)
    with torch.no_grad():
        text_a, text_b = _text(model, 1), _text(model, 2)
        state_a, state_b = _state(model, text_a, 3), _state(model, text_b, 4)
        x, t = _latents(5), torch.tensor([500.0])
        cos, sin = model.rope_tables(x.shape, 3, "cpu")
        entry = _Entry(x, t, cos, sin, text_a, _Buffers(_state_tensors(state_a)))
        entry.load(x, t, cos, sin, (tuple(x.shape), 3), text_a, state_a)
        assert torch.equal(entry.state.vk, state_a.vk) and torch.equal(entry.text.keys[0], text_a.keys[0])
        assert torch.equal(entry.inputs.tensors[0], x) and torch.equal(entry.rope.tensors[0], cos)
        assert torch.equal(entry.rope.tensors[1], sin)

        entry.state.vk.zero_()                    # a reload would undo this: the same inputs must not reload
        entry.text.keys[0].zero_()
        entry.load(x, t, cos, sin, (tuple(x.shape), 3), text_a, state_a)
        assert not entry.state.vk.any() and not entry.text.keys[0].any()

        state_a.vk.add_(1.0)                      # in place: reloaded
        entry.load(x, t, cos, sin, (tuple(x.shape), 3), text_a, state_a)
        assert torch.equal(entry.state.vk, state_a.vk) and not entry.text.keys[0].any()

        entry.load(x, t, cos, sin, (tuple(x.shape), 3), text_b, state_b)   # other objects: reloaded
        assert torch.equal(entry.state.vk, state_b.vk) and torch.equal(entry.text.keys[0], text_b.keys[0])
        assert torch.equal(entry.state.tconv_frame, state_b.tconv_frame)

        cos5, sin5 = model.rope_tables(x.shape, 5, "cpu")                  # another offset: new tables
        entry.load(x, t, cos5, sin5, (tuple(x.shape), 5), text_b, state_b)
        assert torch.equal(entry.rope.tensors[0], cos5) and torch.equal(entry.rope.tensors[1], sin5)
        assert not torch.equal(cos5, cos)

        entry.state.vk.zero_()                    # a new object with the same values and id-free identity: reloaded
        state_c = StreamState(state_b.vk.clone(), state_b.k_sum.clone(), state_b.tconv_frame)
        del state_b
        entry.load(x, t, cos5, sin5, (tuple(x.shape), 5), text_b, state_c)
        assert torch.equal(entry.state.vk, state_c.vk)
