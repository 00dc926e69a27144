"""Project files without an engine: crash safety (SIGKILL during real block saves), hostile / corrupted / hand-edited
projects, takes and their files, stale marking, timeline edits. Blocks are small synthetic tensors saved through
the same `Project.append_block` the engine path uses."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ProjectError
from core.model import BlockContribution
from core.project import Project, block_cut_seconds, plan_take, timeline_cut, timeline_with_prompt_from
from core.timeline import Clip, Timeline, video_frames_for_latent_frames

INFO = {"model_id": "fake-model", "revision": "r1", "precision": "fp32", "sampler": "longsana", "height": 16,
        "width": 16, "fps": 16, "latent_channels": 16, "is_demo": False}
LAYERS, HEADS, D, TOKENS, HIDDEN = 2, 2, 4, 1, 8


def contribution(gen: torch.Generator) -> BlockContribution:
    return BlockContribution(torch.randn(LAYERS, 1, HEADS, D, D, generator=gen),
                             torch.rand(LAYERS, 1, HEADS, D, generator=gen),
                             torch.randn(LAYERS, 1, TOKENS, HIDDEN, generator=gen))


def add_block(project: Project, take=None, seed: int = 0, prompt: str | None = None, recached: bool = False,
              vae: bool = True, frame_size: int = 16) -> str:
    """Append one synthetic block that continues `take` (default: the current one), following its timeline."""
    take = project.take() if take is None else take
    index = len(take.blocks)
    plans = plan_take(*take.effective, take.reseed)
    if index < len(plans):
        start, end, prompt_, seed_ = plans[index].start, plans[index].end, plans[index].prompt, plans[index].seed
    else:
        prev = project._blocks[take.blocks[-1]]
        start, end, prompt_, seed_ = prev["end"], prev["end"] + 10, prev["prompt"], prev["seed"]
    gen = torch.Generator().manual_seed(1000 * seed + index)
    t = end - start
    n_frames = video_frames_for_latent_frames(t) if start == 0 else 4 * t
    frames = torch.randint(0, 256, (n_frames, INFO["height"], INFO["width"], 3), generator=gen,
                           dtype=torch.uint8).numpy()
    vae_cache = {"conv.decoder.conv_in": torch.randn(1, 4, 2, 2, 2, generator=gen),
                 "latent_frames_done": torch.tensor([end], dtype=torch.int64)} if vae else None
    return project.append_block(take, index, start, end, prompt or prompt_, seed_,
                                torch.randn(16, t, 2, 2, generator=gen), frames, contribution(gen),
                                contribution(gen) if recached and index > 0 else None, vae_cache)


def make_project(folder: Path, blocks: int = 2, seconds: float = 10.0) -> Project:
    project = Project.create(folder, INFO, Timeline.single("a lighthouse at dusk", seconds), 3)
    for _ in range(blocks):
        add_block(project)
    return project


# ====================================================================== round trip, takes, stale
def test_round_trip_and_block_records(tmp_path):
    p = make_project(tmp_path / "p", blocks=3)
    q = Project.open(p.folder)
    assert [r.index for r in q.blocks()] == [0, 1, 2]
    assert [(r.start, r.end) for r in q.blocks()] == [(0, 11), (11, 21), (21, 31)]
    recs = q.blocks()
    # only the tip keeps the (large) VAE decoder cache
    assert [r.has_vae_cache for r in recs] == [False, False, True]
    assert all(r.bytes == sum((q.folder / f).stat().st_size for f in r.files) for r in recs)
    assert q.disk_bytes() >= sum(r.bytes for r in recs)
    for rec in recs:
        assert torch.equal(q._load_block(rec.id)["latents"], p._load_block(rec.id)["latents"])
    assert sorted(x.name for x in (q.folder / "blocks").iterdir()) == sorted(
        Path(f).name for r in recs for f in r.files)


def test_vae_cache_policy(tmp_path):
    p = make_project(tmp_path / "p", blocks=2)
    branch = p._new_take(p.take(), 1, p.take().timeline, 3, [(1, 5)])
    add_block(p, branch)
    assert [t.id for t in p.takes if p.blocks(t.id)[-1].has_vae_cache] == ["t2"]     # "current"
    p.set_settings(vae_cache="none")
    assert not any(r.has_vae_cache for t in p.takes for r in p.blocks(t.id))
    assert not list((p.folder / "blocks").glob("*.vae.safetensors"))
    with pytest.raises(ProjectError, match="vae_cache must be one of"):
        p.set_settings(vae_cache="everything")
    assert Project.open(p.folder).settings["vae_cache"] == "none"


def test_export_frame_range(tmp_path):
    p = make_project(tmp_path / "p", blocks=2)
    every = np.concatenate([p._load_block(r.id)["frames"].numpy() for r in p.blocks()])
    assert np.array_equal(np.stack(list(p.frames())), every)
    assert np.array_equal(np.stack(list(p.frames(frame_range=(30, 60)))), every[30:60])
    out = p.export_mp4(tmp_path / "part.mp4", frame_range=(30, 60))
    import av
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 30


def test_create_refuses_non_empty_folder(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "notes.txt").write_text("mine")
    with pytest.raises(ProjectError, match="not empty"):
        Project.create(tmp_path / "p", INFO, Timeline.single("x", 5.0), 0)
    assert (tmp_path / "p" / "notes.txt").read_text() == "mine"


def test_takes_tree_select_and_delete_frees_files(tmp_path):
    p = make_project(tmp_path / "p", blocks=3)
    base = p.take()
    branch = p._new_take(base, 1, base.timeline, base.seed, [(1, 99)])
    add_block(p, branch, seed=9)
    add_block(p, branch, seed=9)
    assert p.current_take == branch.id == "t2"
    shared = p.blocks("t1")[0].id
    assert p.blocks("t2")[0].id == shared and p.blocks("t2")[1].id != p.blocks("t1")[1].id
    assert [r.seed for r in p.blocks("t2")] == [3, 99, 99]
    assert [r.stale for r in p.blocks("t2")] == [False, False, False]
    p.select_take("t1")
    assert Project.open(p.folder).current_take == "t1"
    own = [f for r in p.blocks("t2")[1:] for f in r.files]
    before = p.disk_bytes()
    p.delete_take("t2")
    assert all(not (p.folder / f).exists() for f in own)
    assert p.disk_bytes() < before
    assert all((p.folder / f).exists() for r in p.blocks("t1") for f in r.files)
    with pytest.raises(ProjectError, match="only one"):
        p.delete_take("t1")
    with pytest.raises(ProjectError, match="no take"):
        p.select_take("t77")


def test_set_timeline_marks_stale_and_keeps_files(tmp_path):
    p = make_project(tmp_path / "p", blocks=3, seconds=7.5)
    files = [f for r in p.blocks() for f in r.files]
    p.set_timeline(Timeline([Clip("a lighthouse at dusk", 5.0), Clip("a storm", 2.5)]))
    assert [r.stale for r in p.blocks()] == [False, False, True]
    p.set_timeline(Timeline([Clip("a lighthouse at night", 7.5)]))
    assert [r.stale for r in p.blocks()] == [True, True, True]
    p.set_timeline(Timeline.single("a lighthouse at dusk", 7.5), seed=4)   # a seed change affects every block
    assert [r.stale for r in p.blocks()] == [True, True, True]
    p.set_timeline(Timeline.single("a lighthouse at dusk", 7.5), seed=3)   # back to what was generated
    assert [r.stale for r in p.blocks()] == [False, False, False]
    p.set_timeline(Timeline.single("a lighthouse at dusk", 5.0))          # shorter: the last block is beyond it
    assert [r.stale for r in Project.open(p.folder).blocks()] == [False, False, True]
    assert all((p.folder / f).exists() for f in files)


def test_timeline_edits_keep_earlier_blocks():
    tl = Timeline([Clip("a", 3.0), Clip("b", 4.5, seed=5)])
    assert timeline_cut(tl, 2.5).to_dict()["clips"] == [{"prompt": "a", "seconds": 2.5}]
    before = plan_take(tl, 0, [])
    assert [b.prompt for b in before] == ["a", "a", "b"] and [b.seed for b in before] == [0, 0, 5]
    for k in range(len(before)):
        edited = timeline_with_prompt_from(tl, block_cut_seconds(before[k].start), "c")
        after = plan_take(edited, 0, [])
        assert [(b.start, b.end) for b in after] == [(b.start, b.end) for b in before]
        assert after[:k] == before[:k] and [b.prompt for b in after[k:]] == ["c"] * (len(after) - k)
        assert edited.total_seconds == pytest.approx(tl.total_seconds)
    assert timeline_with_prompt_from(tl, block_cut_seconds(11), "c").to_dict()["clips"] == [
        {"prompt": "a", "seconds": 2.5}, {"prompt": "c", "seconds": 5.0}]
    # the engine plans the same blocks (same seeds, prompts, ranges)
    from core.engine import Engine
    plans = Engine.plan_blocks(None, tl, 0)
    assert [(b.index, b.start, b.end, b.prompt, b.seed) for b in plans] == [
        (b.index, b.start, b.end, b.prompt, b.seed) for b in before]


def test_resume_uses_recached_contributions(tmp_path):
    """After a prompt switch at block j the later blocks saw block j-1's recached contribution: so must a resume;
    contributions before the last two are pre-summed in the engine's order (zeros + c0 + c1 ...)."""
    p = make_project(tmp_path / "p", blocks=1)
    add_block(p, recached=True)
    add_block(p)
    add_block(p, recached=True)
    q = Project.open(p.folder)
    ids = [r.id for r in q.blocks()]
    loaded = [q._load_block(b) for b in ids]

    class FakeVAE:
        def restore_cache(self, cache):
            self.cache = cache

        def save_cache(self):
            return self.cache

        def reset(self):
            self.cache = {"latent_frames_done": torch.tensor([0])}

        def decode_block(self, latents):
            self.cache["latent_frames_done"] += latents.shape[2]

    class FakeEngine:
        vae = FakeVAE()

    resume = q._resume_point(FakeEngine(), ids)
    effective = [("recached_previous", 1), ("contribution", 1), ("recached_previous", 3), ("contribution", 3)]
    merged = torch.zeros(LAYERS, 1, HEADS, D, D)
    for prefix, src in effective[:2]:
        merged = merged + loaded[src][f"{prefix}.vk"]
    assert len(resume.contributions) == 3
    assert torch.equal(resume.contributions[0].vk, merged) and resume.contributions[0].tconv_frame is None
    assert torch.equal(resume.contributions[1].tconv_frame, loaded[3]["recached_previous.tconv_frame"])
    assert torch.equal(resume.contributions[1].k_sum, loaded[3]["recached_previous.k_sum"])
    assert torch.equal(resume.contributions[2].vk, loaded[3]["contribution.vk"])
    assert torch.equal(resume.prev_latents[0], loaded[3]["latents"])
    assert resume.prev_start == 31
    assert int(resume.vae_cache["latent_frames_done"]) == 41      # the tip's stored cache

    # no stored cache before block 2: re-decoded from block 0 (11 + 10 latent frames)
    resume = q._resume_point(FakeEngine(), ids[:2])
    assert int(resume.vae_cache["latent_frames_done"]) == 21
    assert [c.tconv_frame is not None for c in resume.contributions] == [True, True]
    assert torch.equal(resume.contributions[0].vk, loaded[1]["recached_previous.vk"])


