"""QuantLinear execution paths: emulated reference, FP8 / NVFP4 torch._scaled_mm, dispatch per architecture."""

import copy

import pytest
import torch
from torch import nn

from quant import dispatch
from quant.formats import E2M1_MAGNITUDES, fp8_dequantize, nvfp4_dequantize, nvfp4_quantize
from quant.modules import QuantLinear, replace_linears
from quant.pack import pack_weight


def _rel(a, b):
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


def _layer(fmt, backend, k=64, n=48, bias=True, static=True, device="cpu", dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias).to(device=device, dtype=dtype)
    packed = pack_weight(lin.weight.detach(), fmt, 4.0 if static else None)
    return lin, QuantLinear.from_linear(lin, fmt, backend, packed)


@pytest.mark.parametrize("fmt", ["nvfp4", "fp8"])
@pytest.mark.parametrize("static", [True, False])
def test_emulated_equals_manual_dequantize_then_matmul(fmt, static):
    lin, q = _layer(fmt, "emulated", static=static)
    x = torch.randn(3, 5, 64)
    x2 = x.reshape(-1, 64)
    if fmt == "nvfp4":
        a_scale = q.input_scale if static else torch.tensor(float(x2.abs().max()) / 2688)
        xd = nvfp4_dequantize(nvfp4_quantize(x2, a_scale))
    else:
        a_scale = q.input_scale if static else x2.abs().max() / 448
        xd = fp8_dequantize((x2 / a_scale).clamp(-448, 448).to(torch.float8_e4m3fn), a_scale)
    want = (xd @ q.dequantized_weight().t() + lin.bias).view(3, 5, 48)
    assert torch.allclose(q(x), want, atol=1e-5)
    assert _rel(q(x), lin(x)) < (0.25 if fmt == "nvfp4" else 0.06)   # and it is close to the float layer


def test_dequant_backend_is_weight_only():
    lin, q = _layer("nvfp4", "dequant")
    x = torch.randn(7, 64)
    want = x @ q.dequantized_weight().t() + lin.bias
    assert torch.allclose(q(x), want, atol=1e-5)


def test_quant_linear_keeps_bias_and_replaces_in_place():
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32, bias=False)).to(torch.bfloat16)
    bias = model[0].bias
    packed = {"0": pack_weight(model[0].weight.detach(), "fp8", 2.0), "2": pack_weight(model[2].weight.detach(),
                                                                                           "nvfp4", None)}
    replace_linears(model, {"0": packed["0"]}, "fp8", "emulated")
    replace_linears(model, {"2": packed["2"]}, "nvfp4", "emulated")
    assert isinstance(model[0], QuantLinear) and isinstance(model[2], QuantLinear)
    assert model[0].bias.dtype == torch.bfloat16 and model[0].bias.data_ptr() == bias.data_ptr()
    assert model[2].bias is None and model[2].input_scale is None
    assert model(torch.randn(2, 32, dtype=torch.bfloat16)).dtype == torch.bfloat16
    with pytest.raises(TypeError):
        replace_linears(model, {"1": packed["0"]}, "fp8", "emulated")


@pytest.mark.parametrize("fmt", ["nvfp4", "fp8"])
def test_dtype_casts_leave_packed_tensors_alone(fmt):
    lin, q = _layer(fmt, "emulated")
    x = torch.randn(4, 64)
    before = q(x)
    dtypes = {k: v.dtype for k, v in q.named_buffers()}
    q.to(torch.bfloat16)
    assert {k: v.dtype for k, v in q.named_buffers()} == dtypes
    assert q.bias.dtype == torch.bfloat16                     # the bias follows the model dtype
    q.float()
    assert torch.allclose(q(x), before, atol=1e-2)


def test_fp8_scaled_mm_path_on_cpu_matches_emulation():
    """torch 2.13 also has a CPU _scaled_mm for FP8: the real operand preparation runs here too."""
    lin, q = _layer("fp8", "scaled_mm", k=64, n=48, dtype=torch.bfloat16)
    x = torch.randn(33, 64, dtype=torch.bfloat16)
    try:
        got = q(x)
    except (RuntimeError, NotImplementedError) as exc:
        pytest.skip(f"this torch build has no CPU FP8 _scaled_mm: {exc}")
    assert got.dtype == torch.bfloat16
    assert _rel(got, q.forward_emulated(x)) < 1e-2


