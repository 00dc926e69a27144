"""Streaming decode: latent blocks in, pixel frames out, with the causal cache kept between calls.

diffusers' `AutoencoderKLWan.decode` clears its feature cache at the start and end of every call, so each call
decodes a separate video. Here the cache lives in the `WanStreamingDecoder` until `reset()`: decoding a video block
by block (LongSANA: 11 + 10 latent frames, or any split) gives the frames of one whole-video decode, and a project
can save the cache after block k and resume later without decoding blocks 0..k again.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from core.errors import ProjectError
from core.vae.config import WanVAEConfig
from core.vae.wan import CACHE_T, ConvCache, WanVAEDecoder

# Recommended settings for a CUDA GPU (bench/vae.py, 10-latent-frame block at 480x832: H200 330 ms vs diffusers fp32
# 1275 ms / bf16 833 ms in the same run; H100 run of an earlier revision 422 ms vs 1478 / 944 ms). bf16 frames are
# ~47 dB PSNR (uint8) from a true-fp32 decode, diffusers' bf16 decode ~46 dB. Peak ~10 GB (weights included) at 4
# frames per pass; frames_per_pass=2 peaks at ~7 GB, same speed within noise.
#   WanStreamingDecoder(model, **GPU_FAST_SETTINGS)
GPU_FAST_SETTINGS = dict(dtype=torch.bfloat16, frames_per_pass=4, fast=True, subpixel=True)

_FRAMES_DONE_KEY = "latent_frames_done"
_CONV_PREFIX = "conv."


class WanStreamingDecoder:
    """Decodes one video at a time from consecutive latent blocks.

    decode_block(latents (B, 16, t, h, w)) -> frames (B, 3, F, 8h, 8w) in [-1, 1], model dtype;
    F = 1 + 4 (t - 1) for the first block of a video, 4 t for every later one.
    `frames_per_pass` latent frames go through the network at once (1 = diffusers' peak memory; None = 1 on GPU,
    4 on CPU; the frames match for any value).

    Speed options (defaults keep the reference behaviour; see bench/vae.py for the H100 numbers):
      dtype: cast the model's weights (e.g. torch.bfloat16: cuDNN accumulates convs in fp32, norms run in fp32);
      fast: WanVAEDecoder.configure(fast=True): channels_last_3d, preallocated causal context, fused Triton
        RMS norm + SiLU (GPU);
      cudnn_benchmark: let cuDNN time its conv algorithms during decode_block (first call of each shape is slow);
      subpixel (with fast): the 2x upsamplers' nearest + 3x3 conv as four 2x2 convs on the small input;
      taps2d (with fast, experimental): 3-frame convs as one channels_last conv2d per temporal tap;
      compile: torch.compile the network pass (reference path only: compile fuses the norm / SiLU / cache copies
        itself; the first passes of each shape compile for a minute or more)."""

    def __init__(self, model: WanVAEDecoder, frames_per_pass: int | None = None, *, dtype: torch.dtype | None = None,
                 fast: bool = False, cudnn_benchmark: bool = False, compile: bool = False, taps2d: bool = False,
                 subpixel: bool = False) -> None:
        if dtype is not None:
            model = model.to(dtype)
        if compile and fast:
            raise ValueError("compile=True goes with fast=False (the Triton launcher is not traceable)")
        self.model = model.eval().configure(fast=fast, taps2d=taps2d, subpixel=subpixel)
        self._network = torch.compile(self.model, dynamic=False) if compile else self.model
        self.cudnn_benchmark = cudnn_benchmark
        self.config: WanVAEConfig = model.config
        if frames_per_pass is None:
            # GPU: one latent frame per pass keeps the peak at diffusers' level (~4 px frames of 96 ch at full size);
            # CPU: a few frames per pass amortise per-call overhead (measured ~2x faster on the tiny demo VAE)
            frames_per_pass = 4 if self.device.type == "cpu" else 1
        if frames_per_pass < 1:
            raise ValueError("frames_per_pass must be >= 1")
        self.frames_per_pass = frames_per_pass
        self._cache: ConvCache = {}
        self._version = 0  # bumped whenever the cache changes; a CacheSnapshot is readable only while it matches
        self._frames_done = 0

    # --- properties -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def latent_frames_done(self) -> int:
        """Latent frames of the current video decoded so far."""
        return self._frames_done

    @property
    def cache_nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._cache.values())

    # --- decoding ---------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new video: the next block's first latent frame is frame 0 (1 pixel frame)."""
        self._cache = {}
        self._frames_done = 0
        self._version += 1

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """DiT-space z_n -> VAE-space z = z_n * std + mean (per channel), in fp32."""
        c = self.config.z_dim
        mean = torch.tensor(self.config.latents_mean, dtype=torch.float32, device=latents.device).view(1, c, 1, 1, 1)
        std = torch.tensor(self.config.latents_std, dtype=torch.float32, device=latents.device).view(1, c, 1, 1, 1)
        return latents.float() * std + mean

    @torch.inference_mode()
    def decode_block(self, latents: torch.Tensor, normalized: bool = True) -> torch.Tensor:
        """Decode the next latent frames of the current video. latents (B, z_dim, t, h, w), t >= 1."""
        if latents.dim() != 5 or latents.shape[1] != self.config.z_dim or latents.shape[2] < 1:
            raise ValueError(f"latents must be (B, {self.config.z_dim}, t>=1, h, w), got {tuple(latents.shape)}")
        self._check_batch(latents.shape[0], latents.shape[3:])
        z = latents.to(self.device)
        z = self.denormalize(z) if normalized else z
        z = z.to(self.dtype)
        # a block is all or nothing: on failure (out of memory, ...) the cache is back at the block start, so the
        # caller may retry (e.g. with a smaller frames_per_pass). Convs replace their entries, never edit them.
        cache_before, frames_before = dict(self._cache), self._frames_done
        pieces = []
        benchmark_before = torch.backends.cudnn.benchmark
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        try:
            for start in range(0, z.shape[2], self.frames_per_pass):
                chunk = z[:, :, start:start + self.frames_per_pass]
                pieces.append(self._network(chunk, self._cache, first_chunk=self._frames_done == 0))
                self._frames_done += chunk.shape[2]
        except BaseException:
            self._cache, self._frames_done = cache_before, frames_before
            raise
        finally:
            torch.backends.cudnn.benchmark = benchmark_before
        self._version += 1
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
        return out.contiguous()  # the fast path computes channels_last_3d; callers get the plain layout

    def decode_full(self, latents: torch.Tensor, normalized: bool = True) -> torch.Tensor:
        """Decode a whole video (resets before and after, like diffusers' decode)."""
        self.reset()
        try:
            return self.decode_block(latents, normalized=normalized)
        finally:
            self.reset()

    def _check_batch(self, batch: int, spatial: torch.Size) -> None:
        if not self._cache:
            return
        ref = self._cache[self.model.decoder.conv_in.cache_key]
        if ref.shape[0] != batch or tuple(ref.shape[3:]) != tuple(spatial):
            raise ValueError(
                f"latent block (batch {batch}, {tuple(spatial)}) does not continue the current video "
                f"(batch {ref.shape[0]}, {tuple(ref.shape[3:])}); call reset() to start a new one"
            )

    # --- cache save / restore -----------------------------------------------------------------------------------
    def save_cache(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The decoding state after the blocks decoded so far, as a flat dict of tensors (safetensors-ready:
        contiguous copies on `device`, by default the decoder's own).

        Size: 2 frames of each causal conv's input, about 2 / (frames decoded so far) of one decoded pixel frame
        per conv at that conv's resolution (at 480x832 fp32 this is a few GB: store it only where needed)."""
        state = {_CONV_PREFIX + name: t.to(device or t.device, memory_format=torch.contiguous_format, copy=True)
                 for name, t in self._cache.items()}
        state[_FRAMES_DONE_KEY] = torch.tensor([self._frames_done], dtype=torch.int64)
        return state

    def restore_cache(self, state: dict[str, torch.Tensor]) -> None:
        """Continue a video from a `save_cache()` dict (also after a restart). Raises ProjectError if it does not
        belong to this decoder (other config, corrupt file)."""
        if _FRAMES_DONE_KEY not in state or state[_FRAMES_DONE_KEY].numel() != 1:
            raise ProjectError(f"VAE decoder cache has no valid {_FRAMES_DONE_KEY!r} entry")
        frames_done = int(state[_FRAMES_DONE_KEY].item())
        known = set(self.model.cached_conv_names())
        conv_entries = {k[len(_CONV_PREFIX):]: v for k, v in state.items() if k.startswith(_CONV_PREFIX)}
        unexpected = sorted(set(state) - {_FRAMES_DONE_KEY} - {_CONV_PREFIX + k for k in conv_entries})
        unexpected += sorted(_CONV_PREFIX + k for k in set(conv_entries) - known)
        if unexpected:
            raise ProjectError(f"VAE decoder cache has entries this decoder does not know: {unexpected[:5]}")
        if frames_done < 0 or (frames_done == 0) != (not conv_entries):
            raise ProjectError(f"VAE decoder cache is inconsistent: {frames_done} frames done, {len(conv_entries)} convs")
        modules = dict(self.model.named_modules())
        cache: ConvCache = {}
        for name, tensor in conv_entries.items():
            conv = modules[name]
            if tensor.dim() != 5 or tensor.shape[1] != conv.in_channels or not 1 <= tensor.shape[2] <= CACHE_T:
                raise ProjectError(f"VAE decoder cache entry {name!r} has shape {tuple(tensor.shape)}")
            cache[name] = tensor.to(device=self.device, dtype=self.dtype)
        if frames_done > 0:
            # a temporal upsampler's time_conv skips the video's first frame: no entry after latent frame 0 alone
            missing = sorted(n for n in known - cache.keys() if frames_done > 1 or not n.endswith("time_conv"))
            if missing:
                raise ProjectError(f"VAE decoder cache lacks entries for {missing[:5]}")
        self._cache = cache
        self._frames_done = frames_done
        self._version += 1

    def cache_snapshot(self) -> CacheSnapshot:
        """The cache as it is now, copied to the CPU only if and when it is read (it is GBs at 480p), and readable
        only until the cache changes (the next decode, reset or restore)."""
        return CacheSnapshot(self, self._version)


class CacheSnapshot(Mapping):
    """Read-on-demand CPU copy of a WanStreamingDecoder cache; see WanStreamingDecoder.cache_snapshot."""

    def __init__(self, decoder: WanStreamingDecoder, version: int) -> None:
        self._decoder, self._version, self._data = decoder, version, None

    @property
    def expired(self) -> bool:
        return self._data is None and self._decoder._version != self._version

    def _get(self) -> dict[str, torch.Tensor]:
        if self._data is None:
            if self.expired:
                raise RuntimeError("the VAE cache snapshot was read after the decoder moved on")
            self._data = self._decoder.save_cache(device="cpu")
        return self._data

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())
