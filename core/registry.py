"""Known models: where their parts live on the Hugging Face hub, in which format, and how to sample them.

A model is installed when every component file is in the local hub cache (or a local folder is given). Revisions are
pinned per component; "main" means we have not verified a commit hash yet (we cannot reach the hub from the build
machines), and the resolved commit is recorded in every project so a later run can pin it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ModelNotFoundError


@dataclass(frozen=True)
class Component:
    """One part of a model: a hub repo and the files (glob patterns) we need from it."""
    repo_id: str
    files: tuple[str, ...]
    revision: str = "main"
    subpath: str = ""        # path of the component inside the downloaded snapshot (file or folder)
    format: str = "diffusers"  # "diffusers" folder, "official-pth" file, "hf-transformers" folder


@dataclass(frozen=True)
class ModelSpec:
    id: str
    title: str
    sampler: str                       # "longsana" (block-autoregressive) or "base" (5 s flow DPM-Solver, CFG)
    transformer: Component
    vae: Component
    text_encoder: Component
    tokenizer: Component
    preset: str = "480p"               # transformer shapes for an official .pth
    height: int = 480
    width: int = 832
    fps: int = 16
    approx_download_gb: float = 0.0
    notes: str = ""
    extra: dict = field(default_factory=dict)


_GEMMA = "Efficient-Large-Model/gemma-2-2b-it"
_GEMMA_FILES = ("config.json", "model*.safetensors", "model.safetensors.index.json", "tokenizer*", "special_tokens_map.json")

MODELS: dict[str, ModelSpec] = {
    "longsana-480p": ModelSpec(
        id="longsana-480p",
        title="LongSANA 2B 480p (block-causal, long videos)",
        sampler="longsana",
        transformer=Component("Efficient-Large-Model/SANA-Video_2B_480p_LongLive",
                              ("checkpoints/SANA_Video_2B_480p_LongLive.pth",),
                              subpath="checkpoints/SANA_Video_2B_480p_LongLive.pth", format="official-pth"),
        vae=Component("Efficient-Large-Model/SANA-Video_2B_480p", ("vae/Wan2.1_VAE.pth",),
                      subpath="vae/Wan2.1_VAE.pth", format="official-pth"),
        text_encoder=Component(_GEMMA, _GEMMA_FILES, format="hf-transformers"),
        tokenizer=Component(_GEMMA, _GEMMA_FILES, format="hf-transformers"),
        approx_download_gb=4.1 + 0.5 + 5.2,
        notes="Official LongSANA weights; 4 steps per 2.5 s block, no CFG.",
    ),
    "sana-video-480p": ModelSpec(
        id="sana-video-480p",
        title="SANA-Video 2B 480p (5 s clips)",
        sampler="base",
        transformer=Component("Efficient-Large-Model/SANA-Video_2B_480p_diffusers",
                              ("transformer/*.json", "transformer/*.safetensors"), subpath="transformer"),
        vae=Component("Efficient-Large-Model/SANA-Video_2B_480p_diffusers", ("vae/*.json", "vae/*.safetensors"),
                      subpath="vae"),
        text_encoder=Component("Efficient-Large-Model/SANA-Video_2B_480p_diffusers",
                               ("text_encoder/*.json", "text_encoder/*.safetensors"), subpath="text_encoder",
                               format="hf-transformers"),
        tokenizer=Component("Efficient-Large-Model/SANA-Video_2B_480p_diffusers", ("tokenizer/*",),
                            subpath="tokenizer", format="hf-transformers"),
        approx_download_gb=4.1 + 0.5 + 5.2,
        notes="The 5-second base model: flow DPM-Solver++ 50 steps, CFG 6.",
    ),
}

DEMO_ID = "demo"


def get_spec(model_id: str) -> ModelSpec:
    try:
        return MODELS[model_id]
    except KeyError:
        known = ", ".join(sorted([*MODELS, DEMO_ID]))
        raise ModelNotFoundError(f"unknown model {model_id!r}; known models: {known}, or a local model folder") from None


@dataclass(frozen=True)
class ResolvedModel:
    """Local paths of every component, ready to load."""
    id: str
    sampler: str
    transformer: Path
    vae: Path
    text_encoder: Path
    tokenizer: Path
    preset: str
    height: int
    width: int
    fps: int
    is_demo: bool = False
    label: str = ""
    revision: str = ""


STUDIO_JSON = "studio.json"


def resolve_local_folder(folder: str | Path) -> ResolvedModel:
    """A model folder in the diffusers pipeline layout (transformer/, vae/, text_encoder/, tokenizer/), optionally with
    a studio.json naming the sampler, resolution and a label (the demo pack writes one)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFoundError(f"model folder not found: {folder}")
    meta = {}
    meta_path = folder / STUDIO_JSON
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelNotFoundError(f"{meta_path} is not valid JSON: {exc}") from exc
    missing = [p for p in ("transformer", "vae", "text_encoder", "tokenizer") if not (folder / p).exists()]
    if missing:
        raise ModelNotFoundError(f"model folder {folder} lacks {', '.join(missing)} (expected the diffusers pipeline layout)")

    def part(name: str) -> Path:
        # a component folder may hold a single official .pth instead of a diffusers folder
        sub = folder / name
        pths = sorted(sub.glob("*.pth")) if sub.is_dir() else []
        return pths[0] if pths and not (sub / "config.json").exists() else sub

    return ResolvedModel(
        id=str(meta.get("id", folder.name)), sampler=str(meta.get("sampler", "longsana")),
        transformer=part("transformer"), vae=part("vae"), text_encoder=folder / "text_encoder",
        tokenizer=folder / "tokenizer", preset=str(meta.get("preset", "480p")),
        height=int(meta.get("height", 480)), width=int(meta.get("width", 832)), fps=int(meta.get("fps", 16)),
        is_demo=bool(meta.get("is_demo", False)), label=str(meta.get("label", "")),
        revision=str(meta.get("revision", "local")),
    )


