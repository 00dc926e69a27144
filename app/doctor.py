"""`sana-video doctor`: what this machine has, what the app will do with it, and how to fix what is wrong.

Checks the GPU and driver (nvidia-smi), the installed PyTorch build and its CUDA architectures (the "no kernel image"
trap: a torch build without kernels for the GPU's sm), free VRAM and disk, the precision the engine will pick, whether
the models are complete in the Hugging Face cache, the app's folders, and the optional parts (ModelOpt, PyAV with
libx264, PySide6, Triton). Every problem comes with its fix.

No Qt import here (the CLI must work without a display); core and quant are imported lazily.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

APP_NAME = "sana-video-studio"

# Used when core.registry cannot be imported: the repos a working install needs, and what makes each one complete.
FALLBACK_MODELS = {
    "longsana-480p": {
        "title": "LongSANA 2B 480p",
        "components": {"transformer": ("Efficient-Large-Model/SANA-Video_2B_480p_LongLive",
                                       ("checkpoints/SANA_Video_2B_480p_LongLive.pth",),
                                       "checkpoints/SANA_Video_2B_480p_LongLive.pth")},
    },
    "sana-video-480p": {
        "title": "SANA-Video 2B 480p (diffusers)",
        "components": {name: ("Efficient-Large-Model/SANA-Video_2B_480p_diffusers", (f"{name}/*",), name)
                       for name in ("transformer", "vae", "text_encoder", "tokenizer")},
    },
}
COMPONENT_NAMES = ("transformer", "vae", "text_encoder", "tokenizer")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")

# Rough needs of the 2B model, for warnings only: bf16 weights of the DiT (4.1 GB) + Gemma-2 2B (5.2 GB) + VAE (0.5 GB).
MODEL_DOWNLOAD_GB = 10.0
MIN_FREE_VRAM_GB = 10.0


# ----------------------------------------------------------------------------------------------------------------------
# decisions (pure functions, unit-tested)

def choose_precision(capability: tuple[int, int] | None) -> tuple[str, str]:
    """The DiT precision for a CUDA device of this compute capability (None = no usable CUDA device).

    Returns (choice, reason), choice in "nvfp4", "fp8", "bf16", "demo"."""
    if capability is None:
        return "demo", "no usable CUDA GPU: only the built-in demo model runs (on the CPU)"
    major, minor = capability
    sm = f"sm_{major}{minor}"
    # the same rule as quant.dispatch's "auto" plan (tests/test_doctor.py checks they agree)
    if major in (10, 11, 12):
        return "nvfp4", f"{sm} (Blackwell) has FP4 tensor cores: NVFP4 weights and activations"
    if (major, minor) >= (8, 9):
        return "fp8", f"{sm} (Ada/Hopper) has FP8 tensor cores but no FP4: FP8 (E4M3)"
    if major >= 8:
        return "bf16", f"{sm} has no FP8/FP4 tensor cores: bf16"
    return "bf16", f"{sm} predates native bf16 (sm_80): bf16 is emulated and slow"


def _parse_arch(arch: str) -> tuple[str, int, int, str] | None:
    """'sm_120' -> ('sm', 12, 0, ''), 'sm_90a' -> ('sm', 9, 0, 'a'), 'compute_120' -> ('compute', 12, 0, '')."""
    kind, _, rest = arch.partition("_")
    if kind not in ("sm", "compute"):
        return None
    suffix = rest[-1] if rest and rest[-1].isalpha() else ""
    digits = rest[:-1] if suffix else rest
    if len(digits) < 2 or not digits.isdigit():
        return None
    return kind, int(digits[:-1]), int(digits[-1]), suffix


def kernel_image_status(capability: tuple[int, int], arch_list: list[str]) -> tuple[bool, str]:
    """Does a torch build compiled for `arch_list` (torch.cuda.get_arch_list()) have kernels for this GPU?

    Returns (supported, how). A cubin runs on the same major architecture with an equal or higher minor version
    (sm_120 code on an sm_121 GPU), except arch-specific 'a' builds; PTX (compute_XY) is JIT-compiled for any newer GPU.
    """
    major, minor = capability
    parsed = [p for p in (_parse_arch(a) for a in arch_list) if p]
    if any(k == "sm" and (ma, mi) == (major, minor) for k, ma, mi, _ in parsed):
        return True, f"native sm_{major}{minor} kernels"
    family = [mi for k, ma, mi, suffix in parsed if k == "sm" and ma == major and mi < minor and suffix != "a"]
    if family:
        return True, f"sm_{major}{max(family)} kernels run on sm_{major}{minor} (same architecture family)"
    ptx = [(ma, mi) for k, ma, mi, _ in parsed if k == "compute" and (ma, mi) <= (major, minor)]
    if ptx:
        ma, mi = max(ptx)
        return True, f"PTX compute_{ma}{mi} is JIT-compiled for sm_{major}{minor} (slow first start)"
    return False, f"no kernels for sm_{major}{minor} in this torch build (archs: {' '.join(arch_list) or 'none'})"


# ----------------------------------------------------------------------------------------------------------------------
# probes (each returns plain data; the tests replace them)

def query_gpus() -> dict[str, Any]:
    """nvidia-smi's view: {"found": bool, "error": str | None, "gpus": [...]}."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"found": False, "error": None, "gpus": []}
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=name,compute_cap,driver_version,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"found": True, "error": f"nvidia-smi did not run: {exc}", "gpus": []}
    gpus, error = parse_nvidia_smi(proc.stdout)
    if proc.returncode != 0 and not gpus:
        error = (proc.stdout + proc.stderr).strip() or f"nvidia-smi exited with {proc.returncode}"
    return {"found": True, "error": error, "gpus": gpus}


