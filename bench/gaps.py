"""Where one eager forward's wall time goes beyond its kernels: GPU idle gaps (launch-bound stretches) vs kernel time.

For one case of bench/dit.py (ours only, random weights), in one process:
  synced      the bench's method: events around each call, synchronize after it (median ms); also the CPU time the
              call takes to enqueue its kernels
  b2b         back-to-back calls between one event pair (ms per call): the CPU may run ahead across calls
  graph       the same forward replayed from a CUDA graph, synced per call (no launch gaps at all)
  interleaved eager and graph taking turns (1 or 5 calls per turn), so that power and clock drift hit both alike
  profile     torch.profiler over synced calls: per call the kernel sum, the busy time (union of kernel intervals) and
              the span (first kernel start to last kernel end); span - busy = idle gaps inside the forward
With --clocks, nvidia-smi samples SM clock and power every 100 ms (written with phase marks to gaps_clocks.csv).

H100:  python bench/gaps.py [--case block] [--clocks] [--shapes]   (writes gaps.json, with --shapes gaps_ops.txt, to $OUT)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/gaps.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import environment, graphed, ms_per_call, output_dir, synchronize, write_json  # noqa: E402
from bench.dit import CASES, apply_setting, build_models, make_inputs, ours_call, parse_setting  # noqa: E402
from core.config import PRESETS  # noqa: E402


def synced(fn, reps: int) -> dict:
    gpu, cpu = [], []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        t0 = time.perf_counter()
        fn()
        cpu.append((time.perf_counter() - t0) * 1e3)
        end.record()
        torch.cuda.synchronize()
        gpu.append(start.elapsed_time(end))
    return {"ms": statistics.median(gpu), "min_ms": min(gpu), "cpu_enqueue_ms": statistics.median(cpu),
            "all_ms": [round(t, 2) for t in gpu]}


def back_to_back(fn, reps: int) -> dict:
    return {"ms_per_call": ms_per_call(fn, reps)}


def interleaved(variants: dict, pairs: int, chunk: int) -> dict:
    """A/B/... on the same GPU state: the variants take turns (`chunk` back-to-back calls each, `pairs` rounds), so
    clock and power drift hit them alike. ms per call: median over rounds."""
    times = {name: [] for name in variants}
    for _ in range(pairs):
        for name, fn in variants.items():
            times[name].append(back_to_back(fn, chunk)["ms_per_call"])
    return {name: {"ms": statistics.median(t), "min_ms": min(t), "all_ms": [round(x, 2) for x in t]}
            for name, t in times.items()}


def with_setting(item: str, fn):
    """fn run with launch settings (`module.CFG={json}`, several joined by ';') applied, and the previous values
    restored after it."""
    settings = [parse_setting(part) for part in item.split(";")]

    def run():
        saved = [(table, {k: table[k] for k in update}) for table, update in settings]
        for table, update in settings:
            table.update(update)
        try:
            return fn()
        finally:
            for table, old in saved:
                table.update(old)
    return run


def with_blas(lib: str, fn):
    """fn run with torch's preferred BLAS back end set to `lib`, the previous one restored after it."""
    def run():
        before = torch.backends.cuda.preferred_blas_library()
        torch.backends.cuda.preferred_blas_library(lib)
        try:
            return fn()
        finally:
            torch.backends.cuda.preferred_blas_library(before)
    return run


def profiled(fn, reps: int) -> dict:
    """Per call: kernel sum, busy (union of kernel intervals) and span, in ms, from the profiler's kernel events."""
    from torch.profiler import ProfilerActivity, profile

    calls = []
    for _ in range(reps):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        events = [e for e in prof.events()
                  if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start]
        spans = sorted((e.time_range.start, e.time_range.end) for e in events)
        per_kernel: dict[str, list] = {}
        for e in events:
            entry = per_kernel.setdefault(e.name[:90], [0, 0.0])
            entry[0] += 1
            entry[1] += e.time_range.end - e.time_range.start
        total = sum(e - s for s, e in spans)
        busy, cur_s, cur_e, gaps = 0.0, None, None, []
        for s, e in spans:
            if cur_e is None or s > cur_e:
                if cur_e is not None:
                    busy += cur_e - cur_s
                    gaps.append(s - cur_e)
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        busy += cur_e - cur_s
        gaps.sort(reverse=True)
        calls.append({"kernels": len(spans), "sum_ms": total / 1e3, "busy_ms": busy / 1e3,
                      "span_ms": (spans[-1][1] - spans[0][0]) / 1e3, "largest_gaps_us": [round(g, 1) for g in gaps[:8]],
                      "gaps_over_20us_ms": sum(g for g in gaps if g > 20) / 1e3,
                      # kernel name -> [launches, total us] in this call, largest first
                      "per_kernel": {k: [n, round(us, 1)] for k, (n, us) in
                                  sorted(per_kernel.items(), key=lambda kv: -kv[1][1])}})
    return {"calls": calls}


