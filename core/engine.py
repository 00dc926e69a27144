"""The generation engine: prompt timeline in, plain events out (and an MP4 when asked).

LongSANA loop per block (reference/sana-video.md 1.9): 4 denoising steps that read the constant-size state of all
previous blocks, then one clean t=0 pass that writes this block's contribution; the VAE decodes each block as soon as
it is done with a causal cache kept across blocks. The engine never imports Qt or quant: callers pass a
`model_transform` (quantization) in.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.errors import ConfigError, StudioError, TimelineError
from core.events import (
    BlockDoneEvent,
    BlockPreviewEvent,
    Cancelled,
    CancelToken,
    ErrorEvent,
    Event,
    FinishedEvent,
    StageEvent,
    StepEvent,
)
from core.export import check_mp4_target
from core.model import BlockContribution
from core.model.graphed import GraphedForward
from core.registry import ResolvedModel, resolve_model
from core.timeline import MAX_SEED, Timeline, is_valid_seed, video_frames_for_latent_frames

log = logging.getLogger(__name__)

LATENT_CHANNELS = 16
VAE_STRIDE = 8


VRAM_MODES = ("auto", "high", "low")
PRECISIONS = ("auto", "nvfp4", "fp8", "bf16", "fp32")
TEXT_CACHE_SIZE = 8            # prompts whose cross-attention K/V stay on the device (~51 MiB each at 480p)
PIXELS_PER_TOKEN = 16          # Wan VAE 8x8 spatial, then the DiT's 2x2 patch
MAX_TOKENS_PER_AXIS = 1024     # RoPE positions per axis


def check_resolution(height: int, width: int) -> None:
    """Frame sizes the model can take: multiples of 16 pixels, within the RoPE range and a sane area."""
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < PIXELS_PER_TOKEN or value % PIXELS_PER_TOKEN:
            raise ConfigError(f"{name} must be a positive multiple of {PIXELS_PER_TOKEN} pixels, got {value!r}")
        if value // PIXELS_PER_TOKEN > MAX_TOKENS_PER_AXIS:
            raise ConfigError(f"{name} {value} is beyond the model's position range")
    if height * width > 1280 * 1280:
        raise ConfigError(f"{width}x{height} is larger than this model supports (about 1280x1280 pixels)")


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: this PyTorch build sees no CUDA GPU (run `sana-video doctor`)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return dev


@dataclass
class GenerateRequest:
    timeline: Timeline
    seed: int = 0
    output: str | None = None          # MP4 path; None = no export (frames still stream as events)
    crf: int = 18
    steps: int | None = None           # base sampler only (LongSANA always uses its 4 distilled steps)
    guidance: float | None = None      # base sampler only
    preview_every_step: bool = True


@dataclass
class BlockPlan:
    """One block to generate: absolute latent frame range, its prompt and the seed its noise comes from."""
    index: int
    start: int
    end: int
    prompt: str
    seed: int


@dataclass
class ResumePoint:
    """Everything needed to continue after block k-1 without re-running blocks < k.

    contributions: the clean-pass contributions of blocks 0..k-1 (state = their sum, last frame of k-1);
    prev_latents: block k-1's clean latents (1, C, t, h, w) and prev_prompt: its prompt (for the prompt-switch
    recache); vae_cache: the streaming decoder's cache after block k-1."""
    contributions: list[BlockContribution] = field(default_factory=list)
    prev_latents: torch.Tensor | None = None
    prev_prompt: str | None = None
    prev_start: int = 0
    vae_cache: dict[str, torch.Tensor] | None = None