# ====================================================================== crash safety
def _crash_child(folder: Path, write_fd: int, seed: int) -> None:
    """Runs in a forked child: opens the project and keeps saving blocks (sometimes branching / deleting takes),
    reporting each committed block count on the pipe, until it is killed."""
    rng = random.Random(seed)
    try:
        p = Project.open(folder)
        while True:
            take = p.take()
            if len(take.blocks) >= 6 or rng.random() < 0.15:
                k = rng.randrange(0, len(take.blocks)) if take.blocks else 0
                take = p._new_take(take, k, take.timeline, take.seed, [(k, rng.randrange(1000))])
            add_block(p, take, seed=rng.randrange(1000), frame_size=16)
            os.write(write_fd, f"S:{p.current_take}:{len(p.take().blocks)}\n".encode())
            if len(p.takes) > 3 and rng.random() < 0.5:
                victim = rng.choice([t.id for t in p.takes if t.id != p.current_take])
                os.write(write_fd, f"D:{victim}\n".encode())   # a deliberate deletion may follow a report
                p.delete_take(victim)
            time.sleep(rng.random() * 0.003)
    finally:
        os._exit(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_at_random_moments_never_loses_a_completed_block(tmp_path):
    folder = tmp_path / "p"
    make_project(folder, blocks=1, seconds=20.0)
    rng = random.Random(1234)
    kills_mid_write = 0
    for trial in range(60):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            _crash_child(folder, w, trial)
        os.close(w)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with os.fdopen(r) as fh:
            lines = [line.split(":") for line in fh.read().splitlines()]
        saved = [i for i, parts in enumerate(lines) if parts[0] == "S" and len(parts) == 3]
        reports = []
        if saved:
            _, take_id, count = lines[saved[-1]]
            deleted_later = any(parts == ["D", take_id] for parts in lines[saved[-1]:])
            reports = [] if deleted_later else [(take_id, count)]
        leftovers = [x for x in (folder / "blocks").iterdir() if ".tmp" in x.name]
        kills_mid_write += bool(leftovers)
        project = Project.open(folder)          # always opens
        if reports:
            take_id, count = reports[-1][0], int(reports[-1][1])
            # the last block the child reported as saved is there (one more may have followed)
            assert take_id in {t.id for t in project.takes}, (trial, reports[-1])
            assert len(project.take(take_id).blocks) >= count, (trial, reports[-1])
        for rec in project.blocks():           # complete and readable, checksums included
            project._load_block(rec.id)
    final = Project.open(folder)
    add_block(final)  # a save cleans up what interrupted saves left behind
    named = {Path(f).name for t in final.takes for rec in final.blocks(t.id) for f in rec.files}
    assert {x.name for x in (folder / "blocks").iterdir()} == named
    print(f"{kills_mid_write} of 60 kills left a partial file")


# ====================================================================== hostile and damaged projects
def _doc(folder: Path) -> dict:
    return json.loads((folder / "project.json").read_text())


def _write_doc(folder: Path, doc) -> None:
    (folder / "project.json").write_text(json.dumps(doc))


@pytest.fixture
def good(tmp_path):
    return make_project(tmp_path / "proj", blocks=2).folder


def _snapshot(root: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _edit_block(doc, key, value, which=0):
    bid = doc["takes"][0]["blocks"][which]
    doc["blocks"][bid][key] = value
    return doc


HOSTILE_DOCS = [
    ("future schema", lambda d: d.update(schema_version=99), "newer SANA-Video Studio"),
    ("wrong format", lambda d: d.update(format="something-else"), "not a SANA-Video project"),
    ("schema as string", lambda d: d.update(schema_version="1"), "schema_version"),
    ("escaping path", lambda d: _edit_block(d, "file", "../../outside.safetensors"), "inside the project folder"),
    ("absolute path", lambda d: _edit_block(d, "file", "/etc/passwd"), "inside the project folder"),
    ("wrong size", lambda d: _edit_block(d, "bytes", 12), "instead of"),
    ("huge latent range", lambda d: _edit_block(d, "end", 10**12), "end must be an integer"),
    ("negative index", lambda d: _edit_block(d, "index", -1), "index must be an integer"),
    ("bool seed", lambda d: _edit_block(d, "seed", True), "seed must be an integer"),
    ("missing block", lambda d: d["takes"][0]["blocks"].append("b999"), "does not exist"),
    ("reordered blocks", lambda d: d["takes"][0]["blocks"].reverse(), "does not continue"),
    ("bad block id", lambda d: d["blocks"].update({"../x": d["blocks"][d["takes"][0]["blocks"][0]]}), "block id"),
    ("no takes", lambda d: d.update(takes=[]), "takes must be a non-empty list"),
    ("current take missing", lambda d: d.update(current_take="t9"), "current_take"),
    ("bad timeline", lambda d: d["takes"][0].update(timeline={"clips": [{"prompt": "", "seconds": 1}]}), "timeline"),
    ("bad model height", lambda d: d["model"].update(height=10**9), "height"),
    ("other resolution", lambda d: d["model"].update(height=32), "latents are"),
    ("bad sha", lambda d: _edit_block(d, "sha256", "zz"), "sha256"),
    ("bad vae policy", lambda d: d["settings"].update(vae_cache="all"), "vae_cache"),
    ("vae cache escapes", lambda d: _edit_block(d, "vae_cache", {"file": "../../x", "bytes": 1, "sha256": "0" * 64},
                                                which=1), "inside the project folder"),
]


@pytest.mark.parametrize("name,edit,message", HOSTILE_DOCS, ids=[h[0] for h in HOSTILE_DOCS])
def test_hand_edited_project_json_gives_clear_errors(good, name, edit, message):
    doc = _doc(good)
    edit(doc)
    _write_doc(good, doc)
    snap = _snapshot(good.parent)
    with pytest.raises(ProjectError, match=message):
        Project.open(good)
    assert _snapshot(good.parent) == snap   # opening never writes, never deletes


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe garbage", b"[]", b"null", b"[" * 100_000 + b"]" * 100_000,
                                     json.dumps({"format": "sana-video-studio-project"}).encode()])
