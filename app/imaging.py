"""numpy uint8 RGB -> QImage. QImage (unlike QPixmap) may be built off the GUI thread, so the worker converts."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage


def qimage_from_rgb(frame: np.ndarray, max_width: int | None = None) -> QImage:
    """(H, W, 3) uint8 -> QImage that owns its pixels (the numpy buffer may be freed afterwards)."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got shape {frame.shape} dtype {frame.dtype}")
    frame = np.ascontiguousarray(frame)
    height, width, _ = frame.shape
    # .copy() detaches the image from the numpy buffer (PySide buffer-lifetime crashes otherwise)
    image = QImage(frame.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
    if max_width is not None and width > max_width:
        image = image.scaledToWidth(max_width, Qt.TransformationMode.SmoothTransformation)
    return image


def qimages_from_frames(frames: np.ndarray, max_width: int | None = None) -> list[QImage]:
    """(F, H, W, 3) uint8 -> one QImage per frame."""
    if frames.ndim != 4:
        raise ValueError(f"expected (F, H, W, 3) frames, got shape {frames.shape}")
    return [qimage_from_rgb(f, max_width) for f in frames]
