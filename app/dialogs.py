"""Settings, Export and Model Manager dialogs. They only collect values; the window acts on them."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.settings import DEMO_MODEL, PRECISIONS, QUANT_LAYERS, RESOLUTIONS, VRAM_MODES, GenerationSettings
from core.timeline import FPS

PRECISION_LABELS = {"auto": "Auto (best the GPU supports)", "nvfp4": "NVFP4 (Blackwell)", "fp8": "FP8 (Ada / Hopper)",
                    "bf16": "bf16 (full precision)"}
QUANT_LAYER_LABELS = {"default": "Middle blocks (first and last two stay bf16)", "all-blocks": "All blocks (fastest)"}
VRAM_LABELS = {"auto": "Auto", "high": "High (keep everything on the GPU)", "low": "Low (offload text encoder / VAE)"}


class SettingsDialog(QDialog):
    def __init__(self, settings: GenerationSettings, models: list[tuple[str, str]], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.model = QComboBox(self)
        self.model.setEditable(True)  # a local model folder can be typed in
        self.model.addItem("Demo model (tiny, random weights)", DEMO_MODEL)
        for model_id, title in models:
            self.model.addItem(title, model_id)
        index = self.model.findData(settings.model)
        if index >= 0:
            self.model.setCurrentIndex(index)
        elif settings.model:
            self.model.setEditText(settings.model)
        self.resolution = QComboBox(self)
        self.resolution.addItems(list(RESOLUTIONS))
        self.resolution.setCurrentText(settings.resolution)
        self.seconds = QSpinBox(self)
        self.seconds.setRange(3, 255)
        self.seconds.setSuffix(" s")
        self.seconds.setValue(int(round(settings.seconds)))
        self.seed = QSpinBox(self)
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(settings.seed)
        self.steps = QSpinBox(self)
        self.steps.setRange(0, 100)
        self.steps.setSpecialValueText("model default")
        self.steps.setValue(settings.steps)
        self.precision = QComboBox(self)
        for key in PRECISIONS:
            self.precision.addItem(PRECISION_LABELS[key], key)
        self.precision.setCurrentIndex(PRECISIONS.index(settings.precision))
        self.quant_layers = QComboBox(self)   # used with nvfp4 / fp8 (auto picks one of them on RTX 40 / 50, H100)
        for key in QUANT_LAYERS:
            self.quant_layers.addItem(QUANT_LAYER_LABELS[key], key)
        self.quant_layers.setCurrentIndex(QUANT_LAYERS.index(settings.quant_layers))
        self.quant_layers.setToolTip("Which transformer blocks run in NVFP4 / FP8 (ignored in bf16)")
        self.vram = QComboBox(self)
        for key in VRAM_MODES:
            self.vram.addItem(VRAM_LABELS[key], key)
        self.vram.setCurrentIndex(VRAM_MODES.index(settings.vram_mode))
        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("Resolution", self.resolution)
        form.addRow("Default length", self.seconds)
        form.addRow("Seed", self.seed)
        form.addRow("Steps per block", self.steps)
        form.addRow("Precision", self.precision)
        form.addRow("Quantized layers", self.quant_layers)
        form.addRow("VRAM mode", self.vram)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def values(self) -> GenerationSettings:
        model = self.model.currentData() if self.model.currentText() == self.model.itemText(self.model.currentIndex()) \
            else self.model.currentText().strip()
        return GenerationSettings(model=str(model or ""), resolution=self.resolution.currentText(),
                                  seconds=float(self.seconds.value()), seed=self.seed.value(),
                                  steps=self.steps.value(), precision=self.precision.currentData(),
                                  quant_layers=self.quant_layers.currentData(),
                                  vram_mode=self.vram.currentData()).validate()


class ExportDialog(QDialog):
    """CRF, frame range and which take path (the one shown, or any take of the project)."""

    def __init__(self, suggested_path: Path, crf: int, total_frames: int, takes: list[tuple[str, str]] = (),
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export MP4")
        self.path = QLineEdit(str(suggested_path), self)
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._browse)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(browse)
        self.crf = QSpinBox(self)
        self.crf.setRange(0, 51)
        self.crf.setValue(crf)
        self.crf.setToolTip("H.264 quality: lower is better and larger; 18 is visually lossless")
        self.start = QSpinBox(self)
        self.end = QSpinBox(self)
        for box in (self.start, self.end):
            box.setRange(0, max(0, total_frames))
        self.end.setValue(total_frames)
        range_row = QHBoxLayout()
        range_row.addWidget(QLabel("frames", self))
        range_row.addWidget(self.start)
        range_row.addWidget(QLabel("to", self))
        range_row.addWidget(self.end)
        range_row.addWidget(QLabel(f"(of {total_frames}, {FPS} fps)", self))
        self.take = QComboBox(self)
        self.take.addItem("The takes shown in the player", "shown")
        for take_id, label in takes:   # every path through the project's tree of takes
            self.take.addItem(label, take_id)
        form = QFormLayout()
        form.addRow("File", path_row)
        form.addRow("Quality (CRF)", self.crf)
        form.addRow("Range", range_row)
        form.addRow("Takes", self.take)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export MP4", self.path.text(), "MP4 video (*.mp4)")
        if path:
            self.path.setText(path if path.lower().endswith(".mp4") else path + ".mp4")

    def values(self) -> tuple[Path, int, tuple[int, int] | None, str]:
        start, end = self.start.value(), self.end.value()
        frame_range = None if (start == 0 and end == self.end.maximum()) else (start, end)
        return Path(self.path.text().strip()), self.crf.value(), frame_range, self.take.currentData()


class ModelManagerDialog(QDialog):
    """Installed models, downloads with progress, and 'Use demo model' (no GPU / no model yet)."""

    download_requested = Signal(str)
    model_chosen = Signal(str)

    def __init__(self, models: list[tuple[str, str, bool, float]], has_gpu: bool, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Model Manager")
        self.setMinimumWidth(520)
        intro = QLabel(
            "Pick the model to generate with. Models are downloaded once into the Hugging Face cache." +
            ("" if has_gpu else "\n\nNo CUDA GPU was found: real models need an NVIDIA GPU. "
                                "The demo model runs on the CPU with random weights (it shows how the app works)."),
            self)
        intro.setWordWrap(True)
        self.list = QListWidget(self)
        for model_id, title, installed, gigabytes in models:
            item = QListWidgetItem(f"{title}  —  {'installed' if installed else f'not installed (~{gigabytes:.1f} GB)'}")
            item.setData(Qt.ItemDataRole.UserRole, (model_id, installed))
            self.list.addItem(item)
        if not models:
            self.list.addItem("No model registry in this build: use the demo model or a local folder in Settings.")
        self.progress = QProgressBar(self)
        self.progress.setVisible(False)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.use_button = QPushButton("Use selected", self)
        self.download_button = QPushButton("Download", self)
        self.demo_button = QPushButton("Use demo model", self)
        self.use_button.clicked.connect(self._use)
        self.download_button.clicked.connect(self._download)
        self.demo_button.clicked.connect(lambda: self._choose("demo"))
        self.list.currentItemChanged.connect(lambda *_: self._update_buttons())
        buttons = QHBoxLayout()
        buttons.addWidget(self.demo_button)
        buttons.addStretch(1)
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.use_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        if not has_gpu:
            self.demo_button.setDefault(True)
        self._update_buttons()

    def _selected(self) -> tuple[str, bool] | None:
        item = self.list.currentItem()
        data = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        return tuple(data) if data else None

    def _update_buttons(self) -> None:
        sel = self._selected()
        self.use_button.setEnabled(bool(sel and sel[1]))
        self.download_button.setEnabled(bool(sel and not sel[1]))

    def _use(self) -> None:
        sel = self._selected()
        if sel and sel[1]:
            self._choose(sel[0])

    def _download(self) -> None:
        sel = self._selected()
        if sel:
            self.progress.setVisible(True)
            self.progress.setRange(0, 0)
            self.status.setText(f"Downloading {sel[0]}…")
            self.download_button.setEnabled(False)
            self.download_requested.emit(sel[0])

    def set_progress(self, percent: float | None, detail: str) -> None:
        self.progress.setVisible(True)
        if percent is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(percent))
        self.status.setText(detail)

    def download_finished(self, model_id: str, error: str | None) -> None:
        self.progress.setVisible(False)
        if error:
            self.status.setText(f"Download of {model_id} failed: {error}")
            self._update_buttons()
            return
        for i in range(self.list.count()):
            item = self.list.item(i)
            data = item.data(Qt.ItemDataRole.UserRole)
            if data and data[0] == model_id:
                item.setData(Qt.ItemDataRole.UserRole, (model_id, True))
                item.setText(item.text().split("  —  ")[0] + "  —  installed")
        self.status.setText(f"{model_id} is installed.")
        self._update_buttons()

    def _choose(self, model_id: str) -> None:
        self.model_chosen.emit(model_id)
        self.accept()
