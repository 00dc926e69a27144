"""Projects on disk: the state that lets a video continue (Extend), be redone from any block (Regenerate) and be
exported along any path through its tree of takes, and that survives a crash at any moment.

Folder layout (docs/benchmarks.md has the bytes per block):
  project.json                  schema version, model, settings, seeds, takes (timeline + block ids), block records
  blocks/b<N>.safetensors       one per block: clean latents, decoded uint8 frames, the block's state contribution
                                (and, after a prompt switch, the recached contribution of the block before)
  blocks/b<N>.vae.safetensors   the streaming VAE decoder cache after block N (3.5 GiB at 480p): written when a job
                                ends, for the last block of the current take (settings.vae_cache: "current", "tips",
                                "none"); any other resume point re-decodes the latents from the nearest one

Why store contributions instead of recomputing them: the state of block k depends on every earlier block (vk / k_sum
are sums, the temporal-conv frame chains through all layers), so recomputing needs k clean passes from block 0 that
replay every prompt-switch recache, while the stored contribution is read in milliseconds and resumes bit-exactly.
The decoder cache is the other way round: too large to keep per block, and re-decoding k blocks is cheap on a GPU.

Crash safety: every file is written atomically (core.fsutil); block files go first, project.json last, and only
then are files that the new project.json no longer names deleted. project.json is the commit record: a block exists
once project.json names it, so a project killed at any moment opens at its last complete block; leftovers of an
interrupted save are unreferenced files that the next save removes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import ProjectError, StudioError, TimelineError
from core.events import (
    BlockDoneEvent,
    BlockPreviewEvent,
    Cancelled,
    CancelToken,
    ErrorEvent,
    Event,
    FinishedEvent,
    StageEvent,
)
from core.export import check_mp4_target
from core.fsutil import atomic_write_text
from core.model import BlockContribution
from core.project_files import (
    BLOCK_FORMAT,
    BLOCK_ID_RE,
    BLOCKS_DIR,
    CONTRIB_PARTS,
    FILE_VERSION,
    VAE_CACHE_FORMAT,
    block_file_name,
    block_tensors,
    check_block_header,
    check_vae_cache_header,
    dtype_name,
    encode_safetensors,
    file_size,
    read_header,
    read_tensors,
    resolve_inside,
    vae_cache_file_name,
    verify_checksum,
    write_file,
)
from core.timeline import (
    BLOCK_LATENT_FRAMES,
    FPS,
    LATENT_STRIDE_T,
    MAX_SEED,
    Clip,
    Timeline,
    is_valid_seed,
    video_frames_for_latent_frames,
)

log = logging.getLogger(__name__)

PROJECT_FORMAT = "sana-video-studio-project"
SCHEMA_VERSION = 1
PROJECT_FILE = "project.json"
MAX_PROJECT_JSON_BYTES = 64 * 2**20
MAX_BLOCKS = 100_000
MAX_LATENT_FRAMES = 1024                 # RoPE range (core.timeline.MAX_SECONDS)
BLOCK_SECONDS = BLOCK_LATENT_FRAMES * LATENT_STRIDE_T / FPS   # 2.5 s: Extend adds whole blocks
TAKE_ID_RE = re.compile(r"^t[0-9]{1,9}$")
# where the streaming VAE decoder cache is kept (3.5 GiB per block at 480p, so never after every block):
# "current": the last block of the current take, "tips": the last block of every take, "none": nowhere (every
# resume re-decodes from block 0). It is written when a job ends, not per block (autosave stays small).
VAE_CACHE_POLICIES = ("current", "tips", "none")
DEFAULT_SETTINGS = {"crf": 18, "vae_cache": "current"}


# ====================================================================== records
@dataclass
class Take:
    """One path through the tree: the ids of its blocks 0..n-1 (a prefix may be shared with the take it branched
    from). `timeline` and `seed` are what its blocks were generated from; `reseed` lists (from_block, seed) overrides
    from Regenerate with a new seed; `edited_timeline` is a pending edit (blocks it changes show as stale)."""
    id: str
    name: str
    parent: str | None
    branch_block: int
    seed: int
    timeline: Timeline
    blocks: list[str] = field(default_factory=list)
    reseed: list[tuple[int, int]] = field(default_factory=list)
    edited_timeline: Timeline | None = None
    created: float = 0.0
    edited_seed: int | None = None

    @property
    def effective(self) -> tuple[Timeline, int]:
        """(timeline, seed) with any pending edit applied."""
        return (self.edited_timeline or self.timeline,
                self.seed if self.edited_seed is None else self.edited_seed)

    def clear_edit(self) -> None:
        self.edited_timeline, self.edited_seed = None, None


@dataclass(frozen=True)
class BlockRecord:
    """What the user sees of a block: where it is, what made it, whether an edit made it stale, what it costs."""
    id: str
    index: int
    start: int               # first latent frame (absolute)
    end: int                 # one past the last latent frame
    prompt: str
    seed: int
    stale: bool              # the timeline (or an earlier block) changed since it was generated
    files: tuple[str, ...]   # relative paths inside the project folder
    bytes: int               # disk cost of those files
    has_vae_cache: bool


@dataclass(frozen=True)
class PlannedBlock:
    index: int
    start: int
    end: int
    prompt: str
    seed: int


def plan_take(timeline: Timeline, seed: int, reseed: list[tuple[int, int]]) -> list[PlannedBlock]:
    """Blocks of a timeline, as Engine.plan_blocks makes them, with Regenerate's seed overrides applied."""
    timeline.validate()
    plans = []
    for i, ((s, e), clip) in enumerate(zip(timeline.blocks(), timeline.block_clips())):
        block_seed = clip.seed if clip.seed is not None else seed
        for from_block, new_seed in reseed:
            if i >= from_block:
                block_seed = new_seed
        plans.append(PlannedBlock(i, s, e, clip.prompt, block_seed))
    return plans


# ====================================================================== timeline edits
def block_cut_seconds(start: int) -> float:
    """The timeline position between the block starting at latent frame `start` and the one before it (the last
    video frame of the previous block): a clip boundary there gives block `start` the new clip's prompt."""
    return 0.0 if start == 0 else (video_frames_for_latent_frames(start) - 1) / FPS


