"""One job at a time on a worker QThread, with a visible queue (anki's serial executor, shotcut's JobQueue).

A job is a generator function `run(cancel) -> Iterator[core.events.Event]` that knows nothing about Qt (napari's
GeneratorWorker idea). The worker thread drains it, turns uint8 previews into QImages (legal off the GUI thread) and
forwards every event through a queued signal. Cancellation sets the job's CancelToken directly: a queued slot would
never run while the worker is busy inside the engine."""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Qt, QThread, Signal

from app.imaging import qimage_from_rgb, qimages_from_frames
from core.errors import StudioError
from core.events import BlockPreviewEvent, Cancelled, CancelToken, ErrorEvent, Event, FinishedEvent, StepEvent

log = logging.getLogger(__name__)

THUMB_MAX_WIDTH = 224
PLAYER_MAX_WIDTH = 512       # player frames are kept downscaled in RAM: ~0.4 MB a frame at 480p
PREVIEW_MIN_INTERVAL_S = 0.04  # step previews are converted at most ~25 times a second

_job_ids = itertools.count(1)


@dataclass
class Job:
    title: str
    run: Callable[[CancelToken], Iterator[Event]]
    kind: str = "generate"
    context: dict = field(default_factory=dict)   # what the window needs to interpret the events (e.g. first block)
    cancel_token: CancelToken = field(default_factory=CancelToken)
    job_id: int = field(default_factory=lambda: next(_job_ids))


class JobThread(QThread):
    """Runs one job. Signals are emitted from this thread and delivered queued to GUI-thread receivers."""

    event_ready = Signal(object, object, object)  # (job, event, payload): payload is a QImage, list[QImage] or None
    failed = Signal(object, str, str)             # (job, readable message, traceback text or "")
    done = Signal(object)                         # (this thread): emitted last, after every event

    def __init__(self, job: Job, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.job = job
        self.cancelled = False
        self.error: str | None = None

    def run(self) -> None:  # worker thread
        try:
            self._drain()
        finally:
            self.done.emit(self)

    def _drain(self) -> None:
        last_preview = 0.0
        job = self.job
        try:
            for event in self.job.run(self.job.cancel_token):
                payload = None
                if isinstance(event, StepEvent) and event.preview is not None:
                    now = time.monotonic()
                    if now - last_preview >= PREVIEW_MIN_INTERVAL_S or event.step == event.num_steps:
                        payload = qimage_from_rgb(event.preview, THUMB_MAX_WIDTH)
                        last_preview = now
                elif isinstance(event, BlockPreviewEvent):
                    payload = qimages_from_frames(event.frames, PLAYER_MAX_WIDTH)
                elif isinstance(event, ErrorEvent):
                    self.error = event.message
                    self.failed.emit(job, event.message, "")
                    return
                elif isinstance(event, FinishedEvent) and event.cancelled:
                    self.cancelled = True
                self.event_ready.emit(job, event, payload)
            if self.job.cancel_token.cancelled:
                self.cancelled = True
        except Cancelled:
            self.cancelled = True
        except StudioError as exc:
            self.error = str(exc)
            self.failed.emit(job, str(exc), "")
        except MemoryError:
            self.error = "Out of memory. Try a lower resolution, a shorter video or the low-VRAM mode in Settings."
            self.failed.emit(job, self.error, traceback.format_exc())
        except Exception as exc:  # noqa: BLE001 - every failure must reach the user as a dialog
            tb = traceback.format_exc()
            log.error("job %r failed:\n%s", self.job.title, tb)
            self.error = f"Unexpected error: {type(exc).__name__}: {exc}"
            self.failed.emit(job, self.error, tb)


class JobQueue(QObject):
    """Serial queue of jobs. All methods are called on the GUI thread."""

    queue_changed = Signal()
    job_started = Signal(object)                  # Job
    job_event = Signal(object, object, object)    # (Job, event, payload)
    job_failed = Signal(object, str, str)         # (Job, message, traceback)
    job_finished = Signal(object, bool)           # (Job, cancelled); also after a failure

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pending: list[Job] = []
        self._thread: JobThread | None = None
        self._accepting = True

    @property
    def current(self) -> Job | None:
        return self._thread.job if self._thread is not None else None

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def submit(self, job: Job) -> bool:
        if not self._accepting:
            return False
        self.pending.append(job)
        self.queue_changed.emit()
        self._start_next()
        return True

    def cancel_current(self) -> None:
        if self._thread is not None:
            self._thread.job.cancel_token.cancel()

    def remove_pending(self, job_id: int) -> None:
        self.pending = [j for j in self.pending if j.job_id != job_id]
        self.queue_changed.emit()

    def cancel_all(self) -> None:
        self.pending.clear()
        self.cancel_current()
        self.queue_changed.emit()

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel everything and wait for the running job to stop (closing the window). True if it stopped."""
        self._accepting = False
        self.cancel_all()
        thread = self._thread
        if thread is None:
            return True
        stopped = thread.wait(timeout_ms)
        if stopped:
            self._on_thread_finished(thread)
        return stopped

    def _start_next(self) -> None:
        if self._thread is not None or not self.pending:
            return
        job = self.pending.pop(0)
        thread = JobThread(job, self)
        queued = Qt.ConnectionType.QueuedConnection  # explicit: delivered on the GUI thread, in emission order
        thread.event_ready.connect(self.job_event, queued)
        thread.failed.connect(self.job_failed, queued)
        thread.done.connect(self._on_thread_finished, queued)
        self._thread = thread
        self.job_started.emit(job)
        self.queue_changed.emit()
        thread.start()

    def _on_thread_finished(self, thread: JobThread) -> None:
        if self._thread is not thread:
            return  # already handled (shutdown waited for it)
        thread.wait()  # `done` is emitted at the very end of run(); this returns at once
        self._thread = None
        thread.deleteLater()
        self.job_finished.emit(thread.job, thread.cancelled)
        self.queue_changed.emit()
        if self._accepting:
            self._start_next()
