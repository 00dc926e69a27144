"""Low-precision execution of the DiT: ModelOpt calibration, NVFP4 / FP8 packing, and low-precision matmuls."""
