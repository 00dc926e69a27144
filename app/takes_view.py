"""The takes of the selected block (LTX Desktop's takes per clip): pick one to switch the video to that branch."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from app.takes import TakeTree


class TakesView(QWidget):
    take_chosen = Signal(int)   # take id

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("Takes: select a block", self)
        self.list = QListWidget(self)
        self.list.setIconSize(QSize(64, 36))
        self.list.itemActivated.connect(self._activated)
        self.list.itemClicked.connect(self._activated)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.title)
        layout.addWidget(self.list, 1)
        self.block = -1

    def show_block(self, tree: TakeTree, block: int) -> None:
        self.block = block
        self.list.clear()
        if block < 0:
            self.title.setText("Takes: select a block")
            return
        takes = tree.takes_for_block(block)
        self.title.setText(f"Takes of block {block + 1} ({len(takes)})")
        current = tree.current(block)
        for n, take in enumerate(takes, 1):
            text = f"Take {n}" + (f" · seed {take.seed}" if take.seed is not None else "")
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, take.take_id)
            if take.thumbnail is not None:
                item.setIcon(QIcon(QPixmap.fromImage(take.thumbnail)))
            item.setToolTip(take.prompt)
            self.list.addItem(item)
            if current is not None and current.take_id == take.take_id:
                item.setSelected(True)
                self.list.setCurrentItem(item)

    def _activated(self, item: QListWidgetItem) -> None:
        self.take_chosen.emit(int(item.data(Qt.ItemDataRole.UserRole)))