def resolve_model(model: str, *, download: bool = False, progress=None, cache_dir: str | None = None) -> ResolvedModel:
    """A registry id (downloaded or, with download=True, fetched now) or a local model folder."""
    if model == DEMO_ID:
        from core.demo import ensure_demo_pack
        return resolve_local_folder(ensure_demo_pack())
    if Path(model).expanduser().is_dir():
        return resolve_local_folder(Path(model).expanduser())
    if any(sep in model for sep in ("/", "\\")) or model.startswith((".", "~")):
        raise ModelNotFoundError(f"model folder not found: {model}")
    spec = get_spec(model)
    from core import hub

    def fetch(comp: Component) -> Path:
        if download:
            root = hub.download(comp.repo_id, allow_patterns=list(comp.files), revision=comp.revision,
                                cache_dir=cache_dir, progress=progress)
        else:
            root = _cached_snapshot(comp, cache_dir)
        return Path(root) / comp.subpath if comp.subpath else Path(root)

    return ResolvedModel(
        id=spec.id, sampler=spec.sampler, transformer=fetch(spec.transformer), vae=fetch(spec.vae),
        text_encoder=fetch(spec.text_encoder), tokenizer=fetch(spec.tokenizer), preset=spec.preset,
        height=spec.height, width=spec.width, fps=spec.fps, revision=spec.transformer.revision,
    )


def _cached_snapshot(comp: Component, cache_dir: str | None) -> Path:
    """The local snapshot holding every pattern of `comp`, without touching the network."""
    from fnmatch import fnmatch

    from huggingface_hub import snapshot_download

    try:
        root = Path(snapshot_download(comp.repo_id, revision=comp.revision, cache_dir=cache_dir,
                                      local_files_only=True, allow_patterns=list(comp.files)))
    except Exception as exc:  # noqa: BLE001 - any failure means "not in the cache"
        raise ModelNotFoundError(
            f"{comp.repo_id} is not downloaded; run `sana-video models download <model>` (or pass --download) "
            f"when online, or give a local model folder") from exc
    present = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    required = [pat for pat in comp.files if not pat.endswith(".index.json") and "tokenizer" not in pat
                and pat != "special_tokens_map.json"]
    missing = [pat for pat in required if not any(fnmatch(name, pat) for name in present)]
    if missing:
        raise ModelNotFoundError(f"{comp.repo_id} is incomplete in the cache (missing {missing}); download it again")
    return root


def installed_models(cache_dir: str | None = None) -> dict[str, bool]:
    """Which registry models are complete in the local cache (no network)."""
    out = {}
    for model_id in MODELS:
        try:
            resolve_model(model_id, download=False, cache_dir=cache_dir)
            out[model_id] = True
        except Exception:  # noqa: BLE001 - anything missing means "not installed"
            out[model_id] = False
    return out
