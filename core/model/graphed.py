"""CUDA-graph replay of SanaVideoTransformer.forward, for the engine's denoising steps.

Why: the eager forward enqueues ~825 kernels from Python, 33-46 ms of CPU time for ~95 ms of GPU work per 480p
LongSANA block on an H100. The engine synchronises after every step (the step preview goes to the CPU), so every
forward starts on an idle GPU that then waits for Python until the queue has filled. Interleaved on one GPU
(bench/gaps.py), that start costs 0.7-1.7 ms per forward; a replayed graph launches the whole forward at once.

How: one graph per input signature (shapes and dtypes, text length, whether there is a state and a previous frame).
What changes between calls of one signature lives in buffers that the graph reads: latents, timestep, the RoPE tables
(frame_offset), the text context and the stream state. They are copied in before each replay: the text and the state
only when another object, or the same one changed in place (tensor version counters), is passed. The first call of a
signature runs eagerly on the buffers (the warm-up that compiles Triton kernels and sets up cuBLAS; its output is that
call's result), then captures on the same side stream. A capture that fails (an op that synchronises, say) leaves that
signature eager. The graphs share one memory pool: they never run concurrently and each replay's output is copied out
at once. Entries of one state signature share the state buffers.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from typing import Any

import torch

from core.model.state import StreamState
from core.model.transformer import SanaVideoTransformer, TextContext

log = logging.getLogger(__name__)


class _Source:
    """What buffers were last loaded from: a weak reference to the object (a dead one matches nothing, and no other
    object can pass for it) and its tensors' version counters (bumped by in-place changes made through PyTorch)."""

    def __init__(self, obj: Any, tensors: list[torch.Tensor]) -> None:
        self.ref = weakref.ref(obj)
        self.versions = tuple(t._version for t in tensors)

    def same(self, other: _Source | None) -> bool:
        return other is not None and self.ref() is not None and self.ref() is other.ref() \
            and self.versions == other.versions


class _Buffers:
    """Fixed tensors that a graph reads, like some input's tensors, and what they were last loaded from."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = [torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in tensors]
        self.source: _Source | None = None

    def load(self, obj: Any, tensors: list[torch.Tensor]) -> None:
        """Copies `obj`'s tensors in unless they are what was loaded last, unchanged."""
        source = _Source(obj, tensors)
        if not source.same(self.source):
            for dst, src in zip(self.tensors, tensors):
                dst.copy_(src)
        self.source = source


def _text_tensors(text: TextContext) -> list[torch.Tensor]:
    return [text.caption, text.mask, text.bias, *text.keys, *text.values]


def _state_tensors(state: StreamState) -> list[torch.Tensor]:
    return [state.vk, state.k_sum] + ([] if state.tconv_frame is None else [state.tconv_frame])


def _spec(tensors: list[torch.Tensor]) -> tuple:
    return tuple((tuple(t.shape), t.dtype) for t in tensors)


def _tracks_versions(tensors: list[torch.Tensor]) -> bool:
    # inference tensors have no version counter, so an in-place change to them could not be seen
    return not any(t.is_inference() for t in tensors)


class _Entry:
    """One signature's graph (or, when its capture failed, eager runs) over fixed input buffers. The text buffers
    are its own; the state buffers are shared by the entries of one state signature (the state is ~150 MB at 480p,
    and the entries that differ only in their prompt's length all read the same state)."""

    def __init__(self, latents: torch.Tensor, timestep: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 text: TextContext, state_buffers: _Buffers | None) -> None:
        self.inputs = _Buffers([latents, timestep])
        self.rope = _Buffers([cos, sin])
        self.rope_key: tuple | None = None
        self.text_buffers = _Buffers(_text_tensors(text))
        t = self.text_buffers.tensors
        layers = len(text.keys)
        self.text = TextContext(t[0], t[1], t[2], tuple(t[3:3 + layers]), tuple(t[3 + layers:]), text.lengths)
        self.state_buffers = state_buffers
        self.state = None
        if state_buffers is not None:
            vk, k_sum, *frame = state_buffers.tensors
            self.state = StreamState(vk, k_sum, frame[0] if frame else None)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None
        self.eager = False

    def load(self, latents, timestep, cos, sin, rope_key, text: TextContext, state: StreamState | None,
             text_tensors: list[torch.Tensor] | None = None, state_tensors: list[torch.Tensor] | None = None) -> None:
        """Copies the inputs into the buffers (text_tensors / state_tensors: the lists of _text_tensors(text) and
        _state_tensors(state), when the caller has them already)."""
        for dst, src in zip(self.inputs.tensors, (latents, timestep)):
            dst.copy_(src)
        if rope_key != self.rope_key:
            for dst, src in zip(self.rope.tensors, (cos, sin)):
                dst.copy_(src)
            self.rope_key = rope_key
        self.text_buffers.load(text, text_tensors or _text_tensors(text))
        if state is not None:
            self.state_buffers.load(state, state_tensors or _state_tensors(state))

    def run(self, model: SanaVideoTransformer) -> torch.Tensor:
        """The graph's computation, eagerly: the model reads only the buffers (frame_offset is unused with rope)."""
        latents, timestep = self.inputs.tensors
        return model(latents, timestep, self.text, self.state, 0, rope=tuple(self.rope.tensors))


