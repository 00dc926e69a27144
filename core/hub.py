"""Hugging Face Hub downloads with progress, offline detection and readable errors.

Downloads go through huggingface_hub (hf_hub_download), which caches content-addressed blobs and resumes partial
files by design, so an interrupted download continues where it stopped on the next call. Errors become
core.errors.OfflineError (not cached and no network / HF_HUB_OFFLINE=1) or ModelNotFoundError (no such repo, file or
revision, or a gated repo without access).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from core.errors import ModelNotFoundError, OfflineError

# progress(bytes_done, bytes_total, file_name); bytes_total is None while unknown. Called from the downloading
# thread: GUI callers must marshal to their own thread (e.g. a Qt signal).
ProgressCallback = Callable[[int, "int | None", str], None]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_offline() -> bool:
    """HF_HUB_OFFLINE set now (read from the environment, not only at huggingface_hub import time)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return value in ("1", "ON", "YES", "TRUE") or bool(constants.HF_HUB_OFFLINE)


def looks_like_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and ".." not in text


def _download_hint(repo_id: str) -> str:
    # name the registry model that holds this repo, since `models download` takes registry ids
    try:
        from core.registry import MODELS
        owners = [m.id for m in MODELS.values()
                  if repo_id in (m.transformer.repo_id, m.vae.repo_id, m.text_encoder.repo_id)]
    except ImportError:  # pragma: no cover
        owners = []
    what = owners[0] if owners else "<model>"
    return (f"{repo_id} is not downloaded and this machine is offline; run `sana-video models download {what}` "
            "when online or pass a local folder")


def _is_connection_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"TransportError", "ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError",
                         "Timeout", "TimeoutException"}) or (isinstance(exc, OSError) and "HfHubHTTPError" not in names)


