"""Building blocks of the SANA-Video Linear DiT in token-major layout (B, N, D), N = T*H'*W' in (f, h, w) order.

Every module here holds exactly the parameters of its diffusers / official counterpart (fused where the official
code fuses: qkv, cross kv; 1x1 convs as Linears; the dense (3,1) temporal conv as Linear(3D, D)).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from core.config import TransformerConfig
from core.kernels.attn_fold import fold_out_projection, linear_attn_ratio
from core.kernels.dwconv_glu import dwconv3x3_glu
from core.kernels.fp8_out import fp8_input_scale
from core.kernels.fp8_residual import gated_residual, stack_taps_e4m3
from core.kernels.gate_fold import linear_per_sample_bias
from core.kernels.layernorm_modulate import add_layernorm_modulate, layernorm_modulate
from core.kernels.linear_attention import linear_attn_apply, linear_attn_state, linear_attn_state_totals
from core.kernels.rms_norm import qk_rms_reciprocals, rms_norm, rms_reciprocal
from core.kernels.temporal_residual import stack_temporal_taps, temporal_gated_residual

# A/B knob: SANA_VIDEO_FUSED_DWCONV=0 runs the FFN middle as SiLU -> cuDNN depthwise conv -> GLU (three passes over
# the 2F-wide tensor) instead of the fused dwconv3x3_glu kernel
FUSED_DWCONV = os.environ.get("SANA_VIDEO_FUSED_DWCONV", "1") not in ("", "0", "false", "False")
# In-model A/B knobs (bench/gaps.py --ab 'core.model.layers.MIXFFN_CFG={...}'). halved_preactivation: on CUDA in eager
# mode the inverted GEMM writes its output / 2 (alpha = 1/2, halved bias: exact), the form whose SiLU the fused
# dwconv kernel computes without a multiply (MixFFN._inverted_halved)
MIXFFN_CFG = {"halved_preactivation": True}
# depthwise conv calls above this many elements are split (int32 indexing limit, as the official code does)
_MAX_CONV_ELEMENTS = 2**30
# additive text-mask bias of the official code and diffusers: masked keys get exp(-1e4) == 0
TEXT_MASK_BIAS = -10000.0


class RMSNorm(nn.Module):
    """RMSNorm over the last dim: statistics in fp32 (fp64 for fp64 inputs), result in the input dtype, then the
    learned weight."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight.to(x.dtype)


def plain_linear(module: nn.Module) -> bool:
    """Whether a layer may be used through its weight directly (gate folding, shifted GEMMs): a plain, unhooked
    nn.Linear, and only for inference (those paths write into preallocated outputs, which autograd cannot record). A
    quantized or ModelOpt-converted layer, or one with calibration hooks, must be called as a module."""
    return (type(module) is nn.Linear and not (module._forward_hooks or module._forward_pre_hooks)
            and not torch.is_grad_enabled())