def parse_nvidia_smi(text: str) -> tuple[list[dict[str, Any]], str | None]:
    """Lines "name, compute_cap, driver, memory.total MiB, memory.free MiB" -> (gpus, first unparsable line)."""
    gpus: list[dict[str, Any]] = []
    bad = None
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            name, cc, driver = fields[0], fields[1], fields[2]
            major, minor = (int(p) for p in cc.split("."))
            if not name or not driver[:1].isdigit():
                raise ValueError(line)
        except (IndexError, ValueError):
            bad = bad or line.strip()
            continue
        gpu = {"index": len(gpus), "name": name, "compute_capability": f"{major}.{minor}", "sm": f"sm_{major}{minor}",
               "driver": driver, "memory_total_mib": None, "memory_free_mib": None}
        for key, pos in (("memory_total_mib", 3), ("memory_free_mib", 4)):
            try:
                gpu[key] = int(float(fields[pos]))
            except (IndexError, ValueError):
                pass
        gpus.append(gpu)
    return gpus, (f"nvidia-smi output not understood: {bad!r}" if bad and not gpus else None)


def probe_torch() -> dict[str, Any]:
    """The installed torch: version, CUDA build, archs, the device the engine would use."""
    info: dict[str, Any] = {"installed": False, "version": None, "cuda": None, "cuda_available": False,
                            "arch_list": [], "devices": [], "error": None}
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken torch install is exactly what doctor reports
        info["error"] = f"{type(exc).__name__}: {exc}"
        return info
    info.update(installed=True, version=torch.__version__, cuda=torch.version.cuda)
    try:
        info["arch_list"] = list(torch.cuda.get_arch_list())
        info["cuda_available"] = bool(torch.cuda.is_available())
        for i in range(torch.cuda.device_count() if info["cuda_available"] else 0):
            major, minor = torch.cuda.get_device_capability(i)
            dev = {"index": i, "name": torch.cuda.get_device_name(i), "capability": [major, minor],
                   "free_bytes": None, "total_bytes": None}
            try:
                dev["free_bytes"], dev["total_bytes"] = (int(v) for v in torch.cuda.mem_get_info(i))
            except Exception as exc:  # noqa: BLE001 - e.g. "no kernel image" surfaces here
                info["error"] = f"CUDA device {i}: {type(exc).__name__}: {exc}"
            info["devices"].append(dev)
    except Exception as exc:  # noqa: BLE001
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved the way huggingface_hub does (read at call time, so tests can set it)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def app_dirs() -> dict[str, str]:
    """The app's folders: core.paths when it imports (it honours SANA_VIDEO_STUDIO_HOME), else platformdirs."""
    try:
        from core import paths
        return {"cache_dir": str(paths.cache_dir()), "data_dir": str(paths.data_dir()),
                "projects_dir": str(paths.projects_dir())}
    except Exception:  # noqa: BLE001 - doctor must run on a half-broken install
        import platformdirs
        data = platformdirs.user_data_dir(APP_NAME, appauthor=False)
        return {"cache_dir": platformdirs.user_cache_dir(APP_NAME, appauthor=False), "data_dir": data,
                "projects_dir": str(Path(data) / "projects")}


