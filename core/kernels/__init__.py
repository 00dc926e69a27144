"""GPU kernels for the hot path. Each op has a readable PyTorch reference next to it and a test; the dispatchers pick
the Triton kernel for CUDA tensors and the reference elsewhere (or when Triton cannot be imported, or when
SANA_VIDEO_DISABLE_TRITON=1).

- linear_attention: linear_attn_state(k, v, cos, sin), linear_attn_state_totals(k, v, cos, sin, prev_vk, prev_k_sum)
  (streaming: own state and totals in one pass), linear_attn_apply(q, vk, k_sum, cos, sin, eps, ...) (can apply
  the q / k RMSNorms on load: q_rstd, q_weight; k_rstd, k_weight)
- attn_fold: linear_attn_ratio(q, k_sum, cos, sin, eps, ...), fold_out_projection(weight, vk, gate): the apply step
  folded into the out projection (y = r @ M^T)
- layernorm_modulate: layernorm_modulate(x, shift, scale, eps), add_layernorm_modulate(x, y, gate, shift, scale, eps)
  (E4M3 output with out_scale)
- rms_norm: rms_norm(x, weight, eps), qk_rms_reciprocals(qkv, D, eps), rms_reciprocal(x, eps)
- dwconv_glu: dwconv3x3_glu(x, weight, bias, silu_input=False, halved_input=False)
- temporal_residual, gate_fold: GEMM-only forms of the gated residual updates; scale_rows: their gate-scaled weights
- fp8_residual: gated_residual(x, a, gate, b, out_scale), stack_taps_e4m3(u, prev, scale): the FP8 block's residual
  passes, each also writing the next FP8 GEMM's E4M3 input (fp8_out: the contract)

The Triton code lives in the matching `*_triton` modules, imported only on the first CUDA call."""
