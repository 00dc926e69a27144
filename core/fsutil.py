"""Atomic file writes and safe paths: a crash at any moment leaves either the old file or the new one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success fsync it and rename it over `target`.

    On any exception the temporary file is removed and `target` is untouched. `suffix` keeps the extension for writers
    that choose the format from it (PyAV, safetensors do not care, ffmpeg muxers do)."""
    target = Path(target)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    _apply_umask(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _apply_umask(path: Path) -> None:
    """mkstemp makes 0600 files; a finished file gets the permissions any new file would (0666 minus the umask)."""
    if os.name != "posix":
        return
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError:
        pass


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def safe_join(root: str | os.PathLike, relative: str) -> Path:
    """Join `relative` under `root`, refusing absolute paths and anything that escapes `root`."""
    root_path = Path(root).resolve()
    rel = Path(relative)
    if rel.is_absolute() or relative.startswith(("/", "\\")) or ":" in rel.parts[0] if rel.parts else False:
        raise ValueError(f"path {relative!r} must be relative")
    candidate = (root_path / rel).resolve()
    if candidate != root_path and root_path not in candidate.parents:
        raise ValueError(f"path {relative!r} escapes {root_path}")
    return candidate
