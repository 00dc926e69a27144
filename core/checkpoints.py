"""Transformer checkpoints: the released formats in, validated, straight onto the target device.

Two released formats hold the same weights (reference/sana-video.md section 4 and its "Checkpoint key map"):

* the official NVlabs `.pth`: `{"state_dict": {official keys}}`, self-attention q/k/v fused in `attn.qkv`, cross
  k/v fused in `cross_attn.kv_linear`, plus four training-only extras that inference drops;
* the diffusers `transformer/` folder: `config.json` + `diffusion_pytorch_model.safetensors`, or shards
  `diffusion_pytorch_model-0000i-of-0000n.safetensors` with `diffusion_pytorch_model.safetensors.index.json`.

Everything is normalised to diffusers key names and shapes (what `SanaVideoTransformer.load_diffusers_state_dict`
takes). All keys, shapes and dtypes are checked against `expected_diffusers_shapes(cfg)` before the model is built,
so a bad checkpoint fails with one error listing every problem and nothing is half-loaded. Safetensors are read
lazily, one tensor at a time, so weights go from the file to the target device and dtype without a second full copy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.config import PRESETS, ConfigError, TransformerConfig
from core.errors import CheckpointError
from core.fsutil import atomic_path, atomic_write_text, safe_join
from core.pth import read_pth_state_dict

# ----------------------------------------------------------------------------------------------------------------
# File names (the names diffusers' ModelMixin.save_pretrained uses)
# ----------------------------------------------------------------------------------------------------------------
CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "diffusion_pytorch_model.safetensors"
SAFETENSORS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
SHARD_PATTERN = "diffusion_pytorch_model{suffix}.safetensors"  # suffix "-00001-of-00002"
_PICKLE_WEIGHT_NAMES = ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json", "pytorch_model.bin")
# `_diffusers_version` we stamp into config.json (the diffusers release our format tests run against).
DIFFUSERS_VERSION_WRITTEN = "0.42.1"

# diffusers config.json fields that newer diffusers versions write but that do not change inference of the released
# model (dropout is off at inference, interpolation_scale is unused by SanaVideo, guidance_embeds_scale only matters
# with guidance_embeds=true, which TransformerConfig rejects).
_INERT_DIFFUSERS_CONFIG_KEYS = ("dropout", "interpolation_scale", "guidance_embeds_scale")

# Training-only tensors of the official checkpoint; the diffusers convert script drops exactly these four.
OFFICIAL_DROPPED_KEYS = ("y_embedder.y_embedding", "pos_embed", "logvar_linear.weight", "logvar_linear.bias")

# torch dtypes a checkpoint may store (cast to the requested dtype while loading); safetensors' names for them
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_FLOAT_DTYPES = frozenset(_SAFETENSORS_DTYPES.values())


# ----------------------------------------------------------------------------------------------------------------
# Expected keys and shapes
# ----------------------------------------------------------------------------------------------------------------
def expected_diffusers_shapes(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Every diffusers `SanaVideoTransformer3DModel.state_dict()` key for `cfg`, in module order, with its shape."""
    d = cfg.hidden_size
    cross_inner = cfg.num_cross_attention_heads * cfg.cross_attention_head_dim
    ffn = int(cfg.mlp_ratio * d)  # GLUMBTempConv hidden channels; conv_inverted/conv_depth carry value+gate (2*ffn)
    pt, ph, pw = (int(p) for p in cfg.patch_size)
    shapes: dict[str, tuple[int, ...]] = {
        "scale_shift_table": (2, d),  # final-layer modulation; a direct parameter, so first in module order
        "patch_embedding.weight": (d, cfg.in_channels, pt, ph, pw),
        "patch_embedding.bias": (d,),
        "time_embed.emb.timestep_embedder.linear_1.weight": (d, 256),  # 256-channel sinusoidal embedding
        "time_embed.emb.timestep_embedder.linear_1.bias": (d,),
        "time_embed.emb.timestep_embedder.linear_2.weight": (d, d),
        "time_embed.emb.timestep_embedder.linear_2.bias": (d,),
        "time_embed.linear.weight": (6 * d, d),
        "time_embed.linear.bias": (6 * d,),
        "caption_projection.linear_1.weight": (d, cfg.caption_channels),
        "caption_projection.linear_1.bias": (d,),
        "caption_projection.linear_2.weight": (d, d),
        "caption_projection.linear_2.bias": (d,),
        "caption_norm.weight": (d,),
    }
    for i in range(cfg.num_layers):
        p = f"transformer_blocks.{i}."
        shapes.update({
            p + "scale_shift_table": (6, d),
            p + "attn1.norm_q.weight": (d,),
            p + "attn1.norm_k.weight": (d,),
            p + "attn1.to_q.weight": (d, d),
            p + "attn1.to_k.weight": (d, d),
            p + "attn1.to_v.weight": (d, d),
            p + "attn1.to_out.0.weight": (d, d),
            p + "attn1.to_out.0.bias": (d,),
            p + "attn2.norm_q.weight": (cross_inner,),
            p + "attn2.norm_k.weight": (cross_inner,),
            p + "attn2.to_q.weight": (cross_inner, d),
            p + "attn2.to_q.bias": (cross_inner,),
            p + "attn2.to_k.weight": (cross_inner, cfg.cross_attention_dim),
            p + "attn2.to_k.bias": (cross_inner,),
            p + "attn2.to_v.weight": (cross_inner, cfg.cross_attention_dim),
            p + "attn2.to_v.bias": (cross_inner,),
            p + "attn2.to_out.0.weight": (d, cross_inner),
            p + "attn2.to_out.0.bias": (d,),
            p + "ff.conv_inverted.weight": (2 * ffn, d, 1, 1),
            p + "ff.conv_inverted.bias": (2 * ffn,),
            p + "ff.conv_depth.weight": (2 * ffn, 1, 3, 3),  # depthwise 3x3
            p + "ff.conv_depth.bias": (2 * ffn,),
            p + "ff.conv_point.weight": (d, ffn, 1, 1),
            p + "ff.conv_temp.weight": (d, d, 3, 1),  # temporal kernel 3 over frames
        })
    shapes.update({
        "proj_out.weight": (cfg.out_channels * pt * ph * pw, d),
        "proj_out.bias": (cfg.out_channels * pt * ph * pw,),
    })
    return shapes