def eager_kernels(x: torch.Tensor) -> bool:
    """Whether to call the fused norm kernels directly: on CUDA in eager mode. Under torch.compile the plain ops are
    better, because inductor fuses them with their neighbours (a custom-op kernel is opaque to it)."""
    return x.is_cuda and not torch.compiler.is_compiling()


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without affine parameters over the last dim."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, frames: int) -> torch.Tensor:
    """x (B, N, D) * (1 + scale) + shift with per-frame shift/scale (B, T', D), T' in {1, frames}."""
    b, n, d = x.shape
    x4 = x.view(b, frames, n // frames, d)                                   # (B, T, HW, D)
    out = x4 * (1 + scale[:, :, None]) + shift[:, :, None]
    return out.view(b, n, d)


def gated(x: torch.Tensor, gate: torch.Tensor, frames: int) -> torch.Tensor:
    """gate (B, T', D) * x (B, N, D) per frame."""
    b, n, d = x.shape
    return (x.view(b, frames, n // frames, d) * gate[:, :, None]).view(b, n, d)


def timestep_sinusoid(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[cos, sin] embedding (diffusers Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)). t (M,) -> (M, dim) fp32."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(exponent / half)
    args = t[:, None].float() * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoid(256) -> Linear -> SiLU -> Linear: the pre-t_block embedding `t` (used by the final layer)."""

    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.linear_1 = nn.Linear(freq_dim, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        emb = timestep_sinusoid(t, self.freq_dim).to(dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


class CaptionProjection(nn.Module):
    """Linear -> GELU(tanh) -> Linear (PixArtAlphaTextProjection / official y_proj Mlp)."""

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, caption: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(caption), approximate="tanh"))


class LinearSelfAttention(nn.Module):
    """LiteLAReLURope: fused qkv (no bias) -> RMSNorm across heads on q, k -> ReLU linear attention with 3D RoPE on
    the numerator -> out projection. With a streaming state, previous blocks' (vk, k_sum) are added to this chunk's."""

    def __init__(self, dim: int, heads: int, norm_eps: float, attn_eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.attn_eps = attn_eps
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.norm_q = RMSNorm(dim, norm_eps)
        self.norm_k = RMSNorm(dim, norm_eps)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                prev_vk: torch.Tensor | None = None, prev_k_sum: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, N, D) -> (out (B, N, D), own vk (B, H, d, d) fp32, own k_sum (B, H, d) fp32)."""
        out, own_vk, own_k_sum = self.attend(x, cos, sin, prev_vk, prev_k_sum)
        return self.out(out), own_vk, own_k_sum

    def attend(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               prev_vk: torch.Tensor | None = None, prev_k_sum: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """forward without the out projection: (attention output (B, N, D) for `self.out`, own vk, own k_sum)."""
        b, n, d = x.shape
        qkv = self.qkv(x)                                                     # (B, N, 3D)
        q_rstd = q_weight = k_rstd = k_weight = None
        if eager_kernels(qkv):
            # one pass over q and k of the fused projection for their 1/rms only: the attention kernels apply the
            # norms (and weights) as they load q and k, so no normalized copies are written; norm_q.eps == norm_k.eps
            q_rstd, k_rstd = qk_rms_reciprocals(qkv, d, self.norm_k.eps)                # (B, N) fp32 each
            q, q_weight, k, k_weight = qkv[..., :d], self.norm_q.weight, qkv[..., d:2 * d], self.norm_k.weight
        else:
            q, k = self.norm_q(qkv[..., :d]), self.norm_k(qkv[..., d:2 * d])
        q = q.view(b, n, self.heads, self.head_dim)                           # (B, N, H, d)
        k = k.view(b, n, self.heads, self.head_dim)
        v = qkv[..., 2 * d:].reshape(b, n, self.heads, self.head_dim)
        own_vk, own_k_sum, vk, k_sum = self._state(k, v, cos, sin, k_weight, k_rstd, prev_vk, prev_k_sum)
        # (B, N, H, d) in x.dtype, or FP8 when the out projection takes FP8 input (core/kernels/fp8_out.py)
        out = linear_attn_apply(q, vk, k_sum, cos, sin, self.attn_eps, fp8_input_scale(self.out), q_weight, q_rstd)
        return out.reshape(b, n, d), own_vk, own_k_sum


    def attend_folded(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, gate: torch.Tensor,
                      prev_vk: torch.Tensor | None = None, prev_k_sum: torch.Tensor | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """attend + the gated out projection's weight folded with the state (core/kernels/attn_fold.py), for a plain
        out Linear: (r (B, N, D), m (B, D, D), both in the qkv projection's output dtype, own vk, own k_sum) with
        gate * (attend(x) @ W_out^T) == r[i] @ m[i]^T per sample i. gate (B, 1, D). x may be E4M3 (an FP8 qkv
        layer's pre-quantized input).

        Why: `attend`'s apply kernel multiplies every token by the (d x d) state of its head before the out GEMM;
        folding the state into the GEMM's weight leaves an elementwise ratio kernel (RoPE, ReLU, denominator) and
        a per-sample (D x D) product."""
        b, n, d = x.shape
        qkv = self.qkv(x)                                                     # (B, N, 3D)
        # k's 1/rms first (the state kernel applies the norm on load); q's is computed by the ratio kernel itself
        k_rstd = rms_reciprocal(qkv[..., d:2 * d], self.norm_k.eps)           # (B, N) fp32
        q = qkv[..., :d].view(b, n, self.heads, self.head_dim)                # (B, N, H, d)
        k = qkv[..., d:2 * d].view(b, n, self.heads, self.head_dim)
        v = qkv[..., 2 * d:].view(b, n, self.heads, self.head_dim)
        own_vk, own_k_sum, vk, k_sum = self._state(k, v, cos, sin, self.norm_k.weight, k_rstd, prev_vk, prev_k_sum)
        r = linear_attn_ratio(q, k_sum, cos, sin, self.attn_eps, q_weight=self.norm_q.weight,
                              q_norm_eps=self.norm_q.eps)                     # (B, N, H, d)
        m = fold_out_projection(self.out.weight, vk, gate[:, 0], out_dtype=r.dtype)   # (B, D, D)
        return r.reshape(b, n, d), m, own_vk, own_k_sum

    @staticmethod
    def _state(k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_weight: torch.Tensor | None,
               k_rstd: torch.Tensor | None, prev_vk: torch.Tensor | None, prev_k_sum: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """This chunk's own (vk, k_sum) and the totals with the previous blocks' state (official: vk += cum_vk)."""
        if prev_vk is None:
            own_vk, own_k_sum = linear_attn_state(k, v, cos, sin, k_weight, k_rstd)
            return own_vk, own_k_sum, own_vk, own_k_sum
        return linear_attn_state_totals(k, v, cos, sin, prev_vk, prev_k_sum, k_weight, k_rstd)


class CrossAttention(nn.Module):
    """Softmax cross-attention to the caption: q Linear+bias, fused kv Linear+bias, RMSNorm across heads on q and k,
    SDPA with the additive text-mask bias, out Linear+bias. K/V come precomputed from `text_kv`."""

    def __init__(self, dim: int, heads: int, norm_eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.norm_q = RMSNorm(dim, norm_eps)
        self.norm_k = RMSNorm(dim, norm_eps)
        self.out = nn.Linear(dim, dim)

    def text_kv(self, caption: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """caption (B, L, D) projected+normed -> K, V (B, H, L, d), computed once per prompt."""
        b, tokens, _ = caption.shape
        k, v = self.kv(caption).chunk(2, dim=-1)
        k = self.norm_k(k)
        k = k.view(b, tokens, self.heads, self.head_dim).transpose(1, 2).contiguous()
        v = v.reshape(b, tokens, self.heads, self.head_dim).transpose(1, 2).contiguous()
        return k, v

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                offset: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, D); k, v (B, H, L, d); bias (B, 1, 1, L) additive, or None when every key is valid.

        offset (B, D) or None: a per-sample constant still owed to x (core.kernels.gate_fold). The result is then
        for input x + offset, and includes + offset (so that the caller's residual x + result is complete); both
        go through biases (needs plain q / out Linears)."""
        out = self._attend(x, k, v, bias, offset)
        if offset is not None:
            return linear_per_sample_bias(out, self.out.weight, self.out.bias + offset)
        return self.out(out)

    def accumulate(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                   offset: torch.Tensor) -> torch.Tensor:
        """The residual form of forward(x, ..., offset) for plain q / out Linears: adds the out projection's product
        to x in place (the GEMM accumulates into x, no separate output) and returns what is still owed to x, the
        per-sample constant out.bias + offset (B, D). x must be contiguous and the caller's to change."""
        out = self._attend(x, k, v, bias, offset)
        for i in range(x.shape[0]):
            x[i].addmm_(out[i], self.out.weight.t())
        return self.out.bias + offset

    def _attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                offset: torch.Tensor | None) -> torch.Tensor:
        """x (B, N, D) -> attention output (B, N, D) token-major, before the out projection (q of x + offset)."""
        if offset is not None:
            q = linear_per_sample_bias(x, self.q.weight, self.q.bias + offset @ self.q.weight.t())
        else:
            q = self.q(x)
        b, n, d = q.shape
        q = rms_norm(q, self.norm_q.weight, self.norm_q.eps) if eager_kernels(q) else self.norm_q(q)
        q = q.view(b, n, self.heads, self.head_dim).transpose(1, 2)                       # (B, H, N, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)                    # (B, H, N, d)
        return out.transpose(1, 2).reshape(b, n, d)


class MixFFN(nn.Module):
    """GLUMBConvTemp in token-major form.

    inverted 1x1 conv (Linear D->2F, bias) -> SiLU -> depthwise 3x3 per frame (bias) -> x * SiLU(gate) (first half x,
    second half gate) -> point 1x1 conv (Linear F->D, no bias) = u -> u + Conv_t(u), where the dense (D, D, 3, 1)
    temporal kernel is Linear(3D, D) over [u_{t-1}, u_t, u_{t+1}] (tap 0 looks one frame back). The frame before the
    first one is `prev_frame` (streaming) or zero; the frame after the last one is always zero (CachedGLUMBConvTemp).
    The block's gated residual update is part of the forward, so that with one gate per sample the temporal tail
    runs as core.kernels.temporal_residual's shifted GEMMs (no stacked tensor, one elementwise pass).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dim = dim
        self.hidden = hidden
        self.inverted = nn.Linear(dim, 2 * hidden)
        self.depthwise = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.point = nn.Linear(hidden, dim, bias=False)
        self.temporal = nn.Linear(3 * dim, dim, bias=False)

    def _depthwise(self, h: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
        """h (B, N, 2F) -> depthwise 3x3 conv over each frame, same shape. Runs channels-last (no transposed copy)."""
        b, n, c = h.shape
        img = h.view(b * frames, height, width, c).permute(0, 3, 1, 2)      # (B*T, 2F, H', W') channels-last view
        per_call = max(1, _MAX_CONV_ELEMENTS // max(1, c * height * width))
        if b * frames <= per_call:
            out = self.depthwise(img)
        else:
            out = torch.cat([self.depthwise(part) for part in img.split(per_call, dim=0)], dim=0)
        return out.permute(0, 2, 3, 1).reshape(b, n, c)

    def _halves_preactivation(self, x: torch.Tensor) -> bool:
        """Whether the inverted GEMM writes its output / 2 for the fused kernel (plain bf16/fp16 layer, CUDA, eager)."""
        return (MIXFFN_CFG["halved_preactivation"] and FUSED_DWCONV and eager_kernels(x)
                and x.dtype in (torch.bfloat16, torch.float16) and plain_linear(self.inverted)
                and self.inverted.bias is not None)

    def _inverted_halved(self, x: torch.Tensor) -> torch.Tensor:
        """inverted(x) / 2, exactly: alpha = 1/2 and a halved bias in the GEMM's bias epilogue (scaling by a power of
        two does not round). x (B, N, D) -> (B, N, 2F)."""
        w = self.inverted.weight
        out = torch.addmm(self.inverted.bias * 0.5, x.reshape(-1, x.shape[-1]), w.t(), alpha=0.5)
        return out.view(*x.shape[:-1], w.shape[0])

    def _glu_middle(self, h: torch.Tensor, frames: int, height: int, width: int, halved: bool = False
                    ) -> torch.Tensor:
        """Pre-activation h (B, N, 2F) -> SiLU -> depthwise 3x3 per frame (+bias) -> value * SiLU(gate): (B, N, F).
        halved: h holds the pre-activation / 2 (fused path only)."""
        b, n, _ = h.shape
        if FUSED_DWCONV:
            # one pass (Triton on CUDA: the 2F-wide tensor is read once; reference math on the CPU); FP8 output
            # when the point conv takes FP8 input (core/kernels/fp8_out.py)
            glu = dwconv3x3_glu(h.view(b * frames, height, width, 2 * self.hidden), self.depthwise.weight,
                                self.depthwise.bias, silu_input=True, out_scale=fp8_input_scale(self.point),
                                halved_input=halved)                        # (B*T, H', W', F)
            return glu.view(b, n, self.hidden)
        value, gate = self._depthwise(F.silu(h), frames, height, width).chunk(2, dim=-1)
        return value * F.silu(gate)

    def forward(self, residual: torch.Tensor, x: torch.Tensor, gate: torch.Tensor, frames: int, height: int,
                width: int, prev_frame: torch.Tensor | None = None, inplace: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """residual + gate * ffn(x): residual, x (B, N, D), gate (B, T', D) -> (new residual (B, N, D),
        u (B, T, H'W', D) post-point-conv features). inplace=True: the residual may be updated in place (the
        caller does not need it any more)."""
        b, n, d = x.shape
        halved = self._halves_preactivation(x)
        h = self._inverted_halved(x) if halved else self.inverted(x)         # (B, N, 2F) pre-activation (/ 2)
        glu = self._glu_middle(h, frames, height, width, halved)                   # (B, N, F)
        u = self.point(glu).view(b, frames, height * width, d)                      # (B, T, HW, D)
        prev = None if prev_frame is None else prev_frame.to(u.dtype)
        if gate.shape[1] == 1 and plain_linear(self.temporal):   # uses the weight directly: plain layers only
            return temporal_gated_residual(residual, u, gate, self.temporal.weight, prev, inplace), u
        fp8_scale = fp8_input_scale(self.temporal) if eager_kernels(u) else None
        if fp8_scale is not None:
            # FP8 temporal GEMM (no C operand, fixed weight): the stacked taps written once as E4M3, then one pass
            # residual + gate * (u + Conv_t(u)) (core/kernels/fp8_residual.py)
            conv_t = self.temporal(stack_taps_e4m3(u, prev, fp8_scale)).view(b, n, d)      # (B, N, D)
            return gated_residual(residual, u.view(b, n, d), gate, conv_t,
                                  inplace=inplace and residual.is_contiguous())[0], u
        return residual + gated(self._temporal_via_module(u, prev), gate, frames), u

    def _temporal_via_module(self, u: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """u + Conv_t(u) through the temporal module on the stacked [u_{t-1}, u_t, u_{t+1}]: (B, N, D)."""
        b, t, s, d = u.shape
        return (u + self.temporal(stack_temporal_taps(u, prev))).view(b, t * s, d)


class SanaVideoBlock(nn.Module):
    """x += gate_msa * attn(mod(LN(x))); x += cross(x); x += gate_mlp * ffn(mod(LN(x)))."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        dim = cfg.hidden_size
        self.norm_eps = cfg.norm_eps
        self.scale_shift_table = nn.Parameter(torch.zeros(6, dim))
        self.attn = LinearSelfAttention(dim, cfg.num_attention_heads, cfg.qk_norm_eps, cfg.linear_attn_eps)
        self.cross = CrossAttention(dim, cfg.num_cross_attention_heads, cfg.cross_norm_eps)
        self.ffn = MixFFN(dim, cfg.ffn_hidden)

    def forward(self, x: torch.Tensor, t_mod: torch.Tensor, text_k: torch.Tensor, text_v: torch.Tensor,
                text_bias: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor, grid: tuple[int, int, int],
                prev_vk: torch.Tensor | None = None, prev_k_sum: torch.Tensor | None = None,
                prev_frame: torch.Tensor | None = None, inplace: bool = False,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, N, D); t_mod (B, T', 6, D). Returns (x, own vk, own k_sum, u (B, T, HW, D)).

        inplace=True: x may be updated in place and returned (the caller, the model's block loop, does not use the
        block's input again); saves a copy of x per residual GEMM."""
        frames, height, width = grid
        mod = self.scale_shift_table.to(t_mod.dtype) + t_mod                 # (B, T', 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(dim=2)

        fused = eager_kernels(x)
        if fused:   # E4M3 output when the qkv projection is an FP8 GEMM with a static input scale
            h = layernorm_modulate(x, shift_msa, scale_msa, self.norm_eps, out_scale=fp8_input_scale(self.attn.qkv))
        else:
            h = modulate(layer_norm(x, self.norm_eps), shift_msa, scale_msa, frames).to(x.dtype)
        if self._fold_attention_gate(gate_msa):
            # x + gate * (o W^T + b) = [x + r m^T] + gate * b: the state and the gate folded into the out GEMM's
            # per-sample weight m (attend_folded), the constant owed via biases (core/kernels/gate_fold.py)
            r, m, own_vk, own_k_sum = self.attn.attend_folded(h, cos, sin, gate_msa, prev_vk, prev_k_sum)
            if not (inplace and x.is_contiguous()):
                x = x.clone(memory_format=torch.contiguous_format)             # the caller keeps its x
            for i in range(x.shape[0]):
                x[i].addmm_(r[i], m[i].t())
            offset = gate_msa[:, 0] * self.attn.out.bias                                # (B, D)
            # x is this block's own tensor now: cross-attention's out GEMM accumulates into it; its bias and the
            # offset are still owed, a per-sample constant that the next residual pass adds
            owed = self.cross.accumulate(x, text_k, text_v, text_bias, offset)         # (B, D)
            cross_out = owed[:, None, :].expand_as(x)                                    # stride-0 rows
        else:
            attn_out, own_vk, own_k_sum = self.attn.attend(h, cos, sin, prev_vk, prev_k_sum)
            if fused:
                # one pass for x + gate * out(attn) (per-frame gates, FP8 layers), which also writes the E4M3 copy
                # that an FP8 cross-attention q GEMM reads
                x, xq = gated_residual(x, self.attn.out(attn_out), gate_msa,
                                       out_scale=fp8_input_scale(self.cross.q), inplace=inplace and x.is_contiguous())
                cross_out = self.cross(x if xq is None else xq, text_k, text_v, text_bias)
            else:
                x = x + gated(self.attn.out(attn_out), gate_msa, frames)
                cross_out = self.cross(x, text_k, text_v, text_bias)
        if fused:   # residual + norm + modulation in one pass (E4M3 norm output for an FP8 inverted conv)
            x, h = add_layernorm_modulate(x, cross_out, None, shift_mlp, scale_mlp, self.norm_eps,
                                          out_scale=fp8_input_scale(self.ffn.inverted))
        else:
            x = x + cross_out
            h = modulate(layer_norm(x, self.norm_eps), shift_mlp, scale_mlp, frames).to(x.dtype)
        # x is a fresh tensor here (the residual pass above wrote it), so the FFN tail may accumulate into it
        x, u = self.ffn(x, h, gate_mlp, frames, height, width, prev_frame, inplace=True)
        return x, own_vk, own_k_sum, u

    def _fold_attention_gate(self, gate: torch.Tensor) -> bool:
        """Gate folding (core.kernels.gate_fold) in eager mode with one gate per sample and plain layers; under
        torch.compile inductor fuses the plain residual into one pass itself and out= GEMMs would become copies."""
        return (gate.shape[1] == 1 and not torch.compiler.is_compiling() and self.attn.out.bias is not None
                and self.cross.q.bias is not None and self.cross.out.bias is not None
                and not (self.cross._forward_hooks or self.cross._forward_pre_hooks)   # accumulate skips its call
                and all(plain_linear(m) for m in (self.attn.out, self.cross.q, self.cross.out)))
