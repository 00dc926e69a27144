"""GPU kernels for the hot path. Each op has a readable PyTorch reference next to it and a test; the dispatchers pick
the Triton kernel for CUDA tensors and the reference elsewhere (or when Triton cannot be imported, or when
SANA_VIDEO_DISABLE_TRITON=1).

- linear_attention: linear_attn_state(k, v, cos, sin), linear_attn_apply(q, vk, k_sum, cos, sin, eps, ...) (can apply
  the q / k RMSNorms on load: q_rstd, q_weight; k_rstd, k_weight)
- layernorm_modulate: layernorm_modulate(x, shift, scale, eps), add_layernorm_modulate(x, y, gate, shift, scale, eps)
- rms_norm: rms_norm(x, weight, eps), qk_rms_reciprocals(qkv, D, eps)
- dwconv_glu: dwconv3x3_glu(x, weight, bias, silu_input=False)
- temporal_residual, gate_fold: GEMM-only forms of the gated residual updates; scale_rows: their gate-scaled weights

The Triton code lives in the matching `*_triton` modules, imported only on the first CUDA call."""
