"""The files of a project folder: block files (safetensors) and their validation, without reading tensor data.

A block file holds everything one finished block leaves behind:
  latents                      (C, t, h, w) fp32    clean latents (x0 of the last denoising step)
  frames                       (F, H, W, 3) uint8   decoded frames (export never re-decodes)
  contribution.{vk,k_sum,tconv_frame}               the block's own clean-pass state terms (core.model.state)
  recached_previous.{...}      optional             on a prompt switch: the previous block's contribution recomputed
                                                    with this block's prompt (it replaces the old one from here on)
A VAE cache file holds the streaming decoder's cache after a block (core.vae.streaming.save_cache).

Files are read back only after their sha256 (recorded in project.json) matches, and headers are parsed here with
size limits so that a hostile file (huge shapes, offsets past the end, truncation) gives a ProjectError before any
tensor is allocated. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from core.errors import ProjectError
from core.fsutil import atomic_write_bytes, safe_join

BLOCK_FORMAT = "sana-video-studio-block"
VAE_CACHE_FORMAT = "sana-video-studio-vae-cache"
FILE_VERSION = 1
MAX_HEADER_BYTES = 16 * 2**20
CONTRIB_PARTS = ("vk", "k_sum", "tconv_frame")
BLOCK_ID_RE = re.compile(r"^b[0-9]{1,9}$")
BLOCKS_DIR = "blocks"

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_ITEM = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U8": 1}


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES[dtype]


def block_file_name(block_id: str) -> str:
    return f"{BLOCKS_DIR}/{block_id}.safetensors"


def vae_cache_file_name(block_id: str) -> str:
    return f"{BLOCKS_DIR}/{block_id}.vae.safetensors"


def resolve_inside(folder: Path, relative: Any, what: str) -> Path:
    """A file named in project.json -> its path, refusing anything that is not a plain relative path inside."""
    if not isinstance(relative, str) or not relative or len(relative) > 255 or "\x00" in relative:
        raise ProjectError(f"{what}: {relative!r} is not a valid file name")
    try:
        return safe_join(folder, relative)
    except ValueError as exc:
        raise ProjectError(f"{what}: {exc} (file names must stay inside the project folder)") from exc


# ------------------------------------------------------------------ writing
def encode_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)


def write_file(path: Path, data: bytes) -> str:
    """Atomic write; returns the sha256 of `data`."""
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def block_tensors(latents: torch.Tensor, frames, contribution, recached=None) -> dict[str, torch.Tensor]:
    frames_t = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(frames)
    out = {"latents": latents.detach().float().cpu(), "frames": frames_t.to(torch.uint8).cpu()}
    for prefix, contrib in (("contribution", contribution), ("recached_previous", recached)):
        if contrib is None:
            continue
        if contrib.tconv_frame is None:
            raise ProjectError(f"{prefix} has no temporal-conv frame; it cannot continue a video")
        out[f"{prefix}.vk"] = contrib.vk
        out[f"{prefix}.k_sum"] = contrib.k_sum
        out[f"{prefix}.tconv_frame"] = contrib.tconv_frame
    return out


# ------------------------------------------------------------------ headers
def read_header(path: Path, what: str) -> dict[str, Any]:
    """Parse and check a safetensors header (no tensor data read): {name: (dtype, shape)} plus '__metadata__'."""
    try:
        if path.is_symlink() or not path.is_file():
            raise ProjectError(f"{what}: {path.name} is missing or not a regular file")
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ProjectError(f"{what}: {path.name} is truncated (no safetensors header)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or n + 8 > size:
                raise ProjectError(f"{what}: {path.name} has a header of {n} bytes, which does not fit the "
                                   f"{size}-byte file (truncated or not a safetensors file)")
            raw = fh.read(n)
    except OSError as exc:
        raise ProjectError(f"{what}: cannot read {path.name}: {exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProjectError(f"{what}: {path.name} has a corrupt header: {exc}") from exc
    if not isinstance(header, dict):
        raise ProjectError(f"{what}: {path.name} has a corrupt header")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict):
        raise ProjectError(f"{what}: {path.name} has corrupt metadata")
    data_size = size - 8 - n
    spans = []
    out: dict[str, Any] = {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ProjectError(f"{what}: {path.name}: tensor {name!r} has a corrupt header entry")
        dt, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dt not in _ITEM or not isinstance(shape, list) or len(shape) > 8 or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**40 for s in shape):
            raise ProjectError(f"{what}: {path.name}: tensor {name!r} has dtype {dt!r} / shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                and 0 <= offs[0] <= offs[1] <= data_size):
            raise ProjectError(f"{what}: {path.name}: tensor {name!r} lies outside the file (truncated?)")
        if offs[1] - offs[0] != math.prod(shape) * _ITEM[dt]:
            raise ProjectError(f"{what}: {path.name}: tensor {name!r} size does not match its shape {shape}")
        spans.append(tuple(offs))
        out[name] = (dt, tuple(shape))
    spans.sort()
    end = 0
    for a, b in spans:
        if a != end:
            raise ProjectError(f"{what}: {path.name}: tensor data overlaps or has gaps")
        end = b
    if end != data_size:
        raise ProjectError(f"{what}: {path.name}: {data_size - end} bytes after the last tensor (corrupt)")
    out["__metadata__"] = metadata
    return out


def check_block_header(header: dict[str, Any], expect: dict[str, Any], layout: dict[str, Any] | None,
                       has_recached: bool, what: str) -> dict[str, Any]:
    """Check names, dtypes and shapes of a block file against the project's model; returns the state layout
    ({part: [dtype, shape]}) so that the caller can check every block uses the same one."""
    meta = header["__metadata__"]
    if meta.get("format") != BLOCK_FORMAT or meta.get("version") != str(FILE_VERSION):
        raise ProjectError(f"{what}: not a SANA-Video Studio block file of version {FILE_VERSION} "
                           f"(format {meta.get('format')!r}, version {meta.get('version')!r})")
    names = {n for n in header if n != "__metadata__"}
    want = {"latents", "frames"} | {f"contribution.{p}" for p in CONTRIB_PARTS}
    if has_recached:
        want |= {f"recached_previous.{p}" for p in CONTRIB_PARTS}
    if names != want:
        raise ProjectError(f"{what}: tensors {sorted(names)} do not match the expected {sorted(want)}")
    c, t, h, w = expect["latents"]
    if header["latents"] != ("F32", (c, t, h, w)):
        raise ProjectError(f"{what}: latents are {header['latents'][0]} {list(header['latents'][1])}, expected "
                           f"F32 {[c, t, h, w]}")
    if header["frames"] != ("U8", tuple(expect["frames"])):
        raise ProjectError(f"{what}: frames are {header['frames'][0]} {list(header['frames'][1])}, expected "
                           f"U8 {list(expect['frames'])}")
    found = {p: [header[f"contribution.{p}"][0], list(header[f"contribution.{p}"][1])] for p in CONTRIB_PARTS}
    vk, ks, tf = (found[p][1] for p in CONTRIB_PARTS)
    if (found["vk"][0] != "F32" or found["k_sum"][0] != "F32" or len(vk) != 5 or vk[3] != vk[4]
            or ks != vk[:4] or len(tf) != 4 or tf[:2] != vk[:2] or vk[1] != 1 or found["tconv_frame"][0] not in
            ("F32", "F16", "BF16")):
        raise ProjectError(f"{what}: the stream-state tensors have inconsistent shapes/dtypes {found}")
    if layout is not None and found != layout:
        raise ProjectError(f"{what}: stream-state shapes {found} differ from the project's {layout} "
                           "(made by another model?)")
    if has_recached:
        again = {p: [header[f"recached_previous.{p}"][0], list(header[f"recached_previous.{p}"][1])]
                 for p in CONTRIB_PARTS}
        if again != found:
            raise ProjectError(f"{what}: the recached contribution {again} does not match {found}")
    return found


def check_vae_cache_header(header: dict[str, Any], what: str) -> None:
    meta = header["__metadata__"]
    if meta.get("format") != VAE_CACHE_FORMAT or meta.get("version") != str(FILE_VERSION):
        raise ProjectError(f"{what}: not a SANA-Video Studio VAE cache file of version {FILE_VERSION}")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dt, shape = entry
        if name == "latent_frames_done":
            if (dt, shape) != ("I64", (1,)):
                raise ProjectError(f"{what}: latent_frames_done is {dt} {list(shape)}")
        elif not name.startswith("conv.") or dt not in ("F32", "F16", "BF16") or len(shape) != 5 or shape[0] != 1:
            raise ProjectError(f"{what}: unexpected VAE cache tensor {name!r} {dt} {list(shape)}")


# ------------------------------------------------------------------ reading
def verify_checksum(path: Path, sha256: str, what: str) -> None:
    """Content corruption is caught here: the file's sha256 must match project.json (streamed, 8 MiB at a time)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(8 * 2**20):
                digest.update(chunk)
    except OSError as exc:
        raise ProjectError(f"{what}: cannot read {path.name}: {exc}") from exc
    if digest.hexdigest() != sha256:
        raise ProjectError(f"{what}: {path.name} is corrupt (its checksum does not match project.json)")


def read_tensors(path: Path, what: str, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Some (default: all) tensors of a file whose header was validated; reads only those tensors' bytes."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            available = set(fh.keys())
            wanted = available if names is None else set(names)
            missing = wanted - available
            if missing:
                raise ProjectError(f"{what}: {path.name} lacks tensors {sorted(missing)}")
            return {name: fh.get_tensor(name) for name in wanted}
    except ProjectError:
        raise
    except Exception as exc:  # safetensors' own error types
        raise ProjectError(f"{what}: {path.name} is not a readable safetensors file: {exc}") from exc


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
