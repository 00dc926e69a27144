"""SANA-Video Studio desktop app (PySide6). Talks to the engine only through core.events."""
