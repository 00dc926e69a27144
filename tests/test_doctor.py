"""app/doctor.py: runs on this CPU machine and says so; precision and "no kernel image" decisions for faked GPUs; model
completeness in a fake Hugging Face cache; the CLI wiring and --json."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from app import doctor

REPO = Path(__file__).resolve().parents[1]

HAS_GPU = shutil.which("nvidia-smi") is not None or torch.cuda.is_available()

# torch.cuda.get_arch_list() of real builds (PyTorch CUDA support matrix): the CUDA 12.6 build stops at Hopper,
# the CUDA 13.0 build adds Blackwell (with PTX for newer cards).
ARCHS_CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
ARCHS_CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


def fake_smi(*lines: str):
    def probe():
        gpus, error = doctor.parse_nvidia_smi("\n".join(lines))
        return {"found": True, "error": error, "gpus": gpus}
    return probe


def fake_torch(cuda: str | None, archs: list[str], devices: list[tuple[str, tuple[int, int], float, float]]):
    def probe():
        return {"installed": True, "version": f"2.13.0+{'cu' + cuda.replace('.', '') if cuda else 'cpu'}",
                "cuda": cuda, "cuda_available": bool(devices), "arch_list": archs, "error": None,
                "devices": [{"index": i, "name": n, "capability": list(cap), "free_bytes": int(free * 1e9),
                             "total_bytes": int(total * 1e9)} for i, (n, cap, free, total) in enumerate(devices)]}
    return probe


def no_components():
    return {"modelopt": {"available": True, "version": "0.47.0", "requests": True},
            "pyside6": {"available": True, "version": "6.12.0"},
            "triton": {"available": True, "version": "3.9.0"},
            "pyav": {"available": True, "version": "18.1.0", "libx264": True, "error": None}}


@pytest.fixture
def empty_cache(tmp_path):
    cache = tmp_path / "hub"
    cache.mkdir()
    return cache


# ----------------------------------------------------------------------------------------------------------------------
# this machine

@pytest.mark.skipif(HAS_GPU, reason="this machine has an NVIDIA GPU")
def test_doctor_on_this_cpu_machine_reports_no_gpu(empty_cache):
    report = doctor.collect_report(hf_cache=empty_cache)
    assert report["gpus"] == [] and report["nvidia_smi"]["found"] is False
    assert report["torch"]["installed"] and report["torch"]["version"] == torch.__version__
    assert report["torch"]["cuda_available"] is False
    assert report["precision"]["choice"] == "demo" and report["precision"]["device"] == "cpu"
    assert any("no NVIDIA GPU" in p["what"] for p in report["problems"])
    assert report["ok"]  # a CPU machine runs the demo: a warning, not an error
    # the real optional parts of this environment
    import av
    assert report["components"]["pyav"]["version"] == av.__version__
    assert report["components"]["pyav"]["libx264"] is True
    text = doctor.format_report(report)
    assert "no GPU" in text and "demo" in text and "fix:" in text
    json.dumps(report)  # JSON-ready


@pytest.mark.skipif(HAS_GPU, reason="this machine has an NVIDIA GPU")
def test_cli_doctor_json(capsys, empty_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(empty_cache))
    monkeypatch.setenv("SANA_VIDEO_STUDIO_HOME", str(tmp_path / "studio"))   # core.paths moves every app folder
    parser = argparse.ArgumentParser(prog="sana-video")
    sub = parser.add_subparsers(dest="command")
    doctor.add_subcommand(sub)
    args = parser.parse_args(["doctor", "--json"])
    assert args.command == "doctor" and args.func is doctor.run
    assert doctor.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"]["choice"] == "demo" and report["paths"]["hf_cache"] == str(empty_cache)
    assert report["paths"]["cache_dir"].startswith(str(tmp_path / "studio"))
    assert report["paths"]["projects_dir"].startswith(str(tmp_path / "studio"))


def test_doctor_imports_no_qt():
    code = ("import sys, app.doctor as d; d.collect_report(); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'diffusers')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------------------------------------
# decisions

@pytest.mark.parametrize("cap,want", [
    ((12, 0), "nvfp4"), ((12, 1), "nvfp4"), ((10, 0), "nvfp4"), ((10, 3), "nvfp4"),
    ((9, 0), "fp8"), ((8, 9), "fp8"),
    ((8, 6), "bf16"), ((8, 0), "bf16"), ((7, 5), "bf16"),
    (None, "demo"),
])
def test_precision_choice(cap, want):
    choice, reason = doctor.choose_precision(cap)
    assert choice == want
    assert reason


def test_kernel_image_status():
    assert doctor.kernel_image_status((12, 0), ARCHS_CU126)[0] is False       # the RTX 50 trap
    assert doctor.kernel_image_status((10, 0), ARCHS_CU126)[0] is False       # B200 on cu126
    assert doctor.kernel_image_status((12, 0), ARCHS_CU130) == (True, "native sm_120 kernels")
    ok, how = doctor.kernel_image_status((12, 1), ["sm_90", "sm_120"])         # same family, newer minor
    assert ok and "sm_120" in how
    ok, how = doctor.kernel_image_status((8, 9), ["sm_80", "sm_86", "sm_90"])  # sm_86 cubins run on sm_89
    assert ok and "sm_86" in how
    assert doctor.kernel_image_status((10, 3), ["sm_100a"])[0] is False        # arch-specific code is not portable
    ok, how = doctor.kernel_image_status((12, 0), ["sm_80", "sm_90", "compute_90"])
    assert ok and "PTX" in how                                                  # JIT from PTX
    assert doctor.kernel_image_status((7, 5), ["sm_80", "compute_80"])[0] is False  # PTX only runs forward
    assert doctor.kernel_image_status((8, 6), [])[0] is False


def test_parse_nvidia_smi():
    gpus, err = doctor.parse_nvidia_smi("NVIDIA GeForce RTX 5090, 12.0, 590.44.01, 32607, 31000\n"
                                        "NVIDIA GeForce RTX 3090, 8.6, 590.44.01, 24576, [N/A]\n")
    assert err is None
    assert [(g["name"], g["sm"], g["driver"], g["memory_free_mib"]) for g in gpus] == [
        ("NVIDIA GeForce RTX 5090", "sm_120", "590.44.01", 31000), ("NVIDIA GeForce RTX 3090", "sm_86", "590.44.01", None)]
    gpus, err = doctor.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
    assert gpus == [] and "not understood" in err


# ----------------------------------------------------------------------------------------------------------------------
# whole reports for faked machines

def test_rtx5090_with_cu126_torch_is_the_no_kernel_image_trap(empty_cache):
    report = doctor.collect_report(
        gpu_probe=fake_smi("NVIDIA GeForce RTX 5090, 12.0, 590.44.01, 32607, 31000"),
        torch_probe=fake_torch("12.6", ARCHS_CU126, [("NVIDIA GeForce RTX 5090", (12, 0), 31.0, 32.0)]),
        components_probe=no_components, hf_cache=empty_cache)
    assert report["kernel_image"][0]["supported"] is False and report["kernel_image"][0]["sm"] == "sm_120"
    assert not report["ok"]
    trap = [p for p in report["problems"] if "no kernel image" in p["what"]]
    assert trap and "installer" in trap[0]["fix"]
    assert report["precision"]["choice"] == "demo"   # nothing runs on that GPU until torch is replaced


@pytest.mark.parametrize("name,cap,archs,cuda,want", [
    ("NVIDIA GeForce RTX 5090", (12, 0), ARCHS_CU130, "13.0", "nvfp4"),
    ("NVIDIA B200", (10, 0), ARCHS_CU130, "13.0", "nvfp4"),
    ("NVIDIA H100 80GB HBM3", (9, 0), ARCHS_CU130, "13.0", "fp8"),
    ("NVIDIA GeForce RTX 4090", (8, 9), ARCHS_CU126, "12.6", "fp8"),
    ("NVIDIA GeForce RTX 3090", (8, 6), ARCHS_CU126, "12.6", "bf16"),
])
def test_precision_in_full_report(empty_cache, name, cap, archs, cuda, want):
    report = doctor.collect_report(
        gpu_probe=fake_smi(f"{name}, {cap[0]}.{cap[1]}, 590.44.01, 24576, 20000"),
        torch_probe=fake_torch(cuda, archs, [(name, cap, 20.0, 24.0)]),
        components_probe=no_components, hf_cache=empty_cache)
    assert report["kernel_image"][0]["supported"] is True
    assert report["precision"]["choice"] == want and report["precision"]["device"] == name
    assert report["ok"], report["problems"]
    assert report["vram"]["free_bytes"] == int(20e9)


def test_cpu_torch_on_a_gpu_machine_is_an_error(empty_cache):
    report = doctor.collect_report(gpu_probe=fake_smi("NVIDIA GeForce RTX 4090, 8.9, 550.54.14, 24564, 24000"),
                                   torch_probe=fake_torch(None, [], []), components_probe=no_components,
                                   hf_cache=empty_cache)
    assert not report["ok"]
    assert any("CPU-only build" in p["what"] for p in report["problems"])
    assert report["precision"]["choice"] == "demo"


def test_missing_libx264_and_pyside6_are_reported(empty_cache):
    def comps():
        c = no_components()
        c["pyav"].update(libx264=False, error="libx264: UnknownCodecError")
        c["pyside6"] = {"available": False, "version": None}
        return c
    report = doctor.collect_report(gpu_probe=fake_smi(), torch_probe=fake_torch(None, [], []),
                                   components_probe=comps, hf_cache=empty_cache)
    whats = " | ".join(p["what"] for p in report["problems"])
    assert "libx264" in whats and "PySide6" in whats and not report["ok"]


# ----------------------------------------------------------------------------------------------------------------------
# models in a fake Hugging Face cache (the real hub layout: blobs + snapshot symlinks + refs/main)

def put(cache: Path, repo_id: str, files: dict[str, bytes | None], commit: str = "a" * 40) -> Path:
    """Write files into the hub cache layout; None makes a dangling symlink (a download that never finished)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(exist_ok=True)
    for i, (rel, data) in enumerate(files.items()):
        blob = repo / "blobs" / f"{i:040x}"
        if data is not None:
            blob.write_bytes(data)
        else:
            (repo / "blobs" / f"{i:040x}.incomplete").write_bytes(b"x")
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snap