class Engine:
    """Holds the loaded model parts; `generate` runs one job and yields events."""

    def __init__(self, resolved: ResolvedModel, transformer, vae, text_encoder, device: torch.device,
                 dtype: torch.dtype, precision: str) -> None:
        self.resolved = resolved
        self.transformer = transformer
        self.vae = vae                    # core.vae.WanStreamingDecoder
        self.text_encoder = text_encoder  # core.text_encoder.TextEncoder
        self.device = device
        self.dtype = dtype
        self.precision = precision
        self._text_cache: dict[str, Any] = {}
        # When set, each BlockDoneEvent.extra["timings"] holds synchronised seconds of the block's DiT and VAE work
        # (bench/e2e.py); off by default because synchronising costs a little overlap.
        self.collect_timings = False
        self.vram_mode = "auto"   # "low": the text encoder leaves the GPU after every encode; "high": it stays
        # LongSANA denoising forwards replayed from CUDA graphs (core/model/graphed.py); not in "low" VRAM mode (the
        # graphs keep their buffers and activations allocated) nor with compiled blocks
        self.cuda_graphs = device.type == "cuda"
        self._graphed: GraphedForward | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model: str = "demo", *, device: str = "auto", precision: str = "auto",
             model_transform: Callable[[Any, torch.device, dict], tuple[Any, str | None]] | None = None,
             download: bool = False, progress: Callable[[Event], None] | None = None,
             compile: bool = False, resolution: tuple[int, int] | None = None,
             vram_mode: str = "auto", cuda_graphs: bool = True) -> Engine:
        """Load a registry model id, a local model folder, or 'demo'.

        model_transform(transformer, device, context) -> (transformer, precision name or None) is where quant plugs
        in (app/quant_hook.py); context has 'encode_prompts' (calibration captions from this model's text encoder),
        'latent_hw' and 'progress'."""
        from core.checkpoints import load_transformer
        from core.text_encoder import TextEncoder
        from core.vae import WanStreamingDecoder, load_wan_vae, load_wan_vae_decoder
        from core.vae.streaming import GPU_FAST_SETTINGS

        dev = pick_device(device)
        if vram_mode not in VRAM_MODES:
            raise ConfigError(f"vram_mode must be one of {VRAM_MODES}, got {vram_mode!r}")
        resolved = resolve_model(model, download=download)
        if resolution is not None:
            resolved = dataclasses.replace(resolved, height=int(resolution[0]), width=int(resolution[1]))
        check_resolution(resolved.height, resolved.width)
        # bf16 on GPUs (the released mixed precision), fp32 on the CPU (bf16 matmuls are slow there) or when asked
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if dev.type != "cuda" and precision in ("bf16", "fp8", "nvfp4"):
            raise ConfigError(f"precision {precision} needs a CUDA GPU; on the CPU use auto or fp32")
        dtype = torch.bfloat16 if dev.type == "cuda" and precision != "fp32" else torch.float32
        if progress:
            progress(StageEvent("load", "text encoder"))
        text_encoder = TextEncoder.from_pretrained(resolved.text_encoder, resolved.tokenizer, device=dev)
        if progress:
            progress(StageEvent("load", f"transformer from {resolved.transformer}"))
        preset = None if resolved.preset == "tiny" else resolved.preset
        transformer = load_transformer(resolved.transformer, device=dev, dtype=dtype, preset=preset)
        used_precision = "bf16" if dtype == torch.bfloat16 else "fp32"
        if model_transform is not None and precision != "fp32":
            def encode_prompts(prompts: list[str]):
                enc = text_encoder.encode(prompts)
                return [(enc.embeds[i:i + 1], enc.mask[i:i + 1]) for i in range(len(prompts))]

            context = {"encode_prompts": encode_prompts, "progress": progress,
                       "latent_hw": (resolved.height // VAE_STRIDE, resolved.width // VAE_STRIDE)}
            transformer, quant_precision = model_transform(transformer, dev, context)
            used_precision = quant_precision or used_precision
        if compile:   # off by default: eager is the faster path (compile_blocks says why)
            compile_blocks(transformer)
        if progress:
            progress(StageEvent("load", "VAE"))
        if dev.type == "cuda":
            # bf16 fast path (bench/vae.py: 47 dB PSNR vs a true fp32 decode on random weights, 3-4x diffusers fp32)
            vae = WanStreamingDecoder(load_wan_vae_decoder(resolved.vae, device=dev), **GPU_FAST_SETTINGS)
        else:
            vae = load_wan_vae(resolved.vae, device=dev, dtype=torch.float32)
        log.info("loaded %s on %s (%s)", resolved.id, dev, used_precision)
        engine = cls(resolved, transformer, vae, text_encoder, dev, dtype, used_precision)
        engine.vram_mode = vram_mode
        engine.cuda_graphs = engine.cuda_graphs and cuda_graphs and not compile
        return engine

    @classmethod
    def demo(cls, device: str = "cpu") -> Engine:
        return cls.load("demo", device=device)

    @property
    def info(self) -> dict[str, Any]:
        r = self.resolved
        return {
            "model_id": r.id, "revision": r.revision, "is_demo": r.is_demo, "label": r.label, "sampler": r.sampler,
            "device": str(self.device), "precision": self.precision, "height": r.height, "width": r.width,
            "fps": r.fps, "latent_channels": LATENT_CHANNELS,
        }

    # ------------------------------------------------------------------ planning
    def plan_blocks(self, timeline: Timeline, seed: int) -> list[BlockPlan]:
        timeline.validate()
        if not is_valid_seed(seed):
            raise TimelineError(f"the seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
        clips = timeline.block_clips()
        return [BlockPlan(i, s, e, clip.prompt, clip.seed if clip.seed is not None else seed)
                for i, ((s, e), clip) in enumerate(zip(timeline.blocks(), clips))]

    def _latent_hw(self) -> tuple[int, int]:
        return self.resolved.height // VAE_STRIDE, self.resolved.width // VAE_STRIDE

    # ------------------------------------------------------------------ text
    def _encode(self, prompt: str, motion_score: int):
        key = f"{motion_score}\x00{prompt}"
        if key in self._text_cache:
            self._text_cache[key] = self._text_cache.pop(key)  # most recently used last
        else:
            enc = self.text_encoder.encode([prompt], motion_score=motion_score)
            self._text_cache[key] = self.transformer.encode_text(enc.embeds, enc.mask)
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.pop(next(iter(self._text_cache)))
        return self._text_cache[key]

    def _denoiser(self):
        """The transformer call of the LongSANA denoising steps. This loop synchronises after every step (the step
        preview goes to the CPU), so each eager forward starts on an idle GPU that waits for Python to enqueue
        ~800 kernels; a replayed CUDA graph does not (bench/gaps.py)."""
        if not (self.cuda_graphs and self.device.type == "cuda" and self.vram_mode != "low"):
            return self.transformer
        if self._graphed is None or self._graphed.model is not self.transformer:
            self._graphed = GraphedForward(self.transformer)
        return self._graphed

    def _maybe_offload_text_encoder(self) -> None:
        if self.device.type != "cuda" or self.vram_mode == "high":
            return
        total = torch.cuda.get_device_properties(self.device).total_memory
        if self.vram_mode == "low" or total < 20 * 2**30:  # memory is short: the 5 GB encoder leaves the GPU
            self.text_encoder.offload()

    # ------------------------------------------------------------------ public job
    def generate(self, request: GenerateRequest, cancel: CancelToken | None = None) -> Iterator[Event]:
        """Run a whole generation; never raises: failures become ErrorEvent, cancellation FinishedEvent(cancelled)."""
        cancel = cancel or CancelToken()
        t0 = time.perf_counter()
        counter = _FrameCounter()
        writer = None
        try:
            if request.output is not None:
                check_mp4_target(request.output)
            plans = self.plan_blocks(request.timeline, request.seed)
            if request.output is not None:
                # frames go to the encoder as each block is decoded: memory stays flat at any length
                from core.export import StreamingMp4Writer

                writer = StreamingMp4Writer(request.output, fps=self.resolved.fps, crf=request.crf,
                                            metadata=self._export_metadata(request.timeline, request.seed))
            sink = counter if writer is None else _Tee(counter, writer)
            if self.resolved.sampler == "base":
                events = self._generate_base(request, plans, cancel, sink)
            else:
                events = self.run_blocks(plans, request.timeline.motion_score, cancel)
            for ev in events:
                if isinstance(ev, BlockPreviewEvent) and self.resolved.sampler != "base":
                    sink.add(ev.frames)
                yield ev
            path = None
            if writer is not None:
                yield StageEvent("export", str(request.output))
                path = str(writer.close())
                writer = None
            yield FinishedEvent(path, counter.count, time.perf_counter() - t0)
        except Cancelled:
            yield FinishedEvent(None, counter.count, time.perf_counter() - t0, cancelled=True)
        except StudioError as exc:
            yield ErrorEvent(str(exc), type(exc).__name__)
        except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
            yield ErrorEvent(f"the GPU ran out of memory: {exc}", "OutOfMemory")
        except Exception as exc:  # noqa: BLE001 - the GUI must get a readable message, never a dead worker
            log.exception("generation failed")
            yield ErrorEvent(f"{type(exc).__name__}: {exc}", "InternalError")
        finally:
            if writer is not None:  # cancelled or failed: no partial file
                writer.abort()

    def _export_metadata(self, timeline: Timeline, seed: int) -> dict[str, Any]:
        meta = {"title": timeline.clips[0].prompt[:200] if timeline.clips else "",
                "timeline": timeline.to_dict(), "seed": seed, "model": self.resolved.id,
                "revision": self.resolved.revision, "software": "SANA-Video Studio"}
        if self.resolved.is_demo:
            meta["label"] = self.resolved.label
        return meta

    # ------------------------------------------------------------------ LongSANA block loop
    @torch.no_grad()
    def run_blocks(self, plans: list[BlockPlan], motion_score: int, cancel: CancelToken,
                   resume: ResumePoint | None = None) -> Iterator[Event]:
        """Generate `plans` (consecutive blocks) after `resume` (None = from the start). Yields StepEvent,
        BlockPreviewEvent and BlockDoneEvent; BlockDoneEvent.extra holds 'contribution' (this block's clean-pass
        BlockContribution, CPU), 'vae_cache' (decoder cache after the block) and, on a prompt switch,
        'recached_previous' (the replacement contribution of the previous block)."""
        if not plans:
            return
        from core.samplers import BlockNoise, longsana_schedule
        from core.vae import latent_to_rgb_preview

        resume = resume or ResumePoint()
        # the graphs stay between jobs (Extend / Regenerate reuse them, as the caching allocator keeps its blocks);
        # clearing them after each job cost as much as they saved on a 60 s video (run 35 in docs/perf-notes.md)
        denoise = self._denoiser()
        model, dev = self.transformer, self.device
        h, w = self._latent_hw()
        num_blocks = plans[-1].index + 1
        steps = longsana_schedule()
        pt = model.cfg.patch_size[0]  # RoPE frame positions count patchified frames (official start_f // patch_t)

        yield StageEvent("encode_text", f"{len({p.prompt for p in plans})} prompt(s)")
        texts = {p.prompt: self._encode(p.prompt, motion_score) for p in plans}
        if resume.prev_prompt is not None and resume.prev_prompt not in texts:
            texts[resume.prev_prompt] = self._encode(resume.prev_prompt, motion_score)
        self._maybe_offload_text_encoder()

        # Flat memory: only the running state, the state before the previous block and whether there is a previous
        # block are kept (what the prompt-switch recache needs), never one contribution per block. Sums are left
        # folds in block order, so a resumed run adds exactly like an uninterrupted one.
        done = resume.contributions
        state_before_prev = model.empty_state()
        for contribution in done[:-1]:  # one at a time on the device
            state_before_prev = state_before_prev.add(contribution.to(dev))
        state = state_before_prev.add(done[-1].to(dev)) if done else state_before_prev
        have_prev = bool(done)
        del done
        prev_latents = None if resume.prev_latents is None else resume.prev_latents.to(dev, self.dtype)
        prev_prompt, prev_start = resume.prev_prompt, resume.prev_start
        if resume.vae_cache is not None:
            self.vae.restore_cache({k: v.to(dev) for k, v in resume.vae_cache.items()})
        else:
            self.vae.reset()

        t_start = time.perf_counter()
        total_steps = len(plans) * len(steps)
        done_steps = 0
        for plan in plans:
            cancel.raise_if_cancelled()
            text = texts[plan.prompt]
            extra: dict[str, Any] = {}
            # Prompt switch: re-run the previous block's clean pass with the NEW prompt (official interactive
            # pipeline, recache_on_prompt_switch) and let its contribution replace the old one. Deliberate
            # divergence: for a switch at block 1 the official code passes block 0's own old-prompt cache as its
            # history (`_accumulate_kv_cache(kv, 0)` returns kv[0]); we recache block 0 on the empty state.
            if prev_latents is not None and prev_prompt is not None and plan.prompt != prev_prompt and have_prev:
                yield StageEvent("recache", f"block {plan.index - 1} with the new prompt")
                recached = model.cache_pass(prev_latents, text, state_before_prev, frame_offset=prev_start // pt)
                state = state_before_prev.add(recached)
                extra["recached_previous"] = recached.to("cpu")

            noise_fn = BlockNoise.for_block(plan.seed, plan.index, dev)
            noise = noise_fn((1, LATENT_CHANNELS, plan.end - plan.start, h, w))
            start_time = time.perf_counter()
            clock = _StageClock(dev, self.collect_timings)
            # The loop of core.samplers.denoise_block, unrolled here so that a preview event leaves after every
            # step (tests check that both give the same latents).
            x = noise
            x0 = noise
            for i, step in enumerate(steps):
                cancel.raise_if_cancelled()
                t = torch.full((1,), float(step.model_timestep), device=dev)
                v = denoise(x.to(self.dtype), t, text, state=state, frame_offset=plan.start // pt).float()
                x0 = x - step.sigma * v
                done_steps += 1
                elapsed = time.perf_counter() - t_start
                mid = x0.shape[2] // 2
                preview = latent_to_rgb_preview(x0[0, :, mid:mid + 1], upscale=VAE_STRIDE)[0].numpy()
                yield StepEvent(plan.index, i + 1, len(steps), num_blocks, time.perf_counter() - start_time,
                                elapsed / done_steps * (total_steps - done_steps), preview)
                if step.next_sigma is None:
                    break
                x = (1.0 - step.next_sigma) * x0 + step.next_sigma * noise_fn(tuple(x0.shape))
            cancel.raise_if_cancelled()
            clean = x0.to(self.dtype)
            contribution = model.cache_pass(clean, text, state, frame_offset=plan.start // pt)
            state_before_prev, state, have_prev = state, state.add(contribution), True
            clock.lap("dit_s")
            yield StageEvent("decode", f"block {plan.index}")
            clock.lap(None)
            video = self.vae.decode_block(x0.float())                        # (1, 3, F, H, W) in [-1, 1]
            clock.lap("vae_s")
            frames_u8 = _to_uint8(video[0])                                  # (F, H, W, 3)
            first = 0 if plan.start == 0 else video_frames_for_latent_frames(plan.start)
            yield BlockPreviewEvent(plan.index, frames_u8, first)
            # the decoder cache is GBs at 480p: a snapshot copied to the CPU only if the consumer reads it, and
            # readable only until the decoder changes it
            extra.update(contribution=contribution.to("cpu"), vae_cache=self.vae.cache_snapshot())
            if self.collect_timings:
                extra["timings"] = dict(clock.laps)
            yield BlockDoneEvent(plan.index, num_blocks, x0[0].detach().float().cpu(), plan.seed, plan.prompt,
                                 plan.start, plan.end, extra)
            prev_latents, prev_prompt, prev_start = clean, plan.prompt, plan.start

    # ------------------------------------------------------------------ base 5-second sampler
    @torch.no_grad()
    def _generate_base(self, request: GenerateRequest, plans: list[BlockPlan], cancel: CancelToken,
                       sink) -> Iterator[Event]:
        from core.samplers import BASE_GUIDANCE, BASE_STEPS, BlockNoise, FlowDPMSolver2M, cfg_velocity_fn
        from core.vae import latent_to_rgb_preview

        prompts = {p.prompt for p in plans}
        if len(prompts) != 1 or request.timeline.total_seconds > 5.0 + 1e-6:
            raise TimelineError("the base SANA-Video model makes one 5-second clip with one prompt; "
                                "use longsana-480p for longer videos and prompt timelines")
        model, dev = self.transformer, self.device
        h, w = self._latent_hw()
        n_latent = plans[-1].end
        steps = request.steps or BASE_STEPS
        scale = BASE_GUIDANCE if request.guidance is None else request.guidance
        yield StageEvent("encode_text", "prompt and negative prompt")
        pos = self.text_encoder.encode([plans[0].prompt], motion_score=request.timeline.motion_score)
        neg = self.text_encoder.encode_negative()
        text = model.encode_text(torch.cat([neg.embeds, pos.embeds]), torch.cat([neg.mask, pos.mask]))
        self._maybe_offload_text_encoder()
        noise = BlockNoise.for_block(request.seed, 0, dev)((1, LATENT_CHANNELS, n_latent, h, w))
        t0 = time.perf_counter()

        def batched(x, model_t, i):
            t = torch.full((x.shape[0],), float(model_t), device=dev)
            return model(x.to(self.dtype), t, text if x.shape[0] == 2 else text.for_batch(x.shape[0]))

        velocity = cfg_velocity_fn(batched, scale)
        solver = FlowDPMSolver2M(steps)
        x = noise
        for i in range(steps):
            cancel.raise_if_cancelled()
            x = solver.step(velocity(x, float(solver.timesteps[i]), i), x)
            el = time.perf_counter() - t0
            preview = latent_to_rgb_preview(x[0, :, n_latent // 2:n_latent // 2 + 1], upscale=VAE_STRIDE)[0].numpy()
            yield StepEvent(0, i + 1, steps, 1, el, el / (i + 1) * (steps - i - 1), preview)
        x0 = x
        self.vae.reset()
        video = self.vae.decode_block(x0.float())
        frames_u8 = _to_uint8(video[0])
        sink.add(frames_u8)
        yield BlockPreviewEvent(0, frames_u8, 0)
        yield BlockDoneEvent(0, 1, x0[0].float().cpu(), request.seed, plans[0].prompt, 0, n_latent, {})


class _FrameCounter:
    def __init__(self) -> None:
        self.count = 0

    def add(self, frames) -> None:
        self.count += len(frames)


class _Tee:
    def __init__(self, *sinks) -> None:
        self.sinks = sinks

    def add(self, frames) -> None:
        for sink in self.sinks:
            sink.add(frames)

    @property
    def count(self) -> int:
        return self.sinks[0].count


def compile_blocks(transformer) -> None:
    """Regional torch.compile: each repeated transformer block once (seconds to compile, same speed as the whole
    model in bench/dit.py); shapes are static per block size, so a video compiles at most a few variants.

    Only on request (Engine.load(compile=True)): the eager forward runs the fused kernels, folds gates and the
    attention state into GEMMs and, with FP8 layers, writes the FP8 GEMM inputs from its own kernels, so it is the
    faster path (bench/quant.py, H100, one 480p block: bf16 102.0 ms eager vs 108.3 compiled; FP8 default recipe 77.1
    vs 82.8), and compiling costs seconds per block shape at every launch."""
    for block in transformer.blocks:
        block.compile(dynamic=False)


class _StageClock:
    """Wall seconds between laps, synchronising the device first (only when enabled)."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.device, self.enabled = device, enabled
        self.laps: dict[str, float] = {}
        self._t = self._now()

    def _now(self) -> float:
        if self.enabled and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self, name: str | None) -> None:
        if not self.enabled:
            return
        now = self._now()
        if name is not None:
            self.laps[name] = self.laps.get(name, 0.0) + now - self._t
        self._t = now


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8, truncating like the official script
    (`clamp(127.5 x + 127.5, 0, 255).to(uint8)`; diffusers rounds instead: at most 1 level apart)."""
    x = (video.float() * 127.5 + 127.5).clamp(0, 255).to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().cpu().numpy()
