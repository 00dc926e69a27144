"""AppSettings: the one typed façade over QSettings (shotcut's ShotcutSettings); no key strings elsewhere.

Stored as an INI file. SANA_STUDIO_SETTINGS overrides the path (tests point it at a temporary folder)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSettings

PRECISIONS = ["auto", "nvfp4", "fp8", "bf16"]
# which blocks nvfp4 / fp8 quantize: quant.recipe.NAMED_RECIPES (default: the first and last two blocks stay bf16)
QUANT_LAYERS = ["default", "all-blocks"]
VRAM_MODES = ["auto", "high", "low"]
# 720p needs the LTX-2 VAE model (not supported yet), so only the 480p model's sizes are offered.
RESOLUTIONS = {"480p (832×480)": (480, 832), "480p portrait (480×832)": (832, 480)}
DEMO_MODEL = "demo"
MAX_RECENT = 8


@dataclass
class GenerationSettings:
    model: str = ""              # "" until the first-run model manager picked one; "demo" for the embedded model
    resolution: str = "480p (832×480)"
    seconds: float = 10.0        # default length of a new timeline
    seed: int = 0
    steps: int = 0               # 0 = the model's default (LongSANA: 4 per block)
    precision: str = "auto"
    quant_layers: str = "default"
    vram_mode: str = "auto"

    def validate(self) -> GenerationSettings:
        if self.precision not in PRECISIONS:
            self.precision = "auto"
        if self.quant_layers not in QUANT_LAYERS:
            self.quant_layers = "default"
        if self.vram_mode not in VRAM_MODES:
            self.vram_mode = "auto"
        if self.resolution not in RESOLUTIONS:
            self.resolution = next(iter(RESOLUTIONS))
        self.seconds = min(max(2.5, float(self.seconds)), 255.0)
        self.seed = max(0, int(self.seed))
        self.steps = max(0, int(self.steps))
        return self


def _settings_file() -> str:
    override = os.environ.get("SANA_STUDIO_SETTINGS")
    if override:
        return override
    from platformdirs import user_config_dir

    return str(Path(user_config_dir("sana-video-studio", appauthor=False)) / "studio.ini")


class AppSettings:
    def __init__(self, path: str | None = None) -> None:
        self.qsettings = QSettings(path or _settings_file(), QSettings.Format.IniFormat)

    # ---- typed helpers (QSettings returns strings from INI files) ----
    def _str(self, key: str, default: str) -> str:
        value = self.qsettings.value(key, default)
        return str(value) if value is not None else default

    def _int(self, key: str, default: int) -> int:
        try:
            return int(self.qsettings.value(key, default))
        except (TypeError, ValueError):
            return default

    def _float(self, key: str, default: float) -> float:
        try:
            return float(self.qsettings.value(key, default))
        except (TypeError, ValueError):
            return default

    def _list(self, key: str) -> list[str]:
        value = self.qsettings.value(key, [])
        if value is None or value == "":  # an empty list reads back as "" or None (frescobaldi's pitfall)
            return []
        if isinstance(value, str):
            return [value]
        return [str(v) for v in value]

    # ---- generation ----
    def generation(self) -> GenerationSettings:
        d = GenerationSettings()
        return GenerationSettings(
            model=self._str("generation/model", d.model),
            resolution=self._str("generation/resolution", d.resolution),
            seconds=self._float("generation/seconds", d.seconds),
            seed=self._int("generation/seed", d.seed),
            steps=self._int("generation/steps", d.steps),
            precision=self._str("generation/precision", d.precision),
            quant_layers=self._str("generation/quant_layers", d.quant_layers),
            vram_mode=self._str("generation/vram_mode", d.vram_mode),
        ).validate()

    def set_generation(self, g: GenerationSettings) -> None:
        g.validate()
        for key in ("model", "resolution", "seconds", "seed", "steps", "precision", "quant_layers", "vram_mode"):
            self.qsettings.setValue(f"generation/{key}", getattr(g, key))
        self.qsettings.sync()

    # ---- recent projects ----
    def recent_projects(self) -> list[str]:
        return self._list("projects/recent")

    def add_recent_project(self, folder: str) -> None:
        folder = str(Path(folder).resolve())
        recent = [folder] + [p for p in self.recent_projects() if p != folder]
        self.qsettings.setValue("projects/recent", recent[:MAX_RECENT])
        self.qsettings.sync()

    def remove_recent_project(self, folder: str) -> None:
        self.qsettings.setValue("projects/recent", [p for p in self.recent_projects() if p != folder])
        self.qsettings.sync()

    # ---- window ----
    def geometry(self):
        return self.qsettings.value("window/geometry")

    def set_geometry(self, data) -> None:
        self.qsettings.setValue("window/geometry", data)

    def window_state(self):
        return self.qsettings.value("window/state")

    def set_window_state(self, data) -> None:
        self.qsettings.setValue("window/state", data)
        self.qsettings.sync()

    def export_crf(self) -> int:
        return self._int("export/crf", 18)

    def set_export_crf(self, crf: int) -> None:
        self.qsettings.setValue("export/crf", int(crf))