# ----------------------------------------------------------------------------------------------------------------
# Official <-> diffusers key map
# ----------------------------------------------------------------------------------------------------------------
_TOP_LEVEL = {  # official -> diffusers, unchanged tensors
    "x_embedder.proj.weight": "patch_embedding.weight",
    "x_embedder.proj.bias": "patch_embedding.bias",
    "t_embedder.mlp.0.weight": "time_embed.emb.timestep_embedder.linear_1.weight",
    "t_embedder.mlp.0.bias": "time_embed.emb.timestep_embedder.linear_1.bias",
    "t_embedder.mlp.2.weight": "time_embed.emb.timestep_embedder.linear_2.weight",
    "t_embedder.mlp.2.bias": "time_embed.emb.timestep_embedder.linear_2.bias",
    "t_block.1.weight": "time_embed.linear.weight",
    "t_block.1.bias": "time_embed.linear.bias",
    "y_embedder.y_proj.fc1.weight": "caption_projection.linear_1.weight",
    "y_embedder.y_proj.fc1.bias": "caption_projection.linear_1.bias",
    "y_embedder.y_proj.fc2.weight": "caption_projection.linear_2.weight",
    "y_embedder.y_proj.fc2.bias": "caption_projection.linear_2.bias",
    "attention_y_norm.weight": "caption_norm.weight",
    "final_layer.linear.weight": "proj_out.weight",
    "final_layer.linear.bias": "proj_out.bias",
    "final_layer.scale_shift_table": "scale_shift_table",
}
# official per-block suffix -> diffusers per-block suffixes; more than one = the official tensor is the row-wise
# concatenation (dim 0) of the diffusers tensors in this order ([q; k; v] and [k; v]).
_PER_BLOCK: dict[str, tuple[str, ...]] = {
    "scale_shift_table": ("scale_shift_table",),
    "attn.qkv.weight": ("attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight"),
    "attn.q_norm.weight": ("attn1.norm_q.weight",),
    "attn.k_norm.weight": ("attn1.norm_k.weight",),
    "attn.proj.weight": ("attn1.to_out.0.weight",),
    "attn.proj.bias": ("attn1.to_out.0.bias",),
    "cross_attn.q_linear.weight": ("attn2.to_q.weight",),
    "cross_attn.q_linear.bias": ("attn2.to_q.bias",),
    "cross_attn.kv_linear.weight": ("attn2.to_k.weight", "attn2.to_v.weight"),
    "cross_attn.kv_linear.bias": ("attn2.to_k.bias", "attn2.to_v.bias"),
    "cross_attn.q_norm.weight": ("attn2.norm_q.weight",),
    "cross_attn.k_norm.weight": ("attn2.norm_k.weight",),
    "cross_attn.proj.weight": ("attn2.to_out.0.weight",),
    "cross_attn.proj.bias": ("attn2.to_out.0.bias",),
    "mlp.inverted_conv.conv.weight": ("ff.conv_inverted.weight",),
    "mlp.inverted_conv.conv.bias": ("ff.conv_inverted.bias",),
    "mlp.depth_conv.conv.weight": ("ff.conv_depth.weight",),
    "mlp.depth_conv.conv.bias": ("ff.conv_depth.bias",),
    "mlp.point_conv.conv.weight": ("ff.conv_point.weight",),
    "mlp.t_conv.weight": ("ff.conv_temp.weight",),
}
_TOP_LEVEL_INVERSE = {v: k for k, v in _TOP_LEVEL.items()}
_PER_BLOCK_INVERSE = {part: (official, i, len(parts)) for official, parts in _PER_BLOCK.items()
                      for i, part in enumerate(parts)}
