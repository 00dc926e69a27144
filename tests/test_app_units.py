"""Qt-light units of the app: takes tree, block snapping, the job queue (worker thread + cancel + errors), image
conversion, settings persistence and the resources package."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from app.engine_adapter import run_with_progress  # noqa: E402
from app.imaging import qimage_from_rgb, qimages_from_frames  # noqa: E402
from app.jobs import Job, JobQueue  # noqa: E402
from app.settings import AppSettings, GenerationSettings  # noqa: E402
from app.takes import TakeTree  # noqa: E402
from app.timeline_document import BLOCK_SECONDS, TimelineDocument, snap_seconds  # noqa: E402
from core.errors import TimelineError  # noqa: E402
from core.events import ErrorEvent, FinishedEvent, StageEvent, StepEvent  # noqa: E402
from core.timeline import FPS, Clip, Timeline  # noqa: E402

# ---------------------------------------------------------------- blocks and the document

def test_a_block_is_two_and_a_half_seconds_and_matches_the_core_timeline():
    assert BLOCK_SECONDS == 2.5
    for n in range(1, 6):   # n whole blocks of clips give n engine blocks
        assert len(Timeline([Clip("x", n * BLOCK_SECONDS)]).blocks()) == n
    assert int(BLOCK_SECONDS * FPS) == 40


@pytest.mark.parametrize("raw,snapped", [(0.0, 2.5), (-3, 2.5), (1.2, 2.5), (3.7, 2.5), (3.8, 5.0), (10.1, 10.0),
                                         (float("nan"), 2.5)])
def test_snap_seconds(raw, snapped):
    assert snap_seconds(raw) == snapped


def test_document_edits_are_undoable_and_validated(qtbot):
    doc = TimelineDocument([Clip("a", 2.5), Clip("b", 5.0)])
    doc.insert_clip(1, Clip("  c  ", 3.0))
    assert [(c.prompt, c.seconds) for c in doc.clips] == [("a", 2.5), ("c", 2.5), ("b", 5.0)]
    doc.remove_clip(0)
    doc.move_clip(1, 0)
    assert [c.prompt for c in doc.clips] == ["b", "c"]
    for _ in range(3):
        doc.undo_stack.undo()
    assert [c.prompt for c in doc.clips] == ["a", "b"]
    with pytest.raises(TimelineError):
        doc.insert_clip(0, Clip("   ", 2.5))
    with pytest.raises(TimelineError):
        doc.set_prompt(0, "")
    with pytest.raises(TimelineError):
        doc.resize_clip(0, 1000.0)     # longer than the model's positions cover
    assert [(c.prompt, c.seconds) for c in doc.clips] == [("a", 2.5), ("b", 5.0)]
    assert doc.undo_stack.index() == 0
    # the document hands out copies: mutating one changes nothing
    doc.clips[0].prompt = "mutated"
    assert doc.clip(0).prompt == "a"


# ---------------------------------------------------------------- takes

def test_takes_tree_branches_and_switches():
    tree = TakeTree()
    a = [tree.add(b, seed=1) for b in range(3)]          # 0-1-2
    b2 = tree.add(2, seed=2)                             # regenerate from block 2
    assert tree.path == [a[0].take_id, a[1].take_id, b2.take_id]
    c1 = tree.add(1, seed=3)                             # regenerate from block 1 ...
    c2 = tree.add(2, seed=3)                             # ... and its block 2
    assert tree.path == [a[0].take_id, c1.take_id, c2.take_id]
    assert [t.take_id for t in tree.takes_for_block(2)] == [a[2].take_id, b2.take_id, c2.take_id]
    tree.select(a[2].take_id)                            # old block-2 take: brings its ancestor a1 back
    assert tree.path == [a[0].take_id, a[1].take_id, a[2].take_id]
    tree.select(a[1].take_id)                            # follows the newest descendant of a1 (b2)
    assert tree.path == [a[0].take_id, a[1].take_id, b2.take_id]
    with pytest.raises(ValueError):
        tree.add(5)
    tree.truncate(1)
    assert tree.num_blocks == 1


def test_take_frames_follow_the_path():
    tree = TakeTree()
    t0, t1 = tree.add(0), tree.add(1)
    t0.frames, t1.frames = ["a"] * 3, ["b"] * 2
    assert tree.path_frames() == ["a", "a", "a", "b", "b"]
    assert tree.block_frame_ranges() == [(0, 3), (3, 5)]


# ---------------------------------------------------------------- images

def test_qimage_conversion_keeps_pixels_and_owns_its_buffer():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    image = qimage_from_rgb(frame)
    del frame  # the image must not point into the freed array
    rng = np.random.default_rng(0)
    expected = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    for y in range(5):
        for x in range(7):
            c = image.pixelColor(x, y)
            assert (c.red(), c.green(), c.blue()) == tuple(int(v) for v in expected[y, x])
    frames = np.zeros((3, 20, 40, 3), np.uint8)
    small = qimages_from_frames(frames, max_width=10)
    assert len(small) == 3 and small[0].width() == 10 and small[0].height() == 5
    with pytest.raises(ValueError):
        qimage_from_rgb(np.zeros((4, 4), np.uint8))


# ---------------------------------------------------------------- job queue

def _steps(n, delay, log=None):
    def run(cancel):
        yield StageEvent("denoise")
        for i in range(n):
            cancel.raise_if_cancelled()
            time.sleep(delay)
            if log is not None:
                log.append(threading.get_ident())
            yield StepEvent(0, i + 1, n, 1, 0.0, None, np.zeros((4, 4, 3), np.uint8))
        yield FinishedEvent(None, n, 0.0)
    return run


def _collect(queue):
    seen = []
    queue.job_event.connect(lambda job, ev, payload: seen.append((job.title, type(ev).__name__, payload)))
    failures = []
    queue.job_failed.connect(lambda job, msg, tb: failures.append((job.title, msg)))
    finished = []
    queue.job_finished.connect(lambda job, cancelled: finished.append((job.title, cancelled)))
    return seen, failures, finished


def test_jobs_run_one_at_a_time_off_the_gui_thread(qtbot):
    queue = JobQueue()
    seen, failures, finished = _collect(queue)
    threads = []
    queue.submit(Job("one", _steps(3, 0.01, threads)))
    queue.submit(Job("two", _steps(2, 0.01, threads)))
    assert queue.busy and [j.title for j in queue.pending] == ["two"]
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=5000)
    assert finished == [("one", False), ("two", False)]
    assert [t for t, *_ in seen] == ["one"] * 5 + ["two"] * 4     # never interleaved
    assert threading.get_ident() not in threads
    step_payloads = [p for _, kind, p in seen if kind == "StepEvent"]
    assert step_payloads[-1] is not None and step_payloads[-1].width() == 4   # previews arrive as QImages
    assert not failures


def test_cancel_stops_the_running_job_and_drops_queued_ones(qtbot):
    queue = JobQueue()
    seen, failures, finished = _collect(queue)
    queue.submit(Job("long", _steps(200, 0.01)))
    queue.submit(Job("queued", _steps(2, 0.01)))
    qtbot.waitUntil(lambda: any(kind == "StepEvent" for _, kind, _ in seen), timeout=5000)
    queue.cancel_all()
    qtbot.waitUntil(lambda: not queue.busy, timeout=5000)
    assert finished == [("long", True)]
    assert sum(kind == "StepEvent" for _, kind, _ in seen) < 20
    assert not failures


@pytest.mark.parametrize("how", ["exception", "error_event", "studio_error"])
def test_failures_reach_the_gui_as_readable_messages(qtbot, how):
    def run(cancel):
        yield StageEvent("load")
        if how == "exception":
            raise KeyError("weights.bin")
        if how == "studio_error":
            raise TimelineError("clip 2: the prompt is empty")
        yield ErrorEvent("no space left on the disk", "OSError")
        yield StageEvent("never reached")

    queue = JobQueue()
    seen, failures, finished = _collect(queue)
    queue.submit(Job("bad", run))
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    expected = {"exception": "Unexpected error: KeyError: 'weights.bin'", "studio_error": "clip 2: the prompt is empty",
                "error_event": "no space left on the disk"}[how]
    assert failures == [("bad", expected)]
    assert [kind for _, kind, _ in seen] == ["StageEvent"]


def test_shutdown_waits_for_the_running_job(qtbot):
    queue = JobQueue()
    progress = []
    queue.submit(Job("long", _steps(500, 0.01, progress)))
    qtbot.waitUntil(lambda: len(progress) > 2, timeout=5000)
    assert queue.shutdown(5000)
    n = len(progress)
    time.sleep(0.1)
    assert len(progress) == n and not queue.busy
    assert not queue.submit(Job("after", _steps(1, 0.0)))


def test_run_with_progress_forwards_progress_and_the_result():
    def work(progress):
        progress(StageEvent("load", "transformer"))
        progress(50, 200, "model.safetensors")
        progress(0.5)
        return "value"

    gen = run_with_progress(work, "download")
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert result == "value"
    assert events[0] == StageEvent("load", "transformer")
    assert events[1].percent == 25.0 and "model.safetensors" in events[1].detail
    assert events[2].percent == 50.0

    def broken(progress):
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        list(run_with_progress(broken, "download"))


# ---------------------------------------------------------------- settings and resources

def test_settings_round_trip(tmp_path):
    path = str(tmp_path / "s.ini")
    settings = AppSettings(path)
    assert settings.generation() == GenerationSettings().validate()
    settings.set_generation(GenerationSettings(model="demo", seconds=20, seed=5, steps=8, precision="nvfp4",
                                               quant_layers="all-blocks", vram_mode="low"))
    for folder in ("a", "b", "a"):
        settings.add_recent_project(str(tmp_path / folder))
    again = AppSettings(path)
    g = again.generation()
    assert (g.model, g.seconds, g.seed, g.steps, g.precision, g.quant_layers, g.vram_mode) == \
        ("demo", 20.0, 5, 8, "nvfp4", "all-blocks", "low")
    assert again.recent_projects() == [str((tmp_path / "a").resolve()), str((tmp_path / "b").resolve())]
    # garbage in the file falls back to defaults instead of crashing
    again.qsettings.setValue("generation/precision", "int3")
    again.qsettings.setValue("generation/quant_layers", "everything")
    again.qsettings.setValue("generation/seed", "not a number")
    assert again.generation().precision == "auto" and again.generation().seed == 0
    assert again.generation().quant_layers == "default"


def test_resources_are_packaged(qtbot):
    from resources import example_timelines, load_icon, load_stylesheet, resource_path

    assert "QWidget" in load_stylesheet()
    for name in ("app", "play", "pause", "generate", "cancel", "extend", "regenerate", "export"):
        assert not load_icon(name).isNull(), name
    assert load_icon("no-such-icon").isNull()
    assert len(example_timelines()) >= 2
    for path in example_timelines():
        Timeline.from_json_file(path)   # every example is a valid timeline
    with pytest.raises(FileNotFoundError):
        resource_path("../pyproject.toml")


def test_player_plays_at_16_fps_and_scrubs(qtbot):
    from PySide6.QtGui import QColor, QImage

    from app.player import PlayerWidget

    player = PlayerWidget()
    qtbot.addWidget(player)
    assert player.timer.interval() == 1000 // FPS
    frames = []
    for i in range(8):
        image = QImage(4, 4, QImage.Format.Format_RGB888)
        image.fill(QColor(i * 30, 0, 0))
        frames.append(image)
    player.set_frames(frames)
    player.slider.setValue(5)                       # scrubbing
    assert player.position == 5 and player.view.pixmap.toImage().pixelColor(0, 0).red() == 150
    player.seek(0)
    started = time.monotonic()
    player.play()
    assert player.playing
    qtbot.waitUntil(lambda: not player.playing, timeout=3000)   # stops at the last frame
    elapsed = time.monotonic() - started
    assert player.position == 7 and player.slider.value() == 7
    assert elapsed >= 7 / FPS * 0.9                 # 7 frame steps at 16 fps take ~0.44 s
    player.set_frames([])
    assert player.view.pixmap is None


def test_quantized_layer_choices_are_quant_recipes(monkeypatch):
    """The settings' 'Quantized layers' choices are quant's built-in recipe names, and the engine adapter passes the
    chosen one to quant's first-launch hook."""
    pytest.importorskip("quant.recipe")
    from app import quant_hook
    from app.engine_adapter import EngineAdapter
    from app.settings import QUANT_LAYERS
    from quant.recipe import NAMED_RECIPES

    assert set(QUANT_LAYERS) <= set(NAMED_RECIPES)
    seen = []
    monkeypatch.setattr(quant_hook, "engine_model_transform", lambda precision, recipe=None: seen.append(
        (precision, recipe)) or "hook")
    assert EngineAdapter._model_transform("longsana-480p", "fp8", "all-blocks") == "hook"
    assert EngineAdapter._model_transform("demo", "fp8", "all-blocks") is None
    assert seen == [("fp8", "all-blocks")]