def _translate(exc: BaseException, repo_id: str, what: str, revision: str | None) -> Exception:
    """huggingface_hub / network exception -> our user-facing error."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rev = f" at revision {revision!r}" if revision else ""
    if isinstance(exc, GatedRepoError):
        return ModelNotFoundError(f"{repo_id} is gated: accept its license on huggingface.co and log in "
                                  f"(`hf auth login`) before downloading")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFoundError(f"model repository {repo_id} does not exist on the Hugging Face Hub (or is private)")
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFoundError(f"{repo_id} has no revision {revision!r}")
    if isinstance(exc, LocalEntryNotFoundError) or _is_connection_error(exc):
        return OfflineError(_download_hint(repo_id) + f" (missing: {what}{rev})")
    if isinstance(exc, EntryNotFoundError):
        return ModelNotFoundError(f"{repo_id}{rev} has no file {what}")
    if isinstance(exc, HfHubHTTPError):
        return ModelNotFoundError(f"the Hugging Face Hub refused {repo_id}/{what}{rev}: {exc}")
    return ModelNotFoundError(f"cannot download {repo_id}/{what}{rev}: {type(exc).__name__}: {exc}")


def _progress_tqdm(progress: ProgressCallback, file_name: str, done_before: list[int], grand_total: int | None):
    """A tqdm class (what huggingface_hub accepts for progress) that forwards byte counts to `progress`.

    `done_before` carries the bytes of files already finished so the callback sees totals over the whole download."""
    from tqdm.auto import tqdm

    class _CallbackTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)  # huggingface_hub's own tqdm takes a logger name; plain tqdm does not
            kwargs["disable"] = False  # count even when huggingface_hub would hide its bars
            kwargs["file"] = io.StringIO()  # draw nothing: the callback is the display
            super().__init__(*args, **kwargs)
            self._report()

        def _report(self) -> None:
            total = grand_total if grand_total is not None else (
                None if self.total is None else done_before[0] + int(self.total))
            progress(done_before[0] + int(self.n), total, file_name)

        def update(self, n=1):
            result = super().update(n)
            self._report()
            return result

    return _CallbackTqdm


def download(repo_id: str, files: Sequence[str] | None = None, *, allow_patterns: Sequence[str] | str | None = None,
             revision: str | None = None, cache_dir: str | Path | None = None,
             progress: ProgressCallback | None = None, file_sizes: dict[str, int] | None = None) -> Path:
    """Download `files` (repo paths) or everything matching `allow_patterns` (all files when both are None) and
    return the local snapshot folder; each file lies at `folder / repo_path`.

    Resumable (huggingface_hub keeps `.incomplete` files). Cached files are not fetched again; offline (HF_HUB_OFFLINE
    or no connection) the cache is used and anything missing raises OfflineError. `file_sizes` (repo path -> bytes,
    e.g. from the model registry) lets the callback report a total over all files from the start."""
    from huggingface_hub import hf_hub_download, snapshot_download

    offline = is_offline()
    if files is None:
        cached: Path | None = None
        try:
            cached = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True,
                                            allow_patterns=allow_patterns))
        except Exception as exc:  # noqa: BLE001 - not (fully) cached: fall through to the network
            if offline:
                raise _translate(exc, repo_id, _patterns_text(allow_patterns), revision) from exc
        if offline:
            if not any(p.is_file() for p in cached.rglob("*")):
                raise OfflineError(_download_hint(repo_id) + f" (missing: {_patterns_text(allow_patterns)})")
            return cached
        files = _list_files(repo_id, allow_patterns, revision, cached)
    files = list(files)
    total = sum(file_sizes.get(f, 0) for f in files) if file_sizes and all(f in file_sizes for f in files) else None
    done = [0]
    root: Path | None = None
    for name in files:
        tqdm_class = _progress_tqdm(progress, name, done, total) if progress else None
        try:
            local = Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir,
                                         local_files_only=offline, tqdm_class=tqdm_class))
        except Exception as exc:  # noqa: BLE001 - translated into our error classes
            raise _translate(exc, repo_id, name, revision) from exc
        done[0] += local.stat().st_size
        if progress:
            progress(done[0], total if total is not None else None, name)
        root = _snapshot_root(local, name)
    if root is None:
        raise ModelNotFoundError(f"nothing to download from {repo_id} for {_patterns_text(allow_patterns)}")
    return root


def _patterns_text(allow_patterns) -> str:
    return "all files" if allow_patterns is None else f"files matching {allow_patterns}"


def _list_files(repo_id: str, allow_patterns, revision: str | None, cached_root: Path | None) -> list[str]:
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    try:
        names = HfApi().list_repo_files(repo_id, revision=revision)
    except Exception as exc:  # noqa: BLE001
        if cached_root is not None and _is_connection_error(exc):
            # no network but a cached snapshot matches: list what the cache holds
            return sorted(p.relative_to(cached_root).as_posix() for p in cached_root.rglob("*") if p.is_file())
        raise _translate(exc, repo_id, _patterns_text(allow_patterns), revision) from exc
    chosen = list(filter_repo_objects(names, allow_patterns=allow_patterns))
    if not chosen:
        raise ModelNotFoundError(f"{repo_id} has no {_patterns_text(allow_patterns)}")
    return chosen


def _snapshot_root(local_file: Path, repo_path: str) -> Path:
    root = local_file
    for _ in Path(repo_path).parts:
        root = root.parent
    return root


def resolve(source: str | Path, *, files: Sequence[str] | None = None,
            allow_patterns: Sequence[str] | str | None = None, revision: str | None = None,
            cache_dir: str | Path | None = None, progress: ProgressCallback | None = None) -> Path:
    """A local folder/file, or a Hub repo id (`owner/name`, optionally `hf://owner/name[/path/in/repo]`), as a path.

    An existing local path always wins (a folder named like `owner/name` in the working directory is local). A repo id
    is downloaded (or taken from the cache) with `download`; for `hf://owner/name/file` the file path is returned."""
    text = str(source)
    if text.startswith("hf://"):
        parts = text[len("hf://"):].split("/")
        repo_id, inner = "/".join(parts[:2]), "/".join(parts[2:])
        if not looks_like_repo_id(repo_id):
            raise ModelNotFoundError(f"{text!r} is not a valid hf://owner/name[/file] address")
        if inner:
            return download(repo_id, [inner], revision=revision, cache_dir=cache_dir, progress=progress) / inner
        return download(repo_id, files, allow_patterns=allow_patterns, revision=revision, cache_dir=cache_dir,
                        progress=progress)
    local = Path(text).expanduser()
    if local.exists():
        return local
    if isinstance(source, str) and looks_like_repo_id(text):
        return download(text, files, allow_patterns=allow_patterns, revision=revision, cache_dir=cache_dir,
                        progress=progress)
    raise ModelNotFoundError(f"{text} is neither an existing file or folder nor a Hugging Face repo id (owner/name)")


__all__ = ["ProgressCallback", "download", "resolve", "is_offline", "looks_like_repo_id"]
