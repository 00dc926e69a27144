"""The `sana-video-studio` entry point: arguments, and the headless screenshot run with the demo engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.main import parse_args

ROOT = Path(__file__).resolve().parents[1]


def test_arguments():
    args = parse_args(["--demo", "--timeline", "t.json", "my-project"])
    assert args.demo and args.timeline == "t.json" and args.project == "my-project"
    assert parse_args([]).offscreen_screenshot is None
    with pytest.raises(SystemExit):
        parse_args(["--no-such-flag"])


@pytest.mark.slow
def test_offscreen_screenshot_runs_a_demo_generation_and_saves_a_png(tmp_path):
    pytest.importorskip("core.engine")
    from PySide6.QtGui import QImage

    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    proc = subprocess.run([sys.executable, "-m", "app.main", "--offscreen-screenshot", str(out),
                           "--screenshot-block", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    image = QImage(str(out))
    assert (image.width(), image.height()) == (1440, 900)
    assert "screenshot saved" in proc.stderr
    assert "Traceback" not in proc.stderr
