"""CUDA-graph replay of SanaVideoTransformer.forward, for the engine's denoising steps.

Why: the eager forward enqueues ~825 kernels from Python, about 45 ms of CPU time for ~95 ms of GPU work per 480p
LongSANA block on an H100. The engine synchronises after every step (the step preview goes to the CPU), so every
forward starts on an idle GPU that then waits for Python until the queue has filled. Interleaved on one GPU
(bench/gaps.py), that start costs ~1.7 ms per forward; a replayed graph launches the whole forward at once.

How: one graph per input signature (shapes and dtypes, text length, whether there is a state and a previous frame).
What changes between calls of one signature lives in buffers that the graph reads: latents, timestep, the RoPE tables
(frame_offset), the text context and the stream state. They are copied in before each replay: the text and the state
only when another object, or the same one changed in place (tensor version counters), is passed. The first call of a
signature runs eagerly on the buffers (the warm-up that compiles Triton kernels and sets up cuBLAS; its output is that
call's result), then captures. A capture that fails (an op that synchronises, say) leaves that signature eager. The
graphs share one memory pool: they never run concurrently and each replay's output is copied out at once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from core.model.state import StreamState
from core.model.transformer import SanaVideoTransformer, TextContext

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class _Source:
    """What a buffer was last loaded from: the object (kept alive, so that no other object can take its id) and its
    tensors' version counters (bumped by in-place changes)."""

    obj: Any
    versions: tuple[int, ...]

    @classmethod
    def of(cls, obj: Any, tensors: list[torch.Tensor]) -> _Source:
        return cls(obj, tuple(t._version for t in tensors))

    def same(self, other: _Source | None) -> bool:
        return other is not None and self.obj is other.obj and self.versions == other.versions


def _text_tensors(text: TextContext) -> list[torch.Tensor]:
    return [text.caption, text.mask, text.bias, *text.keys, *text.values]


def _state_tensors(state: StreamState) -> list[torch.Tensor]:
    return [state.vk, state.k_sum] + ([] if state.tconv_frame is None else [state.tconv_frame])


def _spec(t: torch.Tensor) -> tuple:
    return tuple(t.shape), t.dtype


def _signature(latents: torch.Tensor, timestep: torch.Tensor, text: TextContext, state: StreamState | None) -> tuple:
    text_sig = (tuple(_spec(t) for t in _text_tensors(text)), text.lengths)
    state_sig = None if state is None else tuple(_spec(t) for t in _state_tensors(state))
    return _spec(latents), _spec(timestep), text_sig, state_sig


def _buffer_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


@dataclass
class _Entry:
    """The fixed input buffers of one signature and, once captured, its graph and output buffer."""

    latents: torch.Tensor
    timestep: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    text: TextContext
    state: StreamState | None
    graph: torch.cuda.CUDAGraph | None = None
    output: torch.Tensor | None = None
    eager: bool = False                      # capture failed: this signature runs eagerly (on the buffers)
    text_source: _Source | None = None
    state_source: _Source | None = None
    rope_key: tuple | None = field(default=None)

    @classmethod
    def like(cls, latents, timestep, cos, sin, text: TextContext, state: StreamState | None) -> _Entry:
        static_text = TextContext(*(_buffer_like(t) for t in (text.caption, text.mask, text.bias)),
                                  tuple(_buffer_like(k) for k in text.keys),
                                  tuple(_buffer_like(v) for v in text.values), text.lengths)
        static_state = None
        if state is not None:
            frame = None if state.tconv_frame is None else _buffer_like(state.tconv_frame)
            static_state = StreamState(_buffer_like(state.vk), _buffer_like(state.k_sum), frame)
        return cls(_buffer_like(latents), _buffer_like(timestep), _buffer_like(cos), _buffer_like(sin), static_text,
                   static_state)

    def load(self, latents, timestep, cos, sin, rope_key, text: TextContext, state: StreamState | None) -> None:
        self.latents.copy_(latents)
        self.timestep.copy_(timestep)
        if rope_key != self.rope_key:
            self.cos.copy_(cos)
            self.sin.copy_(sin)
            self.rope_key = rope_key
        tensors = _text_tensors(text)
        source = _Source.of(text, tensors)
        if not source.same(self.text_source):
            for dst, src in zip(_text_tensors(self.text), tensors):
                dst.copy_(src)
            self.text_source = source
        if state is not None:
            tensors = _state_tensors(state)
            source = _Source.of(state, tensors)
            if not source.same(self.state_source):
                for dst, src in zip(_state_tensors(self.state), tensors):
                    dst.copy_(src)
                self.state_source = source


class GraphedForward:
    """`model(latents, timestep, text, state, frame_offset)` with each input signature's forward replayed from a
    CUDA graph (module docstring). Same arguments and result as the model's forward; falls back to it on the CPU and
    with autograd on. Inputs must not be changed while a call runs (nothing here runs concurrently with them).

    max_graphs: signatures kept (least recently used dropped); each holds its buffers and its graph's activations."""

    def __init__(self, model: SanaVideoTransformer, max_graphs: int = 2) -> None:
        self.model = model
        self.max_graphs = max(1, int(max_graphs))
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._pool = None
        self.captures = 0          # graphs captured so far (tests, benchmarks)
        self.replays = 0

    def clear(self) -> None:
        """Drop every graph and buffer (frees their memory)."""
        self._entries.clear()
        self._pool = None

    def __call__(self, latents: torch.Tensor, timestep, text: TextContext, state: StreamState | None = None,
                 frame_offset: int = 0) -> torch.Tensor:
        if latents.device.type != "cuda" or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.model(latents, timestep, text, state, frame_offset)
        model = self.model
        t = torch.as_tensor(timestep, device=latents.device)
        cos, sin = model.rope_tables(latents.shape, frame_offset, latents.device)   # also validates the offset
        key = _signature(latents, t, text, state)
        rope_key = (tuple(latents.shape), frame_offset)
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry.like(latents, t, cos, sin, text, state)
            entry.load(latents, t, cos, sin, rope_key, text, state)
            result = self._warm_up_and_capture(entry)     # raises on bad input: then nothing is kept
            self._entries[key] = entry
            while len(self._entries) > self.max_graphs:
                self._entries.popitem(last=False)
            return result
        self._entries.move_to_end(key)
        entry.load(latents, t, cos, sin, rope_key, text, state)
        if entry.eager:
            return self._run(entry)
        entry.graph.replay()
        self.replays += 1
        return entry.output.clone()

    def _run(self, entry: _Entry) -> torch.Tensor:
        # the graph's computation, eagerly: the model reads only the buffers (frame_offset is not read with rope)
        return self.model(entry.latents, entry.timestep, entry.text, entry.state, 0, rope=(entry.cos, entry.sin))

    def _warm_up_and_capture(self, entry: _Entry) -> torch.Tensor:
        device = entry.latents.device
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            result = self._run(entry)            # this call's result; compiles and sets up what capture cannot
        current.wait_stream(side)
        result.record_stream(current)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self._pool):
                output = self._run(entry)
        except Exception as exc:  # noqa: BLE001 - any op that cannot be captured: this signature stays eager
            log.warning("CUDA graph capture failed (%s: %s); this input shape runs eagerly", type(exc).__name__, exc)
            torch.cuda.synchronize(device)
            entry.eager = True
            return result
        entry.graph, entry.output = graph, output
        self._pool = graph.pool()
        self.captures += 1
        return result