_OFFICIAL_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_DIFFUSERS_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class _Part:
    """Diffusers tensor = rows [index/parts] of the source tensor `key` (parts == 1: the whole tensor)."""
    key: str
    index: int = 0
    parts: int = 1


def _official_plan(official_keys: list[str]) -> dict[str, _Part]:
    """diffusers key -> where it lives in an official state dict. Unknown official keys raise CheckpointError."""
    plan: dict[str, _Part] = {}
    unknown = []
    for key in official_keys:
        if key in OFFICIAL_DROPPED_KEYS:
            continue
        if key in _TOP_LEVEL:
            plan[_TOP_LEVEL[key]] = _Part(key)
            continue
        m = _OFFICIAL_BLOCK.match(key)
        parts = _PER_BLOCK.get(m.group(2)) if m else None
        if parts is None:
            unknown.append(key)
            continue
        for i, part in enumerate(parts):
            plan[f"transformer_blocks.{m.group(1)}.{part}"] = _Part(key, i, len(parts))
    if unknown:
        raise CheckpointError(f"official checkpoint has {len(unknown)} unknown key(s): {_listing(unknown)}")
    return plan


def _take(tensor: torch.Tensor, part: _Part) -> torch.Tensor:
    if part.parts == 1:
        return tensor
    if tensor.shape[0] % part.parts:
        raise CheckpointError(f"{part.key}: first dimension {tensor.shape[0]} does not split into {part.parts} parts")
    return tensor.chunk(part.parts, dim=0)[part.index]  # a view, no copy


def is_official_keys(keys) -> bool:
    """True when the keys are official NVlabs names (vs diffusers names)."""
    keys = set(keys)
    return bool(keys & (set(_TOP_LEVEL) | set(OFFICIAL_DROPPED_KEYS))) or any(_OFFICIAL_BLOCK.match(k) for k in keys)


def official_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official `state_dict` -> diffusers names; fused qkv / kv become views. The four training extras are dropped."""
    return {dk: _take(sd[part.key], part) for dk, part in _official_plan(list(sd.keys())).items()}


def diffusers_to_official(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Exact inverse of `official_to_diffusers` (without the dropped training extras)."""
    groups: dict[str, list[str | None]] = {}
    unknown = []
    for key in sd.keys():
        if key in _TOP_LEVEL_INVERSE:
            groups[_TOP_LEVEL_INVERSE[key]] = [key]
            continue
        m = _DIFFUSERS_BLOCK.match(key)
        where = _PER_BLOCK_INVERSE.get(m.group(2)) if m else None
        if where is None:
            unknown.append(key)
            continue
        official, index, parts = where
        slots = groups.setdefault(f"blocks.{m.group(1)}.{official}", [None] * parts)
        slots[index] = key
    if unknown:
        raise CheckpointError(f"diffusers state dict has {len(unknown)} unknown key(s): {_listing(unknown)}")
    incomplete = [f"{official} (needs {_PER_BLOCK[official.split('.', 2)[2]]})"
                  for official, slots in groups.items() if None in slots]
    if incomplete:
        raise CheckpointError(f"cannot fuse official tensors, parts missing: {_listing(incomplete)}")
    out = {}
    for official, slots in groups.items():
        tensors = [sd[k] for k in slots]
        out[official] = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Lazy state dicts: shapes and dtypes without reading data; tensors read one at a time on access
