"""Where files go: models (the hub cache), quantized-weight caches, the demo pack, projects.

`SANA_VIDEO_STUDIO_HOME` moves everything under one folder (tests, portable installs)."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "sana-video-studio"


def _home() -> Path | None:
    value = os.environ.get("SANA_VIDEO_STUDIO_HOME")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "cache"
    from platformdirs import user_cache_dir
    return Path(user_cache_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "data"
    from platformdirs import user_data_dir
    return Path(user_data_dir(APP_NAME, appauthor=False))


def projects_dir() -> Path:
    return data_dir() / "projects"


def demo_pack_dir() -> Path:
    return cache_dir() / "demo-pack"