# ----------------------------------------------------------------------------------------------------------------------
# models in the hub cache

def _snapshot_dir(repo_dir: Path, revision: str) -> Path | None:
    snapshots = repo_dir / "snapshots"
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        candidate = snapshots / ref.read_text(encoding="utf-8").strip()
        if candidate.is_dir():
            return candidate
    if (snapshots / revision).is_dir():
        return snapshots / revision
    existing = sorted((p for p in snapshots.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime) \
        if snapshots.is_dir() else []
    return existing[-1] if existing else None


def _present(path: Path) -> bool:
    """A real, non-empty file (hub snapshots hold symlinks into blobs/; a dangling one is an unfinished download)."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def inspect_component(hf_cache: Path, name: str, repo_id: str, patterns: tuple[str, ...], subpath: str,
                      revision: str = "main") -> dict[str, Any]:
    """Is one model component complete in the hub cache? -> {"status": complete|incomplete|missing, "detail": ...}."""
    out = {"name": name, "repo_id": repo_id, "status": "missing", "detail": "", "path": None}
    repo_dir = hf_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = _snapshot_dir(repo_dir, revision) if repo_dir.is_dir() else None
    if snapshot is None:
        out["detail"] = "not downloaded"
        return out
    out["path"] = str(snapshot / subpath) if subpath else str(snapshot)
    partial = sorted(p.name for p in (repo_dir / "blobs").glob("*.incomplete")) if (repo_dir / "blobs").is_dir() else []
    files = [p for p in snapshot.rglob("*") if p.is_file() or p.is_symlink()]
    rel = {p.relative_to(snapshot).as_posix(): p for p in files}
    matched = {r: p for r, p in rel.items() if any(fnmatch.fnmatch(r, pat) for pat in patterns)}
    problems = [f"{r} is an unfinished download" for r, p in matched.items() if not _present(p)]
    target = snapshot / subpath if subpath else snapshot
    if subpath and target.suffix in WEIGHT_SUFFIXES:
        if not _present(target):
            problems.append(f"{subpath} is missing")
    elif not matched:
        problems.append(f"no files matching {', '.join(patterns)}")
    else:
        # every shard a safetensors index names must be there
        for r, p in matched.items():
            if r.endswith(".index.json") and _present(p):
                try:
                    shards = set(json.loads(p.read_text(encoding="utf-8")).get("weight_map", {}).values())
                except (OSError, json.JSONDecodeError):
                    problems.append(f"{r} is not valid JSON")
                    continue
                problems += [f"shard {s} named in {r} is missing" for s in sorted(shards)
                             if not _present(p.parent / s)]
        if name != "tokenizer" and not any(r.endswith(WEIGHT_SUFFIXES) for r in matched):
            problems.append("no weight files")
    if partial and problems:
        problems.append(f"{len(partial)} interrupted download(s) in the cache")
    out["status"] = "incomplete" if problems else "complete"
    out["detail"] = "; ".join(problems) if problems else "ok"
    return out


def model_specs() -> list[dict[str, Any]]:
    """Known models with their components, from core.registry when it imports, else the built-in fallback."""
    try:
        from core import registry
    except Exception:  # noqa: BLE001 - the doctor must still run on a half-broken install
        registry = None
    specs = []
    if registry is not None and getattr(registry, "MODELS", None):
        for model_id, spec in registry.MODELS.items():
            comps = {}
            for name in COMPONENT_NAMES:
                comp = getattr(spec, name, None)
                if comp is not None:
                    comps[name] = (comp.repo_id, tuple(comp.files), comp.subpath, comp.revision)
            specs.append({"id": model_id, "title": spec.title, "components": comps,
                          "download_gb": float(getattr(spec, "approx_download_gb", 0.0) or MODEL_DOWNLOAD_GB)})
        return specs
    for model_id, spec in FALLBACK_MODELS.items():
        comps = {name: (*c, "main") for name, c in spec["components"].items()}
        specs.append({"id": model_id, "title": spec["title"], "components": comps, "download_gb": MODEL_DOWNLOAD_GB})
    return specs


def registry_verdict(hf_cache: Path) -> dict[str, bool] | None:
    """core.registry.installed_models() when core.hub exists (the engine's own opinion), else None."""
    if importlib.util.find_spec("core.hub") is None:
        return None
    try:
        from core import registry
        return dict(registry.installed_models(cache_dir=str(hf_cache)))
    except Exception:  # noqa: BLE001
        return None


def inspect_models(hf_cache: Path) -> list[dict[str, Any]]:
    verdict = registry_verdict(hf_cache)
    models = []
    for spec in model_specs():
        comps = [inspect_component(hf_cache, name, repo, pats, sub, rev)
                 for name, (repo, pats, sub, rev) in spec["components"].items()]
        statuses = {c["status"] for c in comps}
        models.append({
            "id": spec["id"], "title": spec["title"], "download_gb": spec["download_gb"],
            "complete": statuses == {"complete"},
            "state": "complete" if statuses == {"complete"} else ("missing" if statuses == {"missing"} else "incomplete"),
            "registry_installed": None if verdict is None else verdict.get(spec["id"]),
            "components": comps,
        })
    return models


# ----------------------------------------------------------------------------------------------------------------------
# optional parts

def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def probe_components() -> dict[str, dict[str, Any]]:
    """Availability without importing the heavy ones (ModelOpt takes ~10 s to import, PySide6 would load Qt)."""
    out: dict[str, dict[str, Any]] = {}
    out["modelopt"] = {"available": importlib.util.find_spec("modelopt") is not None,
                       "version": _dist_version("nvidia-modelopt"),
                       "requests": importlib.util.find_spec("requests") is not None}
    out["pyside6"] = {"available": importlib.util.find_spec("PySide6") is not None,
                      "version": _dist_version("PySide6-Essentials", "PySide6")}
    out["triton"] = {"available": importlib.util.find_spec("triton") is not None,
                     "version": _dist_version("triton", "triton-windows")}
    pyav: dict[str, Any] = {"available": False, "version": None, "libx264": False, "error": None}
    try:
        import av
        pyav.update(available=True, version=getattr(av, "__version__", None))
        try:
            av.codec.Codec("libx264", "w")
            pyav["libx264"] = True
        except Exception as exc:  # noqa: BLE001 - UnknownCodecError and friends
            pyav["error"] = f"libx264: {type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001
        pyav["error"] = f"{type(exc).__name__}: {exc}"
    out["pyav"] = pyav
    return out


def _free_bytes(path: Path) -> int | None:
    """Free space on the file system that holds `path` (or its nearest existing parent)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------------------------------
# the report

def _app_version() -> str:
    version = _dist_version(APP_NAME)
    if version:
        return version
    try:
        import core
        return str(core.__version__)
    except Exception:  # noqa: BLE001
        return "unknown"


def collect_report(*, gpu_probe: Callable[[], dict] = query_gpus, torch_probe: Callable[[], dict] = probe_torch,
                   components_probe: Callable[[], dict] = probe_components, hf_cache: str | Path | None = None) -> dict:
    """Everything doctor knows, as JSON-ready data. The probes are parameters so tests can fake a GPU."""
    problems: list[dict[str, str]] = []

    def problem(severity: str, what: str, fix: str) -> None:
        problems.append({"severity": severity, "what": what, "fix": fix})

    smi = gpu_probe()
    torch_info = torch_probe()
    gpus = smi.get("gpus", [])

    # --- GPU and driver
    if smi.get("error"):
        problem("error", f"nvidia-smi failed: {smi['error']}",
                "Reinstall or update the NVIDIA driver (580+ recommended), reboot, then run `sana-video doctor` again.")
    elif not smi.get("found") and not torch_info.get("cuda_available"):
        problem("warning", "no NVIDIA GPU found (nvidia-smi is not installed): only the demo model runs, on the CPU",
                "On a machine with an NVIDIA GPU, install the NVIDIA driver, then re-run the installer so it picks a "
                "CUDA build of PyTorch.")

    # --- torch build vs GPU
    kernel_checks = []
    if not torch_info.get("installed"):
        problem("error", f"PyTorch does not import: {torch_info.get('error')}",
                "Re-run the installer (installer/install.sh or install.ps1); it repairs the environment in place.")
    else:
        if gpus and not torch_info.get("cuda"):
            problem("error", f"torch {torch_info.get('version')} is a CPU-only build but this machine has "
                             f"{gpus[0]['name']}: the GPU is unused",
                    "Re-run the installer; it detects the GPU and installs the matching CUDA build of PyTorch.")
        arch_list = torch_info.get("arch_list") or []
        if torch_info.get("cuda"):
            caps = [(g["name"], tuple(int(x) for x in g["compute_capability"].split("."))) for g in gpus]
            if not caps:
                caps = [(d["name"], tuple(d["capability"])) for d in torch_info.get("devices", [])]
            for name, cap in caps:
                ok, how = kernel_image_status(cap, arch_list)
                kernel_checks.append({"gpu": name, "sm": f"sm_{cap[0]}{cap[1]}", "supported": ok, "how": how})
                if not ok:
                    problem("error", f"{name} (sm_{cap[0]}{cap[1]}): torch {torch_info['version']} (CUDA "
                                     f"{torch_info['cuda']}) has no kernels for it; every CUDA call fails with "
                                     "'no kernel image is available for execution on the device'",
                            "Re-run the installer: it installs a build with kernels for this GPU (RTX 50 / B200 need "
                            "a CUDA 12.8+ build, e.g. cu130 with torch 2.13).")
            if gpus and not torch_info.get("cuda_available"):
                problem("error", f"torch {torch_info['version']} is a CUDA {torch_info['cuda']} build but CUDA is not "
                                 "usable (driver too old or not loaded)",
                        "Update the NVIDIA driver (CUDA 13 builds need 580+, CUDA 12 builds 525+) and reboot, or "
                        "re-run the installer to get a build that matches the driver.")
        if torch_info.get("error") and torch_info.get("cuda_available"):
            problem("error", f"CUDA error: {torch_info['error']}",
                    "Re-run the installer; if it persists, update the NVIDIA driver.")

    # --- the device the engine will use (cuda:0) and its precision
    devices = torch_info.get("devices") or []
    usable = [d for d in devices if all(c["supported"] for c in kernel_checks if c["gpu"] == d["name"])]
    capability = tuple(usable[0]["capability"]) if torch_info.get("cuda_available") and usable else None
    choice, reason = choose_precision(capability)
    precision = {"choice": choice, "reason": reason, "device": usable[0]["name"] if capability else "cpu"}
    if capability and capability < (8, 0):
        problem("warning", f"{usable[0]['name']} is older than Ampere (sm_80): no native bf16, generation will be "
                           "very slow", "Use an RTX 30-series or newer GPU.")

    # --- VRAM
    vram = None
    if capability:
        dev = usable[0]
        vram = {"device": dev["name"], "free_bytes": dev.get("free_bytes"), "total_bytes": dev.get("total_bytes")}
    elif gpus and gpus[0].get("memory_free_mib") is not None:
        g = gpus[0]
        vram = {"device": g["name"], "free_bytes": g["memory_free_mib"] * 2**20,
                "total_bytes": (g["memory_total_mib"] or 0) * 2**20}
    if vram and vram["free_bytes"] is not None and vram["free_bytes"] < MIN_FREE_VRAM_GB * 1e9 and choice != "demo":
        problem("warning", f"only {vram['free_bytes'] / 1e9:.1f} GB of VRAM free on {vram['device']}",
                "Close other GPU programs; the app offloads the text encoder to the CPU when VRAM is short, which "
                "is slower.")

    # --- folders, disk, models
    hf_cache = Path(hf_cache) if hf_cache is not None else hf_cache_dir()
    paths = {**app_dirs(), "hf_cache": str(hf_cache)}
    models = inspect_models(hf_cache)
    disk = [{"purpose": purpose, "path": paths[key], "free_bytes": _free_bytes(Path(paths[key]))}
            for key, purpose in (("hf_cache", "models (Hugging Face cache)"), ("projects_dir", "projects"),
                                 ("cache_dir", "app cache (quantized weights, demo pack)"))]
    need_gb = max((m["download_gb"] for m in models if not m["complete"]), default=0.0)
    if need_gb and disk[0]["free_bytes"] is not None and disk[0]["free_bytes"] < (need_gb + 2) * 1e9:
        problem("warning", f"{disk[0]['free_bytes'] / 1e9:.1f} GB free at {paths['hf_cache']}, a model needs about "
                           f"{need_gb:.0f} GB", "Free disk space, or point HF_HOME at a larger disk before downloading.")
    for m in models:
        if m["state"] == "incomplete":
            broken = "; ".join(f"{c['name']}: {c['detail']}" for c in m["components"] if c["status"] != "complete")
            repos = " ".join(sorted({c["repo_id"] for c in m["components"] if c["status"] != "complete"}))
            problem("warning", f"model {m['id']} is incomplete ({broken})",
                    f"Download it again (downloads resume): `sana-video models download {m['id']}` (or "
                    f"`hf download {repos}`).")
    if not any(m["complete"] for m in models):
        first = models[0]["id"] if models else "longsana-480p"
        problem("info", "no model is downloaded yet: the app offers the built-in demo until one is",
                f"`sana-video models download {first}` (about {models[0]['download_gb'] if models else 10:.0f} GB), "
                "or download it from the app.")

    # --- optional parts
    comps = components_probe()
    if not comps["pyav"]["available"]:
        problem("error", f"PyAV does not import ({comps['pyav']['error']}): videos cannot be written",
                "Re-run the installer (it installs `av`).")
    elif not comps["pyav"]["libx264"]:
        problem("error", f"PyAV has no libx264 encoder ({comps['pyav']['error']}): MP4 export fails",
                "Install the PyPI wheel of av (it bundles FFmpeg with libx264): re-run the installer.")
    if not comps["pyside6"]["available"]:
        problem("warning", "PySide6 is not installed: only the command line works",
                "Re-run the installer (it installs the [gui] extra).")
    if choice in ("nvfp4", "fp8") and not comps["modelopt"]["available"]:
        problem("info", "NVIDIA ModelOpt is not installed: calibrated quantization is off (plain round-to-nearest "
                        f"{choice.upper()} packing is used)", "pip install 'sana-video-studio[quant]' in the environment.")
    if comps["modelopt"]["available"] and not comps["modelopt"]["requests"]:
        problem("warning", "ModelOpt is installed but `requests` is not: `import modelopt.torch.quantization` fails",
                "pip install requests in the environment.")
    if capability and not comps["triton"]["available"]:
        problem("warning", "Triton is not installed: the fused linear-attention kernels fall back to plain PyTorch "
                           "(slower)", "pip install triton (Linux) or triton-windows (Windows) in the environment.")

    severities = {p["severity"] for p in problems}
    return {
        "app": {"version": _app_version(), "python": platform.python_version(), "executable": sys.executable,
                "platform": platform.platform()},
        "nvidia_smi": {"found": bool(smi.get("found")), "error": smi.get("error")},
        "gpus": gpus,
        "torch": torch_info,
        "kernel_image": kernel_checks,
        "precision": precision,
        "vram": vram,
        "disk": disk,
        "paths": paths,
        "hf_offline": os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False"),
        "models": models,
        "components": comps,
        "problems": problems,
        "ok": "error" not in severities,
    }


def _gb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e9:.1f} GB"


def format_report(report: dict) -> str:
    """The human-readable report: facts first, then each problem with its fix."""
    lines = [f"SANA-Video Studio {report['app']['version']} doctor  (Python {report['app']['python']}, "
             f"{report['app']['platform']})", ""]
    t = report["torch"]
    gpus = report["gpus"]
    if gpus:
        for g in gpus:
            mem = f", {g['memory_free_mib']} / {g['memory_total_mib']} MiB free" if g.get("memory_total_mib") else ""
            lines.append(f"GPU {g['index']}:      {g['name']} ({g['sm']}, driver {g['driver']}{mem})")
    else:
        lines.append("GPU:        no GPU" + (f" ({report['nvidia_smi']['error']})" if report["nvidia_smi"]["error"]
                                             else " (nvidia-smi not found)" if not report["nvidia_smi"]["found"] else ""))
    if t["installed"]:
        build = f"CUDA {t['cuda']}" if t["cuda"] else "CPU-only build"
        lines.append(f"PyTorch:    {t['version']} ({build}; CUDA usable: {'yes' if t['cuda_available'] else 'no'})")
        lines.append(f"CUDA archs: {' '.join(t['arch_list']) or 'none'}")
    else:
        lines.append(f"PyTorch:    not importable ({t['error']})")
    for k in report["kernel_image"]:
        lines.append(f"Kernels:    {k['gpu']} {k['sm']}: {'OK' if k['supported'] else 'MISSING'} - {k['how']}")
    p = report["precision"]
    lines.append(f"Precision:  {p['choice']} on {p['device']} - {p['reason']}")
    if report["vram"]:
        v = report["vram"]
        lines.append(f"VRAM:       {_gb(v['free_bytes'])} free of {_gb(v['total_bytes'])} ({v['device']})")
    for d in report["disk"]:
        lines.append(f"Disk:       {_gb(d['free_bytes'])} free for {d['purpose']}: {d['path']}")
    lines.append("")
    for m in report["models"]:
        lines.append(f"Model {m['id']}: {m['state']}  ({m['title']})")
        for c in m["components"]:
            lines.append(f"    {c['name']:<13}{c['status']:<11}{c['repo_id']}  {c['detail']}")
    c = report["components"]
    lines.append("")
    lines.append(f"PyAV:       {c['pyav']['version'] or 'missing'}; libx264: {'yes' if c['pyav']['libx264'] else 'no'}")
    lines.append(f"PySide6:    {c['pyside6']['version'] or 'missing'}")
    lines.append(f"ModelOpt:   {c['modelopt']['version'] or 'not installed (optional, [quant] extra)'}")
    lines.append(f"Triton:     {c['triton']['version'] or 'not installed'}")
    paths = report["paths"]
    lines.append(f"Folders:    models {paths['hf_cache']}" + ("  (HF_HUB_OFFLINE set)" if report["hf_offline"] else ""))
    lines.append(f"            projects {paths['projects_dir']}")
    lines.append(f"            cache {paths['cache_dir']} (quantized weights, demo pack)")
    lines.append("")
    if report["problems"]:
        lines.append("Problems:")
        for pr in report["problems"]:
            lines.append(f"  [{pr['severity'].upper()}] {pr['what']}")
            lines.append(f"      fix: {pr['fix']}")
    else:
        lines.append("No problems found.")
    lines.append("")
    lines.append("Result: " + ("OK" if report["ok"] else "problems need fixing (see above)"))
    return "\n".join(lines)


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `doctor` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "doctor", help="check the GPU, PyTorch build, models and dependencies, and say how to fix problems",
        description="Check this machine for SANA-Video Studio: GPU, driver, PyTorch build and its CUDA archs, "
                    "precision, VRAM, disk, models, optional components. Exit status 1 when something is broken.")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    report = collect_report()
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
    return 0 if report["ok"] else 1
