"""Triton kernels against float64 references.

CPU: the real kernel bodies run through Triton's interpreter (`Kernel` picks the interpreter for CPU tensors;
TRITON_INTERPRET=1 is set only around this module's imports and while its tests run). GPU: the same checks on CUDA
with the compiled kernels, marked `gpu`.

Rule for every kernel: ||kernel - ref64|| / ||ref64|| <= 2 * (the same error of the PyTorch reference run at the
kernel's input precision) + 2^-22 (a few fp32 ulps: GPU exp / sigmoid instructions are approximate; this floor only
matters for fp32 outputs, whose reference error is ~1e-7). Inputs are fresh
random draws (seed in the failure message); outputs and workspaces are poisoned with NaN first.
"""

import os
import subprocess
import sys

# Triton's interpreter only works when TRITON_INTERPRET=1 was set before triton.language was first imported (its
# standard-library functions are decorated at import). So: set it before importing triton, and restore it right
# after this module's imports (test modules collected later must not get Triton in interpreter mode). If something
# (e.g. torch._dynamo) imported Triton earlier in this process, the CPU cases run in a fresh subprocess instead
# (test_interpreter_cases_in_a_fresh_process).
# On a machine with a GPU the compiled kernels need Triton in its normal mode (an interpreter-mode import makes every
# GPU compile fail), so there the CPU cases run in the fresh subprocess instead.
import torch  # noqa: E402  (torch does not import Triton)

_PREVIOUS_INTERPRET = os.environ.get("TRITON_INTERPRET")
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:
    triton = pytest.importorskip("triton")
    tl = pytest.importorskip("triton.language")
    import triton.language.standard as _tl_standard  # noqa: E402
    from triton.runtime.jit import JITFunction as _JITFunction  # noqa: E402

    from core.kernels import _triton  # noqa: E402
    from core.kernels import dwconv_glu as dw  # noqa: E402
    from core.kernels import layernorm_modulate as lnm  # noqa: E402
    from core.kernels import linear_attention as la  # noqa: E402
    from core.kernels import rms_norm as rn  # noqa: E402
    from core.kernels import scale_rows as sr  # noqa: E402
    from core.kernels.dwconv_glu_triton import dwconv3x3_glu_triton  # noqa: E402
    from core.kernels.layernorm_modulate_triton import (  # noqa: E402
        add_layernorm_modulate_triton,
        layernorm_modulate_triton,
    )
    from core.kernels.linear_attention_triton import linear_attn_apply_triton, linear_attn_state_triton  # noqa: E402
    from core.kernels.rms_norm_triton import qk_rms_reciprocals_triton, rms_norm_triton  # noqa: E402
    from core.kernels.scale_rows_triton import scale_rows_triton  # noqa: E402
finally:
    if _PREVIOUS_INTERPRET is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _PREVIOUS_INTERPRET

# True when Triton was imported in interpreter mode (by this module, or by a run that set TRITON_INTERPRET=1)
INTERPRETER_OK = not isinstance(_tl_standard.sum, _JITFunction)
needs_interpreter = pytest.mark.skipif(
    not INTERPRETER_OK, reason="Triton was imported before this module without TRITON_INTERPRET=1; "
                               "these cases run in test_interpreter_cases_in_a_fresh_process")


@pytest.fixture(autouse=True)
def interpret_mode(monkeypatch, request):
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if params.get("device") != "cuda" and "gpu" not in request.node.keywords:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module", autouse=True)
def interpreter_rounds_like_the_gpu():
    """Triton's interpreter truncates fp32 -> bf16 / fp8 casts; the GPU rounds to nearest even. Without this the CPU
    runs would show twice the real rounding error on 16- and 8-bit outputs."""
    from triton.runtime import interpreter

    original = getattr(interpreter, "_convert_float", None)
    if original is None:
        yield
        return

    def convert(data, input_dtype, output_dtype, rounding_mode):
        if input_dtype == tl.float32 and output_dtype == tl.bfloat16:
            bits = np.asarray(data, dtype=np.float32).view(np.uint32).astype(np.uint64)
            return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        if input_dtype == tl.float32 and output_dtype == tl.float8e4nv:   # the GPU's cvt.rn.satfinite
            values = torch.from_numpy(np.asarray(data, dtype=np.float32).copy()).clamp(-448, 448)
            return values.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
        return original(data, input_dtype, output_dtype, rounding_mode)

    interpreter._convert_float = convert
    try:
        yield
    finally:
        interpreter._convert_float = original


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    monkeypatch.setattr(_triton, "POISON", float("nan"))


DEVICES = [pytest.param("cpu", marks=needs_interpreter), pytest.param("cuda", marks=pytest.mark.gpu)]
DTYPES = [torch.bfloat16, torch.float32]


@pytest.fixture
def gen():
    seed = random.SystemRandom().randrange(2**31)
    return torch.Generator().manual_seed(seed)  # g.initial_seed() reproduces a failure


