"""Errors the user can read. Every failure the engine reports is one of these, with a message that says what is
wrong and, where there is one, what to do about it."""

from __future__ import annotations


class StudioError(Exception):
    """Base class of all user-facing errors."""


class ConfigError(StudioError, ValueError):
    """A configuration that cannot describe a SANA-Video transformer (or a VAE / text encoder)."""


class CheckpointError(StudioError):
    """A checkpoint file or folder is missing, truncated, or has missing / unexpected / misshapen tensors."""


class ModelNotFoundError(StudioError):
    """The requested model is not installed and cannot be downloaded."""


class OfflineError(StudioError):
    """A download was needed but the machine is offline (or HF_HUB_OFFLINE is set)."""


class TimelineError(StudioError):
    """A prompt timeline is empty, malformed, or asks for impossible durations."""


class ProjectError(StudioError):
    """A project folder is corrupt, from a future schema, hostile, or does not match the model."""


class ExportError(StudioError):
    """The video could not be written (bad path, no permission, encoder missing)."""


class QuantizationError(StudioError):
    """Calibration, packing, or a quantized-weight cache failed."""


__all__ = [
    "StudioError", "ConfigError", "CheckpointError", "ModelNotFoundError", "OfflineError", "TimelineError",
    "ProjectError", "ExportError", "QuantizationError",
]
