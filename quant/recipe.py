"""Which Linear layers get quantized: a small, data-only recipe (dict / JSON), not code.

Layer names are the qualified names of `nn.Linear` modules in the model (`model.named_modules()`), e.g.
`blocks.7.ffn.inverted`. A layer is quantized when it sits inside a transformer block that is not skipped and its
name inside the block matches one of `layers` (fnmatch patterns) and none of `exclude`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from core.errors import QuantizationError

FORMATS = ("nvfp4", "fp8")

# Start point from reference/nvfp4-and-fp8.md 8.2: every per-token GEMM of the blocks (attention projections, cross
# q/out, the three FFN GEMMs), first and last two blocks in bf16; cross.kv only sees ~300 text tokens once per prompt.
DEFAULT_RECIPE: dict[str, Any] = {
    "name": "sana-video-blocks-v1",
    "block_regex": r"^(?:.*\.)?(?:blocks|transformer_blocks)\.(\d+)\.(.+)$",
    "layers": ["attn.qkv", "attn.out", "cross.q", "cross.out", "ffn.inverted", "ffn.point", "ffn.temporal"],
    "exclude": [],
    "skip_first_blocks": 2,
    "skip_last_blocks": 2,
    "activation_scales": "static",   # "static": calibrated input amax; "dynamic": per-call amax (no calibration)
}


# Built-in recipes by name (`sana-video quantize --recipe NAME`, `sana-video generate --quant-recipe NAME`).
# "all-blocks" also quantizes the first and last two blocks: every block's GEMMs in FP8 / NVFP4, the fastest choice
# (docs/benchmarks.md); whether the outer blocks lose visible quality in low precision needs real weights to judge.
NAMED_RECIPES: dict[str, dict[str, Any]] = {
    "default": DEFAULT_RECIPE,
    "all-blocks": {**DEFAULT_RECIPE, "name": "sana-video-all-blocks-v1", "skip_first_blocks": 0,
                   "skip_last_blocks": 0},
}


@dataclass(frozen=True)
class Recipe:
    name: str
    block_regex: str
    layers: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    skip_first_blocks: int = 0
    skip_last_blocks: int = 0
    activation_scales: str = "static"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        known = {"name", "block_regex", "layers", "exclude", "skip_first_blocks", "skip_last_blocks",
                 "activation_scales"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise QuantizationError(f"quantization recipe has unknown keys {unknown} (known: {sorted(known)})")
        try:
            recipe = cls(
                name=str(data["name"]), block_regex=str(data["block_regex"]),
                layers=tuple(str(p) for p in data["layers"]), exclude=tuple(str(p) for p in data.get("exclude", ())),
                skip_first_blocks=int(data.get("skip_first_blocks", 0)),
                skip_last_blocks=int(data.get("skip_last_blocks", 0)),
                activation_scales=str(data.get("activation_scales", "static")),
            )
            re.compile(recipe.block_regex)
        except (KeyError, TypeError, ValueError, re.error) as exc:
            raise QuantizationError(f"quantization recipe is malformed: {exc!r}") from exc
        if recipe.activation_scales not in ("static", "dynamic"):
            raise QuantizationError(f"activation_scales must be 'static' or 'dynamic', not {recipe.activation_scales!r}")
        if recipe.skip_first_blocks < 0 or recipe.skip_last_blocks < 0:
            raise QuantizationError("skip_first_blocks / skip_last_blocks must be >= 0")
        return recipe

    @classmethod
    def from_json(cls, path: str | Path) -> Recipe:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise QuantizationError(f"cannot read quantization recipe {path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"], data["exclude"] = list(self.layers), list(self.exclude)
        return data

    def digest(self) -> str:
        """Stable short hash of the recipe content (part of the cache key)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def select(self, model: nn.Module) -> list[str]:
        """Qualified names of the nn.Linear modules this recipe quantizes, in model order."""
        pattern = re.compile(self.block_regex)
        candidates: list[tuple[str, int, str]] = []
        block_ids: set[int] = set()
        for name, module in model.named_modules():
            match = pattern.match(name)
            if match:
                block_ids.add(int(match.group(1)))
            if not isinstance(module, nn.Linear) or not match:
                continue
            candidates.append((name, int(match.group(1)), match.group(2)))
        if not block_ids:
            return []
        ordered = sorted(block_ids)
        kept_blocks = set(ordered[self.skip_first_blocks:len(ordered) - self.skip_last_blocks])
        selected = []
        for name, block, inner in candidates:
            if block not in kept_blocks:
                continue
            if any(fnmatch.fnmatchcase(inner, p) for p in self.layers) and \
                    not any(fnmatch.fnmatchcase(inner, p) for p in self.exclude):
                selected.append(name)
        return selected


def default_recipe(**overrides: Any) -> Recipe:
    data = dict(DEFAULT_RECIPE)
    data.update(overrides)
    return Recipe.from_dict(data)


def recipe_from_arg(text: str | None) -> Recipe | None:
    """A built-in recipe name (NAMED_RECIPES), a JSON recipe file, or None / "" for the default (None)."""
    if not text:
        return None
    if text in NAMED_RECIPES:
        return Recipe.from_dict(dict(NAMED_RECIPES[text]))
    looks_like_a_file = text.endswith(".json") or "/" in text or "\\" in text
    if not looks_like_a_file and not Path(text).exists():
        raise QuantizationError(f"unknown quantization recipe {text!r}: a built-in name ({', '.join(NAMED_RECIPES)}) "
                                "or a JSON file")
    return Recipe.from_json(text)                    # a missing or unreadable file: "cannot read ..."
