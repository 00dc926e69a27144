"""What a second CUDA stream would buy inside one LongSANA block layer (480p, 10 frames, batch 1), before building it.

Two overlaps are possible without changing the math:
  state | ratio   the linear-attention state kernel (+ its split sum) next to the ratio kernel. Today the ratio waits
                  for the state because it needs k_sum; this times the pair as if k_sum were known earlier.
  gemm | small    the gate-only small ops of a layer (scale_rows for the temporal taps, the owed-bias GEMV and adds)
                  next to the inverted 1x1 GEMM, which does not need them.
Each pair is timed back to back on one stream and overlapped on two streams (the side stream waits for the main one
at the start of each call and the main one for the side one at its end, as a graph fork/join would), in interleaved
turns. Prints ms per call and the saving.

H100:  python bench/streams.py   (writes streams.json to $OUT)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/streams.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import environment, ms_per_call, output_dir, write_json  # noqa: E402


def two_streams(main_fn, side_fn, side: torch.cuda.Stream):
    """One call: side_fn on `side` and main_fn on the current stream, concurrently, joined at the end."""
    def run():
        main = torch.cuda.current_stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            side_fn()
        main_fn()
        main.wait_stream(side)
    return run


def one_stream(main_fn, side_fn):
    def run():
        side_fn()
        main_fn()
    return run


def compare(name: str, main_fn, side_fn, rounds: int, calls: int) -> dict:
    side = torch.cuda.Stream()
    variants = {"main only": main_fn, "side only": side_fn, "one stream": one_stream(main_fn, side_fn),
                "two streams": two_streams(main_fn, side_fn, side)}
    for fn in variants.values():
        fn()
    torch.cuda.synchronize()
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            times[k].append(ms_per_call(fn, calls))
    result = {k: statistics.median(v) for k, v in times.items()}
    result["saved_us"] = (result["one stream"] - result["two streams"]) * 1e3
    print(name, {k: round(v, 4) for k, v in result.items()}, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA")
        return 1
    from core.kernels import attn_fold as af
    from core.kernels import linear_attention as la
    from core.kernels import scale_rows as sr

    dev, dt = torch.device("cuda"), torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, device=dev) * scale).to(dt)

    B, N, H, d, D, F = 1, 15600, 20, 112, 2240, 6720
    qkv = rand(B, N, 3 * D)
    q, k, v = (t.view(B, N, H, d) for t in qkv.split(D, dim=-1))
    angles = torch.rand(N, d // 2, generator=gen, device=dev) * 20
    cos, sin = angles.cos(), angles.sin()
    wq, wk = rand(D, scale=0.2) + 1, rand(D, scale=0.2) + 1
    k_rstd = torch.rsqrt(k.float().pow(2).mean(dim=(-1, -2)) + 1e-5)
    prev_vk = torch.randn(B, H, d, d, generator=gen, device=dev)
    prev_ks = torch.rand(B, H, d, generator=gen, device=dev) * N
    k_sum = prev_ks.clone()

    def state():
        la.linear_attn_state_totals(k, v, cos, sin, prev_vk, prev_ks, wk, k_rstd)

    def ratio():
        af.linear_attn_ratio(q, k_sum, cos, sin, 1e-8, q_weight=wq, q_norm_eps=1e-5)

    x = rand(N, D)
    w_inv, b_inv = rand(2 * F, D, scale=D ** -0.5), rand(2 * F)
    w_q, b_q, b_o = rand(D, D, scale=D ** -0.5), rand(D), rand(D)
    w_t, gate = rand(D, 3 * D, scale=D ** -0.5), rand(1, 1, D)

    def gemm():
        torch.addmm(b_inv, x, w_inv.t())

    def small():
        offset = gate[:, 0] * b_o
        b_q + offset @ w_q.t()
        b_o + offset
        sr.scale_rows(w_t, gate[0, 0], dt, identity_col=D)

    report = {"environment": environment(dev)}
    with torch.no_grad():
        report["state | ratio"] = compare("state | ratio", state, ratio, args.rounds, args.calls)
        report["gemm | small"] = compare("gemm | small", gemm, small, args.rounds, args.calls)
    write_json(output_dir(args.out) / "streams.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
