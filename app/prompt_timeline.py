"""The prompt timeline: clips drawn proportionally to their duration (Daydream Scope's prompt timeline, snapped to
LongSANA blocks). Drag a clip to reorder, drag its right edge to resize by whole blocks, double-click to edit the
prompt, drop text (a new clip) or a timeline JSON file (replaces the timeline). Every edit goes through the document's
undo stack."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QMimeData, QPoint, QRect, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QApplication, QLineEdit, QMenu, QWidget

from app.timeline_document import BLOCK_SECONDS, DEFAULT_CLIP_SECONDS, TimelineDocument
from core.errors import StudioError, TimelineError
from core.timeline import Clip, Timeline

CLIP_COLOURS = ["#5e81ac", "#a3be8c", "#b48ead", "#d08770", "#88c0d0", "#ebcb8b", "#8fbcbb"]
EDGE_GRAB_PX = 6
MARGIN = 8
RULER_H = 18


class PromptTimelineWidget(QWidget):
    selection_changed = Signal(int)   # selected clip index, -1 for none
    error = Signal(str, str)          # (title, message) for the window to show

    def __init__(self, document: TimelineDocument, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = document
        self.doc.changed.connect(self._on_doc_changed)
        self.selected = -1
        self._press: QPoint | None = None
        self._mode: str | None = None        # 'reorder' | 'resize' while a mouse drag is active
        self._drag_index = -1
        self._drop_slot = -1                 # insertion slot shown while reordering
        self._resize_seconds = 0.0
        self._editor: QLineEdit | None = None
        self.setAcceptDrops(True)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumHeight(84)
        self.setToolTip("Drag a clip to reorder, drag its right edge to resize (2.5 s blocks), double-click to edit.\n"
                        "Drop text to add a clip or a timeline .json to load it.")

    # ---- geometry ----
    def _px_per_second(self) -> float:
        total = max(self.doc.total_seconds, BLOCK_SECONDS)
        return max(4.0, (self.width() - 2 * MARGIN) / total)

    def clip_rect(self, index: int) -> QRect:
        pps = self._px_per_second()
        start = sum(c.seconds for c in self.doc.clips[:index])
        seconds = self.doc.clip(index).seconds
        if self._mode == "resize" and index == self._drag_index:
            seconds = self._resize_seconds
        x0 = MARGIN + start * pps
        return QRect(int(x0), RULER_H + 4, max(6, int(seconds * pps) - 2), self.height() - RULER_H - 10)

    def clip_at(self, pos: QPoint) -> int:
        for i in range(len(self.doc)):
            if self.clip_rect(i).adjusted(0, 0, EDGE_GRAB_PX // 2, 0).contains(pos):
                return i
        return -1

    def _near_right_edge(self, index: int, pos: QPoint) -> bool:
        return index >= 0 and abs(pos.x() - self.clip_rect(index).right()) <= EDGE_GRAB_PX

    def slot_at(self, x: int) -> int:
        """Insertion slot 0..n for an x position (before the clip whose middle is right of x)."""
        for i in range(len(self.doc)):
            if x < self.clip_rect(i).center().x():
                return i
        return len(self.doc)

    # ---- selection ----
    def select(self, index: int) -> None:
        index = index if 0 <= index < len(self.doc) else -1
        if index != self.selected:
            self.selected = index
            self.selection_changed.emit(index)
        self.update()

    def _on_doc_changed(self) -> None:
        if self.selected >= len(self.doc):
            self.select(len(self.doc) - 1)
        self.selection_changed.emit(self.selected)
        self.update()

    # ---- painting ----
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt naming)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#242933"))
        pps = self._px_per_second()
        # ruler: a tick per block, a label every 2 blocks
        p.setPen(QColor("#616e88"))
        small = QFont(self.font())
        small.setPointSizeF(max(6.0, small.pointSizeF() - 2))
        p.setFont(small)
        total = self.doc.total_seconds
        n_ticks = int(max(total, BLOCK_SECONDS) / BLOCK_SECONDS) + 1
        for k in range(n_ticks):
            x = int(MARGIN + k * BLOCK_SECONDS * pps)
            p.drawLine(x, RULER_H - 4, x, RULER_H)
            label = f"{k * BLOCK_SECONDS:g}s"
            if k % 2 == 0 and x + 2 + p.fontMetrics().horizontalAdvance(label) < self.width():
                p.drawText(x + 2, RULER_H - 6, label)
        p.setFont(self.font())
        if not len(self.doc):
            p.setPen(QColor("#81a1c1"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Drop a prompt or a timeline .json here, or click +")
            return
        fm = QFontMetrics(self.font())
        for i, clip in enumerate(self.doc.clips):
            r = self.clip_rect(i)
            colour = QColor(CLIP_COLOURS[i % len(CLIP_COLOURS)])
            if self._mode == "reorder" and i == self._drag_index:
                colour.setAlpha(90)
            p.setBrush(colour.darker(130))
            p.setPen(QPen(QColor("#eceff4") if i == self.selected else colour, 2))
            p.drawRoundedRect(QRectF(r), 5, 5)
            seconds = self._resize_seconds if (self._mode == "resize" and i == self._drag_index) else clip.seconds
            header = f"{seconds:g}s" + (f" · seed {clip.seed}" if clip.seed is not None else "")
            p.setPen(QColor("#eceff4"))
            inner = r.adjusted(6, 4, -6, -4)
            p.drawText(inner, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, fm.elidedText(header, Qt.TextElideMode.ElideRight, inner.width()))
            body = inner.adjusted(0, fm.height() + 2, 0, 0)
            p.drawText(body, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap, clip.prompt)
            # resize grip
            p.fillRect(QRect(r.right() - 3, r.top() + r.height() // 3, 2, r.height() // 3), QColor("#d8dee9"))
        if self._mode == "reorder" and self._drop_slot >= 0:
            x = self.clip_rect(self._drop_slot).left() - 2 if self._drop_slot < len(self.doc) else self.clip_rect(len(self.doc) - 1).right() + 2
            p.setPen(QPen(QColor("#ebcb8b"), 3))
            p.drawLine(x, RULER_H, x, self.height() - 4)

    # ---- mouse: reorder and resize are manual drags (no QDrag) so they are plain, testable mouse events ----
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() != Qt.MouseButton.LeftButton:
            return super().mousePressEvent(event)
        pos = event.position().toPoint()
        index = self.clip_at(pos)
        self.select(index)
        self._press = pos
        self._drag_index = index
        self._mode = None
        if self._near_right_edge(index, pos):
            self._mode = "resize"
            self._resize_seconds = self.doc.clip(index).seconds

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position().toPoint()
        if self._press is None:
            index = self.clip_at(pos)
            self.setCursor(Qt.CursorShape.SizeHorCursor if self._near_right_edge(index, pos) else Qt.CursorShape.ArrowCursor)
            return
        if self._mode == "resize":
            left = self.clip_rect(self._drag_index).left()
            raw = (pos.x() - left) / self._px_per_second()
            self._resize_seconds = max(1, round(raw / BLOCK_SECONDS)) * BLOCK_SECONDS
            self.update()
        elif self._drag_index >= 0:
            if self._mode is None and (pos - self._press).manhattanLength() >= QApplication.startDragDistance():
                self._mode = "reorder"
            if self._mode == "reorder":
                self._drop_slot = self.slot_at(pos.x())
                self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        mode, index = self._mode, self._drag_index
        self._press, self._mode, self._drag_index = None, None, -1
        try:
            if mode == "resize":
                self.doc.resize_clip(index, self._resize_seconds)
            elif mode == "reorder":
                slot = self.slot_at(event.position().toPoint().x())
                target = slot - 1 if slot > index else slot   # slot counts the dragged clip itself
                if target != index:
                    self.doc.move_clip(index, target)
                    self.select(target)
        except StudioError as exc:
            self.error.emit("Cannot change the clip", str(exc))
        self._drop_slot = -1
        self.update()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        index = self.clip_at(event.position().toPoint())
        if index >= 0:
            self.start_editing(index)
        else:
            self.add_clip("", ask=True)

    def contextMenuEvent(self, event) -> None:  # noqa: N802
        index = self.clip_at(event.pos())
        self.select(index)
        menu = QMenu(self)
        if index >= 0:
            menu.addAction("Edit prompt", lambda: self.start_editing(index))
            menu.addAction("Remove clip", lambda: self.doc.remove_clip(index))
        menu.addAction("Add clip", lambda: self.add_clip("", ask=True))
        menu.exec(event.globalPos())

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self.selected >= 0:
            self.doc.remove_clip(self.selected)
        elif event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_F2) and self.selected >= 0 \
                and not event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.start_editing(self.selected)
        else:
            super().keyPressEvent(event)

    # ---- inline prompt editor ----
    def start_editing(self, index: int) -> QLineEdit:
        self.finish_editing(commit=False)
        editor = QLineEdit(self.doc.clip(index).prompt, self)
        editor.setGeometry(self.clip_rect(index).adjusted(2, 2, -2, -2).intersected(self.rect()).adjusted(0, 0, 0, 0))
        editor.setMinimumWidth(160)
        editor.returnPressed.connect(lambda: self.finish_editing(commit=True))
        editor.editingFinished.connect(lambda: self.finish_editing(commit=True))
        editor.setProperty("clip_index", index)
        editor.show()
        editor.setFocus()
        editor.selectAll()
        self._editor = editor
        return editor

    def finish_editing(self, commit: bool) -> None:
        editor, self._editor = self._editor, None
        if editor is None:
            return
        index, text = editor.property("clip_index"), editor.text()
        editor.hide()
        editor.deleteLater()
        if commit and index < len(self.doc):
            try:
                self.doc.set_prompt(index, text)
            except StudioError as exc:
                self.error.emit("Cannot edit the prompt", str(exc))

    # ---- adding ----
    def add_clip(self, prompt: str, ask: bool = False, index: int | None = None) -> None:
        """Insert a clip (after the selection by default). With ask=True an empty clip opens the inline editor."""
        index = (self.selected + 1 if self.selected >= 0 else len(self.doc)) if index is None else index
        text = prompt.strip() or ("New prompt" if ask else "")
        try:
            self.doc.insert_clip(index, Clip(text, DEFAULT_CLIP_SECONDS))
        except StudioError as exc:
            self.error.emit("Cannot add the clip", str(exc))
            return
        self.select(index)
        if ask and not prompt.strip():
            self.start_editing(index)

    # ---- drag and drop from outside: text adds a clip, a .json timeline replaces the clips ----
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls() or event.mimeData().hasText():
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        if self.handle_drop(event.mimeData(), event.position().toPoint()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def handle_drop(self, mime: QMimeData, pos: QPoint | None = None) -> bool:
        try:
            if mime.hasUrls():
                paths = [Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile()]
                if not paths:
                    raise TimelineError("only local files can be dropped here")
                if paths[0].suffix.lower() != ".json":
                    raise TimelineError(f"{paths[0].name} is not a timeline .json file")
                self.doc.replace_all(Timeline.from_json_file(paths[0]), "Load timeline")
                return True
            text = mime.text().strip()
            if not text:
                raise TimelineError("the dropped text is empty")
            if text.startswith(("{", "[")):
                try:
                    data = json.loads(text)
                except json.JSONDecodeError:
                    data = None
                if data is not None:
                    self.doc.replace_all(Timeline.from_dict(data), "Paste timeline")
                    return True
            slot = self.slot_at(pos.x()) if pos is not None else len(self.doc)
            self.add_clip(text, index=slot)
            return True
        except StudioError as exc:
            self.error.emit("Cannot use the dropped item", str(exc))
            return False
