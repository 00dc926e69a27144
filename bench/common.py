"""Shared helpers for the bench scripts: timing (CUDA events or the host clock), memory, FLOPs, profiles,
environment facts, random weights and atomic result files. No model code here."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/dit.py` puts bench/ on the path, not the repo root
    sys.path.insert(0, str(REPO_ROOT))

from core.fsutil import atomic_write_text  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, warmup: int, reps: int) -> dict[str, Any]:
    """Median / min / all times in ms of `fn` after `warmup` calls; CUDA events on GPU, perf_counter on CPU."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(1, reps)):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": statistics.median(times), "min_ms": min(times), "all_ms": [round(t, 3) for t in times]}


class PeakMemory:
    """Peak device memory during a region: absolute, and above what was allocated when it began."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_gib = self.delta_gib = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.peak_gib = peak / 2**30
            self.delta_gib = (peak - self._base) / 2**30


def count_flops(fn: Callable[[], Any]) -> float:
    """Floating-point operations of one call, by torch.utils.flop_counter (matmuls, convs, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def graphed(fn, device: torch.device):
    """fn (a forward on fixed inputs) captured once into a CUDA graph; returns a call that replays it (the output
    lives in the graph's own buffer). What the launch-overhead-free forward costs: no Python, no launch gaps."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(2):                       # warm-up off the capture: kernel compiles, workspaces
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        out = fn()

    def replay():
        graph.replay()
        return out
    return replay


def profile_table(fn: Callable[[], Any], device: torch.device, row_limit: int = 20) -> str:
    """torch.profiler key_averages of one call, top `row_limit` by (device) time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    averages = prof.key_averages()
    keys = (["self_device_time_total", "self_cuda_time_total", "device_time_total", "cuda_time_total"]
            if device.type == "cuda" else ["self_cpu_time_total"])
    for key in keys:  # the name changed across torch versions
        try:
            return averages.table(sort_by=key, row_limit=row_limit)
        except Exception:  # noqa: BLE001 - try the next spelling
            continue
    return averages.table(row_limit=row_limit)


def randomize_parameters_(module: torch.nn.Module, seed: int) -> None:
    """Random, well-scaled values for every parameter (never time on zeros: the default zero tables and unit norms
    would also hide wrong weights in the output comparison)."""
    generators: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.device not in generators:  # draw on the parameter's device: 2B CPU draws would take a while
                generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            noise = torch.randn(p.shape, generator=generators[p.device], dtype=torch.float32, device=p.device)
            noise = noise.to(p.dtype)
            if p.ndim >= 2 and "scale_shift_table" not in name:
                p.copy_(noise / math.sqrt(p[0].numel()))            # ~unit-variance activations
            elif "norm" in name:
                p.copy_(1.0 + 0.3 * noise)
            else:
                p.copy_(0.3 * noise)


def ms_per_call(fn: Callable[[], Any], calls: int) -> float:
    """GPU ms per call of `calls` back-to-back calls between one event pair (the CPU may run ahead)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in fp64 (inf when a has NaN / Inf)."""
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def _version(module_name: str) -> str | None:
    try:
        module = __import__(module_name)
    except Exception:  # noqa: BLE001 - absent or broken: report None
        return None
    return getattr(module, "__version__", "unknown")


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _version("triton"),
        "diffusers": _version("diffusers"),
        "device": str(device),
        "host": platform.node(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, sm_count=props.multi_processor_count, gpu_mem_gib=props.total_memory / 2**30,
                    capability=f"{props.major}.{props.minor}")
    else:
        info["gpu"] = None
    return info


def output_dir(explicit: str | None) -> Path:
    """--out, else $OUT, else bench/results/."""
    folder = Path(explicit or os.environ.get("OUT") or REPO_ROOT / "bench" / "results")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
