"""The real window with the real demo engine (core.engine.Engine.demo: tiny random weights on the CPU).

One engine is loaded per module and shared (loading writes and reads the demo pack); each test drives a fresh window.
Generation goes through core.project (a scratch project folder per window), as in the app."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")
engine_mod = pytest.importorskip("core.engine")

from PySide6.QtCore import Qt  # noqa: E402
from qt_helpers import GuiHeartbeat, wait_for_generation  # noqa: E402

from app.engine_adapter import EngineAdapter  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.window import MainWindow  # noqa: E402
from core.events import BlockPreviewEvent, StepEvent  # noqa: E402
from core.timeline import Clip, Timeline  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_engine():
    return engine_mod.Engine.demo()


@pytest.fixture
def window(qtbot, tmp_path, demo_engine):
    adapter = EngineAdapter()
    adapter.engine = demo_engine
    win = MainWindow(adapter=adapter, settings=AppSettings(str(tmp_path / "settings.ini")),
                     scratch_root=tmp_path / "scratch")
    qtbot.addWidget(win)
    win.resize(1100, 760)
    win.show()
    qtbot.waitExposed(win)
    win.gen.model = "demo"
    win._update_engine_labels()
    win.doc.reset(Timeline([Clip("a red ball", 2.5), Clip("a blue cube", 2.5)]))
    yield win
    win.jobs.shutdown(60000)


def wait_generation(qtbot, win, timeout=240000):
    return wait_for_generation(qtbot, win, timeout)


def record_frames(win):
    """The engine's own first frame per block (the reference the thumbnails must show)."""
    firsts = {}

    def on_event(job, ev, payload):
        if isinstance(ev, BlockPreviewEvent):
            firsts[ev.block] = ev.frames[0].copy()
    win.jobs.job_event.connect(on_event)
    return firsts


