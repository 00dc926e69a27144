"""H.264 MP4 export through PyAV: libx264, yuv420p, CRF 18, +faststart, metadata in the container, atomic write.

The file appears under its final name only when it is complete: frames go to a temporary file in the same folder
that is renamed at the end (core.fsutil.atomic_path), so a crash, a bad frame or a failing frame source leaves
nothing behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ExportError
from core.fsutil import atomic_path, atomic_write_bytes

DEFAULT_FPS = 16
DEFAULT_CRF = 18
VIDEO_CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"
DEFAULT_TITLE = "SANA-Video Studio"


class _FrameSourceError(Exception):
    """Carries an exception raised by the caller's frame iterator through our error translation unchanged."""


def _to_uint8_rgb(frame: Any, index: int) -> np.ndarray:
    """One frame -> contiguous (H, W, 3) uint8 numpy array (accepts numpy arrays and CPU/GPU torch tensors)."""
    if hasattr(frame, "detach"):  # torch tensor, without importing torch here
        frame = frame.detach().cpu().numpy()
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ExportError(f"Frame {index} has shape {array.shape}; expected (height, width, 3) RGB.")
    if array.dtype != np.uint8:
        raise ExportError(f"Frame {index} has dtype {array.dtype}; expected uint8 (0..255).")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ExportError(f"Frame {index} is empty ({array.shape[0]}x{array.shape[1]}).")
    return np.ascontiguousarray(array)


def _pad_to_even(array: np.ndarray) -> np.ndarray:
    """yuv420p needs even width and height: repeat the last row / column when one is odd. (H, W, 3) -> (H', W', 3)"""
    pad_h, pad_w = array.shape[0] % 2, array.shape[1] % 2
    if pad_h or pad_w:
        array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return array


def _iterate_frames(frames: Iterable[Any] | np.ndarray) -> Iterator[Any]:
    if isinstance(frames, np.ndarray) or hasattr(frames, "detach"):
        if frames.ndim == 3:  # a single (H, W, 3) frame
            frames = frames[None]
        if frames.ndim != 4:
            raise ExportError(f"Frames array has shape {tuple(frames.shape)}; expected (frames, height, width, 3).")
    iterator = iter(frames)
    while True:
        try:
            frame = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # the caller's source failed: re-raised unchanged by write_mp4
            raise _FrameSourceError() from exc
        yield frame


def _check_encoder() -> None:
    import av

    try:
        av.codec.Codec(VIDEO_CODEC, "w")
    except Exception as exc:
        raise ExportError(
            f"The H.264 encoder ({VIDEO_CODEC}) is not available in this PyAV/FFmpeg build: {exc}. "
            "Install the official PyAV wheels (pip install av), which include libx264."
        ) from exc


def _metadata_tags(metadata: dict[str, Any] | None) -> dict[str, str]:
    metadata = dict(metadata or {})
    title = str(metadata.get("title") or DEFAULT_TITLE)
    # A random-weights (demo) video must say so wherever only the title is shown: a `label` string (the engine
    # passes the demo pack's label) or `random_weights: True`.
    label = str(metadata.get("label") or "").strip()
    if label and label.lower() not in title.lower():
        title += f" [{label}]"
    if metadata.get("random_weights") and "random weights" not in title.lower():
        title += " (random weights)"
    # The whole dict goes in "comment" as JSON (ASCII-escaped so every muxer and player keeps it intact).
    return {"title": title, "comment": json.dumps(metadata, ensure_ascii=True, sort_keys=True, default=str)}


def check_mp4_target(output: str | os.PathLike) -> None:
    """Fail early, before any generation work, when `output` cannot become an MP4 file."""
    path = Path(output)
    if path.suffix.lower() != ".mp4":
        raise ExportError(f"the output {path} must end in .mp4")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise ExportError(f"the output folder {parent} does not exist")
    if not parent.is_dir():
        raise ExportError(f"{parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"the output folder {parent} is not writable")
    if path.is_dir():
        raise ExportError(f"the output {path} is a folder")


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[Any] | np.ndarray,
    fps: int | float | Fraction = DEFAULT_FPS,
    crf: int = DEFAULT_CRF,
    metadata: dict[str, Any] | None = None,
    preset: str = "medium",
) -> Path:
    """Encode RGB uint8 frames ((H, W, 3) each, or one (F, H, W, 3) array) to an H.264 MP4 at `path`.

    Odd sizes are padded to even. Returns the final path. Raises ExportError for unusable input, an unwritable
    path or a missing encoder; an exception from the frame iterator itself propagates unchanged. Either way no
    partial file remains.

    The same frames give the same picture to within x264's rounding, not always the same bytes: libx264's frame
    threads are not reproducible under CPU load (measured: 5 of 300 pairs of encodes differed on two busy cores)."""
    import av

    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ExportError(f"The output {path} must end in .mp4.")
    if not 0 <= int(crf) <= 51:
        raise ExportError(f"CRF {crf} is outside 0..51.")
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ExportError(f"fps must be positive, got {fps}.")
    _check_encoder()
    tags = _metadata_tags(metadata)
    try:
        with atomic_path(path, suffix=".mp4") as tmp:
            _encode(tmp, _iterate_frames(frames), rate, int(crf), preset, tags)
    except _FrameSourceError as wrapped:
        raise wrapped.__cause__ from None
    except ExportError:
        raise
    except (OSError, av.FFmpegError) as exc:
        raise ExportError(f"Could not write the video {path}: {exc}") from exc
    return path


