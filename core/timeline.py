"""The prompt timeline: clips of prompt text with durations, mapped onto LongSANA blocks.

A block is 10 latent frames = 40 video frames = 2.5 s at 16 fps; the first block also takes the remainder frame(s) of
the causal VAE (81 video frames -> 21 latent frames -> blocks of 11 and 10). A clip covers the blocks whose first
video frame falls inside the clip's time span, so every block has exactly one prompt.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import TimelineError
from core.samplers import BLOCK_LATENT_FRAMES, LATENT_STRIDE_T, block_segments, latent_frames_for, video_frames_for  # noqa: F401 (re-exported)

FPS = 16
MAX_SECONDS = 255.0          # RoPE covers 1024 latent frames (about 4093 video frames, 255.8 s at 16 fps)
MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**62             # one bound everywhere a seed is accepted or stored (project files included)
SCHEMA_KEYS = {"clips", "version", "motion_score", "negative_prompt"}
CLIP_KEYS = {"prompt", "seconds", "seed"}


def video_frames_for_seconds(seconds: float) -> int:
    """16 fps, plus the causal VAE's first frame (5 s -> 81 frames)."""
    return int(round(seconds * FPS)) + 1


# One definition of the frame/block arithmetic, shared with the samplers.
latent_frames_for_video_frames = latent_frames_for
video_frames_for_latent_frames = video_frames_for


def is_valid_seed(seed) -> bool:
    return not isinstance(seed, bool) and isinstance(seed, int) and 0 <= seed <= MAX_SEED


@dataclass
class Clip:
    prompt: str
    seconds: float
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt, "seconds": self.seconds}
        if self.seed is not None:
            out["seed"] = self.seed
        return out


@dataclass
class Timeline:
    clips: list[Clip] = field(default_factory=list)
    motion_score: int = 10

    # ---- validation ----
    def validate(self) -> Timeline:
        if not self.clips:
            raise TimelineError("the timeline is empty: add at least one prompt")
        for i, clip in enumerate(self.clips, 1):
            if not isinstance(clip.prompt, str) or not clip.prompt.strip():
                raise TimelineError(f"clip {i}: the prompt is empty")
            if len(clip.prompt) > MAX_PROMPT_CHARS:
                raise TimelineError(f"clip {i}: the prompt is {len(clip.prompt)} characters (at most {MAX_PROMPT_CHARS})")
            if isinstance(clip.seconds, bool) or not isinstance(clip.seconds, (int, float)):
                raise TimelineError(f"clip {i}: duration must be a number of seconds, got {clip.seconds!r}")
            try:
                finite = math.isfinite(float(clip.seconds))
            except OverflowError:
                finite = False
            if not finite:
                raise TimelineError(f"clip {i}: duration must be a finite number of seconds, got {clip.seconds!r}")
            if clip.seconds <= 0:
                raise TimelineError(f"clip {i}: duration must be positive, got {clip.seconds} s")
            if clip.seed is not None and not is_valid_seed(clip.seed):
                raise TimelineError(f"clip {i}: seed must be an integer from 0 to {MAX_SEED}, got {clip.seed!r}")
        total = self.total_seconds
        if total > MAX_SECONDS:
            raise TimelineError(f"the timeline is {total:.1f} s long; the model's positions cover at most {MAX_SECONDS:.0f} s")
        if isinstance(self.motion_score, bool) or not isinstance(self.motion_score, int) or not 0 <= self.motion_score <= 100:
            raise TimelineError(f"motion_score must be an integer 0..100, got {self.motion_score!r}")
        return self

    @property
    def total_seconds(self) -> float:
        return float(sum(c.seconds for c in self.clips))

    @property
    def num_video_frames(self) -> int:
        return video_frames_for_seconds(self.total_seconds)

    @property
    def num_latent_frames(self) -> int:
        return latent_frames_for_video_frames(self.num_video_frames)

    def blocks(self) -> list[tuple[int, int]]:
        return block_segments(self.num_latent_frames)

    def prompt_for_time(self, seconds: float) -> Clip:
        t = 0.0
        for clip in self.clips:
            t += clip.seconds
            if seconds < t - 1e-9:
                return clip
        return self.clips[-1]

    def block_clips(self) -> list[Clip]:
        """The clip of every block: the one under the block's first video frame."""
        out = []
        for start, _end in self.blocks():
            first_video_frame = 0 if start == 0 else video_frames_for_latent_frames(start)
            out.append(self.prompt_for_time(first_video_frame / FPS))
        return out

    # ---- (de)serialisation ----
    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "motion_score": self.motion_score, "clips": [c.to_dict() for c in self.clips]}

    @classmethod
    def from_dict(cls, data: Any) -> Timeline:
        if isinstance(data, list):  # a bare list of clips is accepted
            data = {"clips": data}
        if not isinstance(data, dict):
            raise TimelineError(f"a timeline must be a JSON object with 'clips', got {type(data).__name__}")
        unknown = set(data) - SCHEMA_KEYS
        if unknown:
            raise TimelineError(f"unknown timeline fields: {sorted(unknown)} (allowed: {sorted(SCHEMA_KEYS)})")
        if data.get("version", 1) != 1:
            raise TimelineError(f"timeline version {data.get('version')!r} is not supported (expected 1)")
        raw = data.get("clips")
        if not isinstance(raw, list):
            raise TimelineError("'clips' must be a list of {prompt, seconds} objects")
        clips = []
        for i, item in enumerate(raw, 1):
            if not isinstance(item, dict):
                raise TimelineError(f"clip {i} must be an object with 'prompt' and 'seconds'")
            bad = set(item) - CLIP_KEYS
            if bad:
                raise TimelineError(f"clip {i}: unknown fields {sorted(bad)} (allowed: {sorted(CLIP_KEYS)})")
            if "prompt" not in item or "seconds" not in item:
                raise TimelineError(f"clip {i}: needs both 'prompt' and 'seconds'")
            clips.append(Clip(item["prompt"], item["seconds"], item.get("seed")))
        return cls(clips, data.get("motion_score", 10)).validate()

    @classmethod
    def from_json_file(cls, path: str | Path) -> Timeline:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise TimelineError(f"timeline file not found: {path}") from exc
        except OSError as exc:  # a folder, no permission, ...
            raise TimelineError(f"cannot read the timeline file {path}: {exc.strerror or exc}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TimelineError(f"timeline file {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def single(cls, prompt: str, seconds: float, seed: int | None = None) -> Timeline:
        return cls([Clip(prompt, seconds, seed)]).validate()
