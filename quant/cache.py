"""The packed-weight cache: one safetensors file per (model, recipe, format, library versions).

The file carries its own metadata (the key fields, the calibration amax, the layer list) and a SHA-256 over every
tensor's name, dtype, shape and bytes, so a single atomic rename publishes it and a truncated, corrupted or stale
file is detected on load. A file that fails any check is deleted and rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from core.fsutil import atomic_path

log = logging.getLogger("quant")

# Bump when the packed layout or the scale conventions change: old caches then miss and are rebuilt.
PACK_FORMAT_VERSION = "1"
APP_NAME = "sana-video-studio"


class CacheInvalid(Exception):
    """The cache file exists but must not be used (reason in the message)."""


def default_cache_root() -> Path:
    import platformdirs
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)) / "quant"


@dataclass(frozen=True)
class CacheKey:
    model_hash: str
    recipe_digest: str
    fmt: str
    calibrator: str          # "modelopt-0.47.0", "hooks", "none" (dynamic activation scales)
    torch_version: str
    pack_version: str = PACK_FORMAT_VERSION

    @classmethod
    def create(cls, model_hash: str, recipe_digest: str, fmt: str, calibrator: str) -> CacheKey:
        return cls(model_hash, recipe_digest, fmt, calibrator, torch.__version__.split("+")[0])

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def filename(self) -> str:
        return f"{self.model_hash[:16]}-{self.recipe_digest}-{self.fmt}-{self.digest()}.safetensors"


def model_fingerprint(model: nn.Module) -> str:
    """A content hash of the model's parameters and buffers that is cheap on a GPU.

    Exact bytes of a strided sample of every tensor plus fp64 sums of values and squares: any different checkpoint or
    fine-tune changes it, without copying gigabytes to the host."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.device.type == "meta":
                raise ValueError(f"cannot fingerprint {name}: it is still on the meta device")
            flat = t.detach().reshape(-1)
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
            if flat.numel() == 0:
                continue
            step = max(1, flat.numel() // 4096)
            sample = flat[::step].contiguous()
            h.update(sample.view(torch.uint8).cpu().numpy().tobytes() if sample.dtype != torch.bool
                     else sample.cpu().numpy().tobytes())
            if flat.is_floating_point():
                f64 = flat.double()
                sums = torch.stack([f64.sum(), (f64 * f64).sum()]).cpu()
                h.update(sums.numpy().tobytes())
    return h.hexdigest()


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_cache(path: Path, key: CacheKey, tensors: dict[str, torch.Tensor], extra: dict) -> int:
    """Atomically write the cache file; returns its size in bytes."""
    meta = {"key": asdict(key), **extra}
    metadata = {"quant_meta": json.dumps(meta, sort_keys=True), "sha256": tensors_digest(tensors)}
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=metadata)
    return path.stat().st_size


def read_cache(path: Path, key: CacheKey) -> tuple[dict[str, torch.Tensor], dict]:
    """Load and verify; raises CacheInvalid with the reason when anything is off."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CacheInvalid(f"unreadable: {exc}") from exc
    try:
        meta = json.loads(metadata["quant_meta"])
        stored_digest = metadata["sha256"]
    except (KeyError, json.JSONDecodeError) as exc:
        raise CacheInvalid("metadata missing or malformed") from exc
    if meta.get("key") != asdict(key):
        raise CacheInvalid(f"stale: built for {meta.get('key')}, need {asdict(key)}")
    if tensors_digest(tensors) != stored_digest:
        raise CacheInvalid("checksum mismatch (corrupted file)")
    return tensors, meta


def discard(path: Path, reason: str) -> None:
    log.warning("discarding quantized cache %s: %s", path, reason)
    with contextlib.suppress(OSError):
        path.unlink()