def _encode(tmp: Path, frames: Iterator[Any], rate: Fraction, crf: int, preset: str, tags: dict[str, str]) -> None:
    import av

    container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
    try:
        container.metadata.update(tags)
        stream = None
        size = None
        count = 0
        for index, frame in enumerate(frames):
            array = _pad_to_even(_to_uint8_rgb(frame, index))  # (H, W, 3)
            if stream is None:
                size = array.shape[:2]
                stream = container.add_stream(VIDEO_CODEC, rate=rate)
                stream.height, stream.width = size
                stream.pix_fmt = PIXEL_FORMAT
                stream.options = {"crf": str(crf), "preset": preset}
            elif array.shape[:2] != size:
                raise ExportError(
                    f"Frame {index} is {array.shape[1]}x{array.shape[0]} but the video is {size[1]}x{size[0]}."
                )
            video_frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
            count += 1
        if stream is None or count == 0:
            raise ExportError("There are no frames to write.")
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)
    finally:
        container.close()


def read_mp4_info(path: str | os.PathLike) -> dict[str, Any]:
    """Container facts for tests and the GUI: frames, width, height, codec, pix_fmt, fps, title, metadata (dict)."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ExportError(f"{path} has no video stream.")
            stream = container.streams.video[0]
            frames = int(stream.frames or 0)
            if frames == 0:  # some muxers do not store the count: decode to count
                frames = sum(1 for _ in container.decode(video=0))
            tags = dict(container.metadata)
            rate = stream.average_rate or stream.guessed_rate
            info = {
                "frames": frames,
                "width": int(stream.codec_context.width),
                "height": int(stream.codec_context.height),
                "codec": stream.codec_context.name,
                "pix_fmt": stream.codec_context.pix_fmt,
                "fps": float(rate) if rate else None,
                "title": tags.get("title"),
            }
    except ExportError:
        raise
    except (OSError, av.FFmpegError) as exc:
        raise ExportError(f"Could not read the video {path}: {exc}") from exc
    try:
        info["metadata"] = json.loads(tags.get("comment", "{}"))
    except json.JSONDecodeError:
        info["metadata"] = {}
    return info


def write_png_frames(
    folder: str | os.PathLike, frames: Iterable[Any] | np.ndarray, prefix: str = "frame_"
) -> list[Path]:
    """Write every frame as `{prefix}{index:05d}.png` (atomic per file, PNG encoded by PyAV). Returns the paths."""
    import av

    folder = Path(folder)
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for index, frame in enumerate(_iterate_frames(frames)):
            array = _to_uint8_rgb(frame, index)  # (H, W, 3)
            codec = av.CodecContext.create("png", "w")
            codec.height, codec.width = array.shape[:2]
            codec.pix_fmt = "rgb24"
            packets = codec.encode(av.VideoFrame.from_ndarray(array, format="rgb24")) + codec.encode(None)
            target = folder / f"{prefix}{index:05d}.png"
            atomic_write_bytes(target, b"".join(bytes(p) for p in packets))
            written.append(target)
    except _FrameSourceError as wrapped:
        raise wrapped.__cause__ from None
    except (OSError, av.FFmpegError) as exc:
        raise ExportError(f"Could not write PNG frames to {folder}: {exc}") from exc
    return written


class _Abort:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class StreamingMp4Writer:
    """Encode frames while they are being generated, on a background thread, through `write_mp4` (same format, same
    atomic write). Memory stays bounded by `max_queued_frames` whatever the video's length, and x264 runs while the
    GPU works on the next block.

        writer = StreamingMp4Writer(path, fps=16, metadata=...)
        writer.add(block_frames)      # (F, H, W, 3) uint8, any number of times
        writer.close()                # -> Path; or writer.abort() on cancel / error: no file remains
    """

    def __init__(self, path: str | os.PathLike, fps: int | float | Fraction = DEFAULT_FPS, crf: int = DEFAULT_CRF,
                 metadata: dict[str, Any] | None = None, max_queued_frames: int = 128) -> None:
        import queue
        import threading

        self.path = Path(path)
        self.frames_written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_queued_frames))
        self._error: BaseException | None = None
        self._result: Path | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(fps, crf, metadata), name="mp4-writer", daemon=True)
        self._thread.start()

    def _frames(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Abort):
                raise item.exc
            yield item

    def _run(self, fps, crf, metadata) -> None:
        try:
            self._result = write_mp4(self.path, self._frames(), fps=fps, crf=crf, metadata=metadata)
        except BaseException as exc:  # noqa: BLE001 - handed to the producer thread
            self._error = exc
            while True:  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except Exception:  # noqa: BLE001 - queue.Empty
                    break

    def _put(self, item: Any) -> None:
        import queue

        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def add(self, frames: Iterable[Any] | np.ndarray) -> None:
        if self._closed:
            raise ExportError("the video writer is already closed")
        for frame in frames:
            self._put(frame)
            self.frames_written += 1

    def close(self) -> Path:
        """Finish the file (flush, faststart, atomic rename) and return its path."""
        if not self._closed:
            self._closed = True
            if self._error is None:
                self._queue.put(_END)
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def abort(self) -> None:
        """Stop without a file (cancel, error): the temporary file is removed; the target is untouched."""
        if self._closed:
            return
        self._closed = True
        if self._error is None:
            self._queue.put(_Abort(_AbortedByCaller()))
        self._thread.join()


class _AbortedByCaller(Exception):
    """Ends the writer thread's frame source; never reaches the caller."""
