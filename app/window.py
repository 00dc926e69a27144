"""The main window: layout and wiring only. Edits go through TimelineDocument's undo stack, engine work through
EngineAdapter generators run by the JobQueue, and the window reacts to the plain events the jobs forward."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app.dialogs import ExportDialog, ModelManagerDialog, SettingsDialog
from app.engine_adapter import Action, EngineAdapter
from app.jobs import Job, JobQueue
from app.prompt_timeline import PromptTimelineWidget
from app.settings import DEMO_MODEL, RESOLUTIONS, AppSettings
from app.timeline_document import BLOCK_SECONDS, TimelineDocument
from app.video_view import VideoView
from core.errors import StudioError
from core.events import BlockDoneEvent, BlockPreviewEvent, FinishedEvent, StageEvent, StepEvent
from core.timeline import Clip, Timeline
from resources import load_icon

log = logging.getLogger(__name__)
APP_NAME = "SANA-Video Studio"


def _default_scratch_root() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("sana-video-studio", appauthor=False)) / "unsaved"


class MainWindow(QMainWindow):
    generation_finished = Signal(bool)   # cancelled; emitted after a generation job ends (tests, screenshot mode)
    block_completed = Signal(int)

    def __init__(self, adapter: EngineAdapter | None = None, settings: AppSettings | None = None,
                 scratch_root: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.adapter = adapter if adapter is not None else EngineAdapter()
        self.settings = settings if settings is not None else AppSettings()
        self.gen = self.settings.generation()
        self.scratch_root = Path(scratch_root) if scratch_root is not None else _default_scratch_root()
        self.doc = TimelineDocument(parent=self)
        self.jobs = JobQueue(self)
        self.errors: list[tuple[str, str]] = []        # every error shown, for logs and tests
        self.last_error_box: QMessageBox | None = None
        self.project_saved_folder: Path | None = None  # None while the project lives in the scratch folder
        self.export_dialog: ExportDialog | None = None
        self.settings_dialog: SettingsDialog | None = None
        self.model_dialog: ModelManagerDialog | None = None
        self._gen_started = 0.0
        self.setWindowIcon(load_icon("app"))
        self._build_widgets()
        self._build_actions()
        self._build_status_bar()
        self.jobs.job_started.connect(self._on_job_started)
        self.jobs.job_event.connect(self._on_job_event)
        self.jobs.job_failed.connect(self._on_job_failed)
        self.jobs.job_finished.connect(self._on_job_finished)
        self.jobs.queue_changed.connect(self._refresh_queue)
        self.doc.changed.connect(self._on_timeline_changed)
        self.doc.undo_stack.cleanChanged.connect(self._on_clean_changed)
        self._vram_timer = QTimer(self)
        self._vram_timer.setInterval(1000)
        self._vram_timer.timeout.connect(self._update_vram)
        self._vram_timer.start()
        self.doc.reset(Timeline([Clip("A ginger cat walks through a sunny garden, cinematic lighting.", 5.0),
                                 Clip("The cat jumps onto a wooden fence and looks at the sunset.", 5.0)]))
        self._restore_geometry()
        self._on_clip_selected(-1)
        self._update_actions()
        self._update_engine_labels()

    # ------------------------------------------------------------------ layout
    def _build_widgets(self) -> None:
        self.timeline_widget = PromptTimelineWidget(self.doc, self)
        self.timeline_widget.error.connect(self.report_error)
        self.timeline_widget.selection_changed.connect(self._on_clip_selected)
        self.video = VideoView(self)
        self.video.block_completed.connect(self.block_completed)
        # short names for the parts of the video view (tests and the screenshot mode use them)
        self.takes, self.block_strip, self.player = self.video.takes, self.video.block_strip, self.video.player
        self.takes_view = self.video.takes_view
        strip_scroll = QScrollArea(self)
        strip_scroll.setWidget(self.block_strip)
        strip_scroll.setWidgetResizable(True)
        strip_scroll.setFixedHeight(self.block_strip.minimumHeight() + 22)
        strip_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)

        # clip row: add / remove, duration and seed of the selected clip
        self.add_clip_button = QPushButton(load_icon("add"), "Clip", self)
        self.add_clip_button.setToolTip("Add a clip after the selected one")
        self.add_clip_button.clicked.connect(lambda: self.timeline_widget.add_clip("", ask=True))
        self.remove_clip_button = QPushButton(load_icon("remove"), "Clip", self)
        self.remove_clip_button.setToolTip("Remove the selected clip (Delete)")
        self.remove_clip_button.clicked.connect(lambda: self.doc.remove_clip(self.timeline_widget.selected))
        self.clip_seconds = QDoubleSpinBox(self)
        self.clip_seconds.setRange(BLOCK_SECONDS, 255.0)
        self.clip_seconds.setSingleStep(BLOCK_SECONDS)
        self.clip_seconds.setDecimals(1)
        self.clip_seconds.setSuffix(" s")
        self.clip_seconds.setToolTip("Duration of the selected clip, in whole 2.5 s blocks")
        self.clip_seconds.editingFinished.connect(self._apply_clip_seconds)
        self.clip_seed = QSpinBox(self)
        self.clip_seed.setRange(-1, 2**31 - 1)
        self.clip_seed.setSpecialValueText("project seed")
        self.clip_seed.setToolTip("Seed of the selected clip (project seed when unset)")
        self.clip_seed.editingFinished.connect(self._apply_clip_seed)
        self.project_seed = QSpinBox(self)
        self.project_seed.setRange(0, 2**31 - 1)
        self.project_seed.setValue(self.gen.seed)
        self.total_label = QLabel(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Prompt timeline", self))
        row.addWidget(self.add_clip_button)
        row.addWidget(self.remove_clip_button)
        row.addSpacing(12)
        row.addWidget(QLabel("Duration", self))
        row.addWidget(self.clip_seconds)
        row.addWidget(QLabel("Clip seed", self))
        row.addWidget(self.clip_seed)
        row.addStretch(1)
        row.addWidget(QLabel("Seed", self))
        row.addWidget(self.project_seed)
        row.addWidget(self.total_label)

        top = QWidget(self)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(6, 6, 6, 0)
        top_layout.addLayout(row)
        top_layout.addWidget(self.timeline_widget)
        top_layout.addWidget(QLabel("Generation (one thumbnail per 2.5 s block; click one to see its takes)", self))
        top_layout.addWidget(strip_scroll)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(self.player)
        splitter.addWidget(top)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        self.setCentralWidget(splitter)

        takes_dock = QDockWidget("Takes", self)
        takes_dock.setObjectName("takesDock")
        takes_dock.setWidget(self.takes_view)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, takes_dock)
        queue_widget = QWidget(self)
        self.queue_list = QListWidget(queue_widget)
        self.remove_job_button = QPushButton("Remove queued job", queue_widget)
        self.remove_job_button.clicked.connect(self._remove_selected_job)
        q_layout = QVBoxLayout(queue_widget)
        q_layout.setContentsMargins(4, 4, 4, 4)
        q_layout.addWidget(self.queue_list, 1)
        q_layout.addWidget(self.remove_job_button)
        queue_dock = QDockWidget("Queue", self)
        queue_dock.setObjectName("queueDock")
        queue_dock.setWidget(queue_widget)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, queue_dock)
        self.docks = [takes_dock, queue_dock]

    def _action(self, text: str, icon: str | None, shortcut, slot, tip: str = "") -> QAction:
        action = QAction(load_icon(icon) if icon else load_icon("none"), text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setToolTip(f"{tip or text} ({QKeySequence(shortcut).toString()})" if shortcut else (tip or text))
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        self.action_new = self._action("&New project", "new", QKeySequence.StandardKey.New, self.new_project)
        self.action_open = self._action("&Open project…", "open", QKeySequence.StandardKey.Open, self._open_dialog)
        self.action_save = self._action("&Save project", "save", QKeySequence.StandardKey.Save, self.save_project)
        self.action_save_as = self._action("Save project &as…", None, QKeySequence.StandardKey.SaveAs, self._save_as_dialog)
        self.action_import = self._action("&Import timeline JSON…", None, None, self._import_timeline_dialog)
        self.action_export = self._action("&Export MP4…", "export", "Ctrl+E", self._export_dialog)
        self.action_quit = self._action("&Quit", None, QKeySequence.StandardKey.Quit, self.close)
        self.action_undo = self.doc.undo_stack.createUndoAction(self, "&Undo")
        self.action_undo.setShortcut(QKeySequence.StandardKey.Undo)
        self.action_undo.setIcon(load_icon("undo"))
        self.action_redo = self.doc.undo_stack.createRedoAction(self, "&Redo")
        self.action_redo.setShortcut(QKeySequence.StandardKey.Redo)
        self.action_redo.setIcon(load_icon("redo"))
        self.addAction(self.action_undo)
        self.addAction(self.action_redo)
        self.action_generate = self._action("&Generate", "generate", "Ctrl+Return", self.generate,
                                            "Generate the whole timeline")
        self.action_extend = self._action("E&xtend", "extend", "Ctrl+Shift+Return", self.extend,
                                          "Add seconds at the end, continuing the video")
        self.action_regenerate = self._action("&Regenerate", "regenerate", "Ctrl+R",
                                              self.regenerate_selected, "Make a new take from the selected block on")
        self.action_cancel = self._action("&Cancel", "cancel", "Esc", self.cancel, "Stop the running job")
        self.action_play = self._action("Play / pause", "play", "Space", self.player.toggle)
        self.action_settings = self._action("&Settings…", "settings", "Ctrl+,", self._settings_dialog)
        self.action_models = self._action("&Model manager…", "models", None, self.show_model_manager)
        self.extend_seconds = QDoubleSpinBox(self)
        self.extend_seconds.setRange(BLOCK_SECONDS, 60.0)
        self.extend_seconds.setSingleStep(BLOCK_SECONDS)
        self.extend_seconds.setValue(5.0)
        self.extend_seconds.setSuffix(" s")
        self.extend_seconds.setToolTip("How much Extend adds")

        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        for a in (self.action_new, self.action_open):
            file_menu.addAction(a)
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        for a in (self.action_save, self.action_save_as, self.action_import, self.action_export):
            file_menu.addAction(a)
        file_menu.addSeparator()
        file_menu.addAction(self.action_quit)
        edit_menu = menu.addMenu("&Edit")
        edit_menu.addAction(self.action_undo)
        edit_menu.addAction(self.action_redo)
        edit_menu.addSeparator()
        edit_menu.addAction(self.action_settings)
        gen_menu = menu.addMenu("&Generate")
        for a in (self.action_generate, self.action_extend, self.action_regenerate, self.action_cancel):
            gen_menu.addAction(a)
        view_menu = menu.addMenu("&View")
        view_menu.addAction(self.action_play)
        for dock in self.docks:
            view_menu.addAction(dock.toggleViewAction())
        menu.addMenu("&Models").addAction(self.action_models)

        files = QToolBar("Project", self)
        files.setObjectName("projectToolbar")
        files.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        for a in (self.action_new, self.action_open, self.action_save, self.action_undo, self.action_redo):
            files.addAction(a)
        self.addToolBar(files)
        bar = QToolBar("Generate", self)
        bar.setObjectName("generateToolbar")
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        bar.addAction(self.action_generate)
        bar.addAction(self.action_extend)
        bar.addWidget(self.extend_seconds)
        bar.addAction(self.action_regenerate)
        bar.addAction(self.action_cancel)
        bar.addSeparator()
        bar.addAction(self.action_export)
        bar.addAction(self.action_settings)
        self.addToolBar(bar)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.stage_label = QLabel("Idle", self)
        self.progress = QProgressBar(self)
        self.progress.setFixedWidth(220)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self.eta_label = QLabel("", self)
        self.vram_label = QLabel("VRAM —", self)
        self.precision_label = QLabel("", self)
        self.demo_badge = QLabel("DEMO — random weights", self)
        self.demo_badge.setObjectName("demoBadge")
        self.demo_badge.setToolTip("The embedded demo model has random weights: it shows how the app works, "
                                   "not what the real model makes. Load a real model in Model Manager.")
        self.demo_badge.setVisible(False)
        bar.addWidget(self.stage_label, 1)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.eta_label)
        bar.addPermanentWidget(self.vram_label)
        bar.addPermanentWidget(self.precision_label)
        bar.addPermanentWidget(self.demo_badge)

    # ------------------------------------------------------------------ errors
    def report_error(self, title: str, message: str, details: str = "") -> QMessageBox:
        """A readable, non-blocking message box (the window keeps running; generation is never frozen by it)."""
        log.warning("%s: %s", title, message)
        self.errors.append((title, message))
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        if details:
            box.setDetailedText(details)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.last_error_box = box
        return box

    # ------------------------------------------------------------------ timeline editing helpers
    def _on_clip_selected(self, index: int) -> None:
        enabled = index >= 0
        for w in (self.clip_seconds, self.clip_seed, self.remove_clip_button):
            w.setEnabled(enabled)
        if enabled:
            clip = self.doc.clip(index)
            self.clip_seconds.blockSignals(True)
            self.clip_seconds.setValue(clip.seconds)
            self.clip_seconds.blockSignals(False)
            self.clip_seed.blockSignals(True)
            self.clip_seed.setValue(-1 if clip.seed is None else clip.seed)
            self.clip_seed.blockSignals(False)

    def _apply_clip_seconds(self) -> None:
        index = self.timeline_widget.selected
        if index >= 0:
            try:
                self.doc.resize_clip(index, self.clip_seconds.value())
            except StudioError as exc:
                self.report_error("Cannot resize the clip", str(exc))

    def _apply_clip_seed(self) -> None:
        index = self.timeline_widget.selected
        if index >= 0:
            value = self.clip_seed.value()
            self.doc.set_seed(index, None if value < 0 else value)

    def _on_timeline_changed(self) -> None:
        total = self.doc.total_seconds
        self.total_label.setText(f"{total:g} s · {int(total / BLOCK_SECONDS)} blocks")
        self._on_clip_selected(self.timeline_widget.selected)
        self._update_title()
        self._mark_stale_blocks()

    def _mark_stale_blocks(self) -> None:
        """A finished block whose prompt is no longer the timeline's prompt for it is stale: kept (nothing is thrown
        away), marked, and redone by the next Generate."""
        try:
            clips = self.doc.to_timeline().block_clips()
        except StudioError:   # an empty / invalid timeline while editing: leave the marks as they are
            return
        for block in range(self.takes.num_blocks):
            take = self.takes.current(block)
            if take is None or not take.prompt:
                continue
            stale = block >= len(clips) or clips[block].prompt != take.prompt
            nbytes = self.block_strip.disk_bytes[block] if block < self.block_strip.num_blocks else None
            self.block_strip.set_disk_info(block, nbytes, stale)

    # ------------------------------------------------------------------ engine / jobs
    def ensure_engine(self) -> None:
        """Queue loading the configured model unless it is loaded already or queued."""
        if self.adapter.loaded or any(j.kind == "load" for j in self._all_jobs()):
            return
        model = self.gen.model or DEMO_MODEL
        self.jobs.submit(Job(f"Load model {model}", lambda cancel, m=model: self.adapter.load(
            m, self.gen.precision, self.gen.vram_mode, RESOLUTIONS.get(self.gen.resolution), self.gen.quant_layers),
            kind="load"))

    def _all_jobs(self) -> list[Job]:
        return ([self.jobs.current] if self.jobs.current else []) + list(self.jobs.pending)

    def generate(self) -> None:
        self._submit_generation(Action("generate"))

    def extend(self) -> None:
        if self.takes.num_blocks == 0:
            self.report_error("Nothing to extend", "Generate a video first; Extend continues it at the end.")
            return
        self._submit_generation(Action("extend", seconds=self.extend_seconds.value()))

    def regenerate_selected(self) -> None:
        self.regenerate_from(self.block_strip.selected)

    def regenerate_from(self, block: int, seed: int | None = None) -> None:
        if not 0 <= block < self.takes.num_blocks:
            self.report_error("Select a block", "Click a generated block in the generation timeline first; "
                                                "Regenerate makes a new take from that block to the end.")
            return
        seed = seed if seed is not None else random.randrange(2**31)
        self._submit_generation(Action("regenerate", from_block=block, seed=seed))

    def _submit_generation(self, action: Action) -> None:
        try:
            timeline = self.doc.to_timeline()
            if action.kind == "extend":   # the last clip grows (undoable); the job gets the extended timeline
                last = len(self.doc) - 1
                self.doc.resize_clip(last, self.doc.clip(last).seconds + action.seconds)
                timeline = self.doc.to_timeline()
        except StudioError as exc:
            self.report_error("Cannot extend" if action.kind == "extend" else "Cannot generate", str(exc))
            return
        seed = self.project_seed.value()
        self.ensure_engine()
        scratch = self.scratch_root / f"{time.strftime('project-%Y%m%d-%H%M%S')}-{random.randrange(16**6):06x}"
        title = {"generate": f"Generate {timeline.total_seconds:g} s",
                 "extend": f"Extend by {action.seconds:g} s",
                 "regenerate": f"Regenerate from block {action.from_block + 1}"}[action.kind]
        context = {"action": action, "timeline": timeline, "seed": seed}
        # path_refs (the takes shown = the branch to continue) is filled in when the job starts, after earlier jobs
        job = Job(title, lambda cancel: self.adapter.generate(timeline, seed, cancel, action, scratch, self.gen.steps,
                                                              path_refs=context["path_refs"]),
                  kind="generate", context=context)
        self.jobs.submit(job)

    def cancel(self) -> None:
        """Esc: stop the running job (the engine checks between steps) and drop queued ones."""
        if self.jobs.busy or self.jobs.pending:
            self.jobs.cancel_all()
            self.stage_label.setText("Cancelling…")

    def _on_job_started(self, job: Job) -> None:
        self.stage_label.setText(job.title + "…")
        self.progress.setRange(0, 0)
        if job.kind != "generate":
            return
        self._gen_started = time.monotonic()
        self.video.job_started(job, len(job.context["timeline"].blocks()))
        self._update_actions()

    def _on_job_event(self, job: Job, event, payload) -> None:
        try:
            self._handle_event(job, event, payload)
        except StudioError as exc:   # a slot must never leave a traceback on stderr alone
            job.cancel_token.cancel()
            self.report_error("Generation failed", str(exc))

    def _handle_event(self, job: Job, event, payload) -> None:
        if isinstance(event, StageEvent):
            self.stage_label.setText(f"{event.stage}: {event.detail}" if event.detail else event.stage)
            if event.percent is not None:
                self.progress.setRange(0, 100)
                self.progress.setValue(int(event.percent))
            if self.model_dialog is not None and job.kind == "download":
                self.model_dialog.set_progress(event.percent, event.detail)
        elif isinstance(event, StepEvent):
            done = event.block * event.num_steps + event.step
            total = max(1, event.num_blocks * event.num_steps)
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.progress.setFormat(f"block {event.block + 1}/{event.num_blocks} · step {event.step}/{event.num_steps}")
            self.stage_label.setText(f"Generating block {event.block + 1} of {event.num_blocks}")
            self.eta_label.setText(f"ETA {event.eta_s:.0f} s" if event.eta_s is not None else "")
            self.video.handle(job, event, payload)
        elif isinstance(event, (BlockPreviewEvent, BlockDoneEvent)):
            self.video.handle(job, event, payload)
        elif isinstance(event, FinishedEvent):
            if job.kind == "export" and event.output and not event.cancelled:
                self.statusBar().showMessage(f"Exported {event.output}", 10000)
                self.last_export = event.output

    def _on_job_failed(self, job: Job, message: str, details: str) -> None:
        title = {"load": "Cannot load the model", "generate": "Generation failed", "export": "Export failed",
                 "download": "Download failed", "save": "Cannot save the project"}.get(job.kind, "Error")
        job.context["failed"] = True
        if job.kind == "load":   # jobs that needed the model cannot run now
            self.jobs.pending = [j for j in self.jobs.pending if j.kind != "generate"]
        if job.kind == "download" and self.model_dialog is not None:
            self.model_dialog.download_finished(job.context.get("model", ""), message)
        self.report_error(title, message, details)

    def _on_job_finished(self, job: Job, cancelled: bool) -> None:
        self.progress.setRange(0, 100)
        self.progress.setFormat("%p%")
        self.eta_label.setText("")
        if job.kind == "load":
            self._update_engine_labels()
        if job.kind == "open":   # replayed: show the project's current take
            self.video.show_refs(self.adapter.current_path_refs())
        if job.kind == "download" and self.model_dialog is not None and job.context.get("ok"):
            self.model_dialog.download_finished(job.context["model"], None)
        if job.kind == "save" and job.context.get("folder") and not job.context.get("failed"):
            self._after_save(Path(job.context["folder"]))
        if job.kind == "generate":
            self.video.job_finished(cancelled)
            if job.context.get("failed"):
                self.stage_label.setText("Failed (see the message)")
            else:
                self.stage_label.setText("Cancelled" if cancelled else
                                         f"Done in {time.monotonic() - self._gen_started:.1f} s")
            self.progress.setValue(0 if cancelled else 100)
            self._update_title()
        elif not self.jobs.busy:
            self.stage_label.setText("Cancelled" if cancelled else "Idle")
        self._update_actions()
        if job.kind == "generate":
            self.generation_finished.emit(cancelled)

    def _refresh_queue(self) -> None:
        self.queue_list.clear()
        if self.jobs.current is not None:
            self.queue_list.addItem(f"▶ {self.jobs.current.title}")
        for job in self.jobs.pending:
            item = QListWidgetItem(f"⏳ {job.title}")
            item.setData(Qt.ItemDataRole.UserRole, job.job_id)
            self.queue_list.addItem(item)
        self._update_actions()

    def _remove_selected_job(self) -> None:
        item = self.queue_list.currentItem()
        if item is not None and item.data(Qt.ItemDataRole.UserRole) is not None:
            self.jobs.remove_pending(int(item.data(Qt.ItemDataRole.UserRole)))

    def _update_actions(self) -> None:
        busy = self.jobs.busy
        has_blocks = self.takes.num_blocks > 0
        self.action_cancel.setEnabled(busy or bool(self.jobs.pending))
        self.action_extend.setEnabled(has_blocks)
        self.action_regenerate.setEnabled(has_blocks)
        self.action_export.setEnabled(has_blocks and not busy)

    def _update_engine_labels(self) -> None:
        info = self.adapter.info
        self.demo_badge.setVisible(self.adapter.is_demo)
        if info:
            self.precision_label.setText(f"{info.get('precision', '?')} · {info.get('device', '?')} · "
                                         f"{info.get('width', '?')}×{info.get('height', '?')}")
        self._update_title()

    def _update_vram(self) -> None:
        mem = self.adapter.cuda_memory()
        self.vram_label.setText("VRAM — (no CUDA)" if mem is None else
                                f"VRAM {mem[0] / 2**30:.1f} / {mem[1] / 2**30:.0f} GiB")

    def _on_clean_changed(self, clean: bool) -> None:
        self._clean = clean   # kept here: the slot may run while the window's children are being destroyed
        self._update_title()

    def _update_title(self) -> None:
        name = self.project_saved_folder.name if self.project_saved_folder else "Untitled"
        dirty = "" if getattr(self, "_clean", True) else " *"
        demo = " [DEMO — random weights]" if self.adapter.is_demo else ""
        self.setWindowTitle(f"{name}{dirty} — {APP_NAME}{demo}")

    # ------------------------------------------------------------------ projects
    def new_project(self) -> None:
        if self.jobs.busy:
            self.report_error("Busy", "Cancel the running job before starting a new project.")
            return
        self.adapter.close_project()
        self.project_saved_folder = None
        self.video.clear()
        self.doc.reset(Timeline([Clip("Describe the first shot here.", self.gen.seconds)]))
        self._update_actions()

    def _open_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open project folder", str(Path.home()))
        if folder:
            self.open_project(folder)

    def open_project(self, folder: str | Path) -> bool:
        """Open a project folder. A broken one shows a message and changes nothing."""
        if self.jobs.busy:
            self.report_error("Busy", "Cancel the running job before opening another project.")
            return False
        previous = self.adapter.project
        try:
            timeline, seed = self.adapter.open_project(folder)
        except (StudioError, OSError, ValueError) as exc:
            self.adapter.project = previous
            self.report_error("Cannot open the project", f"{folder}: {exc}")
            return False
        self.project_saved_folder = Path(folder)
        self.project_seed.setValue(seed)
        self.doc.reset(timeline)
        self.video.clear()
        self.settings.add_recent_project(str(folder))
        self._update_title()
        self._update_actions()
        self.jobs.submit(Job(f"Open {Path(folder).name}", self.adapter.project_events, kind="open"))
        return True

    def save_project(self) -> None:
        if self.project_saved_folder is None:
            self._save_as_dialog()
        else:
            self.save_project_as(self.project_saved_folder)

    def _save_as_dialog(self) -> None:
        folder, _ = QFileDialog.getSaveFileName(self, "Save project as (a new folder)", str(Path.home() / "my-video"))
        if folder:
            self.save_project_as(folder)

    def save_project_as(self, folder: str | Path) -> None:
        try:
            timeline = self.doc.to_timeline()
        except StudioError as exc:
            self.report_error("Cannot save the project", str(exc))
            return
        seed = self.project_seed.value()
        self.ensure_engine()   # a new project records the model it is made with
        job = Job(f"Save project to {Path(folder).name}",
                  lambda cancel: self.adapter.save_project_as(folder, timeline, seed), kind="save",
                  context={"folder": str(folder)})
        self.jobs.submit(job)

    def _after_save(self, folder: Path) -> None:
        self.project_saved_folder = folder
        self.doc.undo_stack.setClean()
        self.settings.add_recent_project(str(folder))
        self.statusBar().showMessage(f"Saved {folder}", 5000)
        self._update_title()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_projects()
        if not recent:
            self.recent_menu.addAction("(none)").setEnabled(False)
        for folder in recent:
            self.recent_menu.addAction(folder, lambda f=folder: self.open_project(f))

    def _import_timeline_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import timeline", str(Path.home()), "Timeline JSON (*.json)")
        if path:
            self.import_timeline(path)

    def import_timeline(self, path: str | Path) -> bool:
        try:
            self.doc.replace_all(Timeline.from_json_file(path), "Import timeline")
            return True
        except StudioError as exc:
            self.report_error("Cannot import the timeline", str(exc))
            return False

    # ------------------------------------------------------------------ export
    def _export_dialog(self) -> None:
        base = self.project_saved_folder or Path.home()
        suggested = (base / "video.mp4") if self.project_saved_folder else Path.home() / "video.mp4"
        dialog = ExportDialog(suggested, self.settings.export_crf(), len(self.player.frames),
                              self.adapter.project_takes(), self)
        dialog.accepted.connect(lambda: self.export_to(*dialog.values()))
        dialog.open()
        self.export_dialog = dialog

    def export_to(self, path: str | Path, crf: int = 18, frame_range: tuple[int, int] | None = None,
                  takes: str = "shown") -> None:
        path = Path(path)
        if frame_range is not None and frame_range[1] <= frame_range[0]:
            self.report_error("Cannot export", f"the frame range {frame_range[0]}..{frame_range[1]} is empty")
            return
        take_path = takes   # a take id of the project, or the path of takes shown
        if takes == "shown":
            refs = self.video.path_refs()
            take_path = refs if all(r is not None for r in refs) and refs else None
        self.settings.set_export_crf(crf)
        self.jobs.submit(Job(f"Export {path.name}", lambda cancel: self.adapter.export(path, crf, take_path, frame_range),
                             kind="export", context={"path": str(path)}))

    # ------------------------------------------------------------------ settings and models
    def _settings_dialog(self) -> None:
        models = [(m[0], m[1]) for m in self.adapter.known_models()]
        dialog = SettingsDialog(self.gen, models, self)
        dialog.accepted.connect(lambda: self.apply_settings(dialog.values()))
        dialog.open()
        self.settings_dialog = dialog

    def apply_settings(self, values) -> None:
        reload = ((values.model, values.precision, values.quant_layers, values.vram_mode, values.resolution)
                  != (self.gen.model, self.gen.precision, self.gen.quant_layers, self.gen.vram_mode,
                      self.gen.resolution))
        self.gen = values
        self.settings.set_generation(values)
        self.project_seed.setValue(values.seed)
        if reload and self.adapter.loaded:
            self.adapter.engine = None   # the next job reloads with the new model / precision
            self.ensure_engine()

    def show_model_manager(self) -> ModelManagerDialog:
        has_gpu = self.adapter.cuda_memory() is not None
        dialog = ModelManagerDialog(self.adapter.known_models(), has_gpu, self)
        dialog.model_chosen.connect(self._use_model)
        dialog.download_requested.connect(self._download_model)
        dialog.open()
        self.model_dialog = dialog
        return dialog

    def _use_model(self, model_id: str) -> None:
        self.gen.model = model_id
        self.settings.set_generation(self.gen)
        self.adapter.engine = None
        self.ensure_engine()

    def _download_model(self, model_id: str) -> None:
        job = Job(f"Download {model_id}", lambda cancel: self._download_events(model_id, job), kind="download",
                  context={"model": model_id})
        self.jobs.submit(job)

    def _download_events(self, model_id: str, job: Job):
        yield from self.adapter.download(model_id)
        job.context["ok"] = True

    # ------------------------------------------------------------------ window state
    def _restore_geometry(self) -> None:
        geometry = self.settings.geometry()
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 820)
        state = self.settings.window_state()
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        """Cancel the running job and wait for it (the engine stops within one step)."""
        if self.jobs.busy:
            self.stage_label.setText("Stopping…")
        if not self.jobs.shutdown(timeout_ms=60000):
            log.error("the running job did not stop within 60 s; closing anyway")
        self.settings.set_geometry(self.saveGeometry())
        self.settings.set_window_state(self.saveState())
        self._vram_timer.stop()
        super().closeEvent(event)
