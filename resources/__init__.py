"""Bundled resources (icons, the dark theme, example timelines). Installed as a package so paths work from a wheel.

Qt is imported lazily by `load_icon` / `load_stylesheet` so that `resource_path` stays usable without a GUI."""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent


def resource_path(name: str) -> Path:
    """Absolute path of a bundled file, e.g. resource_path('icons/play.svg'). Raises FileNotFoundError if absent."""
    path = (_ROOT / name).resolve()
    if _ROOT not in path.parents:  # refuse '../' escapes: names come from code, but keep the rule simple
        raise FileNotFoundError(f"resource {name!r} is outside the resources package")
    if not path.is_file():
        raise FileNotFoundError(f"resource {name!r} is missing from {_ROOT}")
    return path


def load_icon(name: str):
    """QIcon of icons/<name>.svg (name without extension); an empty QIcon when the file is missing."""
    from PySide6.QtGui import QIcon

    try:
        return QIcon(str(resource_path(f"icons/{name}.svg")))
    except FileNotFoundError:
        return QIcon()


def load_stylesheet(name: str = "dark.qss") -> str:
    return resource_path(name).read_text(encoding="utf-8")


def example_timelines() -> list[Path]:
    return sorted((_ROOT / "timelines").glob("*.json"))


__all__ = ["resource_path", "load_icon", "load_stylesheet", "example_timelines"]
