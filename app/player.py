"""A frame player: play / pause / scrub at 16 fps over the frames received so far (QImages)."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QColor, QImage, QPainter, QPaintEvent, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QSlider, QToolButton, QVBoxLayout, QWidget

from core.timeline import FPS
from resources import load_icon


class _FrameView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.pixmap: QPixmap | None = None
        self.caption = "No frames yet: press Generate (Ctrl+Return)"
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 180)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(640, 360)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#1d2128"))
        if self.pixmap is None:
            p.setPen(QColor("#81a1c1"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.caption)
            return
        scaled = self.pixmap.scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation)
        p.drawPixmap((self.width() - scaled.width()) // 2, (self.height() - scaled.height()) // 2, scaled)


class PlayerWidget(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.frames: list[QImage] = []
        self.position = 0
        self.view = _FrameView(self)
        self.play_button = QToolButton(self)
        self.play_button.setIcon(load_icon("play"))
        self.play_button.setToolTip("Play / pause (Space)")
        self.play_button.clicked.connect(self.toggle)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self.seek)
        self.time_label = QLabel("0.00 s / 0.00 s", self)
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / FPS))  # 16 fps
        self.timer.timeout.connect(self._advance)
        controls = QHBoxLayout()
        controls.addWidget(self.play_button)
        controls.addWidget(self.slider, 1)
        controls.addWidget(self.time_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view, 1)
        layout.addLayout(controls)

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def set_frames(self, frames: list[QImage], keep_position: bool = True) -> None:
        self.frames = frames
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, len(frames) - 1))
        self.slider.blockSignals(False)
        self.seek(min(self.position, len(frames) - 1) if keep_position else 0)

    def seek(self, index: int) -> None:
        if not self.frames:
            self.position = 0
            self.view.pixmap = None
            self.view.update()
            self._update_label()
            return
        self.position = max(0, min(index, len(self.frames) - 1))
        self.view.pixmap = QPixmap.fromImage(self.frames[self.position])
        self.view.update()
        if self.slider.value() != self.position:
            self.slider.blockSignals(True)
            self.slider.setValue(self.position)
            self.slider.blockSignals(False)
        self._update_label()

    def play(self) -> None:
        if self.frames:
            if self.position >= len(self.frames) - 1:
                self.seek(0)
            self.timer.start()
            self.play_button.setIcon(load_icon("pause"))

    def pause(self) -> None:
        self.timer.stop()
        self.play_button.setIcon(load_icon("play"))

    def toggle(self) -> None:
        self.pause() if self.playing else self.play()

    def _advance(self) -> None:
        if self.position + 1 >= len(self.frames):
            self.pause()
            return
        self.seek(self.position + 1)

    def _update_label(self) -> None:
        total = len(self.frames) / FPS
        self.time_label.setText(f"{self.position / FPS:.2f} s / {total:.2f} s")
