"""Which cuBLAS kernel, and how fast, for the block's (N, 2240) x (2240, 2240) GEMMs in each calling form.

The block runs several GEMMs of the same size (15600 tokens of one 480p LongSANA block, D = 2240) in different forms:
plain `mm`, `addmm` with a bias epilogue (cross-attention's q), in-place accumulation `addmm_` (out projections,
temporal taps), into a row-shifted view (the taps of the neighbouring frames), with a strided weight (column slices of
the temporal (D, 3D) weight). cuBLAS picks its kernel per form; this prints time, TFLOP/s and the kernel name of each,
so that the model can use the fastest form. Also the block's wide GEMMs (qkv, the FFN's inverted and point convs), and
with --blas the same under another of torch's BLAS back ends (cublas: cublasGemmEx; cublaslt: cublasLt's heuristics
for every bf16 GEMM).

    python bench/gemm_shapes.py [--blas cublas,cublaslt]   (GPU; writes gemm_shapes.json to $OUT)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import environment, output_dir, time_fn, write_json  # noqa: E402


def kernel_names(fn) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.key for e in prof.key_averages() if e.device_type.name == "CUDA" and "Memcpy" not in e.key})


def block_gemm_operands(n: int, d: int, dev: torch.device):
    """Random bf16 operands of the block's D x D GEMMs: x (n, d), w (d, d), the temporal-like w3 (d, 3d), bias (d,),
    a residual acc (n, d), an output buffer (n, d), and the generator (seeded) for more."""
    g = torch.Generator(device=dev).manual_seed(0)
    bf = torch.bfloat16
    x = torch.randn(n, d, device=dev, dtype=bf, generator=g)
    w = torch.randn(d, d, device=dev, dtype=bf, generator=g) * d ** -0.5
    w3 = torch.randn(d, 3 * d, device=dev, dtype=bf, generator=g) * d ** -0.5
    bias = torch.randn(d, device=dev, dtype=bf, generator=g)
    acc = torch.randn(n, d, device=dev, dtype=bf, generator=g)
    return x, w, w3, bias, acc, torch.empty(n, d, device=dev, dtype=bf), g


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=15600)
    p.add_argument("--dim", type=int, default=2240)
    p.add_argument("--frame", type=int, default=1560, help="tokens per latent frame (the taps' row shift)")
    p.add_argument("--blas", default="", help="comma-separated torch BLAS back ends to compare (cublas, cublaslt)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    dev = torch.device("cuda")
    n, d, s = args.tokens, args.dim, args.frame
    x, w, w3, bias, acc, out, g = block_gemm_operands(n, d, dev)
    bf = torch.bfloat16
    forms = {
        "mm x @ W^T": lambda: torch.mm(x, w.t(), out=out),
        "addmm bias + x @ W^T (bias epilogue)": lambda: torch.addmm(bias, x, w.t(), out=out),
        "addmm_ acc += x @ W^T": lambda: acc.addmm_(x, w.t()),
        "addmm_ acc[s:] += x[:n-s] @ W^T (shifted rows)": lambda: acc[s:].addmm_(x[:n - s], w.t()),
        "addmm_ acc += x @ W3[:, d:2d]^T (strided weight)": lambda: acc.addmm_(x, w3[:, d:2 * d].t()),
        "addmm_ acc[s:] += x[:n-s] @ W3[:, :d]^T (both)": lambda: acc[s:].addmm_(x[:n - s], w3[:, :d].t()),
        "mm x[:n-s] @ W^T (fewer rows)": lambda: torch.mm(x[:n - s], w.t()),
    }
    # the wide ones: (form, fn, K, N)
    w_qkv = torch.randn(3 * d, d, device=dev, dtype=bf, generator=g) * d ** -0.5
    w_inv = torch.randn(6 * d, d, device=dev, dtype=bf, generator=g) * d ** -0.5
    b_inv = torch.randn(6 * d, device=dev, dtype=bf, generator=g)
    gl = torch.randn(n, 3 * d, device=dev, dtype=bf, generator=g)
    wide = {
        "mm x @ W_qkv^T (N = 3D)": (lambda: torch.mm(x, w_qkv.t()), d, 3 * d),
        "addmm b + x @ W_inv^T (N = 6D, bias)": (lambda: torch.addmm(b_inv, x, w_inv.t()), d, 6 * d),
        "mm g @ W_point^T (K = 3D)": (lambda: torch.mm(gl, w3.t()), 3 * d, d),
    }
    rows = []
    libs = [lib.strip() for lib in args.blas.split(",") if lib.strip()] or [None]
    for lib in libs:
        if lib is not None:
            torch.backends.cuda.preferred_blas_library(lib)
        for name, (fn, k_dim, n_dim) in {**{f: (fn, d, d) for f, fn in forms.items()}, **wide}.items():
            m = n - s if "n-s" in name else n
            ms = time_fn(fn, dev, 5, 30)["ms"]
            tflops = 2 * m * k_dim * n_dim / (ms * 1e-3) / 1e12
            kernels = kernel_names(fn)
            rows.append({"blas": lib or "default", "form": name, "ms": ms, "tflops": tflops, "kernels": kernels})
            print(f"{lib or 'default':<9} {name:<52} {ms * 1000:7.1f} us {tflops:6.0f} TFLOP/s  {', '.join(kernels)}",
                  flush=True)
    write_json(output_dir(args.out) / "gemm_shapes.json", {"environment": environment(dev), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
