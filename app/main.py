"""`sana-video-studio`: the desktop app entry point.

--demo loads the embedded tiny random model (no GPU needed). --offscreen-screenshot PATH runs a demo generation
headless, grabs the window in the middle of it, saves a PNG (docs/screenshot.png) and exits."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

log = logging.getLogger("sana_video_studio")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sana-video-studio", description="SANA-Video Studio: long videos from a "
                                     "prompt timeline, on your own NVIDIA GPU.")
    parser.add_argument("project", nargs="?", help="a project folder to open")
    parser.add_argument("--demo", action="store_true", help="use the embedded demo model (tiny, random weights, CPU)")
    parser.add_argument("--timeline", metavar="JSON", help="start with this timeline JSON")
    parser.add_argument("--offscreen-screenshot", metavar="PATH",
                        help="run a demo generation offscreen, save a screenshot of the window mid-generation, exit")
    parser.add_argument("--screenshot-block", type=int, default=2, metavar="N",
                        help="grab the screenshot while block N+1 is being made (default 2)")
    return parser.parse_args(argv)


def _install_excepthook(window_getter) -> None:
    """Uncaught exceptions in slots become a readable dialog instead of a traceback on stderr alone."""
    def hook(exc_type, exc, tb):
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("uncaught exception:\n%s", text)
        window = window_getter()
        if window is not None:
            window.report_error("Unexpected error", f"{exc_type.__name__}: {exc}", text)
    sys.excepthook = hook


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.offscreen_screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        args.demo = True
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.settings import DEMO_MODEL, AppSettings
    from app.window import MainWindow
    from resources import load_icon, load_stylesheet

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("SANA-Video Studio")
    app.setOrganizationName("sana-video-studio")
    app.setWindowIcon(load_icon("app"))
    app.setStyleSheet(load_stylesheet())
    scratch = None
    if args.offscreen_screenshot:   # a headless run leaves the user's settings and project folders alone
        import tempfile

        temp = Path(tempfile.mkdtemp(prefix="sana-studio-shot-"))
        settings, scratch = AppSettings(str(temp / "settings.ini")), temp / "projects"
    else:
        settings = AppSettings()
    window = MainWindow(settings=settings, scratch_root=scratch)
    _install_excepthook(lambda: window)
    if args.demo:
        window.gen.model = DEMO_MODEL
    if args.timeline and not window.import_timeline(args.timeline):
        log.error("could not import %s", args.timeline)
    if args.project:
        window.open_project(args.project)
    window.show()

    if args.offscreen_screenshot:
        return _screenshot_run(app, window, Path(args.offscreen_screenshot), args.screenshot_block, args.timeline)

    if window.gen.model:
        window.ensure_engine()
    else:
        QTimer.singleShot(0, window.show_model_manager)  # first run: pick a model (or the demo)
    return app.exec()


def _screenshot_run(app, window, path: Path, after_blocks: int, timeline_given: str | None) -> int:
    """Generate with the demo model and grab the window when `after_blocks` blocks are done (mid-generation)."""
    from PySide6.QtCore import QTimer

    from core.events import StepEvent
    from core.timeline import Timeline
    from resources import example_timelines

    if not timeline_given and example_timelines():
        window.doc.reset(Timeline.from_json_file(example_timelines()[0]))
    window.resize(1440, 900)
    result = {"code": 1}

    def grab(block: int) -> None:
        if result.get("saved"):
            return
        window.block_strip.select(max(0, min(block, after_blocks) - 1))
        app.processEvents()
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = window.grab().save(str(path), "PNG")
        result["saved"] = True
        result["code"] = 0 if ok else 1
        log.info("screenshot %s: %s", "saved to" if ok else "FAILED for", path)
        window.cancel()

    def finished(_cancelled: bool) -> None:
        if not result.get("saved"):
            grab(10**6)  # fewer blocks than asked: grab the end state
        QTimer.singleShot(0, window.close)

    def on_event(_job, event, _payload) -> None:
        # grab while block `after_blocks` is being made (its step preview shows), after the earlier ones are done
        if isinstance(event, StepEvent) and event.block >= after_blocks and event.step >= min(2, event.num_steps):
            grab(event.block)

    window.jobs.job_event.connect(on_event)
    window.generation_finished.connect(finished)
    window.jobs.job_failed.connect(lambda job, message, _tb: (log.error("%s failed: %s", job.title, message),
                                                             QTimer.singleShot(0, window.close)))
    QTimer.singleShot(300_000, window.close)  # never hang a headless run
    window.generate()
    app.exec()
    return result["code"]


if __name__ == "__main__":
    sys.exit(main())