def centre_rgb_of_thumbnail(win, block):
    image = win.block_strip.thumbnail(block)
    c = image.pixelColor(image.width() // 2, image.height() // 2)
    return np.array([c.red(), c.green(), c.blue()])


def test_generate_with_the_demo_engine_fills_thumbnails_in_order_without_blocking_the_gui(qtbot, window):
    assert window.demo_badge.isVisible() and "DEMO" in window.windowTitle()
    firsts = record_frames(window)
    heartbeat = GuiHeartbeat(10)
    gaps = heartbeat.gaps
    heartbeat.start()
    qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    cancelled = wait_generation(qtbot, window)
    heartbeat.stop()
    assert cancelled is False, window.errors
    assert window.block_strip.done_order == [0, 1]
    assert sorted(firsts) == [0, 1]
    for block in (0, 1):
        # the thumbnail is the first decoded frame, downscaled: its centre matches the frame's centre region
        frame = firsts[block]
        h, w, _ = frame.shape
        centre = frame[h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2].reshape(-1, 3).astype(int)
        got = centre_rgb_of_thumbnail(window, block)
        assert np.abs(centre - got).min(axis=0).max() <= 24, (block, got, centre)
    assert len(window.player.frames) == 81   # 5 s at 16 fps + the causal first frame
    # each finished block shows what it costs on disk (the project's block files)
    sizes = window.block_strip.disk_bytes[:2]
    assert all(isinstance(n, int) and n > 0 for n in sizes), sizes
    assert "MiB on disk" in window.block_strip.tooltip_text(0)
    # editing the second clip's prompt marks only block 1 stale (kept, not thrown away); undo clears it
    assert window.block_strip.stale[:2] == [False, False]
    window.doc.set_prompt(1, "a green pyramid")
    assert window.block_strip.stale[:2] == [False, True] and "stale" in window.block_strip.tooltip_text(1)
    window.doc.undo_stack.undo()
    assert window.block_strip.stale[:2] == [False, False]
    assert max(gaps[1:]) < 0.050, f"GUI thread blocked for {max(gaps[1:]) * 1000:.0f} ms"
    assert not window.errors


def test_cancel_with_the_demo_engine_stops_within_one_step(qtbot, window):
    window.doc.reset(Timeline([Clip("a red ball", 10.0)]))
    counts = {"steps": 0}

    def on_event(job, ev, payload):
        if isinstance(ev, StepEvent):
            counts["steps"] += 1
            if counts["steps"] == 2:
                counts["at_cancel"] = 2
                qtbot.keyClick(window, Qt.Key.Key_Escape)
    window.jobs.job_event.connect(on_event)
    window.generate()
    assert wait_generation(qtbot, window) is True
    assert counts["steps"] <= counts["at_cancel"] + 1
    assert window.block_strip.states == ["pending"] * 4
    assert not window.errors


def test_loading_the_demo_model_from_the_window(qtbot, tmp_path):
    win = MainWindow(adapter=EngineAdapter(), settings=AppSettings(str(tmp_path / "s.ini")), scratch_root=tmp_path)
    qtbot.addWidget(win)
    win.gen.model = "demo"
    win.ensure_engine()
    qtbot.waitUntil(lambda: win.adapter.loaded and not win.jobs.busy, timeout=240000)
    assert not win.demo_badge.isHidden()
    assert "fp32" in win.precision_label.text() and "cpu" in win.precision_label.text()
    win.close()


def test_regenerate_with_the_demo_engine_changes_only_later_thumbnails(qtbot, window):
    window.doc.reset(Timeline([Clip("a red ball", 7.5)]))
    firsts = record_frames(window)
    window.generate()
    assert wait_generation(qtbot, window) is False, window.errors
    before = [window.block_strip.thumbnail(b) for b in range(3)]
    first_frames = dict(firsts)
    window.regenerate_from(1, seed=4242)
    assert wait_generation(qtbot, window) is False, window.errors
    after = [window.block_strip.thumbnail(b) for b in range(3)]
    assert after[0] == before[0]
    assert after[1] != before[1] and after[2] != before[2]
    assert not np.array_equal(firsts[1], first_frames[1])
    # regenerating block 1 with the seed block 1 was first made with gives the same frames back: the resumed
    # state equals the state of the uninterrupted run
    window.regenerate_from(1, seed=window.project_seed.value())
    assert wait_generation(qtbot, window) is False, window.errors
    np.testing.assert_array_equal(firsts[1], first_frames[1])
    np.testing.assert_array_equal(firsts[2], first_frames[2])
    window.block_strip.select(1)
    assert window.takes_view.list.count() == 3


def test_export_with_the_demo_engine_writes_h264(qtbot, window, tmp_path):
    from core.export import read_mp4_info

    window.generate()
    assert wait_generation(qtbot, window) is False, window.errors
    out = tmp_path / "demo.mp4"
    window.export_to(out, 23)
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=120000)
    assert not window.errors, window.errors
    info = read_mp4_info(out)
    assert info["codec"] == "h264" and info["frames"] == 81 and info["fps"] == 16
    assert (info["width"], info["height"]) == (window.adapter.info["width"], window.adapter.info["height"])
    assert "random weights" in (info["title"] or "").lower() or info["metadata"].get("label")
    # a frame range (the export dialog's range) writes only those frames
    part = tmp_path / "part.mp4"
    window.export_to(part, 23, frame_range=(10, 51))
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=120000)
    assert not window.errors, window.errors
    assert read_mp4_info(part)["frames"] == 41
    # after a regeneration the dialog offers every take; exporting the first one writes that take
    window.regenerate_from(1, seed=7)
    assert wait_generation(qtbot, window) is False, window.errors
    window.action_export.trigger()
    dialog = window.export_dialog
    labels = [dialog.take.itemData(i) for i in range(dialog.take.count())]
    assert labels == ["shown", "t1", "t2"]
    first = tmp_path / "first-take.mp4"
    dialog.path.setText(str(first))
    dialog.take.setCurrentIndex(1)
    dialog.accept()
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=120000)
    assert not window.errors, window.errors
    assert read_mp4_info(first)["metadata"]["take"] == "t1"


def test_save_and_open_a_demo_project_round_trips_blocks_and_takes(qtbot, window, tmp_path):
    window.generate()
    assert wait_generation(qtbot, window) is False, window.errors
    window.regenerate_from(1, seed=99)
    assert wait_generation(qtbot, window) is False, window.errors
    shown = [window.block_strip.thumbnail(b) for b in range(2)]
    folder = tmp_path / "saved"
    window.save_project_as(folder)
    qtbot.waitUntil(lambda: window.project_saved_folder == folder or bool(window.errors), timeout=60000)
    assert not window.errors, window.errors
    window.new_project()
    assert window.block_strip.num_blocks == 0
    assert window.open_project(folder), window.errors
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=60000)
    assert not window.errors, window.errors
    assert [(c.prompt, c.seconds) for c in window.doc.clips] == [("a red ball", 2.5), ("a blue cube", 2.5)]
    assert [window.block_strip.thumbnail(b) for b in range(2)] == shown   # the take that was shown
    assert len(window.player.frames) == 81
    window.block_strip.select(1)
    assert window.takes_view.list.count() == 2                          # both takes of block 1 came back
    # a broken project file: a message, and the open project stays as it is
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "project.json").write_text("{")
    assert not window.open_project(broken)
    assert window.errors[-1][0] == "Cannot open the project"
    assert [(c.prompt, c.seconds) for c in window.doc.clips] == [("a red ball", 2.5), ("a blue cube", 2.5)]
    assert window.project_saved_folder == folder
    # and generation continues on the reopened project
    window.extend_seconds.setValue(2.5)
    window.action_extend.trigger()
    assert wait_generation(qtbot, window) is False, window.errors
    assert window.block_strip.done_order[-1] == 2 and len(window.player.frames) == 81 + 40