def timeline_cut(timeline: Timeline, seconds: float) -> Timeline:
    """The first `seconds` of a timeline (clips after dropped, the clip under the cut shortened)."""
    clips, t = [], 0.0
    for clip in timeline.clips:
        if t >= seconds - 1e-9:
            break
        length = min(clip.seconds, seconds - t)
        clips.append(Clip(clip.prompt, length, clip.seed))
        t += length
    return Timeline(clips, timeline.motion_score).validate()


def timeline_with_prompt_from(timeline: Timeline, seconds: float, prompt: str) -> Timeline:
    """The same timeline with `prompt` from `seconds` to the end (earlier clips untouched)."""
    total = timeline.total_seconds
    head = timeline_cut(timeline, seconds).clips if seconds > 0 else []
    clips = [Clip(c.prompt, c.seconds, c.seed) for c in head]
    clips.append(Clip(prompt, total - sum(c.seconds for c in clips)))
    return Timeline(clips, timeline.motion_score).validate()


def timeline_until_block_end(timeline: Timeline, end: int) -> Timeline:
    """The timeline cut right after the block that ends at latent frame `end`."""
    return timeline_cut(timeline, block_cut_seconds(end))


def _blocks_for_seconds(seconds: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise TimelineError(f"extend needs a positive number of seconds, got {seconds!r}")
    return max(1, int(round(seconds / BLOCK_SECONDS)))


# ====================================================================== JSON validation helpers
def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ProjectError(f"project.json: {msg}")


def _int(d: dict, key: str, where: str, lo: int = 0, hi: int = MAX_SEED) -> int:
    v = d.get(key)
    _need(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
          f"{where}.{key} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _str(d: dict, key: str, where: str, max_len: int = 10_000, optional: bool = False) -> str | None:
    v = d.get(key)
    if optional and v is None:
        return None
    _need(isinstance(v, str) and len(v) <= max_len, f"{where}.{key} must be a string, got {type(v).__name__}")
    return v


def _obj(d: Any, where: str) -> dict:
    _need(isinstance(d, dict), f"{where} must be an object")
    return d


# ====================================================================== the project
class Project:
    """A project folder. Create with `Project.create`, open with `Project.open`; every method that changes it saves
    it before returning (project.json last)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.model: dict[str, Any] = {}
        self._seed = 0
        self.settings: dict[str, Any] = dict(DEFAULT_SETTINGS)
        self._takes: dict[str, Take] = {}
        self._blocks: dict[str, dict[str, Any]] = {}
        self.current_take = ""
        self._next_id = 1
        # bumped by every save; a save or clean-up that finds another number on disk means another window or
        # process changed the project since this handle read it, and refuses instead of overwriting its work
        self._revision = 0
        self._layout: dict[str, Any] | None = None     # stream-state tensor layout (set by the first block)
        self.created = 0.0

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, folder, engine_info: dict, timeline: Timeline, seed: int) -> Project:
        """A new project in an empty (or new) folder; refuses a folder that holds anything."""
        folder = Path(folder)
        if folder.exists():
            if not folder.is_dir():
                raise ProjectError(f"{folder} exists and is not a folder")
            if any(folder.iterdir()):
                raise ProjectError(f"{folder} is not empty: choose a new or empty folder for the project")
        if not is_valid_seed(seed):
            raise ProjectError(f"the seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
        timeline.validate()
        project = cls(folder)
        project.model = cls._model_info(engine_info)
        project._seed = seed
        project.created = time.time()
        first = Take("t1", "Take 1", None, 0, seed, Timeline.from_dict(timeline.to_dict()), created=time.time())
        project._takes[first.id] = first
        project.current_take = first.id
        project._next_id = 1
        try:
            (folder / BLOCKS_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"cannot create the project folder {folder}: {exc}") from exc
        project._save()
        return project

    @staticmethod
    def _model_info(info: dict) -> dict[str, Any]:
        try:
            return {
                "model_id": str(info["model_id"]), "revision": str(info.get("revision") or ""),
                "precision": str(info.get("precision") or ""), "sampler": str(info.get("sampler") or "longsana"),
                "height": int(info["height"]), "width": int(info["width"]), "fps": int(info.get("fps", FPS)),
                "latent_channels": int(info.get("latent_channels", 16)), "is_demo": bool(info.get("is_demo", False)),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ProjectError(f"the engine info lacks the model description a project needs: {exc}") from exc

    @classmethod
    def open(cls, folder) -> Project:
        """Open and validate everything that can be checked without reading tensor data (schema, versions, model,
        file names, sizes, tensor names / shapes / dtypes from the file headers)."""
        folder = Path(folder)
        path = folder / PROJECT_FILE
        if not folder.is_dir():
            raise ProjectError(f"project folder not found: {folder}")
        if not path.is_file() or path.is_symlink():
            raise ProjectError(f"{folder} is not a SANA-Video project (no {PROJECT_FILE})")
        if path.stat().st_size > MAX_PROJECT_JSON_BYTES:
            raise ProjectError(f"{path} is {path.stat().st_size} bytes; a project file is at most "
                               f"{MAX_PROJECT_JSON_BYTES} bytes (corrupt or not a project)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProjectError(f"{path} is not valid JSON ({exc}); the project file is corrupt") from exc
        except RecursionError as exc:
            raise ProjectError(f"{path} is nested too deeply (corrupt or hostile)") from exc
        project = cls(folder)
        project._load_doc(doc)
        project._validate_files()
        return project

    def check_model(self, engine_info: dict) -> None:
        """ProjectError when `engine_info` is not the model (id, revision, resolution) this project was made with."""
        want, got = self.model, self._model_info(engine_info)
        for key in ("model_id", "revision", "height", "width", "latent_channels"):
            if want[key] != got[key]:
                raise ProjectError(
                    f"this project was made with {want['model_id']} (revision {want['revision'] or '?'}, "
                    f"{want['width']}x{want['height']}) but the loaded model is {got['model_id']} (revision "
                    f"{got['revision'] or '?'}, {got['width']}x{got['height']}): load that model to continue it")
        if want["precision"] and got["precision"] and want["precision"] != got["precision"]:
            log.warning("project made at %s precision, continuing at %s: new blocks may look slightly different",
                        want["precision"], got["precision"])

    # ------------------------------------------------------------------ serialisation
    def _to_doc(self) -> dict[str, Any]:
        takes = []
        for t in self._takes.values():
            takes.append({
                "id": t.id, "name": t.name, "parent": t.parent, "branch_block": t.branch_block, "seed": t.seed,
                "timeline": t.timeline.to_dict(), "blocks": list(t.blocks),
                "reseed": [list(r) for r in t.reseed], "created": t.created,
                "edited_timeline": None if t.edited_timeline is None else t.edited_timeline.to_dict(),
                "edited_seed": t.edited_seed,
            })
        return {
            "format": PROJECT_FORMAT, "schema_version": SCHEMA_VERSION, "app": "SANA-Video Studio",
            "created": self.created, "saved": time.time(), "model": dict(self.model), "seed": self._seed,
            "settings": dict(self.settings), "state_layout": self._layout, "current_take": self.current_take,
            "next_id": self._next_id, "takes": takes, "blocks": copy.deepcopy(self._blocks),
            "revision": self._revision,
        }

    def _disk_revision(self) -> int | None:
        """The revision of the project.json on disk (None when there is none yet or it is unreadable)."""
        try:
            doc = json.loads((self.folder / PROJECT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        rev = doc.get("revision", 0) if isinstance(doc, dict) else None
        return rev if isinstance(rev, int) and not isinstance(rev, bool) else None

    def _check_not_changed_elsewhere(self) -> None:
        on_disk = self._disk_revision()
        if on_disk is not None and on_disk != self._revision:
            raise ProjectError(f"{self.folder} was changed by another window or process since it was opened "
                               f"(revision {on_disk}, this one has {self._revision}); open it again to continue")

    def _save(self) -> None:
        self._check_not_changed_elsewhere()
        self._revision += 1
        try:
            atomic_write_text(self.folder / PROJECT_FILE, json.dumps(self._to_doc(), indent=1, sort_keys=True))
        except OSError as exc:
            raise ProjectError(f"cannot save {self.folder / PROJECT_FILE}: {exc}") from exc

    def _load_doc(self, doc: Any) -> None:
        _obj(doc, "the top level")
        _need(doc.get("format") == PROJECT_FORMAT, f"format is {doc.get('format')!r}, not a SANA-Video project")
        version = doc.get("schema_version")
        _need(isinstance(version, int) and not isinstance(version, bool), f"schema_version {version!r} is invalid")
        if version > SCHEMA_VERSION:
            raise ProjectError(f"this project has schema version {version}, made by a newer SANA-Video Studio; this "
                               f"version reads up to {SCHEMA_VERSION}: update the application to open it")
        _need(version >= 1, f"schema_version {version} is invalid")
        m = _obj(doc.get("model"), "model")
        self.model = {
            "model_id": _str(m, "model_id", "model", 500), "revision": _str(m, "revision", "model", 500),
            "precision": _str(m, "precision", "model", 50), "sampler": _str(m, "sampler", "model", 50),
            "height": _int(m, "height", "model", 8, 8192), "width": _int(m, "width", "model", 8, 8192),
            "fps": _int(m, "fps", "model", 1, 240), "latent_channels": _int(m, "latent_channels", "model", 1, 1024),
            "is_demo": bool(m.get("is_demo", False)),
        }
        _need(self.model["height"] % 8 == 0 and self.model["width"] % 8 == 0, "model height/width must be multiples of 8")
        self._seed = _int(doc, "seed", "project")
        self._revision = _int(doc, "revision", "project", 0, 2**62) if "revision" in doc else 0
        self.created = float(doc.get("created") or 0.0) if isinstance(doc.get("created"), (int, float)) else 0.0
        settings = _obj(doc.get("settings", {}), "settings")
        self.settings = dict(DEFAULT_SETTINGS)
        if "crf" in settings:
            self.settings["crf"] = _int(settings, "crf", "settings", 0, 51)
        if "vae_cache" in settings:
            _need(settings["vae_cache"] in VAE_CACHE_POLICIES, f"settings.vae_cache must be one of {VAE_CACHE_POLICIES}")
            self.settings["vae_cache"] = settings["vae_cache"]
        layout = doc.get("state_layout")
        _need(layout is None or isinstance(layout, dict), "state_layout must be an object or null")
        self._layout = layout
        self._next_id = _int(doc, "next_id", "project", 1, 10**9)

        raw_blocks = _obj(doc.get("blocks"), "blocks")
        _need(len(raw_blocks) <= MAX_BLOCKS, f"{len(raw_blocks)} blocks is more than {MAX_BLOCKS}")
        self._blocks = {}
        for bid, b in raw_blocks.items():
            where = f"blocks[{bid!r}]"
            _need(isinstance(bid, str) and BLOCK_ID_RE.match(bid) is not None, f"block id {bid!r} is invalid")
            _obj(b, where)
            rec = {
                "index": _int(b, "index", where, 0, MAX_LATENT_FRAMES), "start": _int(b, "start", where, 0, MAX_LATENT_FRAMES),
                "end": _int(b, "end", where, 1, MAX_LATENT_FRAMES), "prompt": _str(b, "prompt", where, 100_000),
                "seed": _int(b, "seed", where), "parent": _str(b, "parent", where, 20, optional=True),
                "file": _str(b, "file", where, 255), "bytes": _int(b, "bytes", where, 0, 2**50),
                "sha256": _str(b, "sha256", where, 64), "recached_previous": bool(b.get("recached_previous")),
                "created": b.get("created") if isinstance(b.get("created"), (int, float)) else 0.0,
                "vae_cache": None,
            }
            _need(rec["start"] < rec["end"], f"{where} has an empty latent range")
            _need(re.fullmatch(r"[0-9a-f]{64}", rec["sha256"]) is not None, f"{where}.sha256 is invalid")
            vc = b.get("vae_cache")
            if vc is not None:
                _obj(vc, f"{where}.vae_cache")
                rec["vae_cache"] = {"file": _str(vc, "file", f"{where}.vae_cache", 255),
                                    "bytes": _int(vc, "bytes", f"{where}.vae_cache", 0, 2**50),
                                    "sha256": _str(vc, "sha256", f"{where}.vae_cache", 64)}
            self._blocks[bid] = rec

        # a hand-edited next_id must never make a new block overwrite the file of an existing one
        self._next_id = max([self._next_id] + [int(bid[1:]) + 1 for bid in self._blocks])

        raw_takes = doc.get("takes")
        _need(isinstance(raw_takes, list) and 1 <= len(raw_takes) <= 10_000, "takes must be a non-empty list")
        self._takes = {}
        for i, t in enumerate(raw_takes):
            where = f"takes[{i}]"
            _obj(t, where)
            tid = _str(t, "id", where, 20)
            _need(TAKE_ID_RE.match(tid) is not None and tid not in self._takes, f"{where}.id {tid!r} is invalid or repeated")
            blocks = t.get("blocks")
            _need(isinstance(blocks, list) and all(isinstance(x, str) for x in blocks), f"{where}.blocks must be a list of ids")
            reseed = t.get("reseed", [])
            _need(isinstance(reseed, list) and all(
                isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                            for v in r) for r in reseed),
                  f"{where}.reseed must be a list of [block, seed] pairs")
            try:
                timeline = Timeline.from_dict(t.get("timeline"))
                edited = None if t.get("edited_timeline") is None else Timeline.from_dict(t.get("edited_timeline"))
            except TimelineError as exc:
                raise ProjectError(f"project.json: {where} has an invalid timeline: {exc}") from exc
            take = Take(tid, _str(t, "name", where, 200), _str(t, "parent", where, 20, optional=True),
                        _int(t, "branch_block", where, 0, MAX_LATENT_FRAMES), _int(t, "seed", where), timeline,
                        list(blocks), [(int(a), int(b)) for a, b in reseed], edited,
                        t.get("created") if isinstance(t.get("created"), (int, float)) else 0.0,
                        None if t.get("edited_seed") is None else _int(t, "edited_seed", where))
            self._check_take_path(take)
            self._takes[tid] = take
        self.current_take = _str(doc, "current_take", "project", 20)
        _need(self.current_take in self._takes, f"current_take {self.current_take!r} is not a take")

    def _check_take_path(self, take: Take) -> None:
        """A take's blocks must exist and be consecutive: indices 0..n-1, ranges touching, parents chained."""
        prev_id, prev_end = None, 0
        for i, bid in enumerate(take.blocks):
            _need(bid in self._blocks, f"take {take.id} names block {bid!r}, which does not exist")
            b = self._blocks[bid]
            _need(b["index"] == i and b["start"] == prev_end and b["parent"] == prev_id,
                  f"take {take.id}: block {bid} (index {b['index']}, frames {b['start']}..{b['end']}) does not "
                  f"continue block {prev_id}")
            prev_id, prev_end = bid, b["end"]

    def _expected_shapes(self, rec: dict[str, Any]) -> dict[str, tuple]:
        m = self.model
        t = rec["end"] - rec["start"]
        frames = video_frames_for_latent_frames(t) if rec["start"] == 0 else LATENT_STRIDE_T * t
        return {"latents": (m["latent_channels"], t, m["height"] // 8, m["width"] // 8),
                "frames": (frames, m["height"], m["width"], 3)}

    def _validate_files(self) -> None:
        """Every file named in project.json: inside the folder, the recorded size, a header that matches."""
        for bid, rec in self._blocks.items():
            what = f"block {bid}"
            path = resolve_inside(self.folder, rec["file"], what)
            size = file_size(path)
            if not path.is_file() or size != rec["bytes"]:
                raise ProjectError(f"{what}: {rec['file']} is missing or has {size} bytes instead of "
                                   f"{rec['bytes']} (the project folder was changed or damaged)")
            header = read_header(path, what)
            layout = check_block_header(header, self._expected_shapes(rec), self._layout, rec["recached_previous"], what)
            if self._layout is None:
                self._layout = layout
            vc = rec["vae_cache"]
            if vc is not None:
                vpath = resolve_inside(self.folder, vc["file"], f"{what} VAE cache")
                if not vpath.is_file() or file_size(vpath) != vc["bytes"]:
                    raise ProjectError(f"{what}: the VAE cache file {vc['file']} is missing or has the wrong size")
                check_vae_cache_header(read_header(vpath, f"{what} VAE cache"), f"{what} VAE cache")

    # ------------------------------------------------------------------ queries
    @property
    def takes(self) -> list[Take]:
        """The tree of takes (each knows its parent take and the block it branched at)."""
        return list(self._takes.values())

    def take(self, take_id: str | None = None) -> Take:
        take_id = self.current_take if take_id is None else take_id
        if take_id not in self._takes:
            raise ProjectError(f"there is no take {take_id!r} (takes: {', '.join(self._takes)})")
        return self._takes[take_id]

    @property
    def timeline(self) -> Timeline:
        """The current take's timeline, with any pending edit."""
        return self.take().effective[0]

    @property
    def seed(self) -> int:
        """The current take's seed, with any pending edit."""
        return self.take().effective[1]

    def block_files(self, block_id: str) -> list[tuple[str, int]]:
        rec = self._blocks[block_id]
        files = [(rec["file"], rec["bytes"])]
        if rec["vae_cache"] is not None:
            files.append((rec["vae_cache"]["file"], rec["vae_cache"]["bytes"]))
        return files

    def blocks(self, take: str | None = None) -> list[BlockRecord]:
        t = self.take(take)
        plans = plan_take(*t.effective, t.reseed)
        # the motion score is part of every block's text conditioning: changing it outdates all of them
        out, stale = [], t.effective[0].motion_score != t.timeline.motion_score
        for i, bid in enumerate(t.blocks):
            rec = self._blocks[bid]
            if i >= len(plans) or (plans[i].start, plans[i].end, plans[i].prompt, plans[i].seed) != (
                    rec["start"], rec["end"], rec["prompt"], rec["seed"]):
                stale = True  # this block and every later one (their state depends on it)
            files = self.block_files(bid)
            out.append(BlockRecord(bid, rec["index"], rec["start"], rec["end"], rec["prompt"], rec["seed"], stale,
                                   tuple(f for f, _ in files), sum(n for _, n in files), rec["vae_cache"] is not None))
        return out

    def disk_bytes(self) -> int:
        """Bytes of every file in the project folder (blocks of all takes, caches, project.json)."""
        total = 0
        for p in self.folder.rglob("*"):
            if p.is_file() and not p.is_symlink():
                total += file_size(p)
        return total

    def set_settings(self, crf: int | None = None, vae_cache: str | None = None) -> None:
        """Project settings: the export CRF and where the VAE decoder cache is kept (VAE_CACHE_POLICIES)."""
        if crf is not None:
            if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
                raise ProjectError(f"crf must be an integer 0..51, got {crf!r}")
            self.settings["crf"] = crf
        if vae_cache is not None:
            if vae_cache not in VAE_CACHE_POLICIES:
                raise ProjectError(f"vae_cache must be one of {', '.join(VAE_CACHE_POLICIES)}, got {vae_cache!r}")
            self.settings["vae_cache"] = vae_cache
        self._commit_and_collect()

    # ------------------------------------------------------------------ takes
    def select_take(self, take_id: str) -> None:
        self.take(take_id)
        self.current_take = take_id
        self._save()

    def delete_take(self, take_id: str) -> None:
        """Remove a take and free the files of its blocks that no other take uses."""
        take = self.take(take_id)
        if len(self._takes) == 1:
            raise ProjectError("a project keeps at least one take; this is the only one")
        del self._takes[take.id]
        for other in self._takes.values():
            if other.parent == take.id:
                other.parent = take.parent
        if self.current_take == take.id:
            self.current_take = take.parent if take.parent in self._takes else next(iter(self._takes))
        self._commit_and_collect()

    def set_timeline(self, timeline: Timeline, seed: int | None = None) -> None:
        """Edit the current take's timeline (and seed): blocks it changes are marked stale, nothing is deleted;
        Generate then redoes them as a new take."""
        timeline.validate()
        take = self.take()
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ProjectError(f"the seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
        copy_ = Timeline.from_dict(timeline.to_dict())
        if not take.blocks:  # nothing generated yet: the edit is the take's timeline
            take.timeline, take.seed = copy_, take.seed if seed is None else seed
            take.clear_edit()
        else:
            take.edited_timeline = None if copy_.to_dict() == take.timeline.to_dict() else copy_
            take.edited_seed = None if seed is None or seed == take.seed else seed
        self._save()

    # ------------------------------------------------------------------ generation
    def generate(self, engine, cancel: CancelToken | None = None, output=None, crf: int = 18) -> Iterator[Event]:
        """Generate what the current timeline asks for that is not on disk yet: every block of a new project,
        the blocks after the end (timeline made longer), or, after an edit, the blocks from the first stale one
        (as a new take; the old take stays)."""
        def prepare():
            take = self.take()
            timeline, seed = take.effective
            plans = plan_take(timeline, seed, take.reseed)
            records = self.blocks(take.id)
            k = next((i for i, r in enumerate(records) if r.stale), len(records))
            if k < len(take.blocks):  # an edit changed existing blocks: redo them as a new take
                take.clear_edit()     # the old take keeps what it was generated from
                return self._new_take(take, k, timeline, seed, list(take.reseed)), plans[k:]
            take.timeline, take.seed = timeline, seed
            take.clear_edit()
            return take, plans[k:]
        return self._job(engine, cancel, prepare, output, crf)

    def extend(self, engine, cancel: CancelToken | None, seconds: float, prompt: str | None = None, output=None,
               crf: int = 18, after_block: int | None = None) -> Iterator[Event]:
        """Continue after the last block of the current take (or after `after_block`, as a new take) by `seconds`
        rounded to whole blocks of 2.5 s, with `prompt` (default: the prompt of the block continued)."""
        def prepare():
            take = self.take()
            n_new = _blocks_for_seconds(seconds)
            if not take.blocks:
                raise ProjectError("nothing to extend yet: generate the first blocks of the project")
            j = len(take.blocks) - 1 if after_block is None else after_block
            if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < len(take.blocks):
                raise ProjectError(f"block {j!r} does not exist (the take has blocks 0..{len(take.blocks) - 1})")
            last = self._blocks[take.blocks[j]]
            base = timeline_until_block_end(take.timeline, last["end"])
            new_prompt = prompt if prompt else last["prompt"]
            timeline = _extend_timeline(base, n_new * BLOCK_SECONDS, new_prompt, last["prompt"])
            if j == len(take.blocks) - 1:
                target = take
                take.timeline = timeline
                take.clear_edit()
            else:
                target = self._new_take(take, j + 1, timeline, take.seed, list(take.reseed))
            plans = plan_take(timeline, target.seed, target.reseed)
            kept = [(self._blocks[b]["start"], self._blocks[b]["end"]) for b in target.blocks[:j + 1]]
            if [(p.start, p.end) for p in plans[:j + 1]] != kept:
                raise ProjectError("this video is shorter than one 2.5 s block, so its first block would change; "
                                   "regenerate it at the new length instead of extending")
            return target, plans[j + 1:]
        return self._job(engine, cancel, prepare, output, crf)

    def regenerate(self, engine, cancel: CancelToken | None, from_block: int, seed: int | None = None,
                   prompt: str | None = None, output=None, crf: int = 18) -> Iterator[Event]:
        """Redo the current take from block `from_block` (new seed and/or a prompt for the rest of the video) as a
        new take; blocks before it are reused untouched."""
        def prepare():
            take = self.take()
            timeline, take_seed = take.effective
            plans_now = plan_take(timeline, take_seed, take.reseed)
            k = from_block
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(plans_now) or k > len(take.blocks):
                raise ProjectError(f"cannot regenerate from block {k!r}: the take has {len(take.blocks)} block(s), "
                                   f"the timeline {len(plans_now)}")
            if seed is not None and not is_valid_seed(seed):
                raise ProjectError(f"the seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
            first_stale = next((r.index for r in self.blocks(take.id) if r.stale), k)
            k = min(k, first_stale)  # blocks an edit has outdated are redone too, never reused as context
            if prompt:
                timeline = timeline_with_prompt_from(timeline, block_cut_seconds(plans_now[k].start), prompt)
            reseed = list(take.reseed) + ([(k, seed)] if seed is not None else [])
            target = self._new_take(take, k, timeline, take_seed, reseed)
            take.clear_edit()
            return target, plan_take(timeline, target.seed, reseed)[k:]
        return self._job(engine, cancel, prepare, output, crf)

    def _new_take(self, base: Take, k: int, timeline: Timeline, seed: int, reseed: list) -> Take:
        """A take sharing blocks 0..k-1 of `base`; it joins the tree when its first block is saved."""
        number = 1 + max(int(t.id[1:]) for t in self._takes.values())
        return Take(f"t{number}", f"Take {number}", base.id, k, seed, timeline, list(base.blocks[:k]),
                    reseed, None, time.time())

    def _job(self, engine, cancel, prepare, output, crf) -> Iterator[Event]:
        """Run one generation job; never raises (errors become ErrorEvent, cancellation FinishedEvent(cancelled))."""
        cancel = cancel or CancelToken()
        t0 = time.perf_counter()
        n_frames = 0
        take = None
        tip_cache: list = []       # (block id, VAE decoder cache) of the last block this job saved
        try:
            self.check_model(engine.info)
            if engine.info.get("sampler") == "base":
                raise ProjectError("the base SANA-Video model makes single 5-second clips; projects (Extend, "
                                   "Regenerate, takes) need the block-causal longsana-480p model")
            if output is not None:
                check_mp4_target(output)
            self._collect_garbage()
            take, plans = prepare()
            if plans:
                k = plans[0].index
                resume = None
                if k > 0:
                    yield StageEvent("resume", f"loading the state after block {k - 1}")
                    resume = self._resume_point(engine, take.blocks[:k])
                frames = None
                for ev in engine.run_blocks([_engine_plan(p) for p in plans], (take.timeline.motion_score), cancel,
                                            resume=resume):
                    if isinstance(ev, BlockPreviewEvent):
                        frames = ev.frames
                        n_frames += len(ev.frames)
                    elif isinstance(ev, BlockDoneEvent):
                        bid = self._commit_block(take, ev, frames)
                        tip_cache[:] = [(bid, ev.extra.get("vae_cache"))]
                        ev.extra["block_id"] = bid
                        ev.extra["bytes"] = sum(n for _, n in self.block_files(bid))
                        frames = None
                    yield ev
            elif take is not None:
                if take.id not in self._takes and take.blocks:   # a shorter timeline: the kept blocks as a take
                    self._takes[take.id] = take
                    self.current_take = take.id
                if take.id in self._takes:
                    self._commit_and_collect()
            self._keep_tip_cache(tip_cache)
            path = None
            if output is not None:
                yield StageEvent("export", str(output))
                path = str(self.export_mp4(output, take=take.id if take.id in self._takes else None, crf=crf))
            yield FinishedEvent(path, n_frames, time.perf_counter() - t0)
        except Cancelled:
            self._keep_tip_cache(tip_cache, quiet=True)
            yield FinishedEvent(None, n_frames, time.perf_counter() - t0, cancelled=True)
        except StudioError as exc:
            self._keep_tip_cache(tip_cache, quiet=True)
            yield ErrorEvent(str(exc), type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - the GUI must get a readable message, never a dead worker
            log.exception("project job failed")
            self._keep_tip_cache(tip_cache, quiet=True)
            yield ErrorEvent(f"{type(exc).__name__}: {exc}", "InternalError")

    def _keep_tip_cache(self, tip_cache: list, quiet: bool = False) -> None:
        """Store the decoder cache after the job's last block (so Extend needs no re-decode), per the policy."""
        if not tip_cache or tip_cache[0][1] is None or self.settings["vae_cache"] == "none":
            return
        bid, cache = tip_cache[0]
        tip_cache.clear()
        if getattr(cache, "expired", False):  # the decoder moved on (e.g. a failed decode): nothing valid to keep
            return
        if callable(cache):  # an engine may hand the (GB-sized) cache out lazily: only valid after a clean stop
            if quiet and not isinstance(sys.exc_info()[1], Cancelled):
                return
            cache = cache()
        try:
            self.attach_vae_cache(bid, cache)
        except Exception as exc:  # noqa: BLE001 - on an error path this must never raise
            if not quiet and isinstance(exc, (StudioError, OSError)):
                raise
            if not quiet:
                raise ProjectError(f"could not keep the VAE cache of block {bid}: {exc}") from exc
            log.warning("could not keep the VAE cache of block %s: %s", bid, exc)

    def attach_vae_cache(self, block_id: str, cache: dict[str, torch.Tensor]) -> None:
        """Write the decoder cache after `block_id` (file first, then project.json), dropping caches the policy
        no longer keeps."""
        rec = self._blocks.get(block_id)
        if rec is None:
            raise ProjectError(f"block {block_id} is not in the project")
        vname = vae_cache_file_name(block_id)
        vdata = encode_safetensors(cache, {"format": VAE_CACHE_FORMAT, "version": str(FILE_VERSION),
                                           "block_id": block_id})
        vsha = write_file(resolve_inside(self.folder, vname, "new VAE cache"), vdata)
        rec["vae_cache"] = {"file": vname, "bytes": len(vdata), "sha256": vsha}
        self._commit_and_collect()

    # ------------------------------------------------------------------ resume
    def _load_block(self, block_id: str, names: list[str] | None = None,
                    verified: set[str] | None = None) -> dict[str, torch.Tensor]:
        """Tensors of one block file (default: all), after checking its checksum (once per `verified` set)."""
        rec = self._blocks[block_id]
        what = f"block {block_id}"
        path = resolve_inside(self.folder, rec["file"], what)
        if verified is None or block_id not in verified:
            verify_checksum(path, rec["sha256"], what)
            if verified is not None:
                verified.add(block_id)
        tensors = read_tensors(path, what, names)
        exp = self._expected_shapes(rec)
        for name in ("latents", "frames"):
            if name in tensors and tuple(tensors[name].shape) != exp[name]:
                raise ProjectError(f"{what}: {name} {tuple(tensors[name].shape)} do not match the project")
        return tensors

    def _contribution(self, block_id: str, prefix: str, with_frame: bool,
                      verified: set[str]) -> BlockContribution:
        parts = ["vk", "k_sum"] + (["tconv_frame"] if with_frame else [])
        t = self._load_block(block_id, [f"{prefix}.{p}" for p in parts], verified)
        return BlockContribution(t[f"{prefix}.vk"], t[f"{prefix}.k_sum"], t.get(f"{prefix}.tconv_frame"))

    def _resume_point(self, engine, path: list[str]):
        """Everything run_blocks needs to continue after the last block of `path` (blocks 0..k-1).

        Memory stays constant in k: only the last two contributions matter one by one (the state's temporal-conv
        frame and the base of a prompt-switch recache); the earlier ones are summed here into one, in the same
        order as the engine sums them (zeros + c0 + c1 + ...), so the state is bit-identical."""
        from core.engine import ResumePoint

        k = len(path)
        verified: set[str] = set()
        merged: BlockContribution | None = None
        tail: list[BlockContribution] = []
        for j in range(k):
            # block j's contribution as the later blocks saw it: replaced by block j+1's recache on a prompt switch
            if j + 1 < k and self._blocks[path[j + 1]]["recached_previous"]:
                source, prefix = path[j + 1], "recached_previous"
            else:
                source, prefix = path[j], "contribution"
            keep_frame = j >= k - 2
            c = self._contribution(source, prefix, keep_frame, verified)
            if keep_frame:
                tail.append(c)
            elif merged is None:
                merged = BlockContribution(torch.zeros_like(c.vk) + c.vk, torch.zeros_like(c.k_sum) + c.k_sum, None)
            else:
                merged = BlockContribution(merged.vk + c.vk, merged.k_sum + c.k_sum, None)
        last = self._blocks[path[-1]]
        prev_latents = self._load_block(path[-1], ["latents"], verified)["latents"][None]
        return ResumePoint(contributions=([merged] if merged is not None else []) + tail,
                           prev_latents=prev_latents, prev_prompt=last["prompt"], prev_start=last["start"],
                           vae_cache=self._vae_cache_after(engine, path, verified))

    def _vae_cache_after(self, engine, path: list[str], verified: set[str]):
        """The decoder cache after the last block of `path`: stored, or re-decoded from the nearest stored one."""
        j = next((i for i in range(len(path) - 1, -1, -1) if self._blocks[path[i]]["vae_cache"] is not None), -1)
        cache = None
        if j >= 0:
            vc = self._blocks[path[j]]["vae_cache"]
            vpath = resolve_inside(self.folder, vc["file"], "VAE cache")
            verify_checksum(vpath, vc["sha256"], f"block {path[j]} VAE cache")
            cache = read_tensors(vpath, f"block {path[j]} VAE cache")
            if j == len(path) - 1:
                return cache
        vae = engine.vae
        if cache is None:
            vae.reset()
        else:
            vae.restore_cache(cache)
        for bid in path[j + 1:]:                      # decode only to advance the cache (frames are on disk)
            latents = self._load_block(bid, ["latents"], verified)["latents"]
            vae.decode_block(latents[None].float())
        return {k: v.detach().to("cpu") for k, v in vae.save_cache().items()}

    # ------------------------------------------------------------------ saving a block
    def _commit_block(self, take: Take, ev: BlockDoneEvent, frames) -> str:
        """Write one finished block (files first, project.json last) and append it to `take`."""
        if frames is None:
            raise ProjectError(f"block {ev.block} finished without decoded frames")
        contribution = ev.extra.get("contribution")
        recached = ev.extra.get("recached_previous")
        return self.append_block(take, ev.block, ev.frame_start, ev.frame_end, ev.prompt, ev.seed, ev.latents,
                                 np.asarray(frames), contribution, recached)

    def append_block(self, take: Take, index: int, start: int, end: int, prompt: str, seed: int,
                     latents: torch.Tensor, frames: np.ndarray, contribution: BlockContribution,
                     recached: BlockContribution | None = None,
                     vae_cache: dict[str, torch.Tensor] | None = None) -> str:
        """The autosave of one block (also used by the crash tests without an engine)."""
        if index != len(take.blocks):
            raise ProjectError(f"block {index} does not follow the {len(take.blocks)} block(s) of take {take.id}")
        if contribution is None:
            raise ProjectError(f"block {index} has no state contribution (the engine did not return one)")
        rec_prev = self._blocks[take.blocks[-1]] if take.blocks else None
        if (rec_prev["end"] if rec_prev else 0) != start:
            raise ProjectError(f"block {index} starts at latent frame {start}, not after the previous block")
        bid = f"b{self._next_id}"
        tensors = block_tensors(latents, frames, contribution, recached if take.blocks else None)
        expected = self._expected_shapes({"start": start, "end": end})
        if tuple(tensors["latents"].shape) != expected["latents"] or tuple(tensors["frames"].shape) != expected["frames"]:
            raise ProjectError(f"block {index}: latents {tuple(tensors['latents'].shape)} / frames "
                               f"{tuple(tensors['frames'].shape)} do not match the project's {expected}")
        layout = {p: [dtype_of(tensors[f'contribution.{p}']), list(tensors[f'contribution.{p}'].shape)]
                  for p in CONTRIB_PARTS}
        if self._layout is not None and layout != self._layout:
            raise ProjectError(f"block {index}: stream-state shapes {layout} differ from the project's {self._layout}")
        meta = {"format": BLOCK_FORMAT, "version": str(FILE_VERSION), "block_id": bid, "index": str(index),
                "start": str(start), "end": str(end)}
        name = block_file_name(bid)
        data = encode_safetensors(tensors, meta)
        sha = write_file(resolve_inside(self.folder, name, "new block"), data)
        rec: dict[str, Any] = {"index": index, "start": start, "end": end, "prompt": prompt, "seed": int(seed),
                               "parent": take.blocks[-1] if take.blocks else None, "file": name, "bytes": len(data),
                               "sha256": sha, "recached_previous": recached is not None and bool(take.blocks),
                               "created": time.time(), "vae_cache": None}
        if vae_cache is not None:
            vname = vae_cache_file_name(bid)
            vdata = encode_safetensors(vae_cache, {"format": VAE_CACHE_FORMAT, "version": str(FILE_VERSION),
                                                   "block_id": bid})
            vsha = write_file(resolve_inside(self.folder, vname, "new VAE cache"), vdata)
            rec["vae_cache"] = {"file": vname, "bytes": len(vdata), "sha256": vsha}
        # only now (files complete) does the block join the project: project.json is the commit record
        before = self._to_doc()
        try:
            self._blocks[bid] = rec
            self._next_id += 1
            if self._layout is None:
                self._layout = layout
            take.blocks.append(bid)
            if take.id not in self._takes:
                self._takes[take.id] = take
            self.current_take = take.id
            self._commit_and_collect()
        except BaseException:
            self._load_doc(before)  # memory follows what is on disk
            raise
        return bid

    def _commit_and_collect(self) -> None:
        """Drop VAE caches that are no longer at a take's tip, save project.json, then delete unreferenced files."""
        policy = self.settings["vae_cache"]
        takes = [self.take()] if policy == "current" else list(self._takes.values()) if policy == "tips" else []
        tips = {t.blocks[-1] for t in takes if t.blocks}
        for bid, rec in self._blocks.items():
            if rec["vae_cache"] is not None and bid not in tips:
                rec["vae_cache"] = None
        used = {bid for t in self._takes.values() for bid in t.blocks}
        for bid in [b for b in self._blocks if b not in used]:
            del self._blocks[bid]
        self._save()
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Delete files in blocks/ that project.json does not name (left by an interrupted save or a deleted take)."""
        self._check_not_changed_elsewhere()  # another handle's new blocks are not garbage
        for p in self.folder.glob(".project.json.*.tmp.json"):
            with contextlib.suppress(OSError):
                p.unlink()
        folder = self.folder / BLOCKS_DIR
        if not folder.is_dir():
            return
        keep = set()
        for rec in self._blocks.values():
            keep.add(Path(rec["file"]).name)
            if rec["vae_cache"] is not None:
                keep.add(Path(rec["vae_cache"]["file"]).name)
        for p in folder.iterdir():
            ours = re.fullmatch(r"(\.)?b[0-9]+(\.vae)?\.safetensors(\..*\.tmp\.safetensors)?", p.name)
            if ours and p.name not in keep and (p.is_symlink() or p.is_file()):
                try:
                    p.unlink()
                except OSError as exc:
                    log.warning("could not delete %s: %s", p, exc)

    # ------------------------------------------------------------------ export
    def frames(self, take: str | None = None, frame_range: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
        """Decoded frames (H, W, 3) uint8 of a take, block after block (checksums verified); `frame_range`
        (first, end) picks video frames [first, end) and skips the files of blocks outside it."""
        first, stop = (0, None) if frame_range is None else frame_range
        position = 0
        for bid in self.take(take).blocks:
            rec = self._blocks[bid]
            count = self._expected_shapes(rec)["frames"][0]
            if position + count > first and (stop is None or position < stop):
                frames = self._load_block(bid)["frames"].numpy()
                lo = max(0, first - position)
                hi = count if stop is None else min(count, stop - position)
                yield from frames[lo:hi]
            position += count

    def export_mp4(self, path, take: str | None = None, crf: int = 18,
                   frame_range: tuple[int, int] | None = None) -> Path:
        """H.264 MP4 of a take (default: the current one), from the stored frames (no decoding)."""
        from core.export import write_mp4

        t = self.take(take)
        if not t.blocks:
            raise ProjectError(f"take {t.id} has no blocks yet: generate first")
        if frame_range is not None:
            a, b = frame_range
            if not (isinstance(a, int) and isinstance(b, int) and 0 <= a < b):
                raise ProjectError(f"frame range {frame_range!r} is invalid")
        meta = {"title": t.timeline.clips[0].prompt[:200] if t.timeline.clips else "",
                "timeline": t.timeline.to_dict(), "seed": t.seed, "model": self.model["model_id"],
                "revision": self.model["revision"], "take": t.id, "software": "SANA-Video Studio"}
        if self.model.get("is_demo"):
            meta["label"] = "DEMO - tiny random weights: the output is noise, not a real video"
        return write_mp4(path, self.frames(t.id, frame_range), fps=self.model["fps"], crf=crf, metadata=meta)

    def save_as(self, folder) -> Project:
        """Copy the project (all takes) to an empty folder and return the copy."""

        folder = Path(folder)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ProjectError(f"{folder} is not empty: choose a new or empty folder")
        (folder / BLOCKS_DIR).mkdir(parents=True, exist_ok=True)
        for rec in self._blocks.values():
            for name in [rec["file"]] + ([rec["vae_cache"]["file"]] if rec["vae_cache"] else []):
                src = resolve_inside(self.folder, name, "copy")
                data = src.read_bytes()
                write_file(resolve_inside(folder, name, "copy"), data)
        atomic_write_text(folder / PROJECT_FILE, json.dumps(self._to_doc(), indent=1, sort_keys=True))
        return Project.open(folder)


def dtype_of(t: torch.Tensor) -> str:
    return dtype_name(t.dtype)


def _extend_timeline(base: Timeline, seconds: float, prompt: str, last_prompt: str) -> Timeline:
    clips = [Clip(c.prompt, c.seconds, c.seed) for c in base.clips]
    if prompt == last_prompt and clips[-1].prompt == prompt:
        clips[-1].seconds += seconds
    else:
        clips.append(Clip(prompt, seconds))
    return Timeline(clips, base.motion_score).validate()


def _engine_plan(p: PlannedBlock):
    from core.engine import BlockPlan
    return BlockPlan(p.index, p.start, p.end, p.prompt, p.seed)


__all__ = ["Project", "Take", "BlockRecord", "PlannedBlock", "plan_take", "timeline_cut", "block_cut_seconds",
           "timeline_with_prompt_from", "SCHEMA_VERSION", "PROJECT_FORMAT"]