# ----------------------------------------------------------------------------------------------------------------
class _SafetensorsFiles:
    """Open safetensors files (headers parsed, data memory-mapped) and which file holds which key."""

    def __init__(self, device: str | torch.device = "cpu"):
        self._device = str(device)
        self._handles: dict[Path, Any] = {}
        self.key_to_file: dict[str, Path] = {}

    def open(self, path: Path) -> list[str]:
        from safetensors import SafetensorError, safe_open

        if not path.is_file():
            raise CheckpointError(f"checkpoint file is missing: {path}")
        try:
            handle = safe_open(str(path), framework="pt", device=self._device)
            keys = list(handle.keys())
        except SafetensorError as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt download?): "
                                  f"{exc}") from exc
        except OSError as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from exc
        self._handles[path] = handle
        return keys

    def add_key(self, key: str, path: Path) -> None:
        self.key_to_file[key] = path

    def _slice(self, key: str):
        return self._handles[self.key_to_file[key]].get_slice(key)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(s) for s in self._slice(key).get_shape())

    def dtype(self, key: str) -> torch.dtype | str:
        name = self._slice(key).get_dtype()
        return _SAFETENSORS_DTYPES.get(name, name)

    def tensor(self, key: str, part: _Part) -> torch.Tensor:
        path = self.key_to_file[key]
        try:
            if part.parts == 1:
                return self._handles[path].get_tensor(key)
            rows = self.shape(key)[0] // part.parts  # read only this part's rows
            return self._slice(key)[part.index * rows:(part.index + 1) * rows]
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"cannot read tensor {key!r} from {path}: {exc}") from exc

    def close(self) -> None:
        self._handles.clear()  # safe_open handles unmap when garbage-collected


