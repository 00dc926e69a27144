"""Constant-memory streaming state of the block-causal (LongSANA) transformer.

Per layer l:
  vk[l]          (B, H, d, d) fp32   sum over previous tokens of v k_rot^T  (numerator of the linear attention)
  k_sum[l]       (B, H, d)    fp32   sum over previous tokens of relu(k), unrotated (denominator)
  tconv_frame[l] (B, H'W', D) model dtype  last frame of the previous block's post-point-conv FFN features

A `BlockContribution` has the same layout and holds ONE block's own terms (what the official save_kv_cache pass
stores). `StreamState.add` sums vk / k_sum and replaces tconv_frame, so a state is the ordered sum of contributions;
keeping contributions lets later work rebuild the state for any block (regenerate from block k).

Tensors are stacked over layers (leading dim L) so that adding, saving and measuring are single tensor ops.
Files are safetensors with a JSON header in the metadata; the header never depends on the number of blocks, so a
state file has the same size after 1 or 1000 blocks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from core.errors import ProjectError
from core.fsutil import atomic_path

_FORMAT = "sana-video-stream-state"
_VERSION = 1


@dataclass(frozen=True)
class _LayerStack:
    vk: torch.Tensor                        # (L, B, H, d, d) fp32
    k_sum: torch.Tensor                     # (L, B, H, d) fp32
    tconv_frame: torch.Tensor | None        # (L, B, H'W', D) model dtype, None when no block was cached yet

    _KIND = "base"

    def __post_init__(self) -> None:
        num_layers, batch, heads, d, d2 = self.vk.shape
        if d != d2 or tuple(self.k_sum.shape) != (num_layers, batch, heads, d):
            raise ValueError(f"inconsistent state shapes: vk {tuple(self.vk.shape)}, k_sum {tuple(self.k_sum.shape)}")
        if self.tconv_frame is not None and tuple(self.tconv_frame.shape[:2]) != (num_layers, batch):
            raise ValueError(f"tconv_frame {tuple(self.tconv_frame.shape)} does not match {num_layers} layers x "
                             f"batch {batch}")

    # ---- views ----
    @property
    def num_layers(self) -> int:
        return self.vk.shape[0]

    @property
    def batch(self) -> int:
        return self.vk.shape[1]

    @property
    def device(self) -> torch.device:
        return self.vk.device

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(vk (B,H,d,d), k_sum (B,H,d), tconv_frame (B,H'W',D) or None) of one layer."""
        frame = None if self.tconv_frame is None else self.tconv_frame[index]
        return self.vk[index], self.k_sum[index], frame

    @property
    def nbytes(self) -> int:
        total = self.vk.nbytes + self.k_sum.nbytes
        if self.tconv_frame is not None:
            total += self.tconv_frame.nbytes
        return total

    # ---- copies ----
    def clone(self):
        frame = None if self.tconv_frame is None else self.tconv_frame.clone()
        return type(self)(self.vk.clone(), self.k_sum.clone(), frame)

    def to(self, device=None, dtype: torch.dtype | None = None):
        """Move to a device; `dtype` changes only tconv_frame (vk / k_sum stay fp32)."""
        frame = None if self.tconv_frame is None else self.tconv_frame.to(device=device, dtype=dtype)
        return type(self)(self.vk.to(device), self.k_sum.to(device), frame)

    # ---- files ----
    def _header(self) -> dict:
        header = {"format": _FORMAT, "version": _VERSION, "kind": self._KIND,
                  "vk": {"shape": list(self.vk.shape), "dtype": str(self.vk.dtype)},
                  "k_sum": {"shape": list(self.k_sum.shape), "dtype": str(self.k_sum.dtype)}}
        if self.tconv_frame is not None:
            header["tconv_frame"] = {"shape": list(self.tconv_frame.shape), "dtype": str(self.tconv_frame.dtype)}
        return header

    def save(self, path: str | os.PathLike) -> None:
        """Atomic safetensors write (tensors moved to the CPU)."""
        tensors = {"vk": self.vk, "k_sum": self.k_sum}
        if self.tconv_frame is not None:
            tensors["tconv_frame"] = self.tconv_frame
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"header": json.dumps(self._header(), sort_keys=True)})

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu"):
        path = os.fspath(path)
        try:
            with safe_open(path, framework="pt", device=str(device)) as fh:
                metadata = fh.metadata() or {}
                names = set(fh.keys())
                tensors = {name: fh.get_tensor(name) for name in names}
        except FileNotFoundError as exc:
            raise ProjectError(f"stream state file not found: {path}") from exc
        except Exception as exc:  # safetensors raises its own error types for truncated / foreign files
            raise ProjectError(f"stream state file {path} is not a readable safetensors file: {exc}") from exc
        try:
            header = json.loads(metadata.get("header", ""))
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != _FORMAT:
            raise ProjectError(f"{path} is not a SANA-Video stream state file")
        if header.get("version") != _VERSION:
            raise ProjectError(f"{path} has stream state version {header.get('version')}, expected {_VERSION}")
        if header.get("kind") != cls._KIND:
            raise ProjectError(f"{path} holds a {header.get('kind')!r}, expected a {cls._KIND!r}")
        expected = {name for name in ("vk", "k_sum", "tconv_frame") if name in header}
        if names != expected or not {"vk", "k_sum"} <= names:
            raise ProjectError(f"{path}: tensors {sorted(names)} do not match the header {sorted(expected)}")
        for name in names:
            want = header[name]
            got = tensors[name]
            if list(got.shape) != want["shape"] or str(got.dtype) != want["dtype"]:
                raise ProjectError(f"{path}: tensor {name!r} is {tuple(got.shape)} {got.dtype}, header says "
                                   f"{tuple(want['shape'])} {want['dtype']}")
        try:
            return cls(tensors["vk"], tensors["k_sum"], tensors.get("tconv_frame"))
        except ValueError as exc:
            raise ProjectError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class BlockContribution(_LayerStack):
    """One block's own terms from the clean t=0 cache pass (not accumulated)."""

    _KIND = "contribution"