def randn(g, *shape, dtype=torch.float32, device="cpu", scale=1.0, shift=0.0):
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype).to(device)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double().cpu(), ref.double().cpu()
    if not torch.isfinite(x).all():
        return float("inf")
    return ((x - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def assert_close_to_ref(name, kernel_out, same_precision_ref, ref64, g):
    assert kernel_out.shape == ref64.shape, f"{name}: shape {tuple(kernel_out.shape)} != {tuple(ref64.shape)}"
    err = rel_err(kernel_out, ref64)
    err_ref = rel_err(same_precision_ref, ref64)
    bound = 2 * err_ref + 2**-22
    assert err <= bound, f"{name}: kernel error {err:.3e} > bound {bound:.3e} (reference {err_ref:.3e}), seed {g.initial_seed()}"


def rope_tables(g, n, d, device):
    angles = torch.rand(n, d // 2, generator=g, dtype=torch.float64) * 2 * torch.pi * 3
    return angles.cos().float().to(device), angles.sin().float().to(device)


def qkv_views(g, B, N, H, d, dtype, device):
    """q, k, v as strided views into one fused projection, as the model produces them."""
    qkv = randn(g, B, N, 3, H, d, dtype=dtype, device=device)
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


# ---------------------------------------------------------------- linear attention

LA_SHAPES = [(2, 37, 3, 12), (1, 200, 2, 112)]  # tiny + the real head dim with a multi-split, ragged token range


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LA_SHAPES)
@pytest.mark.parametrize("k_norm", [False, True])
def test_linear_attn_state(device, dtype, shape, k_norm, gen):
    B, N, H, d = shape
    _, k, v = qkv_views(gen, B, N, H, d, dtype, device)
    cos, sin = rope_tables(gen, N, d, device)
    # k's RMSNorm applied on load: a per-token 1/rms and a per-channel weight (some negative: ReLU comes after)
    k_rstd = randn(gen, B, N, dtype=torch.float32, device=device, scale=0.2, shift=1.0).abs() if k_norm else None
    k_weight = randn(gen, H * d, dtype=dtype, device=device, shift=0.5) if k_norm else None
    norm = {"k_weight": k_weight, "k_rstd": k_rstd}
    norm64 = {} if not k_norm else {"k_weight": k_weight.double(), "k_rstd": k_rstd.double()}
    vk, k_sum = linear_attn_state_triton(k, v, cos, sin, **norm)
    assert vk.dtype == torch.float32 and k_sum.dtype == torch.float32
    ref_vk, ref_ks = la.linear_attn_state_reference(k, v, cos, sin, **norm)
    vk64, ks64 = la.linear_attn_state_reference(k.double(), v.double(), cos.double(), sin.double(), **norm64)
    assert_close_to_ref("vk", vk, ref_vk, vk64, gen)
    assert_close_to_ref("k_sum", k_sum, ref_ks, ks64, gen)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LA_SHAPES + [(1, 600, 1, 112)])  # the last runs several tiles per program
@pytest.mark.parametrize("q_norm", [False, True])
def test_linear_attn_apply(device, dtype, shape, q_norm, gen):
    B, N, H, d = shape
    eps = 1e-8 if dtype == torch.bfloat16 else 1e-15   # official and diffusers eps
    q, k, v = qkv_views(gen, B, N, H, d, dtype, device)
    # q's RMSNorm applied on load: a per-token 1/rms and a per-channel weight (some negative: ReLU comes after)
    q_rstd = randn(gen, B, N, dtype=torch.float32, device=device, scale=0.2, shift=1.0).abs() if q_norm else None
    q_weight = randn(gen, H * d, dtype=dtype, device=device, shift=0.5) if q_norm else None
    norm64 = {} if not q_norm else {"q_weight": q_weight.double(), "q_rstd": q_rstd.double()}
    norm = {} if not q_norm else {"q_weight": q_weight, "q_rstd": q_rstd}
    cos, sin = rope_tables(gen, N, d, device)
    # total state = this chunk + a previous block's (streaming), fp32 as the model keeps it
    own_vk, own_ks = la.linear_attn_state_reference(k.double(), v.double(), cos.double(), sin.double())
    prev_vk = randn(gen, B, H, d, d, dtype=torch.float64, device=device, scale=N ** 0.5)
    prev_ks = randn(gen, B, H, d, dtype=torch.float64, device=device, scale=3.0, shift=N).abs()
    vk = (own_vk + prev_vk).float()
    k_sum = (own_ks + prev_ks).float()
    out = linear_attn_apply_triton(q, vk, k_sum, cos, sin, eps, **norm)
    assert out.dtype == dtype
    ref = la.linear_attn_apply_reference(q, vk, k_sum, cos, sin, eps, **norm)
    ref64 = la.linear_attn_apply_reference(q.double(), vk.double(), k_sum.double(), cos.double(), sin.double(), eps,
                                           **norm64)
    assert_close_to_ref("out", out, ref, ref64, gen)


def test_norms_on_load_equal_the_kernels_on_normalized_inputs(gen):
    """RMSNorm(q) * w fed to apply == apply(q, q_rstd, q_weight), and likewise k for the state: the model's deferred
    q / k normalization (fp64)."""
    B, N, H, d = 2, 9, 3, 8
    q, k, v = qkv_views(gen, B, N, H, d, torch.float64, "cpu")
    cos, sin = rope_tables(gen, N, d, "cpu")
    cos, sin = cos.double(), sin.double()
    w = randn(gen, H * d, dtype=torch.float64, shift=0.3)
    vk, ks = la.linear_attn_state_reference(k, v, cos, sin)
    normed = rn.rms_norm_reference(q.reshape(B, N, H * d), w, 1e-6).view(B, N, H, d)
    rstd, _ = rn.qk_rms_reciprocals_reference(q.reshape(B, N, H * d).repeat(1, 1, 2), H * d, 1e-6)
    expected = la.linear_attn_apply_reference(normed, vk, ks, cos, sin, 1e-8)
    got = la.linear_attn_apply_reference(q, vk, ks, cos, sin, 1e-8, q_weight=w, q_rstd=rstd)
    assert rel_err(got, expected) < 1e-13
    normed_k = rn.rms_norm_reference(k.reshape(B, N, H * d), w, 1e-6).view(B, N, H, d)
    _, k_rstd = rn.qk_rms_reciprocals_reference(torch.cat([q.reshape(B, N, H * d), k.reshape(B, N, H * d)], -1),
                                                H * d, 1e-6)
    for got, expected in zip(la.linear_attn_state_reference(k, v, cos, sin, k_weight=w, k_rstd=k_rstd),
                             la.linear_attn_state_reference(normed_k, v, cos, sin)):
        assert rel_err(got, expected) < 1e-13


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", LA_SHAPES)
def test_linear_attn_state_totals(device, shape, gen):
    """The streaming form: own state and own + previous in one pass of the partial sums; each output equal to the
    plain kernel's own state (plus the previous state, fp32 add) and within the reference's error."""
    from core.kernels.linear_attention_triton import linear_attn_state_totals_triton

    B, N, H, d = shape
    _, k, v = qkv_views(gen, B, N, H, d, torch.bfloat16, device)
    cos, sin = rope_tables(gen, N, d, device)
    k_rstd = randn(gen, B, N, dtype=torch.float32, device=device, scale=0.2, shift=1.0).abs()
    k_weight = randn(gen, H * d, dtype=torch.bfloat16, device=device, shift=0.5)
    prev_vk = randn(gen, B, H, d, d, dtype=torch.float32, device=device, scale=N ** 0.5)
    prev_ks = randn(gen, B, H, d, dtype=torch.float32, device=device, scale=3.0, shift=N).abs()
    own_vk, own_ks, vk, ks = linear_attn_state_totals_triton(k, v, cos, sin, prev_vk, prev_ks, k_weight, k_rstd)
    plain_vk, plain_ks = linear_attn_state_triton(k, v, cos, sin, k_weight, k_rstd)
    assert torch.equal(own_vk, plain_vk) and torch.equal(own_ks, plain_ks)
    assert torch.equal(vk, plain_vk + prev_vk) and torch.equal(ks, plain_ks + prev_ks)
    ref = la.linear_attn_state_totals(k.cpu(), v.cpu(), cos.cpu(), sin.cpu(), prev_vk.cpu(), prev_ks.cpu(),
                                      k_weight.cpu(), k_rstd.cpu())
    ref64 = la.linear_attn_state_reference(k.double(), v.double(), cos.double(), sin.double(),
                                           k_weight=k_weight.double(), k_rstd=k_rstd.double())
    expected = (*ref64, ref64[0] + prev_vk.double(), ref64[1] + prev_ks.double())
    for name, got, r, r64 in zip(("own vk", "own k_sum", "vk", "k_sum"), (own_vk, own_ks, vk, ks), ref, expected):
        assert_close_to_ref(name, got, r.to(got.device), r64, gen)
    with pytest.raises(ValueError, match="previous state"):
        linear_attn_state_totals_triton(k, v, cos, sin, prev_vk[..., :-1], prev_ks, k_weight, k_rstd)


def test_linear_attn_state_empty_chunk():
    k = torch.randn(1, 0, 2, 8)
    vk, k_sum = linear_attn_state_triton(k, k, torch.zeros(0, 4), torch.zeros(0, 4))
    assert torch.equal(vk, torch.zeros(1, 2, 8, 8)) and torch.equal(k_sum, torch.zeros(1, 2, 8))


def test_linear_attn_rejects_bad_rope_shape():
    q = torch.randn(1, 5, 2, 8)
    with pytest.raises(ValueError, match="cos/sin"):
        linear_attn_state_triton(q, q, torch.zeros(5, 3), torch.zeros(5, 3))


# ---------------------------------------------------------------- layernorm + modulate


def _modulations(g, kind, B, N, D, T, device):
    if kind == "sample":
        table = randn(g, B, 6, D, device=device, scale=0.5)                 # shift/scale are views of a chunked table
        shift, scale = table[:, 0], table[:, 1]
    elif kind == "token":
        shift, scale = randn(g, B, N, D, device=device), randn(g, B, N, D, device=device, scale=0.5)
    else:
        shift, scale = randn(g, B, T, 1, D, device=device), randn(g, B, T, 1, D, device=device, scale=0.5)
    return shift, scale


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["sample", "token", "frame"])
def test_layernorm_modulate(device, dtype, kind, gen):
    B, T, D = 2, 3, 40
    N = T * 8
    x = randn(gen, B, N, D, dtype=dtype, device=device, scale=3.0, shift=2.0)
    shift, scale = _modulations(gen, kind, B, N, D, T, device)
    shift, scale = shift.to(dtype), scale.to(dtype)
    out = layernorm_modulate_triton(x, shift, scale, 1e-6)
    ref = lnm.layernorm_modulate_reference(x, shift, scale, 1e-6)
    ref64 = lnm.layernorm_modulate_reference(x.double(), shift.double(), scale.double(), 1e-6)
    assert_close_to_ref("layernorm_modulate", out, ref, ref64, gen)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gate_kind", [None, "sample", "frame"])