def test_inspect_component_official_pth(empty_cache):
    repo = "Efficient-Large-Model/SANA-Video_2B_480p_LongLive"
    pth = "checkpoints/SANA_Video_2B_480p_LongLive.pth"
    assert doctor.inspect_component(empty_cache, "transformer", repo, (pth,), pth)["status"] == "missing"
    put(empty_cache, repo, {pth: None})
    got = doctor.inspect_component(empty_cache, "transformer", repo, (pth,), pth)
    assert got["status"] == "incomplete" and "unfinished" in got["detail"]
    shutil.rmtree(empty_cache / ("models--" + repo.replace("/", "--")))
    put(empty_cache, repo, {pth: b"weights"})
    got = doctor.inspect_component(empty_cache, "transformer", repo, (pth,), pth)
    assert got["status"] == "complete" and got["path"].endswith(pth)


def test_inspect_component_sharded_diffusers_folder(empty_cache):
    repo = "Efficient-Large-Model/SANA-Video_2B_480p_diffusers"
    index = {"weight_map": {"a.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
                            "b.weight": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    files = {"transformer/config.json": b"{}",
             "transformer/diffusion_pytorch_model.safetensors.index.json": json.dumps(index).encode(),
             "transformer/diffusion_pytorch_model-00001-of-00002.safetensors": b"w1"}
    put(empty_cache, repo, files)
    pats = ("transformer/*.json", "transformer/*.safetensors")
    got = doctor.inspect_component(empty_cache, "transformer", repo, pats, "transformer")
    assert got["status"] == "incomplete" and "00002-of-00002" in got["detail"]
    put(empty_cache, repo, {"transformer/diffusion_pytorch_model-00002-of-00002.safetensors": b"w2"})
    assert doctor.inspect_component(empty_cache, "transformer", repo, pats, "transformer")["status"] == "complete"


def test_report_finds_a_complete_model(empty_cache):
    # fill the cache for the first known model exactly as its spec (core.registry, or the fallback) describes it
    spec = doctor.model_specs()[0]
    by_repo: dict[str, dict[str, bytes]] = {}
    for repo, patterns, subpath, _rev in spec["components"].values():
        files = by_repo.setdefault(repo, {})
        if subpath and Path(subpath).suffix in doctor.WEIGHT_SUFFIXES:
            files[subpath] = b"weights"
        else:
            for pat in patterns:
                rel = pat.replace("*", "x")
                files[rel] = b"{}" if rel.endswith(".json") else b"data"
            files.setdefault(f"{subpath}/x.safetensors" if subpath else "x.safetensors", b"w")
    for repo, files in by_repo.items():
        put(empty_cache, repo, files)
    report = doctor.collect_report(gpu_probe=fake_smi(), torch_probe=fake_torch(None, [], []),
                                   components_probe=no_components, hf_cache=empty_cache)
    model = next(m for m in report["models"] if m["id"] == spec["id"])
    assert model["complete"] and model["state"] == "complete", model
    assert not any("no model is downloaded" in p["what"] for p in report["problems"])
    others = [m for m in report["models"] if m["id"] != spec["id"]]
    assert all(m["state"] in ("missing", "incomplete", "complete") for m in others)


def test_precision_agrees_with_quant_dispatch(monkeypatch):
    # the engine's own "auto" decision is the reference for what doctor announces
    dispatch = pytest.importorskip("quant.dispatch")
    for cap in [(12, 1), (12, 0), (11, 0), (10, 3), (10, 0), (9, 0), (8, 9), (8, 7), (8, 6), (8, 0), (7, 5), (6, 1)]:
        monkeypatch.setattr(dispatch, "device_capability", lambda device, cap=cap: cap)
        plan = dispatch.plan_for_device("cuda:0", "auto")
        assert doctor.choose_precision(cap)[0] == (plan.format or "bf16"), cap