class LazyStateDict(Mapping):
    """A read-only diffusers-keyed state dict whose tensors are read from disk on access (one at a time).

    `shapes()` / `dtypes()` come from file headers, so validation reads no tensor data. Use as a context manager or
    call `close()` to release the files (Windows keeps memory-mapped files locked)."""

    def __init__(self, files: _SafetensorsFiles, plan: dict[str, _Part], source: str):
        self._files = files
        self._plan = plan
        self.source = source

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._files.tensor(self._plan[key].key, self._plan[key])

    def __contains__(self, key: object) -> bool:  # Mapping's default would read the tensor to answer
        return key in self._plan

    def __iter__(self) -> Iterator[str]:
        return iter(self._plan)

    @property
    def official(self) -> bool:
        """True when the file uses official NVlabs key names (mapped to diffusers names on access)."""
        return is_official_keys({part.key for part in self._plan.values()})

    def __len__(self) -> int:
        return len(self._plan)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        out = {}
        for key, part in self._plan.items():
            shape = self._files.shape(part.key)
            out[key] = (shape[0] // part.parts, *shape[1:]) if part.parts > 1 and shape else shape
        return out

    def dtypes(self) -> dict[str, torch.dtype | str]:
        return {key: self._files.dtype(part.key) for key, part in self._plan.items()}

    def close(self) -> None:
        self._files.close()

    def __enter__(self) -> LazyStateDict:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shapes_of(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return sd.shapes() if isinstance(sd, LazyStateDict) else {k: tuple(v.shape) for k, v in sd.items()}


def _dtypes_of(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    return sd.dtypes() if isinstance(sd, LazyStateDict) else {k: v.dtype for k, v in sd.items()}


# ----------------------------------------------------------------------------------------------------------------
# Validation and config inference
# ----------------------------------------------------------------------------------------------------------------
def _listing(items: list[str], limit: int = 12) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def validate_state_dict(sd: Mapping[str, torch.Tensor], cfg: TransformerConfig, source: str = "checkpoint") -> None:
    """Raise one CheckpointError listing every missing, unexpected, misshapen or non-float tensor (reads no data)."""
    expected = expected_diffusers_shapes(cfg)
    shapes = _shapes_of(sd)
    dtypes = _dtypes_of(sd)
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    misshapen = [f"{k} {shapes[k]} (expected {expected[k]})" for k in expected
                 if k in shapes and tuple(shapes[k]) != expected[k]]
    bad_dtype = [f"{k} {dtypes[k]}" for k in expected if k in dtypes and dtypes[k] not in _FLOAT_DTYPES]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    if misshapen:
        problems.append(f"{len(misshapen)} misshapen: {_listing(misshapen)}")
    if bad_dtype:
        problems.append(f"{len(bad_dtype)} not floating point: {_listing(bad_dtype)}")
    if problems:
        raise CheckpointError(f"{source} does not match the transformer config ({cfg.num_layers} layers, hidden "
                              f"{cfg.hidden_size}): " + "; ".join(problems))


def infer_config(shapes: Mapping[str, tuple[int, ...]], head_dim: int = 112) -> TransformerConfig:
    """A config from diffusers-keyed shapes (for a `.pth` / single `.safetensors` that carries no config.json).

    Head counts are not visible in the shapes (q/k/v are full-width matrices); the released models use
    `linear_head_dim` 112, so heads = hidden / 112. A released preset is returned when the shapes match one."""
    try:
        d, in_channels, pt, ph, pw = shapes["patch_embedding.weight"]
        out_rows = shapes["proj_out.weight"][0]
        caption_channels = shapes["caption_projection.linear_1.weight"][1]
        ffn2 = shapes["transformer_blocks.0.ff.conv_inverted.weight"][0]
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"cannot infer the transformer config: key {exc} missing or misshapen; pass a preset "
                              f"({', '.join(PRESETS)})") from exc
    layers = 1 + max((int(m.group(1)) for k in shapes if (m := _DIFFUSERS_BLOCK.match(k))), default=-1)
    if d % head_dim:
        raise CheckpointError(f"cannot infer attention heads: hidden size {d} is not a multiple of {head_dim}; pass "
                              f"a preset ({', '.join(PRESETS)})")
    patch_volume = pt * ph * pw
    if out_rows % patch_volume:
        raise CheckpointError(f"proj_out rows {out_rows} are not a multiple of the patch volume {patch_volume}")
    fields = dict(in_channels=in_channels, out_channels=out_rows // patch_volume, num_attention_heads=d // head_dim,
                  attention_head_dim=head_dim, num_layers=layers, num_cross_attention_heads=d // head_dim,
                  cross_attention_head_dim=head_dim, cross_attention_dim=d, caption_channels=caption_channels,
                  mlp_ratio=ffn2 / 2 / d, patch_size=(pt, ph, pw))
    for preset in PRESETS.values():
        if all(getattr(preset, k) == v for k, v in fields.items()):
            return preset
    try:
        return TransformerConfig(**fields).validate()
    except ConfigError as exc:
        raise CheckpointError(f"inferred transformer config is invalid: {exc}") from exc


def config_from_preset(preset: str | TransformerConfig) -> TransformerConfig:
    """'480p' / '720p' / 'longsana' (= 480p shapes) or a TransformerConfig."""
    if isinstance(preset, TransformerConfig):
        return preset.validate()
    name = str(preset).lower().replace("_", "").replace("-", "")
    aliases = {"longsana": "480p", "longlive": "480p", "480": "480p", "720": "720p"}
    name = aliases.get(name, name)
    if name not in PRESETS:
        raise ConfigError(f"unknown transformer preset {preset!r} (known: {', '.join(PRESETS)}, longsana)")
    return PRESETS[name]


def _read_config_json(path: Path) -> TransformerConfig:
    if not path.is_file():
        raise CheckpointError(f"transformer config not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"transformer config {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"transformer config {path} must be a JSON object")
    class_name = data.get("_class_name")
    if class_name is not None and class_name != "SanaVideoTransformer3DModel":
        raise CheckpointError(f"{path} describes a {class_name}, not a SanaVideoTransformer3DModel")
    data = {k: v for k, v in data.items() if k not in _INERT_DIFFUSERS_CONFIG_KEYS}
    try:
        return TransformerConfig.from_dict(data)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"transformer config {path} is invalid: {exc}") from exc


# ----------------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------------
def _refuse_pickle(path: Path) -> None:
    raise CheckpointError(
        f"{path} is a pickle checkpoint (.bin); pickles can run arbitrary code, so they are not loaded. Convert it to "
        "safetensors (diffusers: `save_pretrained(..., safe_serialization=True)`) or use the released safetensors "
        "files")


def transformer_folder(folder: str | Path) -> Path:
    """The diffusers `transformer/` folder: `folder` itself or its `transformer/` subfolder (a pipeline folder)."""
    folder = Path(folder)
    if (folder / CONFIG_NAME).is_file() or not (folder / "transformer").is_dir():
        return folder
    return folder / "transformer"


def read_diffusers_transformer(folder: str | Path, device: str | torch.device = "cpu"
                               ) -> tuple[TransformerConfig, LazyStateDict]:
    """Config and lazy state dict of a diffusers transformer folder (single or sharded safetensors).

    Like diffusers, the index wins when both an index and a single file exist. Nothing is validated against the
    config here beyond file integrity; `load_transformer` does the full key/shape check."""
    folder = transformer_folder(folder)
    if not folder.is_dir():
        raise CheckpointError(f"transformer folder not found: {folder}")
    cfg = _read_config_json(folder / CONFIG_NAME)
    files = _SafetensorsFiles(device)
    index_path = folder / SAFETENSORS_INDEX_NAME
    single_path = folder / SAFETENSORS_NAME
    if index_path.is_file():
        weight_map = _read_index(index_path)
        by_file: dict[str, list[str]] = {}
        for key, name in weight_map.items():
            by_file.setdefault(name, []).append(key)
        missing_files = [n for n in by_file if not (folder / n).is_file()]
        if missing_files:
            raise CheckpointError(f"{index_path} lists shard file(s) that are missing (incomplete download?): "
                                  f"{_listing(sorted(missing_files))}")
        for name, keys in sorted(by_file.items()):
            path = safe_join(folder, name)
            in_file = set(files.open(path))
            absent = [k for k in keys if k not in in_file]
            if absent:
                raise CheckpointError(f"{path} lacks tensor(s) its index assigns to it: {_listing(sorted(absent))}")
            extra = in_file.difference(weight_map)
            if extra:
                raise CheckpointError(f"{path} holds tensor(s) missing from {index_path.name}: "
                                      f"{_listing(sorted(extra))}")
            for key in keys:
                files.add_key(key, path)
        keys = list(weight_map)
    elif single_path.is_file():
        keys = files.open(single_path)
        for key in keys:
            files.add_key(key, single_path)
    else:
        pickles = [folder / n for n in _PICKLE_WEIGHT_NAMES if (folder / n).exists()]
        if pickles:
            _refuse_pickle(pickles[0])
        raise CheckpointError(f"no {SAFETENSORS_NAME} or {SAFETENSORS_INDEX_NAME} in {folder}")
    return cfg, LazyStateDict(files, {k: _Part(k) for k in keys}, str(folder))


def _read_index(index_path: Path) -> dict[str, str]:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{index_path} is not valid JSON: {exc}") from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in weight_map.items()):
        raise CheckpointError(f"{index_path} has no valid 'weight_map' (tensor name -> shard file)")
    bad = [v for v in set(weight_map.values()) if Path(v).name != v or not v.endswith(".safetensors")]
    if bad:
        raise CheckpointError(f"{index_path} names shard files outside its folder or not safetensors: {sorted(bad)}")
    return weight_map


def read_safetensors_file(path: str | Path, device: str | torch.device = "cpu") -> LazyStateDict:
    """A single `.safetensors` with official or diffusers keys, as a lazy diffusers-keyed state dict."""
    path = Path(path)
    files = _SafetensorsFiles(device)
    keys = files.open(path)
    for key in keys:
        files.add_key(key, path)
    plan = _official_plan(keys) if is_official_keys(keys) else {k: _Part(k) for k in keys}
    return LazyStateDict(files, plan, str(path))


def read_official_pth(path: str | Path) -> dict[str, torch.Tensor]:
    """The official `.pth` (`{"state_dict": sd}` or a bare sd) as a diffusers-keyed dict (memory-mapped when possible).

    `weights_only=True`: only tensors and plain containers are unpickled, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file is missing: {path}")
    if path.suffix == ".bin":
        _refuse_pickle(path)
    sd = read_pth_state_dict(path)
    if not is_official_keys(sd.keys()):
        return dict(sd)  # a .pth saved with diffusers names: accept as is, validation follows
    return official_to_diffusers(sd)


# ----------------------------------------------------------------------------------------------------------------
# The loader
# ----------------------------------------------------------------------------------------------------------------
def read_checkpoint(source: str | Path, *, preset: str | TransformerConfig | None = None,
                    device: str | torch.device = "cpu"
                    ) -> tuple[TransformerConfig, Mapping[str, torch.Tensor], str]:
    """(config, diffusers-keyed state dict, default numerics) for a folder, `.pth`/`.pt` or `.safetensors`.

    Default numerics: an official `.pth` (or official-keyed safetensors) is what NVlabs/Sana's own scripts run, so
    it defaults to the official numerics; a diffusers folder is what diffusers' SanaVideoPipeline runs, so it defaults
    to diffusers' numerics (same outputs as diffusers for the same weights). Validated: keys, shapes, dtypes."""
    source = Path(source).expanduser()
    if not source.exists():
        raise CheckpointError(f"checkpoint not found: {source}")
    if source.is_dir():
        cfg, sd = read_diffusers_transformer(source, device=device)
        if preset is not None:
            cfg = config_from_preset(preset)
        numerics = "diffusers"
    elif source.suffix == ".safetensors":
        sd = read_safetensors_file(source, device=device)
        numerics = "official" if sd.official else "diffusers"
        cfg = config_from_preset(preset) if preset is not None else _sibling_config(source) or infer_config(
            sd.shapes())
    elif source.suffix in (".pth", ".pt", ".ckpt"):
        sd = read_official_pth(source)
        numerics = "official"
        cfg = config_from_preset(preset) if preset is not None else infer_config(_shapes_of(sd))
    elif source.suffix == ".bin":
        _refuse_pickle(source)
    else:
        raise CheckpointError(f"{source}: unknown checkpoint type (expected a diffusers folder, .pth or .safetensors)")
    try:
        validate_state_dict(sd, cfg, source=str(source))
    except CheckpointError:
        if isinstance(sd, LazyStateDict):
            sd.close()
        raise
    return cfg, sd, numerics


def _sibling_config(path: Path) -> TransformerConfig | None:
    """A diffusers-keyed single file next to its config.json (a transformer folder addressed by file)."""
    config = path.parent / CONFIG_NAME
    return _read_config_json(config) if config.is_file() else None


def load_transformer(source: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     numerics: str | None = None, preset: str | TransformerConfig | None = None):
    """A ready `SanaVideoTransformer` (eval mode) from a diffusers folder, an official `.pth` or a `.safetensors`.

    All keys and shapes are checked before anything is built. The model is built on the meta device and each
    tensor goes from the file to `device`/`dtype` once (no second full copy in memory). `numerics` defaults to
    'official' for official checkpoints and 'diffusers' for diffusers folders (see `read_checkpoint`)."""
    from core.model import SanaVideoTransformer  # imported here: core.model is heavy and optional for readers

    cfg, sd, default_numerics = read_checkpoint(source, preset=preset, device=_reader_device(device))
    cfg = cfg.with_numerics(numerics or default_numerics)
    try:
        with torch.device("meta"):
            model = SanaVideoTransformer(cfg)
        model.load_diffusers_state_dict(sd, device=device, dtype=dtype)
    finally:
        if isinstance(sd, LazyStateDict):
            sd.close()
    return model.eval()


def _reader_device(device: str | torch.device) -> str:
    """safetensors can read straight into CUDA memory; other devices read to CPU first."""
    device = torch.device(device)
    return str(device) if device.type == "cuda" else "cpu"


# ----------------------------------------------------------------------------------------------------------------
# Writers (the released formats, byte-compatible with diffusers' save_pretrained)
# ----------------------------------------------------------------------------------------------------------------
def diffusers_config_json(cfg: TransformerConfig) -> str:
    """config.json text as diffusers writes it (sorted keys, 2-space indent, trailing newline)."""
    data = dict(cfg.to_diffusers_dict())
    data["_class_name"] = "SanaVideoTransformer3DModel"
    data["_diffusers_version"] = DIFFUSERS_VERSION_WRITTEN
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _own_cpu_tensor(t: torch.Tensor) -> torch.Tensor:
    """Contiguous CPU tensor with its own storage (safetensors refuses tensors that share memory, e.g. qkv views)."""
    t = t.detach().to("cpu").contiguous()
    if t.storage_offset() != 0 or t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone()
    return t


def _save_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def write_diffusers_transformer(folder: str | Path, cfg: TransformerConfig, sd: Mapping[str, torch.Tensor],
                                max_shard_bytes: int | None = None) -> Path:
    """Write a diffusers `transformer/` folder: config.json + one safetensors file, or shards + index when the
    weights exceed `max_shard_bytes` (same split, names and index as diffusers' save_pretrained(max_shard_size=...)).

    Each file is written atomically; weights first, then the index, then config.json, then stale weight files of the
    other layout are removed, so an interrupted write never leaves an index pointing at missing shards."""
    from huggingface_hub import split_torch_state_dict_into_shards

    folder = Path(folder)
    validate_state_dict(sd, cfg, source="state dict to write")
    order = expected_diffusers_shapes(cfg)  # module order, as model.state_dict() iterates (decides shard split)
    tensors = {k: _own_cpu_tensor(sd[k]) for k in order}
    folder.mkdir(parents=True, exist_ok=True)
    if max_shard_bytes is None:
        _save_safetensors(folder / SAFETENSORS_NAME, tensors)
        written = {SAFETENSORS_NAME}
        (folder / SAFETENSORS_INDEX_NAME).unlink(missing_ok=True)
    else:
        split = split_torch_state_dict_into_shards(tensors, max_shard_size=int(max_shard_bytes),
                                                   filename_pattern=SHARD_PATTERN)
        for name, keys in split.filename_to_tensors.items():
            _save_safetensors(folder / name, {k: tensors[k] for k in keys})
        written = set(split.filename_to_tensors)
        if split.is_sharded:
            index = {"metadata": dict(split.metadata), "weight_map": split.tensor_to_filename}
            atomic_write_text(folder / SAFETENSORS_INDEX_NAME, json.dumps(index, indent=2, sort_keys=True) + "\n")
            written.add(SAFETENSORS_INDEX_NAME)
        else:
            (folder / SAFETENSORS_INDEX_NAME).unlink(missing_ok=True)
    atomic_write_text(folder / CONFIG_NAME, diffusers_config_json(cfg))
    shard_name = re.compile(r"^diffusion_pytorch_model(-\d{5}-of-\d{5})?\.safetensors$")
    for stale in folder.iterdir():
        if stale.is_file() and shard_name.match(stale.name) and stale.name not in written:
            stale.unlink()
    return folder


def write_official_pth(path: str | Path, sd_diffusers: Mapping[str, torch.Tensor]) -> Path:
    """Write `{"state_dict": official keys}` with torch.save (the released official format; tensors only)."""
    path = Path(path)
    official = {k: _own_cpu_tensor(v) for k, v in diffusers_to_official(sd_diffusers).items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": official}, tmp)
    return path


def parameter_bytes(cfg: TransformerConfig, dtype: torch.dtype = torch.float32) -> int:
    """Size of the transformer weights in `dtype` (for download / memory estimates)."""
    elem = torch.empty((), dtype=dtype).element_size()
    return elem * sum(math.prod(s) for s in expected_diffusers_shapes(cfg).values())


__all__ = [
    "CONFIG_NAME", "SAFETENSORS_NAME", "SAFETENSORS_INDEX_NAME", "OFFICIAL_DROPPED_KEYS", "LazyStateDict",
    "expected_diffusers_shapes", "official_to_diffusers", "diffusers_to_official", "is_official_keys",
    "validate_state_dict", "infer_config", "config_from_preset", "transformer_folder", "read_diffusers_transformer",
    "read_safetensors_file", "read_official_pth", "read_checkpoint", "load_transformer", "diffusers_config_json",
    "write_diffusers_transformer", "write_official_pth", "parameter_bytes",
]
