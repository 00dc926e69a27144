"""Plain events the engine yields. The GUI and the CLI consume only these (no Qt, no callbacks into the engine).

Every event is a frozen dataclass holding plain Python values, numpy arrays or CPU tensors, so it can cross a thread
boundary as is.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StageEvent:
    """A coarse phase: 'load', 'encode_text', 'quantize', 'denoise', 'decode', 'export', ..."""
    stage: str
    detail: str = ""
    percent: float | None = None  # 0..100 when the stage can tell


@dataclass(frozen=True)
class StepEvent:
    """One denoising step of one block is done; `preview` is a cheap latent->RGB frame (H, W, 3) uint8."""
    block: int
    step: int           # 1-based step within the block
    num_steps: int
    num_blocks: int
    elapsed_s: float
    eta_s: float | None
    preview: np.ndarray | None = None


@dataclass(frozen=True)
class BlockPreviewEvent:
    """The decoded video frames of a finished block: (F, H, W, 3) uint8."""
    block: int
    frames: np.ndarray
    first_frame_index: int  # index of frames[0] in the whole video


@dataclass(frozen=True)
class BlockDoneEvent:
    """A block is final: its clean latents (C, T, H, W) fp32 CPU tensor, seed, prompt, latent frame range."""
    block: int
    num_blocks: int
    latents: Any  # torch.Tensor on CPU
    seed: int
    prompt: str
    frame_start: int  # first latent frame (absolute)
    frame_end: int    # one past the last latent frame
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FinishedEvent:
    """Generation ended normally; `output` is the written file (or None when nothing was exported)."""
    output: str | None
    num_frames: int
    seconds: float
    cancelled: bool = False


@dataclass(frozen=True)
class ErrorEvent:
    """A failure the user can read; `kind` is a short class name such as 'ModelNotFound'."""
    message: str
    kind: str = "Error"


Event = StageEvent | StepEvent | BlockPreviewEvent | BlockDoneEvent | FinishedEvent | ErrorEvent


class Cancelled(Exception):
    """Raised inside the engine when the cancel token is set; turned into FinishedEvent(cancelled=True)."""


class CancelToken:
    """Thread-safe flag checked by the engine between denoising steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()
