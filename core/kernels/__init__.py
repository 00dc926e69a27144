"""GPU kernels for the hot path. Each op has a readable PyTorch reference next to it and a test; `dispatch`-style
functions pick the kernel on CUDA and the reference elsewhere."""
