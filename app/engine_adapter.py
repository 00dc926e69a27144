"""The ONLY module of the GUI that calls the engine (core.engine, core.project, core.registry, quant).

Everything here runs inside worker jobs (never on the GUI thread) except the cheap queries (`info`, `is_demo`).
Methods that take time are generators of core.events, so the job runner can forward progress and the window can
treat loading, generating and exporting alike. When the engine's API moves, this file is the one to adapt."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ExportError, ModelNotFoundError, ProjectError, StudioError
from core.events import BlockDoneEvent, BlockPreviewEvent, CancelToken, Event, FinishedEvent, StageEvent
from core.export import check_mp4_target
from core.timeline import Timeline


@dataclass(frozen=True)
class Action:
    """What a generation job does: 'generate' (from scratch), 'extend' (seconds more), 'regenerate' (from block)."""
    kind: str = "generate"
    seconds: float = 0.0
    from_block: int = 0
    seed: int | None = None


def run_with_progress(fn: Callable[[Callable[..., None]], Any], stage: str) -> Generator[Event, None, Any]:
    """Run `fn(progress)` on a helper thread and yield a StageEvent per progress call (downloads, quantization).
    The progress callback accepts a StageEvent, (done, total[, name]), (fraction,) or a message string. The
    generator's return value is fn's result."""
    events: queue.Queue = queue.Queue()
    result: dict[str, Any] = {}

    def progress(*args: Any, **_kw: Any) -> None:
        if len(args) == 1 and isinstance(args[0], StageEvent):  # Engine.load reports StageEvents itself
            events.put(args[0])
            return
        # core.hub calls progress(done_bytes, total_bytes | None, file_name); a fraction or a message also works
        percent, detail = None, ""
        numbers = [a for a in args[:2] if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if len(args) >= 2 and len(numbers) == 2 and args[1]:
            percent = 100.0 * args[0] / args[1]
        elif len(args) == 1 and isinstance(args[0], float) and 0.0 <= args[0] <= 1.0:
            percent = 100.0 * args[0]
        texts = [str(a) for a in args if isinstance(a, str)]
        if texts:
            detail = texts[-1]
        if len(numbers) >= 1 and isinstance(args[0], int) and args[0] > 0:
            detail = f"{detail} {args[0] / 2**20:.0f} MiB".strip()
        events.put(StageEvent(stage, detail, percent))

    def target() -> None:
        try:
            result["value"] = fn(progress)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the job thread below
            result["error"] = exc
        finally:
            events.put(None)

    threading.Thread(target=target, name=f"{stage}-helper", daemon=True).start()
    while (item := events.get()) is not None:
        yield item
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _leave_a_core_for_the_gui() -> None:
    """On the CPU, torch's intra-op threads would take every core and starve the GUI thread."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))   # the cores this process may use (containers, taskset)
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    if cores > 1 and torch.get_num_threads() >= cores:
        torch.set_num_threads(cores - 1)