def test_corrupt_project_json(good, content):
    (good / "project.json").write_bytes(content)
    with pytest.raises(ProjectError):
        Project.open(good)


def test_truncated_project_json(good):
    data = (good / "project.json").read_bytes()
    for cut in (1, len(data) // 3, len(data) // 2, len(data) - 2):
        (good / "project.json").write_bytes(data[:cut])
        with pytest.raises(ProjectError, match="not valid JSON"):
            Project.open(good)


def test_missing_and_foreign_folders(tmp_path):
    with pytest.raises(ProjectError, match="not found"):
        Project.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProjectError, match="not a SANA-Video project"):
        Project.open(tmp_path / "empty")


def _block_path(folder: Path, which: int = 0) -> Path:
    doc = _doc(folder)
    return folder / doc["blocks"][doc["takes"][0]["blocks"][which]]["file"]


def _rewrite_block(folder: Path, data: bytes, which: int = 0) -> None:
    """Replace a block file and fix size and checksum in project.json (a careful hand edit)."""
    import hashlib
    path = _block_path(folder, which)
    path.write_bytes(data)
    doc = _doc(folder)
    rec = doc["blocks"][doc["takes"][0]["blocks"][which]]
    rec["bytes"], rec["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    _write_doc(folder, doc)


def _safetensors_with_header(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_truncated_block_file(good):
    path = _block_path(good)
    data = path.read_bytes()
    for cut in (0, 4, 100, len(data) - 1):
        _rewrite_block(good, data[:cut])
        with pytest.raises(ProjectError, match="truncated|header|outside|after the last|size"):
            Project.open(good)


def test_block_with_wrong_shapes(good):
    from safetensors.torch import load, save
    path = _block_path(good)
    tensors = load(path.read_bytes())
    meta = {"format": "sana-video-studio-block", "version": "1"}
    wrong = dict(tensors, latents=torch.zeros(16, 3, 2, 2))
    _rewrite_block(good, save(wrong, metadata=meta))
    with pytest.raises(ProjectError, match="latents are F32"):
        Project.open(good)
    wrong = dict(tensors, frames=torch.zeros(41, 16, 16, 3))   # float frames
    _rewrite_block(good, save(wrong, metadata=meta))
    with pytest.raises(ProjectError, match="frames are F32"):
        Project.open(good)
    wrong = dict(tensors)
    wrong["contribution.vk"] = torch.zeros(3, 1, 2, 4, 4)
    _rewrite_block(good, save(wrong, metadata=meta))
    with pytest.raises(ProjectError, match="stream-state"):
        Project.open(good)
    wrong = {k: v for k, v in tensors.items() if k != "frames"}
    _rewrite_block(good, save(wrong, metadata=meta))
    with pytest.raises(ProjectError, match="do not match the expected"):
        Project.open(good)
    _rewrite_block(good, save(tensors, metadata={"format": "pickle", "version": "1"}))
    with pytest.raises(ProjectError, match="not a SANA-Video Studio block file"):
        Project.open(good)


def test_block_header_claiming_huge_sizes(good):
    huge = {"latents": {"dtype": "F32", "shape": [2**39, 2**39], "data_offsets": [0, 2**62]}}
    _rewrite_block(good, _safetensors_with_header(huge, b"\0" * 64))
    with pytest.raises(ProjectError, match="outside the file|shape"):
        Project.open(good)
    _rewrite_block(good, struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(ProjectError, match="header of"):
        Project.open(good)
    lying = {"latents": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 16]}}
    _rewrite_block(good, _safetensors_with_header(lying, b"\0" * 16))
    with pytest.raises(ProjectError, match="does not match its shape"):
        Project.open(good)


def test_corrupted_block_content_is_caught_on_read(good, tmp_path):
    path = _block_path(good, 1)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF                      # same size, valid header: only the checksum can tell
    path.write_bytes(bytes(data))
    project = Project.open(good)
    with pytest.raises(ProjectError, match="checksum"):
        project.export_mp4(tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_symlink_escaping_the_folder(good, tmp_path):
    outside = tmp_path / "outside.safetensors"
    path = _block_path(good)
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)
    with pytest.raises(ProjectError, match="inside the project folder"):
        Project.open(good)


def test_leftovers_of_an_interrupted_save_are_ignored_then_removed(good):
    (good / "blocks" / "b77.safetensors").write_bytes(b"partial")
    (good / "blocks" / ".b78.safetensors.abc.tmp.safetensors").write_bytes(b"partial")
    (good / ".project.json.x1.tmp.json").write_text("{")
    (good / "blocks" / "mine.txt").write_text("not ours")
    p = Project.open(good)
    assert len(p.blocks()) == 2
    add_block(p)
    names = {x.name for x in (good / "blocks").iterdir()}
    assert "b77.safetensors" not in names and ".b78.safetensors.abc.tmp.safetensors" not in names
    assert "mine.txt" in names                    # never deletes what is not ours
    assert not (good / ".project.json.x1.tmp.json").exists()


def test_append_block_refuses_inconsistent_data(good):
    p = Project.open(good)
    take = p.take()
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ProjectError, match="does not follow"):
        p.append_block(take, 5, 21, 31, "x", 0, torch.zeros(16, 10, 2, 2), np.zeros((40, 16, 16, 3), np.uint8),
                       contribution(gen))
    with pytest.raises(ProjectError, match="do not match"):
        p.append_block(take, 2, 21, 31, "x", 0, torch.zeros(16, 10, 4, 4), np.zeros((40, 16, 16, 3), np.uint8),
                       contribution(gen))
    bad = BlockContribution(torch.zeros(3, 1, 2, 4, 4), torch.zeros(3, 1, 2, 4), torch.zeros(3, 1, 1, 8))
    with pytest.raises(ProjectError, match="stream-state"):
        p.append_block(take, 2, 21, 31, "x", 0, torch.zeros(16, 10, 2, 2), np.zeros((40, 16, 16, 3), np.uint8), bad)
    assert len(Project.open(good).blocks()) == 2
    assert len(list((good / "blocks").iterdir())) == 3   # 2 blocks + the tip's VAE cache


def test_hand_edited_next_id_never_overwrites_a_block(good):
    doc = _doc(good)
    doc["next_id"] = 1
    _write_doc(good, doc)
    p = Project.open(good)
    before = {r.id: (good / r.files[0]).read_bytes() for r in p.blocks()}
    new = add_block(p)
    assert new not in before
    for bid, data in before.items():
        assert (good / f"blocks/{bid}.safetensors").read_bytes() == data


def test_check_model(good):
    p = Project.open(good)
    p.check_model(INFO)
    with pytest.raises(ProjectError, match="made with fake-model"):
        p.check_model(dict(INFO, model_id="other"))
    with pytest.raises(ProjectError, match="revision r1"):
        p.check_model(dict(INFO, revision="r2"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