def _fake_nvfp4_scaled_mm(a, b, scale_a, scale_b, out_dtype, **_):
    """What cuBLASLt computes for NVFP4, written from the layout spec (not from quant.swizzle):
    a (M, K/2) fp4x2 row-major, b (K/2, N) column-major, scales in the 128x4 tiled layout."""
    table = torch.tensor(E2M1_MAGNITUDES + tuple(-m for m in E2M1_MAGNITUDES))

    def decode(packed):   # (R, K/2) bytes -> (R, K), low nibble first
        p = packed.view(torch.uint8)
        return torch.stack([table[(p & 15).long()], table[(p >> 4).long()]], -1).flatten(-2)

    def unswizzle(flat, rows, cols):
        cp = -(-cols // 4) * 4
        out = torch.empty(rows, cols)
        raw = flat.view(torch.float8_e4m3fn).float()
        for r in range(rows):
            for c in range(cols):
                tile = (r // 128) * (cp // 4) + c // 4
                out[r, c] = raw[tile * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4]
        return out

    m, k = a.shape[0], a.shape[1] * 2
    n = b.shape[1]
    assert b.stride(0) == 1, "B must be column-major (TN layout)"
    assert scale_a.numel() == (-(-m // 128) * 128) * (-(-(k // 16) // 4) * 4)
    av = decode(a) * unswizzle(scale_a, m, k // 16).repeat_interleave(16, 1)
    bv = decode(b.t()) * unswizzle(scale_b, n, k // 16).repeat_interleave(16, 1)
    return (av @ bv.t()).to(out_dtype)


@pytest.mark.parametrize("m", [5, 130])
def test_nvfp4_scaled_mm_operands_with_spec_emulator(monkeypatch, m):
    """The real-NVFP4 wrapper (activation quantization, row padding, swizzle, TN transpose, tensor scales, bias)
    checked on CPU against a from-the-spec emulation of cuBLASLt's block-scaled GEMM."""
    monkeypatch.setattr(torch, "_scaled_mm", _fake_nvfp4_scaled_mm)
    lin, q = _layer("nvfp4", "scaled_mm", k=64, n=40)
    x = torch.randn(m, 64)
    assert _rel(q(x), q.forward_emulated(x)) < 1e-2


def _mock_cuda(monkeypatch, cap):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)


@pytest.mark.parametrize("cap,fmt,backend", [
    ((12, 0), "nvfp4", "scaled_mm"), ((10, 0), "nvfp4", "scaled_mm"), ((9, 0), "fp8", "scaled_mm"),
    ((8, 9), "fp8", "scaled_mm"), ((8, 6), None, "none"), ((7, 5), None, "none"),
])
def test_dispatch_auto_by_capability(monkeypatch, cap, fmt, backend):
    _mock_cuda(monkeypatch, cap)
    plan = dispatch.plan_for_device("cuda", "auto")
    assert (plan.format, plan.backend, plan.capability) == (fmt, backend, cap)


def test_dispatch_explicit_formats_and_fallbacks(monkeypatch):
    _mock_cuda(monkeypatch, (9, 0))
    assert dispatch.plan_for_device("cuda", "nvfp4").backend == "dequant"        # H100: no FP4 tensor cores
    _mock_cuda(monkeypatch, (8, 6))
    low = dispatch.plan_for_device("cuda", "auto", low_vram=True)
    assert (low.format, low.backend) == ("nvfp4", "dequant")
    _mock_cuda(monkeypatch, (12, 0))
    blackwell = dispatch.plan_for_device("cuda", "auto")
    assert dispatch.fallback_plan(blackwell).format == "fp8"                     # FP4 self-test failure -> FP8
    cpu = dispatch.plan_for_device("cpu", "auto")
    assert (cpu.format, cpu.backend) == (None, "none")
    assert dispatch.plan_for_device("cpu", "fp8").backend == "emulated"
    assert dispatch.plan_for_device("cuda", "none").format is None
    with pytest.raises(ValueError):
        dispatch.plan_for_device("cpu", "int4")


def test_dispatch_logs_once(monkeypatch, caplog):
    _mock_cuda(monkeypatch, (8, 9))
    dispatch._logged.clear()
    with caplog.at_level("INFO", logger="quant"):
        for _ in range(3):
            dispatch.plan_for_device("cuda:0", "auto")
    assert sum("quantization on cuda:0" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------- real GPUs

def _cap():
    return torch.cuda.get_device_capability()


@pytest.mark.gpu
@pytest.mark.parametrize("static", [True, False])
def test_fp8_scaled_mm_on_gpu_matches_emulation(static):
    if _cap() < (8, 9):
        pytest.skip(f"FP8 _scaled_mm needs sm_89+, this GPU is sm_{_cap()[0]}{_cap()[1]}")
    lin, q = _layer("fp8", "scaled_mm", k=2240, n=6720, device="cuda", dtype=torch.bfloat16, static=static)
    x = torch.randn(1000, 2240, device="cuda", dtype=torch.bfloat16)
    got = q(x)
    assert got.dtype == torch.bfloat16
    assert _rel(got, q.forward_emulated(x)) < 1e-2
    assert _rel(got, lin(x)) < 0.06


@pytest.mark.blackwell
@pytest.mark.parametrize("m", [100, 1000])
def test_real_nvfp4_on_blackwell_matches_emulation(m):
    if _cap()[0] not in (10, 12):
        pytest.skip(f"real NVFP4 matmuls need sm_100/sm_120; this GPU is sm_{_cap()[0]}{_cap()[1]}")
    lin, q = _layer("nvfp4", "scaled_mm", k=2240, n=6720, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(m, 2240, device="cuda", dtype=torch.bfloat16)
    got = q(x)
    assert _rel(got, q.forward_emulated(x)) < 1e-2
    assert _rel(got, lin(x)) < 0.25


def _tiny_cuda_model(num_layers):
    """A tiny bf16 SANA-Video on the GPU with random weights, and one block's inputs (latents, timestep, text)."""
    from core.config import tiny_config
    from core.model import SanaVideoTransformer
    cfg = tiny_config(num_layers=num_layers)
    torch.manual_seed(0)
    model = SanaVideoTransformer(cfg).to("cuda", torch.bfloat16)
    for p in model.parameters():
        nn.init.normal_(p, std=0.05)
    caption = torch.randn(1, 4, cfg.caption_channels, device="cuda")
    x, t = torch.randn(1, cfg.in_channels, 2, 4, 4, device="cuda", dtype=torch.bfloat16), torch.tensor([700.0]).cuda()
    with torch.no_grad():
        text = model.encode_text(caption)
    return model, x, t, text


@pytest.mark.gpu
def test_prepare_tiny_sana_on_gpu_picks_the_native_format(tmp_path):
    from quant.prepare import prepare_model
    from quant.recipe import default_recipe
    cap = _cap()
    model, x, t, text = _tiny_cuda_model(3)
    with torch.no_grad():
        want = model(x, t.cuda(), text).float()

    def loop(m):
        m(x, t.cuda(), text)

    model, report = prepare_model(model, "cuda", fmt="auto", recipe=default_recipe(skip_first_blocks=1,
                                  skip_last_blocks=1), forward_loop=loop, cache_dir=tmp_path, calibrator="hooks")
    expected = "nvfp4" if cap[0] in (10, 12) else "fp8" if cap >= (8, 9) else None
    assert report.plan.format == expected
    if expected is None:
        return
    assert report.plan.backend == "scaled_mm", report.notes   # the self-test passed on this GPU
    with torch.no_grad():
        got = model(x, t.cuda(), text).float()
    assert _rel(got, want) < (0.2 if expected == "nvfp4" else 0.06)

    # the engine replays quantized denoising forwards from CUDA graphs: they capture, and replay bit for bit
    from core.model.graphed import GraphedForward
    graphed = GraphedForward(model)
    with torch.no_grad():
        for _ in range(2):                     # warm-up and capture, then a replay
            torch.testing.assert_close(graphed(x, t.cuda(), text), model(x, t.cuda(), text), rtol=0, atol=0)
    assert graphed.captures == 1 and graphed.replays == 1


def test_activation_quantizers_fall_back_to_eager_when_compile_fails(monkeypatch, caplog):
    from quant import act_quant
    from quant.formats import fp8_quantize

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(act_quant, "_use_compiled", lambda x: act_quant._state["enabled"])
    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(act_quant, "_compiled", {})
    monkeypatch.setitem(act_quant._state, "enabled", True)
    x, scale = torch.randn(8, 32) * 10, torch.tensor(0.01)
    with caplog.at_level("WARNING", logger="quant"):
        got = act_quant.fp8_cast(x, scale)
    assert torch.equal(got.view(torch.uint8), fp8_quantize(x, scale)[0].view(torch.uint8))
    assert "using eager" in caplog.text and not act_quant._state["enabled"]
    data, block_scale = act_quant.nvfp4_quantize_activation(x, torch.tensor(0.05))
    q = nvfp4_quantize(x, torch.tensor(0.05))
    assert torch.equal(data, q.data) and torch.equal(block_scale.view(torch.uint8), q.block_scale.view(torch.uint8))


def test_fp8_layers_advertise_their_static_input_scale():
    """core's kernels write FP8 straight for a layer with `fp8_input_scale` (core/kernels/fp8_out.py): only calibrated
    FP8 layers on the _scaled_mm backend have one."""
    _, q = _layer("fp8", "scaled_mm", dtype=torch.bfloat16)
    assert q.fp8_input_scale is not None and float(q.fp8_input_scale) == float(q.input_scale)
    assert _layer("fp8", "emulated")[1].fp8_input_scale is None
    assert _layer("fp8", "scaled_mm", static=False)[1].fp8_input_scale is None
    assert _layer("nvfp4", "scaled_mm")[1].fp8_input_scale is None
    with pytest.raises(ValueError, match="FP8 input"):
        _layer("fp8", "emulated")[1](torch.zeros(2, 64).to(torch.float8_e4m3fn))


def test_prequantized_fp8_input_equals_the_layer_own_cast():
    from core.kernels.fp8_out import cast_e4m3

    _, q = _layer("fp8", "scaled_mm", dtype=torch.bfloat16)
    x = torch.randn(33, 64, dtype=torch.bfloat16)
    try:
        own = q(x)
    except (RuntimeError, NotImplementedError) as exc:
        pytest.skip(f"this torch build has no CPU FP8 _scaled_mm: {exc}")
    pre = q(cast_e4m3(x, q.fp8_input_scale))
    assert pre.dtype == torch.bfloat16 and torch.equal(pre, own)


@pytest.mark.gpu
def test_fp8_producer_kernels_match_the_cast_path(monkeypatch, tmp_path):
    """A prepared model whose apply / dwconv kernels write FP8 for their quantized consumers gives the result of the
    separate-cast path (same FP8 grid; rounding differs only where the fused kernel skips the bf16 step)."""
    if _cap() < (8, 9):
        pytest.skip("FP8 _scaled_mm needs sm_89+")
    from core.model import layers
    from quant.prepare import prepare_model
    from quant.recipe import default_recipe
    model, x, t, text = _tiny_cuda_model(2)
    model, report = prepare_model(model, "cuda", fmt="fp8", recipe=default_recipe(skip_first_blocks=0,
                                  skip_last_blocks=0), forward_loop=lambda m: m(x, t, text), cache_dir=tmp_path,
                                  calibrator="hooks")
    assert report.plan.backend == "scaled_mm"
    assert model.blocks[0].ffn.point.fp8_input_scale is not None
    with torch.no_grad():
        fused = model(x, t, text).float()
        monkeypatch.setattr(layers, "fp8_input_scale", lambda layer: None)
        cast = model(x, t, text).float()
    assert _rel(fused, cast) < 0.02


ALL_BLOCK_LINEARS = ("attn.qkv", "attn.out", "cross.q", "cross.out", "ffn.inverted", "ffn.point", "ffn.temporal")


def _fp8_block_and_inputs(per_frame: bool, streaming: bool, names=ALL_BLOCK_LINEARS):
    """A tiny bf16 block whose per-token Linears are FP8 QuantLinears (scaled_mm backend, static input scales),
    with B = 2 inputs; per-frame modulation / a streaming state (previous vk, k_sum and frame) on request."""
    from core.config import tiny_config
    from core.model.layers import SanaVideoBlock

    cfg = tiny_config()
    g = torch.Generator().manual_seed(3)
    block = SanaVideoBlock(cfg)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5)
    block = block.to(torch.bfloat16)
    reference = copy.deepcopy(block).float()               # the unquantized block, in fp32
    packed = {n: pack_weight(block.get_submodule(n).weight.detach(), "fp8", 8.0) for n in names}
    replace_linears(block, packed, "fp8", "scaled_mm")
    d, heads, xheads = cfg.hidden_size, cfg.num_attention_heads, cfg.num_cross_attention_heads
    hd = d // heads
    frames, hh, ww = 3, 2, 4
    n = frames * hh * ww
    bf = torch.bfloat16
    x = torch.randn(2, n, d, generator=g).to(bf)
    t_mod = (torch.randn(2, frames if per_frame else 1, 6, d, generator=g) * 0.5).to(bf)
    k = torch.randn(2, xheads, 5, d // xheads, generator=g).to(bf)
    v = torch.randn(2, xheads, 5, d // xheads, generator=g).to(bf)
    angles = torch.rand(n, hd // 2, generator=g) * 3
    args = [x, t_mod, k, v, None, angles.cos(), angles.sin(), (frames, hh, ww)]
    if streaming:
        args += [torch.rand(2, heads, hd, hd, generator=g) * 4, torch.rand(2, heads, hd, generator=g) * 4,
                 torch.randn(2, hh * ww, d, generator=g).to(bf)]
    return block, reference, args


@pytest.mark.parametrize("per_frame,streaming,names", [
    (False, False, ALL_BLOCK_LINEARS), (False, True, ALL_BLOCK_LINEARS), (True, False, ALL_BLOCK_LINEARS),
    (True, True, ALL_BLOCK_LINEARS),
    (False, True, ("attn.qkv",)),                     # plain out / cross layers: the attention fold with FP8 qkv input
    (False, False, ("ffn.inverted", "ffn.temporal")),  # FP8 only in the FFN
])
def test_fp8_block_route_is_as_accurate_as_the_cast_route(monkeypatch, per_frame, streaming, names):
    """One FP8 block's update (out - x) through the eager CUDA route (norm kernels writing E4M3, one-pass gated
    residuals with E4M3 copies, E4M3 temporal taps; core/kernels/fp8_residual.py) is as close to the unquantized
    block's as the separate-cast route's (the routes round differently: the fused kernels round fp32 to E4M3 once,
    the cast route rounds to bf16 first), for per-sample and per-frame gates, with and without a streaming state;
    the caller's x is left alone."""
    from core.model import layers

    block, reference, args = _fp8_block_and_inputs(per_frame, streaming, names)
    x = args[0]
    x_before = x.clone()
    with torch.no_grad():
        exact = reference(*[a.float() if isinstance(a, torch.Tensor) else a for a in args])[0] - x.float()
        try:
            cast = block(*args)[0].float() - x.float()            # CPU: no fused route, every layer casts
        except (RuntimeError, NotImplementedError) as exc:
            pytest.skip(f"this torch build has no CPU FP8 _scaled_mm: {exc}")
        monkeypatch.setattr(layers, "eager_kernels", lambda t: not torch.compiler.is_compiling())
        fused = block(*args)[0].float() - x.float()
    assert torch.equal(x, x_before)
    err_fused, err_cast = _rel(fused, exact), _rel(cast, exact)
    assert torch.isfinite(fused).all() and err_fused <= 1.2 * err_cast, (err_fused, err_cast)


def test_fp8_block_glue_on_cpu_matches_the_cast_path(monkeypatch):
    """The eager FP8 block route (LayerNorm kernels writing E4M3 for qkv / inverted conv, one gated-residual pass that
    also writes cross-attention's E4M3 input, the stacked temporal taps as E4M3; core/kernels/fp8_residual.py) gives
    the separate-cast route's result. Runs the block's CUDA route on the CPU: its kernels' references and CPU FP8
    _scaled_mm (skips where this torch has none)."""
    from core.config import tiny_config
    from core.model import SanaVideoTransformer, layers
    from quant.recipe import default_recipe

    cfg = tiny_config(num_layers=2)
    torch.manual_seed(0)
    model = SanaVideoTransformer(cfg).to(torch.bfloat16)
    for p in model.parameters():
        nn.init.normal_(p, std=0.05)
    names = default_recipe(skip_first_blocks=0, skip_last_blocks=0).select(model)
    packed = {n: pack_weight(model.get_submodule(n).weight.detach(), "fp8", 4.0) for n in names}
    replace_linears(model, packed, "fp8", "scaled_mm")
    x = torch.randn(1, cfg.in_channels, 3, 4, 4, dtype=torch.bfloat16)
    t = torch.tensor([700.0])
    with torch.no_grad():
        text = model.encode_text(torch.randn(1, 4, cfg.caption_channels))
        try:
            cast = model(x, t, text).float()                 # CPU: no fused route, every layer casts its input
        except (RuntimeError, NotImplementedError) as exc:
            pytest.skip(f"this torch build has no CPU FP8 _scaled_mm: {exc}")
        calls = {"residual": 0, "taps": 0}

        def counting(name, fn):
            def wrapped(*args, **kwargs):
                calls[name] += 1
                return fn(*args, **kwargs)
            return wrapped
        monkeypatch.setattr(layers, "eager_kernels", lambda t: not torch.compiler.is_compiling())
        monkeypatch.setattr(layers, "gated_residual", counting("residual", layers.gated_residual))
        monkeypatch.setattr(layers, "stack_taps_e4m3", counting("taps", layers.stack_taps_e4m3))
        fused = model(x, t, text).float()
    assert calls == {"residual": 2 * cfg.num_layers, "taps": cfg.num_layers}
    assert torch.isfinite(fused).all() and _rel(fused, cast) < 0.02
