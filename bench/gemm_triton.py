"""A persistent TMA GEMM in Triton against cuBLAS on the block's D x D GEMMs (an experiment that lost: run 43 of
docs/perf-notes.md, 0.87-0.92x of cuBLAS on an H100; kept here so that it can be re-measured, not used by the model).

Why it was tried: cuBLAS runs the 15600 x 2240 x 2240 GEMMs of a 480p LongSANA block (out projections,
cross-attention q, the temporal taps) at ~700 TFLOP/s against ~770 for the block's wider GEMMs of the same kernel
family: with K = 2240 a tile has only 35 steps of 64, and its cooperative kernel fills and drains the operand pipeline
for every tile. Here one program per SM walks its tiles with the k-loop flattened across tile boundaries
(`tl.range(..., flatten=True)`), so the loads of the next tile can be in flight while the current one stores.

out = [out +] a @ b^T [+ bias]; a (M, K), b (N, K) (a Linear's weight layout), out (M, N): bf16, rows 16-byte aligned,
last dim contiguous (row-shifted views and column slices of a wider weight work without copies); fp32 accumulation.

Forms as the block runs them: plain with bias (cross-attention q), accumulate into the residual (out projections, the
temporal centre tap), accumulate into a row-shifted view with a column slice of the (D, 3D) temporal weight. Each
launch setting takes turns with cuBLAS (`--chunk` back-to-back calls per turn, `--rounds` rounds), so that clock and
power drift at the H100's power cap hit both alike; error of both against an fp64 product.

    python bench/gemm_triton.py            (GPU; writes gemm_triton.json to $OUT)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: E402

from bench.common import environment, ms_per_call, output_dir, rel_err, write_json  # noqa: E402
from bench.gemm_shapes import block_gemm_operands  # noqa: E402
from core.kernels._triton import Kernel, sm_count  # noqa: E402

# Launch settings (module-level so that the bench can sweep them): tile, k step, L2 grouping of row tiles,
# pipeline stages, warps (8 = two consumer warpgroups of 64 rows each), epilogue in two column halves (subtile).
CFG = {"block_m": 128, "block_n": 256, "block_k": 64, "group_m": 8, "num_stages": 3, "num_warps": 8, "subtile": True}


@Kernel
def _gemm_kernel(a_desc, b_desc, c_desc, bias_ptr, M, N, K,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                 NUM_PROGRAMS: tl.constexpr, ACCUMULATE: tl.constexpr, HAS_BIAS: tl.constexpr,
                 SUBTILE: tl.constexpr):
    # program p takes tiles p, p + NUM_PROGRAMS, ...; tiles are ordered in groups of GROUP_M row tiles so that the
    # programs running at one time share rows of a and columns of b in L2
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    k_steps = tl.cdiv(K, BLOCK_K)
    per_group = GROUP_M * tiles_n
    # the epilogue's tile index runs one behind the loads' (the flattened loop may already be loading the next tile)
    tile_out = pid - NUM_PROGRAMS
    for tile in tl.range(pid, tiles_m * tiles_n, NUM_PROGRAMS, flatten=True):
        first_m = (tile // per_group) * GROUP_M
        rows_in_group = tl.minimum(tiles_m - first_m, GROUP_M)
        off_m = (first_m + (tile % per_group) % rows_in_group) * BLOCK_M
        off_n = ((tile % per_group) // rows_in_group) * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ks in range(k_steps):
            a = a_desc.load([off_m, ks * BLOCK_K])                             # (BLOCK_M, BLOCK_K)
            b = b_desc.load([off_n, ks * BLOCK_K])                             # (BLOCK_N, BLOCK_K)
            acc = tl.dot(a, b.T, acc)
        tile_out += NUM_PROGRAMS
        first_m = (tile_out // per_group) * GROUP_M
        rows_in_group = tl.minimum(tiles_m - first_m, GROUP_M)
        off_m = (first_m + (tile_out % per_group) % rows_in_group) * BLOCK_M
        off_n = ((tile_out % per_group) // rows_in_group) * BLOCK_N
        if HAS_BIAS:
            offs_n = off_n + tl.arange(0, BLOCK_N)
            acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        if SUBTILE:   # the epilogue in two column halves: half the shared memory for the C tile
            left, right = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
            if ACCUMULATE:   # out += a @ b^T: the C tile is read once, here (TMA clips the ragged edges)
                left += c_desc.load([off_m, off_n]).to(tl.float32)
                right += c_desc.load([off_m, off_n + BLOCK_N // 2]).to(tl.float32)
            c_desc.store([off_m, off_n], left.to(c_desc.dtype))
            c_desc.store([off_m, off_n + BLOCK_N // 2], right.to(c_desc.dtype))
        else:
            if ACCUMULATE:
                acc += c_desc.load([off_m, off_n]).to(tl.float32)
            c_desc.store([off_m, off_n], acc.to(c_desc.dtype))


def _check(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None) -> None:
    if a.dim() != 2 or b.dim() != 2 or out.dim() != 2:
        raise ValueError("a, b and out must be 2-D")
    M, K = a.shape
    N = b.shape[0]
    if b.shape[1] != K or tuple(out.shape) != (M, N):
        raise ValueError(f"shapes a {tuple(a.shape)}, b {tuple(b.shape)}, out {tuple(out.shape)} do not match "
                         "out = a @ b^T")
    if bias is not None and tuple(bias.shape) != (N,):
        raise ValueError(f"bias must be ({N},), got {tuple(bias.shape)}")
    for name, t in (("a", a), ("b", b), ("out", out)):
        if t.stride(1) != 1 or (t.stride(0) * t.element_size()) % 16 or t.data_ptr() % 16:
            raise ValueError(f"{name}: last dim must be contiguous, rows 16-byte aligned (TMA)")


def gemm_triton(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None, accumulate: bool = False,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """out = [out +] a @ b^T [+ bias]; out is allocated when None (then accumulate must be False)."""
    if out is None:
        if accumulate:
            raise ValueError("accumulate needs out")
        out = torch.empty((a.shape[0], b.shape[0]), dtype=a.dtype, device=a.device)
    _check(a, b, out, bias)
    M, K = a.shape
    N = b.shape[0]
    if M == 0 or N == 0:
        return out
    if K == 0:   # an empty sum: out (+ bias)
        if not accumulate:
            out.zero_()
        return out if bias is None else out.add_(bias.to(out.dtype))
    bm, bn, bk = CFG["block_m"], CFG["block_n"], CFG["block_k"]
    a_desc = TensorDescriptor.from_tensor(a, [bm, bk])
    b_desc = TensorDescriptor.from_tensor(b, [bn, bk])
    subtile = bool(CFG["subtile"])
    c_desc = TensorDescriptor.from_tensor(out, [bm, bn // 2 if subtile else bn])
    programs = min(sm_count(a.device), triton.cdiv(M, bm) * triton.cdiv(N, bn))
    _gemm_kernel.on(a.device)[(programs,)](
        a_desc, b_desc, c_desc, out if bias is None else bias, M, N, K,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=CFG["group_m"], NUM_PROGRAMS=programs,
        ACCUMULATE=accumulate, HAS_BIAS=bias is not None, SUBTILE=subtile,
        num_stages=CFG["num_stages"], num_warps=CFG["num_warps"],
    )
    return out


SETTINGS = [
    {},
    {"num_stages": 4, "block_n": 128},
    {"num_stages": 5, "block_n": 128, "num_warps": 4},
    {"block_m": 256, "block_n": 128},
    {"group_m": 16},
    {"group_m": 4},
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=15600)
    p.add_argument("--dim", type=int, default=2240)
    p.add_argument("--frame", type=int, default=1560)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--chunk", type=int, default=20)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    dev = torch.device("cuda")
    n, d, s = args.tokens, args.dim, args.frame
    x, w, w3, bias, acc, out, _ = block_gemm_operands(n, d, dev)
    forms = {
        # name: (cuBLAS, ours, rows, fp64 reference of one call)
        "out = x @ W^T + b": (lambda: torch.addmm(bias, x, w.t(), out=out),
                              lambda: gemm_triton(x, w, out, bias=bias), n,
                              lambda: x.double() @ w.double().t() + bias.double()),
        "acc += x @ W^T": (lambda: acc.addmm_(x, w.t()), lambda: gemm_triton(x, w, acc, accumulate=True), n,
                           None),
        "acc[s:] += x[:n-s] @ W3[:, :d]^T": (lambda: acc[s:].addmm_(x[:n - s], w3[:, :d].t()),
                                             lambda: gemm_triton(x[:n - s], w3[:, :d], acc[s:], accumulate=True),
                                             n - s, None),
    }
    rows = []
    default = dict(CFG)
    for name, (theirs, ours, m, ref_fn) in forms.items():
        flops = 2 * m * d * d
        ref = ref_fn() if ref_fn is not None else None
        for setting in SETTINGS:
            CFG.clear()
            CFG.update({**default, **setting})
            row = {"form": name, "setting": setting}
            try:
                ours()
                torch.cuda.synchronize()
                if ref is not None:
                    row["err_ours"] = rel_err(ours(), ref)
                    row["err_cublas"] = rel_err(theirs(), ref)
                t_ours, t_theirs = [], []
                for _ in range(args.rounds):
                    t_theirs.append(ms_per_call(theirs, args.chunk))
                    t_ours.append(ms_per_call(ours, args.chunk))
                row.update(cublas_us=1e3 * statistics.median(t_theirs), ours_us=1e3 * statistics.median(t_ours))
                row["ratio"] = row["cublas_us"] / row["ours_us"]
                row["ours_tflops"] = flops / (row["ours_us"] * 1e-6) / 1e12
                row["cublas_tflops"] = flops / (row["cublas_us"] * 1e-6) / 1e12
            except Exception as exc:  # noqa: BLE001
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
            shown = (f"cuBLAS {row['cublas_us']:7.1f} us ({row['cublas_tflops']:4.0f})  ours {row['ours_us']:7.1f} us "
                     f"({row['ours_tflops']:4.0f})  x{row['ratio']:.3f}  err {row.get('err_ours', 0):.2e} vs "
                     f"{row.get('err_cublas', 0):.2e}" if "ratio" in row else row["error"])
            print(f"{name:<34} {str(setting):<48} {shown}", flush=True)
    CFG.clear()
    CFG.update(default)
    write_json(output_dir(args.out) / "gemm_triton.json", {"environment": environment(dev), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