def test_add_layernorm_modulate(device, dtype, gate_kind, gen):
    B, T, D = 2, 3, 40
    N = T * 8
    x = randn(gen, B, N, D, dtype=dtype, device=device, scale=3.0, shift=2.0)
    y = randn(gen, B, N, D, dtype=dtype, device=device)
    shift, scale = (m.to(dtype) for m in _modulations(gen, "frame", B, N, D, T, device))
    gate = None if gate_kind is None else _modulations(gen, gate_kind, B, N, D, T, device)[0].to(dtype)
    x_new, h = add_layernorm_modulate_triton(x, y, gate, shift, scale, 1e-6)
    ref_x, ref_h = lnm.add_layernorm_modulate_reference(x, y, gate, shift, scale, 1e-6)
    x64, h64 = lnm.add_layernorm_modulate_reference(x.double(), y.double(), None if gate is None else gate.double(),
                                                    shift.double(), scale.double(), 1e-6)
    assert x_new.dtype == dtype and h.dtype == dtype
    assert_close_to_ref("x + gate * y", x_new, ref_x, x64, gen)
    assert_close_to_ref("norm of the new residual", h, ref_h, h64, gen)


def test_layernorm_modulate_rejects_groups_that_do_not_divide_tokens():
    x = torch.randn(1, 10, 8)
    with pytest.raises(ValueError, match="divide"):
        layernorm_modulate_triton(x, torch.zeros(1, 3, 1, 8), torch.zeros(1, 3, 1, 8), 1e-6)


# ---------------------------------------------------------------- rms norm


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm(device, dtype, with_weight, gen):
    x = randn(gen, 2, 9, 100, dtype=dtype, device=device, scale=2.0)[..., 10:50]   # strided rows, D = 40
    w = randn(gen, 40, dtype=dtype, device=device, shift=1.0) if with_weight else None
    out = rms_norm_triton(x, w, 1e-5)
    ref = rn.rms_norm_reference(x, w, 1e-5)
    ref64 = rn.rms_norm_reference(x.double(), None if w is None else w.double(), 1e-5)
    assert_close_to_ref("rms_norm", out, ref, ref64, gen)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_qk_rms_reciprocals(device, dtype, gen):
    D = 24
    qkv = randn(gen, 2, 7, 3 * D, dtype=dtype, device=device, scale=2.0)
    q_rstd, k_rstd = qk_rms_reciprocals_triton(qkv, D, 1e-5)
    assert q_rstd.shape == k_rstd.shape == (2, 7) and q_rstd.dtype == k_rstd.dtype == torch.float32
    ref_q, ref_k = rn.qk_rms_reciprocals_reference(qkv, D, 1e-5)
    q64, k64 = rn.qk_rms_reciprocals_reference(qkv.double(), D, 1e-5)
    assert_close_to_ref("q_rstd", q_rstd, ref_q, q64, gen)
    assert_close_to_ref("k_rstd", k_rstd, ref_k, k64, gen)


# ---------------------------------------------------------------- gate-scaled weight rows


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_reciprocal_of_k_inside_qkv(device, dtype, gen):
    from core.kernels.rms_norm_triton import rms_reciprocal_triton
    qkv = randn(gen, 2, 7, 3 * 40, dtype=dtype, device=device, scale=2.0)
    k = qkv[..., 40:80]                                                   # strided rows, as the model passes it
    got = rms_reciprocal_triton(k, 1e-6)
    assert got.shape == (2, 7) and got.dtype == torch.float32
    assert_close_to_ref("rms_reciprocal", got, rn.rms_reciprocal_reference(k, 1e-6),
                        rn.rms_reciprocal_reference(k.double(), 1e-6), gen)
    if device == "cpu":
        assert torch.equal(rn.rms_reciprocal(k, 1e-6), rn.rms_reciprocal_reference(k, 1e-6))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("identity_col", [None, 0, 6])
def test_scale_rows(device, dtype, identity_col, gen):
    weight = randn(gen, 6, 18, dtype=dtype, device=device, scale=0.3)
    gate = randn(gen, 6, dtype=dtype, device=device)
    out = scale_rows_triton(weight, gate, dtype, identity_col)
    ref = sr.scale_rows_reference(weight, gate, dtype, identity_col)
    ref64 = sr.scale_rows_reference(weight.double(), gate.double(), torch.float64, identity_col)
    assert out.dtype == dtype
    assert_close_to_ref("scale_rows", out, ref, ref64, gen)


def test_scale_rows_reference_is_the_formula(gen):
    weight, gate = randn(gen, 3, 9, dtype=torch.float64), randn(gen, 3, dtype=torch.float64)
    expected = weight * gate[:, None]
    expected[:, 3:6] += torch.diag(gate)
    torch.testing.assert_close(sr.scale_rows_reference(weight, gate, torch.float64, 3), expected, rtol=1e-14,
                               atol=1e-14)
    with pytest.raises(ValueError, match="identity"):
        sr.scale_rows_reference(weight, gate, torch.float64, 7)