@dataclass(frozen=True)
class StreamState(_LayerStack):
    """The running state: sums over all previous blocks plus the last block's temporal-conv frame."""

    _KIND = "state"

    @classmethod
    def empty(cls, cfg, batch: int = 1, device: torch.device | str | None = None) -> StreamState:
        """Zero state, equivalent to no previous block (the temporal conv sees zero before the first frame)."""
        heads, d = cfg.num_attention_heads, cfg.attention_head_dim
        vk = torch.zeros(cfg.num_layers, batch, heads, d, d, dtype=torch.float32, device=device)
        k_sum = torch.zeros(cfg.num_layers, batch, heads, d, dtype=torch.float32, device=device)
        return cls(vk, k_sum, None)

    @property
    def is_empty(self) -> bool:
        return self.tconv_frame is None

    def add(self, contribution: BlockContribution) -> StreamState:
        """New state = this state + one more block (vk, k_sum summed; tconv_frame replaced)."""
        if tuple(contribution.vk.shape) != tuple(self.vk.shape):
            raise ValueError(f"contribution vk {tuple(contribution.vk.shape)} does not match state "
                             f"{tuple(self.vk.shape)}")
        return StreamState(self.vk + contribution.vk, self.k_sum + contribution.k_sum, contribution.tconv_frame)

    @classmethod
    def from_contributions(cls, cfg, contributions: Sequence[BlockContribution], batch: int = 1,
                           device: torch.device | str | None = None) -> StreamState:
        """The state after the given blocks, summed in order (bit-identical to adding them one by one from empty).

        Pass `contributions[:k]` to regenerate from block k, or the last n to emulate a num_cached_blocks window."""
        if contributions:
            batch = contributions[0].batch
            device = contributions[0].device if device is None else device
        state = cls.empty(cfg, batch=batch, device=device)
        for contribution in contributions:
            state = state.add(contribution.to(device))
        return state


__all__ = ["StreamState", "BlockContribution"]
