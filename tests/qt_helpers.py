"""Helpers shared by the GUI tests (import after `pytest.importorskip("pytestqt")`)."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer


def wait_for_generation(qtbot, win, timeout):
    """Wait for the window's generation_finished signal; returns its argument (True when cancelled)."""
    with qtbot.waitSignal(win.generation_finished, timeout=timeout) as blocker:
        pass
    return blocker.args[0]


class GuiHeartbeat:
    """A QTimer on the GUI thread that records the gaps between its ticks: a long gap means the thread was blocked."""

    def __init__(self, interval_ms: int) -> None:
        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