class EngineAdapter:
    def __init__(self) -> None:
        self.engine: Any = None
        self.project: Any = None
        self.model_id: str = ""
        self.precision_requested = "auto"

    # ---- cheap queries (GUI thread) ----
    @property
    def loaded(self) -> bool:
        return self.engine is not None

    @property
    def info(self) -> dict:
        return dict(getattr(self.engine, "info", {}) or {}) if self.engine is not None else {}

    @property
    def is_demo(self) -> bool:
        return bool(self.info.get("is_demo", False))

    @property
    def project_folder(self) -> Path | None:
        folder = getattr(self.project, "folder", None) or getattr(self.project, "path", None)
        return Path(folder) if folder is not None else None

    @staticmethod
    def known_models() -> list[tuple[str, str, bool, float]]:
        """(id, title, installed, approx download GB) of the registry's models; [] without a registry."""
        try:
            from core import registry
        except ImportError:
            return []
        try:
            installed = registry.installed_models()
        except Exception:  # noqa: BLE001 - a broken cache reads as "nothing installed"
            installed = {}
        return [(spec.id, spec.title, bool(installed.get(spec.id)), spec.approx_download_gb)
                for spec in registry.MODELS.values()]

    @staticmethod
    def cuda_memory() -> tuple[int, int] | None:
        """(allocated bytes, total bytes) on the current CUDA device, None without CUDA. Safe from any thread."""
        try:
            import torch
        except ImportError:
            return None
        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.memory_allocated()), int(torch.cuda.get_device_properties(0).total_memory)

    # ---- long operations (worker thread): generators of events ----
    def load(self, model: str, precision: str = "auto", vram_mode: str = "auto",
             resolution: tuple[int, int] | None = None, quant_layers: str = "default") -> Iterator[Event]:
        """Load the engine for `model` ('demo', a registry id or a local folder); Engine.load's own progress
        events are forwarded while it runs on a helper thread."""
        from core.engine import Engine

        yield StageEvent("load", f"loading {model}")
        kwargs: dict[str, Any] = {"device": "cpu" if model == "demo" else "auto", "precision": precision,
                                  "vram_mode": vram_mode}
        if resolution is not None and model != "demo":  # the demo pack has its own small size
            kwargs["resolution"] = tuple(resolution)
        transform = self._model_transform(model, precision, quant_layers)
        if transform is not None:
            kwargs["model_transform"] = transform
        engine = yield from run_with_progress(lambda progress: Engine.load(model, progress=progress, **kwargs), "load")
        if str(engine.info.get("device", "cpu")).startswith("cpu"):
            _leave_a_core_for_the_gui()
        self.engine, self.model_id, self.precision_requested = engine, model, precision
        yield StageEvent("load", "ready", 100.0)

    @staticmethod
    def _model_transform(model: str, precision: str, quant_layers: str = "default") -> Callable | None:
        """quant's first-launch step as the engine's model_transform hook (app.quant_hook, shared with the CLI), with
        the recipe named by `quant_layers`; None for bf16 / fp32, for the demo model (random weights: nothing to
        gain) or when quant is unavailable."""
        if model == "demo":
            return None
        from app.quant_hook import engine_model_transform

        return engine_model_transform(precision, quant_layers)

    def download(self, model_id: str) -> Iterator[Event]:
        from core import registry

        yield StageEvent("download", f"downloading {model_id}", 0.0)
        yield from run_with_progress(lambda progress: registry.resolve_model(model_id, download=True, progress=progress),
                                     "download")
        yield StageEvent("download", "done", 100.0)

    def _require_engine(self) -> Any:
        if self.engine is None:
            raise ModelNotFoundError("no model is loaded: pick one in Model Manager (or use the demo model)")
        return self.engine

    def generate(self, timeline: Timeline, seed: int, cancel: CancelToken, action: Action,
                 scratch_folder: Path | None = None, steps: int = 0, path_refs: list | None = None) -> Iterator[Event]:
        """Run one generation action on the open project (created in `scratch_folder` when none is open), on the
        branch of takes named by `path_refs` (the block ids the window shows)."""
        engine = self._require_engine()
        timeline.validate()
        if str(self.info.get("device", "cpu")).startswith("cpu"):
            _leave_a_core_for_the_gui()
        from core.project import Project

        if self.project is None:
            if action.kind != "generate":
                raise ProjectError(f"{action.kind} needs a generated project: press Generate first")
            if scratch_folder is None:
                raise ProjectError("no project folder to generate into")
            self.project = Project.create(scratch_folder, engine.info, timeline, seed)
        project = self.project
        project.check_model(engine.info)
        if path_refs:
            self._select_take_for_path(path_refs)
        if action.kind == "generate":
            project.set_timeline(timeline, seed)
            yield from project.generate(engine, cancel)
        elif action.kind == "extend":
            yield from project.extend(engine, cancel, action.seconds)
        elif action.kind == "regenerate":
            project.set_timeline(timeline, seed)
            yield from project.regenerate(engine, cancel, action.from_block, seed=action.seed)
        else:
            raise StudioError(f"unknown action {action.kind!r}")

    def _select_take_for_path(self, path_refs: list) -> None:
        """Make the project's current take the one whose blocks are the path the window shows."""
        refs = [str(r) for r in path_refs]
        takes = self.project.takes
        exact = [t for t in takes if list(t.blocks) == refs]
        prefix = [t for t in takes if list(t.blocks[:len(refs)]) == refs]
        chosen = (exact or prefix or [None])[-1]
        if chosen is not None and chosen.id != self.project.current_take:
            self.project.select_take(chosen.id)

    def project_takes(self) -> list[tuple[str, str]]:
        """(take id, label) of every take of the open project, for Export's take choice."""
        if self.project is None:
            return []
        return [(t.id, f"{t.name} ({len(t.blocks)} blocks, seed {t.seed})") for t in self.project.takes if t.blocks]

    def current_path_refs(self) -> list[str]:
        """Block ids of the project's current take ([] without a project)."""
        if self.project is None:
            return []
        return list(self.project.take().blocks)

    # ---- projects ----
    def open_project(self, folder: str | Path) -> tuple[Timeline, int]:
        """Open a project folder; raises ProjectError with a readable message (nothing changes on failure)."""
        from core.project import Project

        project = Project.open(folder)
        timeline, seed = project.timeline, int(project.seed)
        self.project = project
        return timeline, seed

    def close_project(self) -> None:
        self.project = None

    def project_events(self, cancel: CancelToken) -> Iterator[Event]:
        """Replay the saved blocks of every take of the open project as BlockDoneEvent (extra: block_id, and
        'known' when an earlier take already showed it) + BlockPreviewEvent, current take last, so the window can
        rebuild its thumbnails, takes and player without the engine."""
        from core.timeline import video_frames_for_latent_frames

        project = self.project
        if project is None:
            return
        current = project.take().id
        takes = [t for t in project.takes if t.id != current] + [project.take()]
        shown: set[str] = set()
        for take in takes:
            records = project.blocks(take.id)
            if not records:
                continue
            frames = project.frames(take.id)   # read in order; blocks already shown are skipped, not yielded
            for rec in records:
                cancel.raise_if_cancelled()
                n = (video_frames_for_latent_frames(rec.end) if rec.start == 0 else (rec.end - rec.start) * 4)
                block_frames = [next(frames) for _ in range(n)]
                known = rec.id in shown
                yield BlockDoneEvent(rec.index, len(records), None, rec.seed, rec.prompt, rec.start, rec.end,
                                     {"block_id": rec.id, "known": known, "stale": rec.stale,
                                      "bytes": rec.bytes})
                if not known:
                    shown.add(rec.id)
                    first = 0 if rec.start == 0 else video_frames_for_latent_frames(rec.start)
                    yield BlockPreviewEvent(rec.index, np.stack(block_frames), first)
        yield FinishedEvent(None, 0, 0.0)

    def save_project_as(self, folder: str | Path, timeline: Timeline, seed: int) -> Iterator[Event]:
        """Copy the open project (blocks, takes) to `folder`, or create an empty one there, and switch to it."""
        from core.project import Project

        folder = Path(folder)
        yield StageEvent("save", f"saving to {folder}")
        if self.project is None:
            self.project = Project.create(folder, self._require_engine().info, timeline, seed)
        else:
            if folder.resolve() != self.project.folder.resolve():
                self.project = self.project.save_as(folder)
            self.project.set_timeline(timeline, seed)
        yield FinishedEvent(output=str(folder), num_frames=0, seconds=0.0)

    def export(self, path: str | Path, crf: int, take: Any = None,
               frame_range: tuple[int, int] | None = None) -> Iterator[Event]:
        """H.264 MP4 of `take` (a project take id, the block refs the window shows, or None = the current take),
        optionally only frames [start, end). ExportError on a bad path or an encoder failure; nothing is left behind."""
        path = Path(path)
        check_mp4_target(path)   # fail before any encoding, with a message that names the problem
        if self.project is None:
            raise ExportError("nothing to export yet: generate a video first")
        if isinstance(take, str):
            self.project.select_take(take)     # a take id chosen in the Export dialog
        elif take:
            self._select_take_for_path(take)   # the blocks shown in the window
        yield StageEvent("export", f"writing {path.name}", 0.0)
        started = time.monotonic()
        if frame_range is None:
            result = self.project.export_mp4(path, crf=int(crf))
        else:
            import itertools

            from core.export import write_mp4

            frames = itertools.islice(self.project.frames(), frame_range[0], frame_range[1])
            meta = {"title": self.project.timeline.clips[0].prompt[:200], "seed": self.project.seed,
                    "model": self.project.model.get("model_id", ""), "frames": list(frame_range),
                    "software": "SANA-Video Studio"}
            if self.project.model.get("is_demo"):
                meta["label"] = "DEMO - tiny random weights: the output is noise, not a real video"
            result = write_mp4(path, frames, fps=int(self.project.model.get("fps", 16)), crf=int(crf), metadata=meta)
        yield FinishedEvent(output=str(result), num_frames=0, seconds=time.monotonic() - started)
