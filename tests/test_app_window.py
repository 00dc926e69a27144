"""The main window driven through its real widgets with a scripted engine (the real-engine tests are in
test_app_engine.py). The scripted engine yields the same core.events the real one does and checks the CancelToken
between steps, so these tests exercise the worker thread, the queue and every event handler."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, QPoint, Qt, QTimer, QUrl  # noqa: E402
from PySide6.QtWidgets import QLineEdit  # noqa: E402
from qt_helpers import GuiHeartbeat, wait_for_generation  # noqa: E402

from app.engine_adapter import EngineAdapter  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.timeline_document import BLOCK_SECONDS  # noqa: E402
from app.window import MainWindow  # noqa: E402
from core.errors import ProjectError  # noqa: E402
from core.events import (  # noqa: E402
    BlockDoneEvent,
    BlockPreviewEvent,
    FinishedEvent,
    StageEvent,
    StepEvent,
)
from core.timeline import Clip, Timeline  # noqa: E402

H, W, FRAMES_PER_BLOCK, STEPS = 24, 40, 4, 3


def block_colour(seed: int, block: int) -> np.ndarray:
    """What the scripted engine paints for (seed, block): distinct for different seeds."""
    rng = np.random.default_rng(seed * 1000 + block)
    return rng.integers(0, 256, size=3, dtype=np.uint8)


class ScriptedAdapter(EngineAdapter):
    """EngineAdapter whose engine is a deterministic event script (solid-colour frames per (seed, block))."""

    def __init__(self, step_s: float = 0.01) -> None:
        super().__init__()
        self.step_s = step_s
        self.steps_run = 0
        self.block_seeds: list[int] = []
        self.saved: dict = {}
        self.exported: list = []

    def load(self, model, precision="auto", vram_mode="auto", resolution=None, quant_layers="default"):
        yield StageEvent("load", model)
        self.engine = type("E", (), {"info": {"model_id": "scripted", "is_demo": True, "device": "cpu",
                                                "precision": "fp32", "height": H, "width": W, "fps": 16}})()

    def generate(self, timeline, seed, cancel, action, scratch_folder=None, steps=0, path_refs=None):
        timeline.validate()
        n = len(timeline.blocks())
        first = 0
        # resume after the takes the window shows (the path), as the project does with its current take
        kept = list(path_refs or [])[:action.from_block] if action.kind == "regenerate" else list(path_refs or [])
        self.last_path_refs = kept
        if action.kind != "generate":
            first = len(kept)
            self.block_seeds = [int(ref.split("-s")[1]) for ref in kept]
        if action.kind == "regenerate":
            seed = action.seed
        elif action.kind == "generate":
            self.block_seeds = []
        clips = timeline.block_clips()
        for block in range(first, n):
            for step in range(1, STEPS + 1):
                cancel.raise_if_cancelled()
                time.sleep(self.step_s)
                self.steps_run += 1
                preview = np.full((H, W, 3), block_colour(seed, block) // 2, np.uint8)
                yield StepEvent(block, step, STEPS, n, 0.0, None, preview)
            frames = np.broadcast_to(block_colour(seed, block), (FRAMES_PER_BLOCK, H, W, 3)).copy()
            yield BlockPreviewEvent(block, frames, block * FRAMES_PER_BLOCK)
            yield BlockDoneEvent(block, n, None, seed, clips[block].prompt, block * 10, block * 10 + 10,
                                 {"take": f"b{block}-s{seed}"})
            self.block_seeds.append(seed)
        yield FinishedEvent(None, n * FRAMES_PER_BLOCK, 0.0)

    def open_project(self, folder):
        path = Path(folder) / "project.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ProjectError(f"{path} is not a readable project file: {exc}") from exc
        return Timeline.from_dict(data["timeline"]), int(data["seed"])

    def save_project_as(self, folder, timeline, seed):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "project.json").write_text(json.dumps({"timeline": timeline.to_dict(), "seed": seed}))
        yield FinishedEvent(str(folder), 0, 0.0)

    def export(self, path, crf, take=None, frame_range=None):
        """A real H.264 file through core.export: the frames of the take path (refs 'b{block}-s{seed}')."""
        from core.export import check_mp4_target, write_mp4

        check_mp4_target(path)
        self.exported.append((str(path), crf, take, frame_range))
        refs = take or [f"b{b}-s{s}" for b, s in enumerate(self.block_seeds)]
        frames = []
        for ref in refs:
            block, seed = (int(x[1:]) for x in ref.split("-"))
            frames.extend([np.broadcast_to(block_colour(seed, block), (H, W, 3))] * FRAMES_PER_BLOCK)
        if frame_range is not None:
            frames = frames[frame_range[0]:frame_range[1]]
        write_mp4(path, np.stack(frames), fps=16, crf=crf)
        yield FinishedEvent(str(path), len(frames), 0.0)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SANA_STUDIO_SETTINGS", str(tmp_path / "settings.ini"))
    adapter = ScriptedAdapter()
    win = MainWindow(adapter=adapter, settings=AppSettings(str(tmp_path / "settings.ini")), scratch_root=tmp_path)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    win.doc.reset(Timeline([Clip("alpha", 2.5), Clip("beta", 2.5), Clip("gamma", 5.0)]))
    yield win
    win.jobs.shutdown(5000)


def prompts(win) -> list[str]:
    return [c.prompt for c in win.doc.clips]


def wait_generation(qtbot, win, timeout=10000):
    return wait_for_generation(qtbot, win, timeout)


def drag(qtbot, widget, start: QPoint, end: QPoint) -> None:
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, pos=start)
    for k in range(1, 6):  # several moves, as a real drag sends
        qtbot.mouseMove(widget, start + (end - start) * (k / 5))
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=end)


def thumbnail_rgb(win, block: int) -> tuple[int, int, int]:
    image = win.block_strip.thumbnail(block)
    colour = image.pixelColor(image.width() // 2, image.height() // 2)
    return colour.red(), colour.green(), colour.blue()


def strip_colours(win) -> list[tuple[int, int, int]]:
    return [thumbnail_rgb(win, b) for b in range(win.block_strip.num_blocks)]


# ---------------------------------------------------------------- prompt timeline editing

def test_drag_reorders_clips_and_undo_restores(qtbot, window):
    tl = window.timeline_widget
    start = tl.clip_rect(0).center()
    end = QPoint(tl.clip_rect(2).right() - 4, start.y())  # past the middle of the last clip: drop at the end
    drag(qtbot, tl, start, end)
    assert prompts(window) == ["beta", "gamma", "alpha"]
    window.action_undo.trigger()
    assert prompts(window) == ["alpha", "beta", "gamma"]
    window.action_redo.trigger()
    assert prompts(window) == ["beta", "gamma", "alpha"]
    # dragging the last clip to the front
    drag(qtbot, tl, tl.clip_rect(2).center(), QPoint(tl.clip_rect(0).left() + 3, start.y()))
    assert prompts(window) == ["alpha", "beta", "gamma"]
    assert window.doc.undo_stack.count() == 2


def test_dragging_the_right_edge_resizes_in_whole_blocks(qtbot, window):
    tl = window.timeline_widget
    r = tl.clip_rect(0)
    pps = tl._px_per_second()
    edge = QPoint(r.right(), r.center().y())
    drag(qtbot, tl, edge, QPoint(int(r.left() + 1.4 * 2 * BLOCK_SECONDS * pps), edge.y()))  # 2.8 blocks -> 3
    assert window.doc.clip(0).seconds == 3 * BLOCK_SECONDS
    assert [c.seconds for c in window.doc.clips][1:] == [2.5, 5.0]
    window.action_undo.trigger()
    assert window.doc.clip(0).seconds == 2.5
    # shrinking below one block keeps one block
    r = tl.clip_rect(2)
    drag(qtbot, tl, QPoint(r.right(), r.center().y()), QPoint(r.left() + 1, r.center().y()))
    assert window.doc.clip(2).seconds == BLOCK_SECONDS


def test_double_click_edits_the_prompt_undoably(qtbot, window):
    tl = window.timeline_widget
    qtbot.mouseDClick(tl, Qt.MouseButton.LeftButton, pos=tl.clip_rect(1).center())
    editor = tl.findChild(QLineEdit)
    assert editor is not None and editor.text() == "beta"
    editor.setText("a red fox in the snow")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    assert prompts(window) == ["alpha", "a red fox in the snow", "gamma"]
    window.action_undo.trigger()
    assert prompts(window) == ["alpha", "beta", "gamma"]


def test_empty_prompt_is_refused_with_a_message(qtbot, window):
    tl = window.timeline_widget
    editor = tl.start_editing(0)
    editor.setText("   ")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    assert prompts(window) == ["alpha", "beta", "gamma"]
    assert window.errors and "empty" in window.errors[-1][1]
    assert window.last_error_box.isVisible()
    assert window.doc.undo_stack.count() == 0


def test_per_clip_seed_is_an_undoable_edit(qtbot, window):
    window.timeline_widget.select(1)
    window.clip_seed.setValue(1234)
    window.clip_seed.editingFinished.emit()
    assert window.doc.clip(1).seed == 1234
    assert window.doc.to_timeline().clips[1].seed == 1234
    window.action_undo.trigger()
    assert window.doc.clip(1).seed is None


def test_drop_text_adds_a_clip_and_drop_json_replaces_the_timeline(qtbot, window, tmp_path):
    tl = window.timeline_widget
    mime = QMimeData()
    mime.setText("a lighthouse in a storm")
    assert tl.handle_drop(mime, QPoint(tl.width() - 2, 40))
    assert prompts(window) == ["alpha", "beta", "gamma", "a lighthouse in a storm"]
    path = tmp_path / "t.json"
    Timeline([Clip("one", 5.0), Clip("two", 7.5, seed=3)]).to_dict()
    path.write_text(json.dumps(Timeline([Clip("one", 5.0), Clip("two", 7.5, seed=3)]).to_dict()))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    assert tl.handle_drop(mime)
    assert [(c.prompt, c.seconds, c.seed) for c in window.doc.clips] == [("one", 5.0, None), ("two", 7.5, 3)]
    window.action_undo.trigger()
    assert prompts(window) == ["alpha", "beta", "gamma", "a lighthouse in a storm"]


@pytest.mark.parametrize("content", ['{"clips": [{"prompt": "x", "seconds": 0}]}', "{not json", '{"clips": []}',
                                     '{"clips": [{"prompt": "", "seconds": 5}]}'])
def test_dropping_a_bad_timeline_shows_a_message_and_changes_nothing(qtbot, window, tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    assert not window.timeline_widget.handle_drop(mime)
    assert prompts(window) == ["alpha", "beta", "gamma"]
    assert window.doc.undo_stack.count() == 0
    assert window.errors and window.last_error_box is not None


# ---------------------------------------------------------------- generation

def test_generate_fills_one_thumbnail_per_block_in_order(qtbot, window):
    n_blocks = len(window.doc.to_timeline().blocks())
    assert n_blocks == 4
    seen_steps = []
    window.jobs.job_event.connect(lambda job, ev, payload: seen_steps.append(ev.block) if isinstance(ev, StepEvent) else None)
    with qtbot.waitSignal(window.generation_finished, timeout=10000) as blocker:
        qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert blocker.args == [False]
    assert window.block_strip.done_order == list(range(n_blocks))
    assert seen_steps == sorted(seen_steps)  # previews arrived block by block
    seed = window.project_seed.value()
    assert strip_colours(window) == [tuple(int(v) for v in block_colour(seed, b)) for b in range(n_blocks)]
    assert len(window.player.frames) == n_blocks * FRAMES_PER_BLOCK
    assert window.block_strip.states == ["done"] * n_blocks
    assert not window.errors


def test_step_previews_show_while_a_block_is_made(qtbot, window):
    window.adapter.step_s = 0.05
    seen = {}

    def on_event(job, ev, payload):
        if isinstance(ev, StepEvent) and ev.block == 1 and ev.step == 2 and "colour" not in seen:
            seen["state"] = window.block_strip.states[1]
            QTimer.singleShot(0, lambda: seen.setdefault("colour", thumbnail_rgb(window, 1)))
    window.jobs.job_event.connect(on_event)
    window.generate()
    wait_generation(qtbot, window)
    expected = tuple(int(v) for v in block_colour(window.project_seed.value(), 1) // 2)
    assert seen["state"] == "running" and seen["colour"] == expected


def test_cancel_stops_within_one_step(qtbot, window):
    window.adapter.step_s = 0.05
    at_cancel = {}

    def on_event(job, ev, payload):
        if isinstance(ev, StepEvent) and ev.block == 1 and ev.step == 1 and not at_cancel:
            at_cancel["steps"] = window.adapter.steps_run
            qtbot.keyClick(window, Qt.Key.Key_Escape)
    window.jobs.job_event.connect(on_event)
    window.generate()
    assert wait_generation(qtbot, window) is True
    assert window.adapter.steps_run <= at_cancel["steps"] + 1
    assert window.block_strip.states[0] == "done"
    assert window.block_strip.states[1:] == ["pending"] * 3
    assert window.takes.num_blocks == 1
    assert len(window.player.frames) == FRAMES_PER_BLOCK
    assert not window.errors


def test_regenerate_from_a_block_changes_only_later_thumbnails(qtbot, window):
    window.generate()
    wait_generation(qtbot, window)
    before = strip_colours(window)
    window.block_strip.select(2)
    window.regenerate_from(2, seed=777)
    assert wait_generation(qtbot, window) is False
    after = strip_colours(window)
    assert after[:2] == before[:2]
    assert after[2:] == [tuple(int(v) for v in block_colour(777, b)) for b in (2, 3)]
    assert after[2] != before[2] and after[3] != before[3]
    # the takes view lists both takes of block 2; choosing the first brings the old branch back
    window.block_strip.select(2)
    assert window.takes_view.list.count() == 2
    first_take = window.takes_view.list.item(0)
    window.takes_view.list.itemClicked.emit(first_take)
    assert strip_colours(window) == before
    assert len(window.player.frames) == 4 * FRAMES_PER_BLOCK
    # a later regeneration resumes from the takes shown now (the old branch), not from the newest ones
    window.regenerate_from(3, seed=888)
    wait_generation(qtbot, window)
    seed = window.project_seed.value()
    assert window.adapter.last_path_refs == [f"b{b}-s{seed}" for b in range(3)]
    assert strip_colours(window) == before[:3] + [tuple(int(v) for v in block_colour(888, 3))]


def test_regenerate_uses_the_selected_block_from_the_toolbar(qtbot, window):
    window.generate()
    wait_generation(qtbot, window)
    before = strip_colours(window)
    qtbot.mouseClick(window.block_strip, Qt.MouseButton.LeftButton, pos=window.block_strip.slot_rect(3).center())
    window.action_regenerate.trigger()
    wait_generation(qtbot, window)
    after = strip_colours(window)
    assert after[:3] == before[:3] and after[3] != before[3]


def test_extend_adds_blocks_at_the_end(qtbot, window):
    window.generate()
    wait_generation(qtbot, window)
    before = strip_colours(window)
    window.extend_seconds.setValue(5.0)
    window.action_extend.trigger()
    wait_generation(qtbot, window)
    assert window.doc.total_seconds == 15.0
    assert window.block_strip.done_order[-2:] == [4, 5]
    assert strip_colours(window)[:4] == before
    assert len(window.player.frames) == 6 * FRAMES_PER_BLOCK


def test_gui_thread_never_blocks_while_generating(qtbot, window):
    window.adapter.step_s = 0.02
    window.doc.reset(Timeline([Clip("alpha", 10.0), Clip("beta", 10.0)]))
    heartbeat = GuiHeartbeat(5)
    gaps = heartbeat.gaps
    heartbeat.start()
    window.generate()
    wait_generation(qtbot, window, timeout=20000)
    heartbeat.stop()
    assert len(gaps) > 20
    assert max(gaps[1:]) < 0.050, f"GUI thread blocked for {max(gaps[1:]) * 1000:.0f} ms"


def test_one_job_at_a_time_with_a_visible_queue(qtbot, window):
    window.adapter.step_s = 0.02
    window.generate()
    window.generate()
    assert window.jobs.busy
    texts = [window.queue_list.item(i).text() for i in range(window.queue_list.count())]
    assert any(t.startswith("▶") for t in texts) and any(t.startswith("⏳") for t in texts)
    wait_generation(qtbot, window)
    assert window.jobs.busy  # the second job starts only after the first
    wait_generation(qtbot, window)
    qtbot.waitUntil(lambda: not window.jobs.busy)
    assert window.queue_list.count() == 0


def test_closing_the_window_cancels_and_waits(qtbot, window):
    window.adapter.step_s = 0.05
    window.generate()
    qtbot.waitUntil(lambda: window.adapter.steps_run >= 2, timeout=5000)
    started = time.monotonic()
    window.close()
    assert time.monotonic() - started < 2.0
    assert not window.jobs.busy
    steps = window.adapter.steps_run
    time.sleep(0.2)
    assert window.adapter.steps_run == steps


class FailingAdapter(ScriptedAdapter):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def generate(self, timeline, seed, cancel, action, scratch_folder=None, steps=0, path_refs=None):
        from core.events import ErrorEvent
        yield StageEvent("denoise")
        if self.how == "event":
            yield ErrorEvent("The GPU ran out of memory at block 1.", "OutOfMemory")
        else:
            raise RuntimeError("boom in the engine")


@pytest.mark.parametrize("how,text", [("event", "ran out of memory"), ("exception", "boom in the engine")])
def test_engine_errors_become_message_boxes(qtbot, window, how, text):
    window.adapter = FailingAdapter(how)
    window.adapter.engine = object()
    window.generate()
    qtbot.waitUntil(lambda: bool(window.errors), timeout=5000)
    title, message = window.errors[-1]
    assert title == "Generation failed" and text in message
    assert window.last_error_box.isVisible()
    qtbot.waitUntil(lambda: not window.jobs.busy)
    assert window.action_generate.isEnabled()


def test_generate_refuses_bad_timelines_with_a_message(qtbot, window):
    window.doc.reset(Timeline([Clip("ok", 5.0), Clip("zero", 0.0)]))
    window.generate()
    assert not window.jobs.busy and not window.jobs.pending
    assert "duration must be positive" in window.errors[-1][1]
    window.doc.reset(Timeline([]))
    window.generate()
    assert "empty" in window.errors[-1][1]


# ---------------------------------------------------------------- export, projects, settings

def test_export_writes_an_h264_mp4_that_reads_back(qtbot, window, tmp_path):
    from core.export import read_mp4_info

    window.generate()
    wait_generation(qtbot, window)
    window.action_export.trigger()
    dialog = window.export_dialog
    out = tmp_path / "video.mp4"
    dialog.path.setText(str(out))
    dialog.crf.setValue(20)
    dialog.accept()
    qtbot.waitUntil(lambda: not window.jobs.busy and out.exists(), timeout=10000)
    info = read_mp4_info(out)
    assert info["codec"] == "h264" and info["frames"] == 4 * FRAMES_PER_BLOCK
    assert window.adapter.exported[-1][1] == 20
    # the shown take path goes to the engine
    seed = window.project_seed.value()
    assert window.adapter.exported[-1][2] == [f"b{b}-s{seed}" for b in range(4)]
    assert not window.errors


@pytest.mark.parametrize("bad", ["missing-folder/video.mp4", "a-file/video.mp4", "video.avi"])
def test_export_to_an_unwritable_path_shows_a_message(qtbot, window, tmp_path, bad):
    window.generate()
    wait_generation(qtbot, window)
    (tmp_path / "a-file").write_text("not a folder")
    target = tmp_path / bad
    window.export_to(target, 18)
    qtbot.waitUntil(lambda: bool(window.errors), timeout=5000)
    assert window.errors[-1][0] == "Export failed"
    assert not target.exists()
    assert not list(tmp_path.glob("**/*.mp4"))


def test_save_and_open_round_trip_a_project(qtbot, window, tmp_path):
    window.timeline_widget.select(2)
    window.doc.set_seed(2, 42)
    window.project_seed.setValue(99)
    folder = tmp_path / "my-project"
    window.save_project_as(folder)
    qtbot.waitUntil(lambda: window.project_saved_folder == folder, timeout=5000)
    assert window.doc.undo_stack.isClean()
    saved = [(c.prompt, c.seconds, c.seed) for c in window.doc.clips]
    window.new_project()
    assert prompts(window) != ["alpha", "beta", "gamma"]
    assert window.open_project(folder)
    assert [(c.prompt, c.seconds, c.seed) for c in window.doc.clips] == saved
    assert window.project_seed.value() == 99
    assert str(folder.resolve()) in window.settings.recent_projects()


def test_a_broken_project_shows_a_message_and_changes_nothing(qtbot, window, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "project.json").write_text("{ truncated")
    before = [(c.prompt, c.seconds) for c in window.doc.clips]
    assert not window.open_project(folder)
    assert [(c.prompt, c.seconds) for c in window.doc.clips] == before
    assert window.errors[-1][0] == "Cannot open the project"
    assert window.project_saved_folder is None


def test_settings_dialog_persists_with_qsettings(qtbot, window, tmp_path):
    window.action_settings.trigger()
    dialog = window.settings_dialog
    dialog.precision.setCurrentIndex(dialog.precision.findData("fp8"))
    dialog.quant_layers.setCurrentIndex(dialog.quant_layers.findData("all-blocks"))
    dialog.vram.setCurrentIndex(dialog.vram.findData("low"))
    dialog.seed.setValue(31337)
    dialog.steps.setValue(6)
    dialog.accept()
    reread = AppSettings(str(tmp_path / "settings.ini")).generation()
    assert (reread.precision, reread.quant_layers, reread.vram_mode, reread.seed, reread.steps) == \
        ("fp8", "all-blocks", "low", 31337, 6)
    assert window.project_seed.value() == 31337


def test_model_manager_offers_the_demo_model(qtbot, window):
    dialog = window.show_model_manager()
    assert dialog.demo_button.isEnabled()
    dialog.demo_button.click()
    assert window.gen.model == "demo"
    qtbot.waitUntil(lambda: window.adapter.loaded and not window.jobs.busy, timeout=5000)
    assert window.demo_badge.isVisible()
    assert "DEMO" in window.windowTitle()


def test_real_drop_events_reach_the_timeline(qtbot, window, tmp_path):
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    tl = window.timeline_widget
    mime = QMimeData()
    mime.setText("a snowy mountain at dawn")
    pos = QPoint(tl.width() - 3, tl.height() // 2)
    enter = QDragEnterEvent(QPointF(pos), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(tl, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(pos), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(tl, drop)
    assert prompts(window)[-1] == "a snowy mountain at dawn"
    window.action_undo.trigger()
    assert prompts(window) == ["alpha", "beta", "gamma"]


def test_model_manager_downloads_with_progress(qtbot, window, monkeypatch):
    calls = []

    def fake_download(model_id):
        calls.append(model_id)
        for percent in (0.0, 40.0, 100.0):
            yield StageEvent("download", f"{model_id} {percent:.0f}%", percent)
            time.sleep(0.01)

    monkeypatch.setattr(window.adapter, "download", fake_download)
    monkeypatch.setattr(type(window.adapter), "known_models",
                        staticmethod(lambda: [("longsana-480p", "LongSANA 2B 480p", False, 9.8)]))
    dialog = window.show_model_manager()
    dialog.list.setCurrentRow(0)
    assert dialog.download_button.isEnabled() and not dialog.use_button.isEnabled()
    seen = []
    window.jobs.job_event.connect(lambda job, ev, p: seen.append(dialog.progress.value()))
    dialog.download_button.click()
    qtbot.waitUntil(lambda: not window.jobs.busy and dialog.use_button.isEnabled(), timeout=5000)
    assert calls == ["longsana-480p"]
    assert 40 in seen and "installed" in dialog.status.text()
    dialog.use_button.click()
    assert window.gen.model == "longsana-480p"


def test_a_queued_regenerate_continues_the_branch_made_by_the_job_before_it(qtbot, window):
    window.generate()
    wait_generation(qtbot, window)
    window.adapter.step_s = 0.02
    window.project_seed.setValue(5)
    window.generate()                      # job A: a new branch with seed 5
    window.regenerate_from(2, seed=9)      # job B, queued behind A
    wait_generation(qtbot, window)
    wait_generation(qtbot, window)
    assert window.adapter.last_path_refs == ["b0-s5", "b1-s5"]
    assert strip_colours(window) == [tuple(int(v) for v in block_colour(s, b)) for b, s in enumerate([5, 5, 9, 9])]