class GraphedForward:
    """`model(latents, timestep, text, state, frame_offset)` with each input signature's forward replayed from a
    CUDA graph (module docstring). Same arguments and result as the model's forward; the plain forward runs on the
    CPU, with autograd or inference mode on, and under torch.compile.

    Contract: between calls, text and state are changed only by passing other objects or by in-place PyTorch ops
    (which bump version counters; writes through .data, DLPack or raw pointers are not seen), and the model's weights,
    hooks and device stay as they were at capture; `clear()` after changing any of those.
    max_graphs: signatures kept (least recently used dropped)."""

    def __init__(self, model: SanaVideoTransformer, max_graphs: int = 4) -> None:
        self.model = model
        self.max_graphs = max(1, int(max_graphs))
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._state_buffers: dict[tuple, _Buffers] = {}
        self._pool = None
        self._stream: torch.cuda.Stream | None = None
        self.captures = 0          # graphs captured so far (tests, benchmarks)
        self.replays = 0

    def clear(self) -> None:
        """Drop every graph and buffer (frees their memory; the next call of each signature captures again)."""
        self._entries.clear()
        self._state_buffers.clear()
        self._pool = None

    def __call__(self, latents: torch.Tensor, timestep, text: TextContext, state: StreamState | None = None,
                 frame_offset: int = 0) -> torch.Tensor:
        model = self.model
        text_t = _text_tensors(text)
        state_t = [] if state is None else _state_tensors(state)
        if (latents.device.type != "cuda" or torch.is_grad_enabled() or torch.is_inference_mode_enabled()
                or torch.compiler.is_compiling() or not _tracks_versions([latents, *text_t, *state_t])):
            return model(latents, timestep, text, state, frame_offset)
        t = torch.as_tensor(timestep, device=latents.device)
        cos, sin = model.rope_tables(latents.shape, frame_offset, latents.device)   # also validates the offset
        state_key = None if state is None else _spec(state_t)
        # the prompt's valid lengths decide how many text tokens cross-attention reads (a Python value in the graph)
        key = (_spec([latents, t]), _spec(text_t), text.lengths, state_key)
        rope_key = (tuple(latents.shape), frame_offset)
        entry = self._entries.get(key)
        if entry is None:
            state_buffers = None
            if state is not None:
                state_buffers = self._state_buffers.get(state_key) or _Buffers(state_t)
            entry = _Entry(latents, t, cos, sin, text, state_buffers)
            entry.load(latents, t, cos, sin, rope_key, text, state, text_t, state_t)
            result = self._warm_up_and_capture(entry)     # raises on bad input: then nothing is kept
            self._entries[key] = entry
            if state_key is not None:
                self._state_buffers[state_key] = state_buffers
            while len(self._entries) > self.max_graphs:
                self._entries.popitem(last=False)
            in_use = {id(e.state_buffers) for e in self._entries.values()}
            self._state_buffers = {k: b for k, b in self._state_buffers.items() if id(b) in in_use}
            return result
        self._entries.move_to_end(key)
        entry.load(latents, t, cos, sin, rope_key, text, state, text_t, state_t)
        if entry.eager:
            return entry.run(model)
        entry.graph.replay()
        self.replays += 1
        return entry.output.clone()

    def _warm_up_and_capture(self, entry: _Entry) -> torch.Tensor:
        """Runs the entry eagerly on a side stream (compiles Triton kernels, sets up cuBLAS on that stream; the
        result is this call's), then captures it there. The calling thread's stream is restored whatever happens."""
        device = entry.inputs.tensors[0].device
        current = torch.cuda.current_stream(device)
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        side = self._stream
        side.wait_stream(current)
        try:
            with torch.cuda.stream(side):
                result = entry.run(self.model)
        finally:
            current.wait_stream(side)            # the buffers may be freed by the caller after a failed warm-up
        result.record_stream(current)
        graph = torch.cuda.CUDAGraph()
        pool = () if self._pool is None else (self._pool,)
        torch.cuda.synchronize(device)
        try:
            with torch.cuda.stream(side):        # restored on exit, also when the capture fails
                # thread_local: another thread's CUDA calls (the GUI reading memory stats, say) cannot spoil it
                graph.capture_begin(*pool, capture_error_mode="thread_local")
                try:
                    output = entry.run(self.model)
                finally:
                    graph.capture_end()
        except Exception as exc:  # noqa: BLE001 - an op that cannot be captured: this signature stays eager
            cause = exc.__context__ or exc
            log.warning("CUDA graph capture failed (%s: %s); this input signature runs eagerly",
                        type(cause).__name__, cause)
            torch.cuda.synchronize(device)
            entry.eager = True
            self._stream = None     # a failed capture may leave the allocator routing that stream to its pool
            return result
        current.wait_stream(side)
        entry.graph, entry.output = graph, output
        self._pool = graph.pool()
        self.captures += 1
        return result
