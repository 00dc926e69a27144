"""The edited prompt timeline and its undoable edits (one QUndoCommand per kind of edit, shotcut style).

Widgets never change clips directly: they push a command onto the document's QUndoStack, so every edit can be undone.
Durations snap to whole LongSANA blocks (2.5 s = 10 latent frames = 40 video frames at 16 fps)."""

from __future__ import annotations

import copy
import math

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from core.errors import TimelineError
from core.timeline import BLOCK_LATENT_FRAMES, FPS, LATENT_STRIDE_T, MAX_SECONDS, Clip, Timeline

BLOCK_SECONDS = BLOCK_LATENT_FRAMES * LATENT_STRIDE_T / FPS  # 2.5 s
DEFAULT_CLIP_SECONDS = 2 * BLOCK_SECONDS


def snap_seconds(seconds: float) -> float:
    """Round to whole blocks, at least one block."""
    if not math.isfinite(seconds):
        return BLOCK_SECONDS
    return max(1, round(seconds / BLOCK_SECONDS)) * BLOCK_SECONDS


class TimelineDocument(QObject):
    """A list of core.timeline.Clip plus the undo stack that edits it."""

    changed = Signal()

    def __init__(self, clips: list[Clip] | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._clips: list[Clip] = [copy.copy(c) for c in (clips or [])]
        self.motion_score = 10
        self.undo_stack = QUndoStack(self)

    # ---- read ----
    @property
    def clips(self) -> list[Clip]:
        return [copy.copy(c) for c in self._clips]

    def clip(self, index: int) -> Clip:
        return copy.copy(self._clips[index])

    def __len__(self) -> int:
        return len(self._clips)

    @property
    def total_seconds(self) -> float:
        return float(sum(c.seconds for c in self._clips))

    def to_timeline(self) -> Timeline:
        """A validated core Timeline; raises TimelineError (empty prompt, zero length, ...)."""
        return Timeline([copy.copy(c) for c in self._clips], self.motion_score).validate()

    # ---- edits (all undoable) ----
    def move_clip(self, src: int, dst: int) -> None:
        if src != dst and 0 <= src < len(self._clips) and 0 <= dst < len(self._clips):
            self.undo_stack.push(_MoveClip(self, src, dst))

    def resize_clip(self, index: int, seconds: float) -> None:
        seconds = snap_seconds(seconds)
        if seconds != self._clips[index].seconds:
            self._check_total(self.total_seconds - self._clips[index].seconds + seconds)
            self.undo_stack.push(_ReplaceClip(self, index, Clip(self._clips[index].prompt, seconds,
                                                                 self._clips[index].seed), "Resize clip"))

    def set_prompt(self, index: int, prompt: str) -> None:
        prompt = prompt.strip()
        if not prompt:
            raise TimelineError(f"clip {index + 1}: the prompt is empty")
        if prompt != self._clips[index].prompt:
            old = self._clips[index]
            self.undo_stack.push(_ReplaceClip(self, index, Clip(prompt, old.seconds, old.seed), "Edit prompt"))

    def set_seed(self, index: int, seed: int | None) -> None:
        if seed is not None and seed < 0:
            raise TimelineError(f"clip {index + 1}: seed must be a non-negative integer, got {seed}")
        if seed != self._clips[index].seed:
            old = self._clips[index]
            self.undo_stack.push(_ReplaceClip(self, index, Clip(old.prompt, old.seconds, seed), "Set seed"))

    def insert_clip(self, index: int, clip: Clip) -> None:
        if not clip.prompt.strip():
            raise TimelineError("the new clip's prompt is empty")
        clip = Clip(clip.prompt.strip(), snap_seconds(clip.seconds), clip.seed)
        self._check_total(self.total_seconds + clip.seconds)
        index = max(0, min(index, len(self._clips)))
        self.undo_stack.push(_InsertClip(self, index, clip))

    def remove_clip(self, index: int) -> None:
        if 0 <= index < len(self._clips):
            self.undo_stack.push(_RemoveClip(self, index))

    def replace_all(self, timeline: Timeline, text: str = "Load timeline") -> None:
        """Replace every clip (dropping or opening a timeline JSON); the timeline must already be valid."""
        timeline.validate()
        self.undo_stack.push(_ReplaceAll(self, [copy.copy(c) for c in timeline.clips], timeline.motion_score, text))

    def reset(self, timeline: Timeline | None) -> None:
        """Start over (new / opened project): not undoable, clears the undo history."""
        self.undo_stack.clear()
        self._clips = [copy.copy(c) for c in timeline.clips] if timeline else []
        self.motion_score = timeline.motion_score if timeline else 10
        self.changed.emit()

    @staticmethod
    def _check_total(total: float) -> None:
        if total > MAX_SECONDS:
            raise TimelineError(f"the timeline would be {total:.1f} s long; the model covers at most {MAX_SECONDS:.0f} s")

    # ---- used by the commands ----
    def _set_clips(self, clips: list[Clip]) -> None:
        self._clips = clips
        self.changed.emit()


class _Command(QUndoCommand):
    def __init__(self, doc: TimelineDocument, text: str) -> None:
        super().__init__(text)
        self.doc = doc


class _MoveClip(_Command):
    def __init__(self, doc: TimelineDocument, src: int, dst: int) -> None:
        super().__init__(doc, "Move clip")
        self.src, self.dst = src, dst

    def redo(self) -> None:
        clips = self.doc._clips[:]
        clips.insert(self.dst, clips.pop(self.src))
        self.doc._set_clips(clips)

    def undo(self) -> None:
        clips = self.doc._clips[:]
        clips.insert(self.src, clips.pop(self.dst))
        self.doc._set_clips(clips)


class _ReplaceClip(_Command):
    def __init__(self, doc: TimelineDocument, index: int, new: Clip, text: str) -> None:
        super().__init__(doc, text)
        self.index, self.new, self.old = index, new, copy.copy(doc._clips[index])

    def _put(self, clip: Clip) -> None:
        clips = self.doc._clips[:]
        clips[self.index] = copy.copy(clip)
        self.doc._set_clips(clips)

    def redo(self) -> None:
        self._put(self.new)

    def undo(self) -> None:
        self._put(self.old)


class _InsertClip(_Command):
    def __init__(self, doc: TimelineDocument, index: int, clip: Clip) -> None:
        super().__init__(doc, "Add clip")
        self.index, self.new = index, clip

    def redo(self) -> None:
        clips = self.doc._clips[:]
        clips.insert(self.index, copy.copy(self.new))
        self.doc._set_clips(clips)

    def undo(self) -> None:
        clips = self.doc._clips[:]
        del clips[self.index]
        self.doc._set_clips(clips)


class _RemoveClip(_Command):
    def __init__(self, doc: TimelineDocument, index: int) -> None:
        super().__init__(doc, "Remove clip")
        self.index, self.old = index, copy.copy(doc._clips[index])

    def redo(self) -> None:
        clips = self.doc._clips[:]
        del clips[self.index]
        self.doc._set_clips(clips)

    def undo(self) -> None:
        clips = self.doc._clips[:]
        clips.insert(self.index, copy.copy(self.old))
        self.doc._set_clips(clips)


class _ReplaceAll(_Command):
    def __init__(self, doc: TimelineDocument, clips: list[Clip], motion_score: int, text: str) -> None:
        super().__init__(doc, text)
        self.new, self.new_motion = clips, motion_score
        self.old, self.old_motion = [copy.copy(c) for c in doc._clips], doc.motion_score

    def redo(self) -> None:
        self.doc.motion_score = self.new_motion
        self.doc._set_clips([copy.copy(c) for c in self.new])

    def undo(self) -> None:
        self.doc.motion_score = self.old_motion
        self.doc._set_clips([copy.copy(c) for c in self.old])