def op_table(fn, rows: int = 60) -> str:
    """One profiled call as a table of aten ops with their input shapes and GPU time (to tell which call launches
    which small kernel)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        fn()
        torch.cuda.synchronize()
    return prof.key_averages(group_by_input_shape=True).table(sort_by="self_device_time_total", row_limit=rows,
                                                               max_name_column_width=48, max_shapes_column_width=90)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", default="block", choices=sorted(CASES))
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--pairs", type=int, default=30, help="rounds of the interleaved eager / graph comparison")
    p.add_argument("--clocks", action="store_true", help="sample SM clock and power with nvidia-smi every 100 ms")
    p.add_argument("--set", action="append", default=[], metavar="MODULE.CFG=JSON", help="as in bench/dit.py")
    p.add_argument("--ab", action="append", default=[], metavar="MODULE.CFG=JSON",
                   help="also an eager variant with this launch setting (several joined by ';') in the interleaved "
                        "comparison (in-model A/B)")
    p.add_argument("--ab-blas", default=None, metavar="LIB",
                   help="also an eager variant with torch's preferred BLAS back end set to LIB (e.g. cublaslt)")
    p.add_argument("--shapes", action="store_true",
                   help="also profile one call by aten op and input shapes (gaps_ops.txt)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA")
        return 1
    for item in args.set:
        apply_setting(item)
    out = output_dir(args.out)
    device, dtype = torch.device("cuda"), torch.bfloat16
    sampler = None
    if args.clocks:
        sampler = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw", "--format=csv,noheader",
                                    "-lms", "100"], stdout=open(out / "gaps_clocks.csv", "w"))
    marks = []

    def mark(name):
        marks.append((name, time.strftime("%H:%M:%S")))
        print(f"[{marks[-1][1]}] {name}", flush=True)

    cfg = PRESETS["480p"].with_numerics("diffusers")
    ours, _ = build_models(cfg, device, dtype, 0, with_diffusers=False)
    inp = make_inputs(CASES[args.case], cfg, device, dtype, 0, ours)
    fn = ours_call(ours, inp)
    report = {"environment": environment(device), "case": args.case, "settings": args.set}
    with torch.no_grad():
        for _ in range(3):
            fn()
        synchronize(device)
        mark("synced")
        report["synced"] = synced(fn, args.reps)
        mark("b2b")
        report["b2b"] = back_to_back(fn, args.reps)
        mark("synced again")
        report["synced_again"] = synced(fn, args.reps)
        mark("profile")
        report["profile"] = profiled(fn, 3)
        if args.shapes:
            table = op_table(fn)
            (out / "gaps_ops.txt").write_text(table)
            print(table)
        mark("graph")
        replay = graphed(fn, device)
        report["graph"] = synced(replay, args.reps)
        report["graph_b2b"] = back_to_back(replay, args.reps)
        variants = {"eager": fn, "graph": replay}
        for item in args.ab:
            variants[item] = with_setting(item, fn)
            variants[item]()                     # compile the variant's kernels outside the timed turns
        if args.ab_blas:
            variants[f"blas={args.ab_blas}"] = with_blas(args.ab_blas, fn)
            variants[f"blas={args.ab_blas}"]()
        mark("interleaved, 1 call per turn")
        report["interleaved_1"] = interleaved(variants, args.pairs, 1)
        mark("interleaved, 5 calls per turn")
        report["interleaved_5"] = interleaved(variants, max(1, args.pairs // 3), 5)
        mark("done")
    report["marks"] = marks
    if sampler is not None:
        time.sleep(0.3)
        sampler.terminate()
    for key in ("synced", "b2b", "synced_again", "graph", "graph_b2b"):
        print(key, {k: v for k, v in report[key].items() if k != "all_ms"})
    for key in ("interleaved_1", "interleaved_5"):
        print(key, {name: {k: v for k, v in r.items() if k != "all_ms"} for name, r in report[key].items()})
    for call in report["profile"]["calls"]:
        print("profile", {k: v for k, v in call.items() if k != "per_kernel"})
    print("kernels of the last profiled call (launches, us):")
    for name, (n, us) in report["profile"]["calls"][-1]["per_kernel"].items():
        print(f"  {us:9.1f} {n:4d}  {name}")
    write_json(out / "gaps.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
