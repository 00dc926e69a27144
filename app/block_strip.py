"""The generation timeline: one thumbnail per block, shown while the block is being made (the step preview) and
replaced by the first decoded frame when the block is done."""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

THUMB_W, THUMB_H, GAP = 112, 64, 6


class BlockStrip(QWidget):
    block_selected = Signal(int)

    PENDING, RUNNING, DONE = "pending", "running", "done"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pixmaps: list[QPixmap | None] = []
        self.states: list[str] = []
        self._steps: list[str] = []
        self.disk_bytes: list[int | None] = []   # what each block costs on disk (shown as a tooltip)
        self.stale: list[bool] = []             # the prompt timeline changed under this block since it was made
        self.selected = -1
        self.done_order: list[int] = []   # block indices in the order their final thumbnail arrived
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(THUMB_H + 26)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(max(1, len(self.states)) * (THUMB_W + GAP) + GAP, THUMB_H + 26)

    # ---- state ----
    @property
    def num_blocks(self) -> int:
        return len(self.states)

    def set_num_blocks(self, n: int) -> None:
        """Grow or shrink to n slots, keeping existing thumbnails."""
        while len(self.states) < n:
            self._pixmaps.append(None)
            self.states.append(self.PENDING)
            self._steps.append("")
            self.disk_bytes.append(None)
            self.stale.append(False)
        del self._pixmaps[n:], self.states[n:], self._steps[n:], self.disk_bytes[n:], self.stale[n:]
        self.setMinimumWidth(self.sizeHint().width())
        self.updateGeometry()
        self.update()

    def reset_from(self, block: int) -> None:
        """Blocks >= block become pending again (Regenerate from block); earlier blocks keep their thumbnails."""
        for i in range(block, len(self.states)):
            self._pixmaps[i], self.states[i], self._steps[i] = None, self.PENDING, ""
            self.disk_bytes[i], self.stale[i] = None, False
        self.done_order = [b for b in self.done_order if b < block]
        self.update()

    def set_step(self, block: int, step: int, num_steps: int, preview: QImage | None) -> None:
        self.set_num_blocks(max(self.num_blocks, block + 1))
        self.states[block] = self.RUNNING
        self._steps[block] = f"step {step}/{num_steps}"
        if preview is not None:
            self._pixmaps[block] = self._thumb(preview)
        self.update()

    def set_done(self, block: int, thumbnail: QImage | None) -> None:
        self.set_num_blocks(max(self.num_blocks, block + 1))
        self.states[block] = self.DONE
        self._steps[block] = ""
        if thumbnail is not None:
            self._pixmaps[block] = self._thumb(thumbnail)
        if block not in self.done_order:
            self.done_order.append(block)
        self.update()

    def set_disk_info(self, block: int, nbytes: int | None, stale: bool = False) -> None:
        """Disk cost of a finished block and whether the timeline has changed under it since."""
        self.set_num_blocks(max(self.num_blocks, block + 1))
        self.disk_bytes[block], self.stale[block] = nbytes, bool(stale)
        self.update()

    def tooltip_text(self, block: int) -> str:
        if not 0 <= block < self.num_blocks:
            return ""
        parts = [f"Block {block + 1} ({block * 2.5:g} s)"]
        if self.disk_bytes[block] is not None:
            parts.append(f"{self.disk_bytes[block] / 2**20:.1f} MiB on disk")
        if self.stale[block]:
            parts.append("stale: the prompt changed since it was made; Generate redoes it")
        return " - ".join(parts)

    def event(self, event) -> bool:  # noqa: D102 - tooltips per block
        from PySide6.QtCore import QEvent
        from PySide6.QtWidgets import QToolTip

        if event.type() == QEvent.Type.ToolTip:
            block = next((i for i in range(self.num_blocks) if self.slot_rect(i).contains(event.pos())), -1)
            text = self.tooltip_text(block)
            if text:
                QToolTip.showText(event.globalPos(), text, self)
            else:
                QToolTip.hideText()
            return True
        return super().event(event)

    @staticmethod
    def _thumb(image: QImage) -> QPixmap:
        """Scaled once here, not on every paint (QPixmap only on the GUI thread)."""
        return QPixmap.fromImage(image.scaled(THUMB_W, THUMB_H, Qt.AspectRatioMode.KeepAspectRatioByExpanding,
                                              Qt.TransformationMode.SmoothTransformation))

    def thumbnail(self, block: int) -> QImage | None:
        pixmap = self._pixmaps[block]
        return pixmap.toImage() if pixmap is not None else None

    def select(self, block: int) -> None:
        self.selected = block if 0 <= block < self.num_blocks else -1
        self.block_selected.emit(self.selected)
        self.update()

    # ---- painting / input ----
    def slot_rect(self, block: int) -> QRect:
        return QRect(GAP + block * (THUMB_W + GAP), 4, THUMB_W, THUMB_H)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        for i in range(self.num_blocks):
            if self.slot_rect(i).adjusted(0, 0, 0, 20).contains(event.position().toPoint()):
                self.select(i)
                return
        self.select(-1)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#242933"))
        for i in range(self.num_blocks):
            r = self.slot_rect(i)
            pixmap = self._pixmaps[i]
            if pixmap is not None:
                src = pixmap.rect()
                src.setSize(r.size().boundedTo(src.size()))
                src.moveCenter(pixmap.rect().center())   # centre crop of the expanded thumbnail
                p.drawPixmap(r, pixmap, src)
            else:
                p.fillRect(r, QColor("#3b4252"))
            border = {"pending": "#4c566a", "running": "#ebcb8b", "done": "#a3be8c"}[self.states[i]]
            if self.stale[i]:
                border = "#d08770"   # stale: made with a prompt that has since changed
            p.setPen(QPen(QColor("#eceff4") if i == self.selected else QColor(border), 3 if i == self.selected else 2))
            p.drawRect(r)
            p.setPen(QColor("#d8dee9"))
            label = f"#{i + 1}  {i * 2.5:g}s" + (f"  {self._steps[i]}" if self._steps[i] else "")
            p.drawText(QRect(r.left(), r.bottom() + 2, r.width(), 18), Qt.AlignmentFlag.AlignLeft, label)
