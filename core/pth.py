"""Reading official PyTorch `.pth` checkpoints safely: `torch.load(weights_only=True)` (tensors and plain containers
only, never code), memory-mapped when the file allows it, as a flat dict of tensors. Shared by the transformer and
VAE loaders."""

from __future__ import annotations

from pathlib import Path

import torch

from core.errors import CheckpointError


def read_pth_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of `{"state_dict": sd}` (the released format) or of a bare state dict."""
    path = Path(path)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # no copy of a GB-sized file
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # legacy (non-zip) files cannot be memory-mapped; anything else is fatal
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError / UnpicklingError / EOFError / zip errors
        raise CheckpointError(f"{path} cannot be read as a PyTorch state dict of tensors (truncated, corrupt or "
                              f"holding Python objects): {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        keys = list(obj)[:12] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} holds neither {{'state_dict': tensors}} nor a bare state dict (top level: "
                              f"{keys})")
    not_tensors = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        shown = ", ".join(not_tensors[:12]) + (f", ... ({len(not_tensors) - 12} more)" if len(not_tensors) > 12 else "")
        raise CheckpointError(f"{path}: state_dict entries that are not tensors: {shown}")
    return dict(sd)