# ---------------------------------------------------------------- depthwise conv + GLU


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("silu_input", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("size", [(3, 5, 7, 20), (1, 3, 70, 6)])
def test_dwconv3x3_glu(device, dtype, silu_input, with_bias, size, gen):
    # F not a multiple of the channel block, W not a multiple of the column block; W = 70 spans two column blocks
    BT, H, W, F = size
    x = randn(gen, BT, H, W, 2 * F, dtype=dtype, device=device)
    w = randn(gen, 2 * F, 1, 3, 3, dtype=dtype, device=device, scale=0.5)
    b = randn(gen, 2 * F, dtype=dtype, device=device) if with_bias else None
    out = dwconv3x3_glu_triton(x, w, b, silu_input)
    ref = dw.dwconv3x3_glu_reference(x, w, b, silu_input)
    ref64 = dw.dwconv3x3_glu_reference(x.double(), w.double(), None if b is None else b.double(), silu_input)
    assert_close_to_ref("dwconv3x3_glu", out, ref, ref64, gen)


def test_dwconv_reference_matches_nn_conv_layout(gen):
    """The reference is the diffusers/official op: Conv2d(groups=C) on (B*T, C, H, W), then chunk + a*SiLU(g)."""
    C = 8
    conv = torch.nn.Conv2d(C, C, 3, padding=1, groups=C)
    with torch.no_grad():
        conv.weight.copy_(randn(gen, C, 1, 3, 3))
        conv.bias.copy_(randn(gen, C))
    x = randn(gen, 2, 4, 6, C)
    a, gate = conv(x.permute(0, 3, 1, 2)).chunk(2, dim=1)
    expected = (a * torch.nn.functional.silu(gate)).permute(0, 2, 3, 1)
    got = dw.dwconv3x3_glu_reference(x, conv.weight.detach(), conv.bias.detach())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- dispatchers


def test_dispatchers_use_the_reference_on_cpu(gen):
    B, N, H, d = 1, 9, 2, 8
    q, k, v = qkv_views(gen, B, N, H, d, torch.float32, "cpu")
    cos, sin = rope_tables(gen, N, d, "cpu")
    vk, ks = la.linear_attn_state(k, v, cos, sin)
    ref_vk, ref_ks = la.linear_attn_state_reference(k, v, cos, sin)
    assert torch.equal(vk, ref_vk) and torch.equal(ks, ref_ks)
    assert torch.equal(la.linear_attn_apply(q, vk, ks, cos, sin, 1e-8),
                       la.linear_attn_apply_reference(q, vk, ks, cos, sin, 1e-8))
    x = randn(gen, 2, 6, 16)
    shift, scale = randn(gen, 2, 16), randn(gen, 2, 16)
    assert torch.equal(lnm.layernorm_modulate(x, shift, scale, 1e-6),
                       lnm.layernorm_modulate_reference(x, shift, scale, 1e-6))
    y, gate = randn(gen, 2, 6, 16), randn(gen, 2, 16)
    for got, ref in zip(lnm.add_layernorm_modulate(x, y, gate, shift, scale, 1e-6),
                        lnm.add_layernorm_modulate_reference(x, y, gate, shift, scale, 1e-6)):
        assert torch.equal(got, ref)
    w = randn(gen, 16)
    assert torch.equal(rn.rms_norm(x, w, 1e-5), rn.rms_norm_reference(x, w, 1e-5))
    xc = randn(gen, 2, 3, 4, 16)
    wc, bc = randn(gen, 16, 1, 3, 3), randn(gen, 16)
    assert torch.equal(dw.dwconv3x3_glu(xc, wc, bc, True), dw.dwconv3x3_glu_reference(xc, wc, bc, True))


def test_failing_triton_import_warns_and_yields_no_implementation(monkeypatch):
    monkeypatch.setattr(_triton, "_impl_cache", {})
    with pytest.warns(RuntimeWarning, match="Triton kernels unavailable"):
        assert _triton.load_impl("core.kernels.no_such_kernel_module") is None
    assert _triton.load_impl("core.kernels.no_such_kernel_module") is None   # cached: warned once


def test_triton_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(_triton, "_DISABLED", True)
    assert not _triton.wants_triton(torch.zeros(1))


def assert_fake_matches(call):
    """A custom op's fake (shape) implementation gives the real call's output shapes and dtypes; returns the real
    output."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = call()
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = call()
    fakes, reals = (list(t) if isinstance(t, tuple) else [t] for t in (fake, real))
    assert [(f.shape, f.dtype) for f in fakes] == [(r.shape, r.dtype) for r in reals]
    return real


def test_custom_ops_have_consistent_fake_implementations(gen):
    """torch.compile sees the kernels as custom ops; their fake (shape) functions must match the real outputs."""
    B, N, H, d = 1, 6, 2, 8
    q, k, v = qkv_views(gen, B, N, H, d, torch.bfloat16, "cpu")
    cos, sin = rope_tables(gen, N, d, "cpu")
    rstd, w = torch.rand(B, N, generator=gen) + 0.5, randn(gen, H * d, dtype=torch.bfloat16)
    vk, ks = assert_fake_matches(lambda: la._state_op(k, v, cos, sin, w, rstd))
    assert_fake_matches(lambda: la._apply_op(q, vk, ks, cos, sin, 1e-8, None, w, rstd))
    xc = randn(gen, 2, 3, 4, 16, dtype=torch.bfloat16)
    wc = randn(gen, 16, 1, 3, 3, dtype=torch.bfloat16)
    scale = torch.tensor(0.01)
    for out_scale in (None, scale):
        assert_fake_matches(lambda out_scale=out_scale: dw._op(xc, wc, None, True, out_scale))
    real = assert_fake_matches(lambda: la._apply_op(q, vk, ks, cos, sin, 1e-8, scale))
    assert real.dtype == torch.float8_e4m3fn
    x = randn(gen, 2, 6, 16, dtype=torch.bfloat16)
    shift = randn(gen, 2, 3, 16, dtype=torch.bfloat16)
    assert_fake_matches(lambda: lnm._add_op(x, x, None, shift, shift, 1e-6))
    qkv = randn(gen, 1, 4, 48, dtype=torch.bfloat16)
    assert_fake_matches(lambda: rn._qk_op(qkv, 16, 1e-5))


@pytest.mark.skipif(INTERPRETER_OK, reason="the interpreter cases already ran in this process")
def test_interpreter_cases_in_a_fresh_process():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "cpu"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


# ---------------------------------------------------------------- GPU: real sizes, dispatch path


@pytest.mark.gpu
def test_gpu_dispatch_falls_back_when_triton_cannot_load(monkeypatch):
    g = torch.Generator().manual_seed(random.SystemRandom().randrange(2**31))
    monkeypatch.setattr(_triton, "_impl_cache", {name: None for name in (la._IMPL, lnm._IMPL, rn._IMPL, dw._IMPL)})
    k = randn(g, 1, 33, 2, 16, device="cuda")
    cos, sin = rope_tables(g, 33, 16, "cuda")
    vk, ks = la.linear_attn_state(k, k, cos, sin)
    ref_vk, ref_ks = la.linear_attn_state_reference(k, k, cos, sin)
    assert torch.equal(vk, ref_vk) and torch.equal(ks, ref_ks)
    x = randn(g, 1, 4, 8, device="cuda")
    assert torch.equal(rn.rms_norm(x, None, 1e-5), rn.rms_norm_reference(x, None, 1e-5))


@pytest.mark.gpu
def test_gpu_dispatch_real_sizes():
    g = torch.Generator().manual_seed(random.SystemRandom().randrange(2**31))
    B, N, H, d = 1, 1560 * 2 + 17, 20, 112
    q, k, v = qkv_views(g, B, N, H, d, torch.bfloat16, "cuda")
    cos, sin = rope_tables(g, N, d, "cuda")
    vk, ks = la.linear_attn_state(k, v, cos, sin)
    vk64, ks64 = la.linear_attn_state_reference(k.double(), v.double(), cos.double(), sin.double())
    ref_vk, ref_ks = la.linear_attn_state_reference(k, v, cos, sin)
    assert_close_to_ref("vk", vk, ref_vk, vk64, g)
    assert_close_to_ref("k_sum", ks, ref_ks, ks64, g)
    out = la.linear_attn_apply(q, vk, ks, cos, sin, 1e-8)
    ref = la.linear_attn_apply_reference(q, vk, ks, cos, sin, 1e-8)
    ref64 = la.linear_attn_apply_reference(q.double(), vk.double(), ks.double(), cos.double(), sin.double(), 1e-8)
    assert_close_to_ref("out", out, ref, ref64, g)
    qkv = randn(g, 1, 1560, 3 * 2240, dtype=torch.bfloat16, device="cuda", scale=2.0)
    wq = randn(g, 2240, dtype=torch.bfloat16, device="cuda", shift=1.0)
    nr, nkr = rn.qk_rms_reciprocals(qkv, 2240, 1e-5)
    rr, rkr = rn.qk_rms_reciprocals_reference(qkv, 2240, 1e-5)
    r64, kr64 = rn.qk_rms_reciprocals_reference(qkv.double(), 2240, 1e-5)
    assert_close_to_ref("q_rstd", nr, rr, r64, g)
    assert_close_to_ref("k_rstd", nkr, rkr, kr64, g)
    kq = qkv[..., 2240:4480].view(1, 1560, 20, 112)
    vq = qkv[..., 4480:].view(1, 1560, 20, 112)
    got_vk, got_ks = la.linear_attn_state(kq, vq, cos[:1560], sin[:1560], k_weight=wq, k_rstd=nkr)
    ref_vk, ref_ks = la.linear_attn_state_reference(kq, vq, cos[:1560], sin[:1560], k_weight=wq, k_rstd=rkr)
    vk64, ks64 = la.linear_attn_state_reference(kq.double(), vq.double(), cos[:1560].double(), sin[:1560].double(),
                                                k_weight=wq.double(), k_rstd=kr64)
    assert_close_to_ref("vk with k_rstd and k_weight", got_vk, ref_vk, vk64, g)
    assert_close_to_ref("k_sum with k_rstd and k_weight", got_ks, ref_ks, ks64, g)
    q = qkv[..., :2240].view(1, 1560, 20, 112)
    vk, ks = vk[:, :20], ks[:, :20]
    cos, sin = cos[:1560], sin[:1560]
    out = la.linear_attn_apply(q, vk, ks, cos, sin, 1e-8, q_weight=wq, q_rstd=nr)
    ref = la.linear_attn_apply_reference(q, vk, ks, cos, sin, 1e-8, q_weight=wq, q_rstd=rr)
    ref64 = la.linear_attn_apply_reference(q.double(), vk.double(), ks.double(), cos.double(), sin.double(), 1e-8,
                                           q_weight=wq.double(), q_rstd=r64)
    assert_close_to_ref("out with q_rstd and q_weight", out, ref, ref64, g)
    x = randn(g, 2, 1560 * 3, 2240, dtype=torch.bfloat16, device="cuda", scale=3.0, shift=1.0)
    mod = randn(g, 2, 3, 6, 2240, dtype=torch.bfloat16, device="cuda", scale=0.3)     # per-frame (B, T, 6, D)
    shift, scale = mod[:, :, 0], mod[:, :, 1]
    got = lnm.layernorm_modulate(x, shift, scale, 1e-6)
    assert_close_to_ref("layernorm_modulate", got, lnm.layernorm_modulate_reference(x, shift, scale, 1e-6),
                        lnm.layernorm_modulate_reference(x.double(), shift.double(), scale.double(), 1e-6), g)
    y, gate = randn(g, *x.shape, dtype=torch.bfloat16, device="cuda"), mod[:, :, 2]
    got_x, got_h = lnm.add_layernorm_modulate(x, y, gate, shift, scale, 1e-6)
    ref_x, ref_h = lnm.add_layernorm_modulate_reference(x, y, gate, shift, scale, 1e-6)
    x64, h64 = lnm.add_layernorm_modulate_reference(x.double(), y.double(), gate.double(), shift.double(),
                                                    scale.double(), 1e-6)
    assert_close_to_ref("x + gate * y", got_x, ref_x, x64, g)
    assert_close_to_ref("norm of the new residual", got_h, ref_h, h64, g)
    x = randn(g, 2, 30, 52, 2 * 672, dtype=torch.bfloat16, device="cuda")
    w = randn(g, 2 * 672, 1, 3, 3, dtype=torch.bfloat16, device="cuda", scale=0.3)
    b = randn(g, 2 * 672, dtype=torch.bfloat16, device="cuda")
    got = dw.dwconv3x3_glu(x, w, b, silu_input=True)
    assert_close_to_ref("dwconv", got, dw.dwconv3x3_glu_reference(x, w, b, True),
                        dw.dwconv3x3_glu_reference(x.double(), w.double(), b.double(), True), g)


@pytest.mark.parametrize("device", DEVICES)
def test_kernels_write_fp8_for_an_fp8_consumer(device, gen):
    """With out_scale, dwconv+GLU and linear-attention apply write E4M3 (value / scale, saturated); dequantized, they
    are at most ~2x as far from the fp64 result as the reference's own FP8 output (and the same FP8 grid)."""
    dtype = torch.bfloat16
    x = randn(gen, 2, 5, 7, 40, dtype=dtype, device=device)
    w = randn(gen, 40, 1, 3, 3, dtype=dtype, device=device, scale=0.5)
    b = randn(gen, 40, dtype=dtype, device=device)
    ref64 = dw.dwconv3x3_glu_reference(x.double(), w.double(), b.double(), True)
    scale = (ref64.abs().amax() / 300).float().to(device)           # some values saturate at 448
    got = dwconv3x3_glu_triton(x, w, b, True, out_scale=scale)
    ref = dw.dwconv3x3_glu_reference(x, w, b, True, out_scale=scale)
    assert got.dtype == torch.float8_e4m3fn and got.shape == ref.shape
    expected = (ref64 / scale.double().cpu()).clamp(-448, 448)
    assert_close_to_ref("dwconv fp8", got.float(), ref.float(), expected, gen)

    B, N, H, d = 1, 40, 2, 16
    q, k, v = qkv_views(gen, B, N, H, d, dtype, device)
    cos, sin = rope_tables(gen, N, d, device)
    vk, ks = la.linear_attn_state_reference(k, v, cos, sin)
    out64 = la.linear_attn_apply_reference(q.double(), vk.double(), ks.double(), cos.double(), sin.double(), 1e-6)
    scale = (out64.abs().amax() / 448).float().to(device)
    got = linear_attn_apply_triton(q, vk, ks, cos, sin, 1e-6, out_scale=scale)
    ref = la.linear_attn_apply_reference(q, vk, ks, cos, sin, 1e-6, out_scale=scale)
    assert got.dtype == torch.float8_e4m3fn
    assert_close_to_ref("apply fp8", got.float(), ref.float(), out64 / scale.double().cpu(), gen)
    # the same with q's RMSNorm applied on load (the model's path into an FP8 out projection)
    q_rstd = randn(gen, B, N, dtype=torch.float32, device=device, scale=0.2, shift=1.0).abs()
    q_weight = randn(gen, H * d, dtype=dtype, device=device, shift=0.5)
    norm = {"q_weight": q_weight, "q_rstd": q_rstd}
    out64 = la.linear_attn_apply_reference(q.double(), vk.double(), ks.double(), cos.double(), sin.double(), 1e-6,
                                           q_weight=q_weight.double(), q_rstd=q_rstd.double())
    scale = (out64.abs().amax() / 448).float().to(device)
    got = linear_attn_apply_triton(q, vk, ks, cos, sin, 1e-6, out_scale=scale, **norm)
    ref = la.linear_attn_apply_reference(q, vk, ks, cos, sin, 1e-6, out_scale=scale, **norm)
    assert_close_to_ref("apply fp8, q norm on load", got.float(), ref.float(), out64 / scale.double().cpu(), gen)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_layernorm_kernels_write_fp8(device, with_residual, gen):
    """With out_scale the LayerNorm kernels write the normalised output as E4M3 (the residual stays bf16)."""
    B, T, D = 2, 3, 40
    N = T * 8
    x = randn(gen, B, N, D, dtype=torch.bfloat16, device=device, scale=3.0, shift=2.0)
    y = randn(gen, B, N, D, dtype=torch.bfloat16, device=device)
    shift, scale = (m.bfloat16() for m in _modulations(gen, "sample", B, N, D, T, device))
    fp8 = torch.tensor(1.5 / 448, device=device)                          # |h| above ~1.5 saturates
    if with_residual:
        got_x, got = add_layernorm_modulate_triton(x, y, None, shift, scale, 1e-6, out_scale=fp8)
        ref_x, ref = lnm.add_layernorm_modulate_reference(x, y, None, shift, scale, 1e-6, out_scale=fp8)
        x64, h64 = lnm.add_layernorm_modulate_reference(x.double(), y.double(), None, shift.double(), scale.double(),
                                                        1e-6)
        assert got_x.dtype == torch.bfloat16
        assert_close_to_ref("x + y", got_x, ref_x, x64, gen)
    else:
        got = layernorm_modulate_triton(x, shift, scale, 1e-6, out_scale=fp8)
        ref = lnm.layernorm_modulate_reference(x, shift, scale, 1e-6, out_scale=fp8)
        h64 = lnm.layernorm_modulate_reference(x.double(), shift.double(), scale.double(), 1e-6)
    assert got.dtype == torch.float8_e4m3fn
    expected = (h64 / fp8.double().cpu()).clamp(-448, 448)
    assert_close_to_ref("layernorm fp8", got.float(), ref.float(), expected, gen)


# ---------------------------------------------------------------- FP8 block glue

from core.kernels import fp8_residual as fr  # noqa: E402
from core.kernels.fp8_residual_triton import gated_residual_triton, stack_taps_e4m3_triton  # noqa: E402


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gate_kind", ["sample", "frame"])
@pytest.mark.parametrize("with_b", [False, True])
def test_gated_residual(device, dtype, gate_kind, with_b, gen):
    B, T, S, D = 2, 3, 5, 600                                             # D spans two column tiles, ragged
    N = T * S
    x = randn(gen, B, N, D, dtype=dtype, device=device, scale=3.0)
    a = randn(gen, B, N, D, dtype=dtype, device=device)
    b = randn(gen, B, N, D, dtype=dtype, device=device) if with_b else None
    gate = randn(gen, B, 1 if gate_kind == "sample" else T, D, dtype=dtype, device=device)
    fp8 = torch.tensor(6.0 / 448, device=device)
    got, got_q = gated_residual_triton(x, a, gate, b, out_scale=fp8)
    ref, ref_q = fr.gated_residual_reference(x, a, gate, b, out_scale=fp8)
    ref64, _ = fr.gated_residual_reference(x.double(), a.double(), gate.double(),
                                           None if b is None else b.double())
    assert got.dtype == dtype and got_q.dtype == torch.float8_e4m3fn
    assert_close_to_ref("x + gate * (a + b)", got, ref, ref64, gen)
    # the E4M3 copy is of the stored (rounded) residual: compare with the exact cast of the kernel's own x_new
    exact_q = (got.double().cpu() / fp8.double().cpu()).clamp(-448, 448)
    assert_close_to_ref("its e4m3 copy", got_q.float(), fr.cast_e4m3(got, fp8).float(), exact_q, gen)
    # in place: the same numbers written into x, and no E4M3 copy without a scale
    x_in = x.clone()
    out, none = gated_residual_triton(x_in, a, gate, b, inplace=True)
    assert out.data_ptr() == x_in.data_ptr() and none is None
    assert torch.equal(out, got)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_prev", [False, True])
def test_stack_taps_e4m3(device, with_prev, gen):
    B, T, S, D = 2, 3, 5, 600
    u = randn(gen, B, T, S, D, dtype=torch.bfloat16, device=device)
    prev = randn(gen, B, S, D, dtype=torch.bfloat16, device=device) if with_prev else None
    fp8 = torch.tensor(2.0**-7, device=device)     # a power of two: x * (1/scale) == x / scale, bytes comparable
    got = stack_taps_e4m3_triton(u, prev, fp8)
    ref = fr.stack_taps_e4m3_reference(u, prev, fp8)
    assert got.dtype == torch.float8_e4m3fn and got.shape == (B, T, S, 3 * D)
    # a pure cast of bf16 inputs: exactly the reference's E4M3 bytes
    assert torch.equal(got.view(torch.uint8).cpu(), ref.view(torch.uint8).cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_fp8_outputs_keep_nan(device, gen):
    """A NaN stays NaN in the E4M3 outputs (as in the reference cast), it is not saturated to +-448."""
    x = randn(gen, 1, 4, 40, dtype=torch.bfloat16, device=device)
    a = randn(gen, 1, 4, 40, dtype=torch.bfloat16, device=device)
    a[0, 1, 3] = float("nan")
    gate = randn(gen, 1, 1, 40, dtype=torch.bfloat16, device=device)
    fp8 = torch.tensor(0.01, device=device)
    _, xq = gated_residual_triton(x, a, gate, out_scale=fp8)
    assert torch.isnan(xq.float()[0, 1, 3]) and torch.isfinite(xq.float()[0, 0]).all()
    shift, scale = torch.zeros(1, 40, device=device).bfloat16(), torch.zeros(1, 40, device=device).bfloat16()
    h = layernorm_modulate_triton(a, shift, scale, 1e-6, out_scale=fp8)
    assert torch.isnan(h.float()[0, 1]).all() and torch.isfinite(h.float()[0, 0]).all()


def test_fp8_glue_dispatch_on_cpu_uses_the_references(gen):
    x = randn(gen, 1, 6, 8)
    a, gate = randn(gen, 1, 6, 8), randn(gen, 1, 2, 8)
    x_new, xq = fr.gated_residual(x, a, gate, out_scale=torch.tensor(0.1))
    ref, ref_q = fr.gated_residual_reference(x, a, gate, out_scale=torch.tensor(0.1))
    assert torch.equal(x_new, ref) and torch.equal(xq.view(torch.uint8), ref_q.view(torch.uint8))
    x_in = x.clone()
    assert fr.gated_residual(x_in, a, gate, inplace=True)[0] is x_in and torch.equal(x_in, ref)
    with pytest.raises(ValueError, match="divid"):
        fr.gated_residual(x, a, randn(gen, 1, 4, 8))
    with pytest.raises(ValueError, match="prev"):
        fr.stack_taps_e4m3(randn(gen, 1, 2, 3, 8), randn(gen, 1, 2, 8), torch.tensor(1.0))


@pytest.mark.parametrize("device", DEVICES)
def test_dwconv_with_a_frame_stride(device, gen):
    """Frames that are not back to back in memory (every other frame of a larger tensor): the kernel uses the frame
    stride, not H * W * C."""
    big = randn(gen, 6, 3, 6, 16, dtype=torch.bfloat16, device=device)
    x = big[::2]                                                          # (3, 3, 6, 16), frame stride 2 H W C
    w = randn(gen, 16, 1, 3, 3, dtype=torch.bfloat16, device=device, scale=0.5)
    b = randn(gen, 16, dtype=torch.bfloat16, device=device)
    assert_close_to_ref("dwconv strided frames", dwconv3x3_glu_triton(x, w, b, True),
                        dw.dwconv3x3_glu_reference(x, w, b, True),
                        dw.dwconv3x3_glu_reference(x.double(), w.double(), b.double(), True), gen)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("half_gate", [True, False])
def test_dwconv_halved_input_and_gate_are_bit_identical(device, half_gate, gen, monkeypatch):
    """halved_input (x / 2, as the model's inverted GEMM writes it with alpha = 1/2) and the halved gate weights
    change no bit: scaling by a power of two is exact, and h = x / 2 is what SiLU's tanh form computes first."""
    from core.kernels import dwconv_glu_triton as dwt

    x = randn(gen, 2, 5, 9, 2 * 24, dtype=torch.bfloat16, device=device, scale=3.0)   # SiLU's tails included
    w = randn(gen, 2 * 24, 1, 3, 3, dtype=torch.bfloat16, device=device, scale=0.5)
    b = randn(gen, 2 * 24, dtype=torch.bfloat16, device=device)
    monkeypatch.setitem(dwt.CFG, "half_gate", False)
    plain = dwconv3x3_glu_triton(x, w, b, True)
    monkeypatch.setitem(dwt.CFG, "half_gate", half_gate)
    assert torch.equal(dwconv3x3_glu_triton(x * 0.5, w, b, True, halved_input=True), plain)
    assert torch.equal(dwconv3x3_glu_triton(x, w, b, True), plain)
    ref = dw.dwconv3x3_glu_reference(x * 0.5, w, b, True, halved_input=True)
    assert torch.equal(ref, dw.dwconv3x3_glu_reference(x, w, b, True))
    with pytest.raises(ValueError, match="silu_input"):
        dw.dwconv3x3_glu(x, w, b, silu_input=False, halved_input=True)


@pytest.mark.parametrize("device", DEVICES)
def test_layernorm_kernels_odd_rows_and_a_broadcast_residual(device, gen):
    """An odd number of rows (the last program's second row is masked) and y as a stride-0 per-sample vector (the
    model's owed bias after cross-attention)."""
    B, N, D = 3, 5, 40
    x = randn(gen, B, N, D, dtype=torch.bfloat16, device=device, scale=3.0, shift=2.0)
    c = randn(gen, B, D, dtype=torch.bfloat16, device=device)
    y = c[:, None, :].expand(B, N, D)
    shift, scale = randn(gen, B, D, device=device).bfloat16(), randn(gen, B, D, device=device, scale=0.5).bfloat16()
    got_x, got_h = add_layernorm_modulate_triton(x, y, None, shift, scale, 1e-6)
    ref_x, ref_h = lnm.add_layernorm_modulate_reference(x, y, None, shift, scale, 1e-6)
    x64, h64 = lnm.add_layernorm_modulate_reference(x.double(), y.double(), None, shift.double(), scale.double(), 1e-6)
    assert_close_to_ref("x + c", got_x, ref_x, x64, gen)
    assert_close_to_ref("norm of x + c", got_h, ref_h, h64, gen)
    assert_close_to_ref("layernorm, odd rows", layernorm_modulate_triton(x, shift, scale, 1e-6),
                        lnm.layernorm_modulate_reference(x, shift, scale, 1e-6),
                        lnm.layernorm_modulate_reference(x.double(), shift.double(), scale.double(), 1e-6), gen)


# ---------------------------------------------------------------- linear attention folded into the out projection
# (imported here, after the header: Triton is already imported, in interpreter mode where the header chose it)

from core.kernels import attn_fold as af  # noqa: E402
from core.kernels.attn_fold_triton import fold_out_projection_triton, linear_attn_ratio_triton  # noqa: E402

# tiny; the real head dim with H > 1, odd N, N not a multiple of the token tile, B = 2
RATIO_SHAPES = [(2, 37, 3, 8), (2, 71, 2, 112), (1, 200, 2, 112)]


def _total_k_sum(g, B, N, H, d, device):
    """A positive fp32 k_sum as the model's total state has (this chunk + previous blocks)."""
    return randn(g, B, H, d, dtype=torch.float64, scale=3.0, shift=N).abs().float().to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", RATIO_SHAPES)
@pytest.mark.parametrize("q_norm", ["none", "given", "computed"])
def test_linear_attn_ratio(device, dtype, shape, q_norm, gen):
    B, N, H, d = shape
    eps = 1e-8 if dtype == torch.bfloat16 else 1e-15
    q, _, _ = qkv_views(gen, B, N, H, d, dtype, device)                  # strided view of a (B, N, 3D) projection
    cos, sin = rope_tables(gen, N, d, device)
    k_sum = _total_k_sum(gen, B, N, H, d, device)
    norm, norm64 = {}, {}
    if q_norm != "none":   # a per-channel weight (some negative: ReLU comes after)
        w = randn(gen, H * d, dtype=dtype, device=device, shift=0.5)
        norm["q_weight"], norm64["q_weight"] = w, w.double()
    if q_norm == "given":
        r = randn(gen, B, N, dtype=torch.float32, device=device, scale=0.2, shift=1.0).abs()
        norm["q_rstd"], norm64["q_rstd"] = r, r.double()
    if q_norm == "computed":
        norm["q_norm_eps"] = norm64["q_norm_eps"] = 1e-5
    out = linear_attn_ratio_triton(q, k_sum, cos, sin, eps, **norm)
    assert out.dtype == dtype and out.is_contiguous()
    ref = af.linear_attn_ratio_reference(q, k_sum, cos, sin, eps, **norm)
    ref64 = af.linear_attn_ratio_reference(q.double(), k_sum.double(), cos.double(), sin.double(), eps, **norm64)
    assert_close_to_ref("r", out, ref, ref64, gen)


FOLD_SHAPES = [(1, 40, 3, 8), (2, 150, 2, 112)]   # (B, D_out, H, d): D_out not a multiple of the row tile


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", FOLD_SHAPES)
@pytest.mark.parametrize("with_gate", [False, True])
@pytest.mark.parametrize("out_dtype", [None, torch.float32])
def test_fold_out_projection(device, dtype, shape, with_gate, out_dtype, gen):
    B, D_out, H, d = shape
    w = randn(gen, D_out, H * d, dtype=dtype, device=device, scale=(H * d) ** -0.5)
    vk = randn(gen, B, H, d, d, dtype=torch.float32, device=device, scale=50.0)
    gate = randn(gen, B, D_out, dtype=dtype, device=device) if with_gate else None
    got = fold_out_projection_triton(w, vk, gate, out_dtype)
    assert got.dtype == (out_dtype or dtype) and got.shape == (B, D_out, H * d)
    ref = af.fold_out_projection_reference(w, vk, gate, out_dtype)
    ref64 = af.fold_out_projection_reference(w.double(), vk.double(), None if gate is None else gate.double())
    assert_close_to_ref("M", got, ref, ref64, gen)


@pytest.mark.parametrize("device", DEVICES)
def test_fold_out_projection_strided_weight(device, gen):
    """A weight with a row stride (a slice of a wider matrix) and a strided gate."""
    B, D_out, H, d = 2, 20, 2, 16
    big = randn(gen, D_out, H * d + 8, dtype=torch.bfloat16, device=device)
    w = big[:, 4:4 + H * d]
    vk = randn(gen, B, H, d, d, device=device, scale=10.0)
    gate = randn(gen, B, 2 * D_out, device=device)[:, ::2]
    assert_close_to_ref("M, strided", fold_out_projection_triton(w, vk, gate), af.fold_out_projection_reference(w, vk, gate),
                        af.fold_out_projection_reference(w.double(), vk.double(), gate.double()), gen)


@pytest.mark.parametrize("B", [1, 2])
@pytest.mark.parametrize("q_norm", ["given", "computed"])
def test_fold_is_exact(B, q_norm, gen):
    """r @ M^T == linear_attn_apply(...) @ W^T * gate (fp64): the fold changes only the rounding."""
    N, H, d = 23, 3, 8
    D = H * d
    q, k, v = qkv_views(gen, B, N, H, d, torch.float64, "cpu")
    cos, sin = (t.double() for t in rope_tables(gen, N, d, "cpu"))
    vk, k_sum = la.linear_attn_state_reference(k, v, cos, sin)
    w_q = randn(gen, D, dtype=torch.float64, shift=0.5)
    rstd = rn.rms_reciprocal_reference(q.reshape(B, N, D), 1e-6)
    w_out = randn(gen, 2 * D, D, dtype=torch.float64)
    gate = randn(gen, B, 2 * D, dtype=torch.float64)
    norm = {"q_weight": w_q, **({"q_rstd": rstd} if q_norm == "given" else {"q_norm_eps": 1e-6})}
    r = af.linear_attn_ratio_reference(q, k_sum, cos, sin, 1e-8, **norm)
    m = af.fold_out_projection_reference(w_out, vk, gate)
    got = torch.einsum("bnk,bok->bno", r.reshape(B, N, D), m)
    out = la.linear_attn_apply_reference(q, vk, k_sum, cos, sin, 1e-8, q_weight=w_q, q_rstd=rstd)
    expected = (out.reshape(B, N, D) @ w_out.t()) * gate[:, None, :]
    assert rel_err(got, expected) < 1e-12


def test_computed_q_rstd_is_qk_rms_reciprocals(gen):
    """The ratio's own q statistic (q_norm_eps) is exactly the q half of qk_rms_reciprocals (fp64)."""
    B, N, H, d = 2, 9, 3, 8
    q, _, _ = qkv_views(gen, B, N, H, d, torch.float64, "cpu")
    cos, sin = (t.double() for t in rope_tables(gen, N, d, "cpu"))
    k_sum = _total_k_sum(gen, B, N, H, d, "cpu").double()
    rstd, _ = rn.qk_rms_reciprocals_reference(q.reshape(B, N, H * d).repeat(1, 1, 2), H * d, 1e-6)
    assert torch.equal(af.linear_attn_ratio_reference(q, k_sum, cos, sin, 1e-8, q_rstd=rstd),
                       af.linear_attn_ratio_reference(q, k_sum, cos, sin, 1e-8, q_norm_eps=1e-6))


def test_fold_dispatchers_use_the_reference_on_cpu(gen):
    B, N, H, d = 1, 9, 2, 8
    q, _, _ = qkv_views(gen, B, N, H, d, torch.bfloat16, "cpu")
    cos, sin = rope_tables(gen, N, d, "cpu")
    k_sum = _total_k_sum(gen, B, N, H, d, "cpu")
    assert torch.equal(af.linear_attn_ratio(q, k_sum, cos, sin, 1e-8, q_norm_eps=1e-6),
                       af.linear_attn_ratio_reference(q, k_sum, cos, sin, 1e-8, q_norm_eps=1e-6))
    w, vk, gate = randn(gen, 5, H * d, dtype=torch.bfloat16), randn(gen, B, H, d, d), randn(gen, B, 5)
    assert torch.equal(af.fold_out_projection(w, vk, gate), af.fold_out_projection_reference(w, vk, gate))


def test_fold_ops_reject_bad_arguments():
    q = torch.randn(1, 5, 2, 8)
    with pytest.raises(ValueError, match="not both"):
        af.linear_attn_ratio(q, torch.ones(1, 2, 8), torch.zeros(5, 4), torch.zeros(5, 4), 1e-8,
                             q_rstd=torch.ones(1, 5), q_norm_eps=1e-6)
    with pytest.raises(ValueError, match="k_sum"):
        linear_attn_ratio_triton(q, torch.ones(1, 3, 8), torch.zeros(5, 4), torch.zeros(5, 4), 1e-8)
    with pytest.raises(ValueError, match="H \\* d"):
        af.fold_out_projection(torch.ones(4, 15), torch.ones(1, 2, 8, 8))


def test_fold_custom_ops_have_consistent_fake_implementations(gen):
    """torch.compile sees both ops as custom ops; their fake (shape) functions must match the real outputs."""
    B, N, H, d = 1, 6, 2, 8
    q, _, _ = qkv_views(gen, B, N, H, d, torch.bfloat16, "cpu")
    cos, sin = rope_tables(gen, N, d, "cpu")
    k_sum, w = _total_k_sum(gen, B, N, H, d, "cpu"), randn(gen, H * d, dtype=torch.bfloat16)
    w_out, vk, gate = randn(gen, 5, H * d, dtype=torch.bfloat16), randn(gen, B, H, d, d), randn(gen, B, 5)
    assert_fake_matches(lambda: af._ratio_op(q, k_sum, cos, sin, 1e-8, w, None, 1e-6))
    assert_fake_matches(lambda: af._ratio_op(q, k_sum, cos, sin, 1e-8, None, torch.ones(B, N), None))
    assert_fake_matches(lambda: af._fold_op(w_out, vk, gate, None))
    assert_fake_matches(lambda: af._fold_op(w_out, vk, None, torch.float32))


@pytest.mark.gpu
def test_gpu_fold_real_sizes():
    """One 480p block's sizes through the dispatchers, and the folded out projection against apply + out projection."""
    g = torch.Generator().manual_seed(random.SystemRandom().randrange(2**31))
    B, N, H, d = 2, 1560 * 2 + 17, 20, 112
    D = H * d
    q, k, v = qkv_views(g, B, N, H, d, torch.bfloat16, "cuda")
    cos, sin = rope_tables(g, N, d, "cuda")
    vk, k_sum = la.linear_attn_state(k, v, cos, sin)
    w_q = randn(g, D, dtype=torch.bfloat16, device="cuda", shift=1.0)
    norm = {"q_weight": w_q, "q_norm_eps": 1e-5}
    r = af.linear_attn_ratio(q, k_sum, cos, sin, 1e-8, **norm)
    r64 = af.linear_attn_ratio_reference(q.double(), k_sum.double(), cos.double(), sin.double(), 1e-8,
                                         q_weight=w_q.double(), q_norm_eps=1e-5)
    assert_close_to_ref("r, q_rstd computed", r, af.linear_attn_ratio_reference(q, k_sum, cos, sin, 1e-8, **norm),
                        r64, g)
    w_out = randn(g, D, D, dtype=torch.bfloat16, device="cuda", scale=D ** -0.5)
    gate = randn(g, B, D, dtype=torch.bfloat16, device="cuda")
    m = af.fold_out_projection(w_out, vk, gate)
    m64 = af.fold_out_projection_reference(w_out.double(), vk.double(), gate.double())
    assert_close_to_ref("M", m, af.fold_out_projection_reference(w_out, vk, gate), m64, g)
    # the model's product: y = r @ M^T per sample, against the unfolded apply -> out projection -> gate (fp64)
    y = torch.stack([r[i].view(N, D) @ m[i].t() for i in range(B)])
    q_rstd = rn.rms_reciprocal_reference(q.reshape(B, N, D).double(), 1e-5)
    out64 = la.linear_attn_apply_reference(q.double(), vk.double(), k_sum.double(), cos.double(), sin.double(), 1e-8,
                                           q_weight=w_q.double(), q_rstd=q_rstd)
    y64 = (out64.reshape(B, N, D) @ w_out.double().t()) * gate.double()[:, None, :]
    out = la.linear_attn_apply(q, vk, k_sum, cos, sin, 1e-8, q_weight=w_q, q_rstd=q_rstd.float())
    y_unfolded = torch.stack([out[i].view(N, D) @ w_out.t() for i in range(B)]) * gate[:, None, :]
    # no worse than the unfolded path's own bf16 roundings (r, M, y vs out, y, gate product)
    assert rel_err(y, y64) <= 2 * rel_err(y_unfolded, y64)
