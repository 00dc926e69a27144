"""Projects with the real demo engine on the CPU (64x112 frames): Extend in a fresh process == one-shot generation,
Extend after prompt switches == one-shot, Regenerate from block k, prompt edits -> stale blocks -> a new take,
cancel and resume, export of any take."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ProjectError
from core.events import BlockDoneEvent, BlockPreviewEvent, CancelToken, ErrorEvent, FinishedEvent
from core.project import Project
from core.timeline import Clip, Timeline

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a red fox running through snow"
SEED = 7


@pytest.fixture(scope="session")
def studio_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("studio_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANA_VIDEO_STUDIO_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def engine(studio_home):
    from core.engine import Engine

    return Engine.load("demo", device="cpu")


def run_job(events):
    """Consume a job: (latents by block index, frames by block index, the final event)."""
    latents, frames, last = {}, {}, None
    for ev in events:
        if isinstance(ev, BlockDoneEvent):
            latents[ev.block] = ev.latents
        elif isinstance(ev, BlockPreviewEvent):
            frames[ev.block] = ev.frames
        elif isinstance(ev, ErrorEvent):
            raise AssertionError(f"job failed: {ev.message}")
        last = ev
    assert isinstance(last, FinishedEvent) and not last.cancelled
    return latents, frames, last


def stored(project: Project, take: str | None = None):
    """(latents, frames) of every block of a take, read back from the project files."""
    out = []
    for rec in project.blocks(take):
        tensors = project._load_block(rec.id)
        out.append((tensors["latents"], tensors["frames"].numpy()))
    return out


@pytest.fixture(scope="session")
def oneshot(engine, tmp_path_factory):
    """Two blocks (5 s) in one go."""
    folder = tmp_path_factory.mktemp("oneshot") / "p"
    project = Project.create(folder, engine.info, Timeline.single(PROMPT, 5.0), SEED)
    latents, frames, _ = run_job(project.generate(engine, CancelToken()))
    assert sorted(latents) == [0, 1]
    # the decoder cache is kept for the last block only (it is GBs at 480p)
    assert [r.has_vae_cache for r in Project.open(folder).blocks()] == [False, True]
    return folder, latents, frames


@pytest.fixture(scope="session")
def extended(engine, tmp_path_factory):
    """One block (2.5 s), then Extend by 2.5 s in a fresh Python process."""
    folder = tmp_path_factory.mktemp("extended") / "p"
    project = Project.create(folder, engine.info, Timeline.single(PROMPT, 2.5), SEED)
    run_job(project.generate(engine, CancelToken()))
    assert len(project.blocks()) == 1
    script = textwrap.dedent(f'''
        from core.engine import Engine
        from core.events import CancelToken, ErrorEvent, FinishedEvent
        from core.project import Project
        project = Project.open({str(folder)!r})
        engine = Engine.load("demo", device="cpu")
        project.check_model(engine.info)
        for ev in project.extend(engine, CancelToken(), seconds=2.5):
            if isinstance(ev, ErrorEvent):
                raise SystemExit("extend failed: " + ev.message)
        print("extended", len(project.blocks()))
    ''')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "extended 2" in done.stdout
    return folder


def test_extend_in_a_fresh_process_equals_one_shot(oneshot, extended):
    folder, event_latents, event_frames = oneshot
    one = stored(Project.open(folder))
    ext = stored(Project.open(extended))
    assert len(one) == len(ext) == 2
    for i, ((la, fa), (lb, fb)) in enumerate(zip(one, ext)):
        # what was saved is what the engine produced
        assert torch.equal(la, event_latents[i])
        assert np.array_equal(fa, event_frames[i])
        assert la.shape == lb.shape
        assert (la - lb).abs().max().item() <= 1e-6, f"block {i} latents differ"
        assert np.abs(fa.astype(int) - fb.astype(int)).max() == 0, f"block {i} frames differ"
    # the extended timeline is the one-shot timeline
    assert Project.open(extended).timeline.total_seconds == pytest.approx(5.0)


def test_regenerate_same_seed_reproduces_and_new_seed_branches(engine, oneshot, tmp_path):
    folder, event_latents, event_frames = oneshot
    copy = Project.open(folder).save_as(tmp_path / "copy")
    before = {rec.index: (rec.id, Path(copy.folder / rec.files[0]).read_bytes()) for rec in copy.blocks()}

    # same seed, same prompt: block 1 comes out identical (state from the saved contributions, VAE re-decoded)
    latents, frames, _ = run_job(copy.regenerate(engine, CancelToken(), from_block=1))
    assert copy.current_take == "t2"
    assert torch.equal(latents[1], event_latents[1])
    assert np.array_equal(frames[1], event_frames[1])

    # a new seed: block 0 untouched (same file, same bytes), block 1 changed; a third take
    latents, frames, _ = run_job(copy.regenerate(engine, CancelToken(), from_block=1, seed=SEED + 100))
    t3 = copy.current_take
    assert t3 == "t3"
    recs = copy.blocks()
    assert recs[0].id == before[0][0]
    assert (copy.folder / recs[0].files[0]).read_bytes() == before[0][1]
    assert torch.equal(stored(copy)[0][0], event_latents[0])
    assert not torch.allclose(latents[1], event_latents[1])
    assert recs[1].seed == SEED + 100 and recs[0].seed == SEED

    # the old take stays selectable and exports; reopening keeps the tree
    reopened = Project.open(copy.folder)
    assert [t.id for t in reopened.takes] == ["t1", "t2", "t3"]
    assert reopened.take("t3").parent == "t2" and reopened.take("t3").branch_block == 1
    out1 = reopened.export_mp4(tmp_path / "t1.mp4", take="t1")
    out3 = reopened.export_mp4(tmp_path / "t3.mp4", take="t3")
    assert out1.stat().st_size > 0 and out3.stat().st_size > 0
    import av
    with av.open(str(out3)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == len(event_frames[0]) + len(event_frames[1])

    # deleting a take frees its own blocks only
    size = reopened.disk_bytes()
    own = reopened.blocks("t3")[1]
    reopened.delete_take("t3")
    assert not (reopened.folder / own.files[0]).exists()
    assert reopened.disk_bytes() < size
    assert (reopened.folder / recs[0].files[0]).exists()
    assert [t.id for t in Project.open(reopened.folder).takes] == ["t1", "t2"]


def test_prompt_edit_marks_stale_then_generate_makes_a_new_take(engine, oneshot, tmp_path):
    folder, event_latents, _ = oneshot
    copy = Project.open(folder).save_as(tmp_path / "copy")
    edited = Timeline([Clip(PROMPT, 2.5), Clip("a blue whale in deep water", 2.5)])
    copy.set_timeline(edited)
    recs = copy.blocks()
    assert [r.stale for r in recs] == [False, True]
    # the edit is saved and nothing was deleted
    again = Project.open(copy.folder)
    assert [r.stale for r in again.blocks()] == [False, True]
    assert all((copy.folder / f).exists() for r in recs for f in r.files)

    latents, _, _ = run_job(again.generate(engine, CancelToken()))
    assert sorted(latents) == [1]
    assert again.current_take == "t2"
    new = again.blocks()
    assert [r.stale for r in new] == [False, False]
    assert new[0].id == recs[0].id and new[1].id != recs[1].id
    assert new[1].prompt == "a blue whale in deep water"
    assert not torch.allclose(latents[1], event_latents[1])
    # the old take still has its own prompt and is not stale against its own timeline
    assert [r.stale for r in again.blocks("t1")] == [False, False]
    assert again.blocks("t1")[1].prompt == PROMPT
    # every block reports its disk cost
    assert all(r.bytes > 0 for r in new)


def test_check_model_refuses_another_model(engine, oneshot):
    folder, _, _ = oneshot
    project = Project.open(folder)
    project.check_model(engine.info)
    with pytest.raises(ProjectError, match="made with demo"):
        project.check_model(dict(engine.info, model_id="longsana-480p", revision="abc"))


def test_extend_after_prompt_switches_equals_one_shot(engine, tmp_path):
    """Prompt switches at blocks 1 and 2 (the engine recaches the block before each): resuming at block 3 must use
    the recached contributions and pre-sum the early ones exactly as the engine does."""
    other = "a lighthouse in a storm"
    clips = [Clip(PROMPT, 2.5), Clip(other, 2.5), Clip(PROMPT, 5.0)]
    one = Project.create(tmp_path / "one", engine.info, Timeline(clips), SEED)
    want_latents, want_frames, _ = run_job(one.generate(engine, CancelToken()))
    assert [r.prompt for r in one.blocks()] == [PROMPT, other, PROMPT, PROMPT]

    base = Project.create(tmp_path / "base", engine.info, Timeline(clips[:2] + [Clip(PROMPT, 2.5)]), SEED)
    run_job(base.generate(engine, CancelToken()))
    reopened = Project.open(base.folder)
    latents, frames, _ = run_job(reopened.extend(engine, CancelToken(), seconds=2.5))
    assert sorted(latents) == [3]
    assert torch.equal(latents[3], want_latents[3])
    assert np.array_equal(frames[3], want_frames[3])
    assert reopened.timeline.to_dict() == one.timeline.to_dict()


def test_cancel_keeps_finished_blocks_and_generate_resumes(engine, oneshot, tmp_path):
    folder, want_latents, want_frames = oneshot
    project = Project.create(tmp_path / "p", engine.info, Timeline.single(PROMPT, 5.0), SEED)
    cancel = CancelToken()
    last = None
    for ev in project.generate(engine, cancel):
        if isinstance(ev, BlockDoneEvent):
            assert ev.extra["block_id"] and ev.extra["bytes"] > 0
            cancel.cancel()
        last = ev
    assert isinstance(last, FinishedEvent) and last.cancelled
    reopened = Project.open(project.folder)
    assert [r.has_vae_cache for r in reopened.blocks()] == [True]      # kept for the resume
    latents, frames, finished = run_job(reopened.generate(engine, CancelToken(), output=tmp_path / "out.mp4"))
    assert sorted(latents) == [1]
    assert torch.equal(latents[1], want_latents[1]) and np.array_equal(frames[1], want_frames[1])
    assert Path(finished.output).is_file()
    # nothing left to do: no block is generated, the export still happens
    latents, _, finished = run_job(reopened.generate(engine, CancelToken(), output=tmp_path / "again.mp4"))
    assert latents == {} and Path(finished.output).is_file()
    # errors arrive as events, never as exceptions
    events = list(reopened.regenerate(engine, CancelToken(), from_block=9))
    assert isinstance(events[-1], ErrorEvent) and "cannot regenerate from block 9" in events[-1].message


def _errors(events):
    return [ev for ev in events if isinstance(ev, ErrorEvent)]


def test_a_second_handle_cannot_overwrite_or_collect_anothers_blocks(engine, tmp_path):
    from core.events import CancelToken
    from core.timeline import Clip, Timeline

    folder = tmp_path / "shared"
    project = Project.create(folder, engine.info, Timeline([Clip("a fox", 2.5)]), 3)
    run_job(project.generate(engine, CancelToken()))
    stale_handle = Project.open(folder)               # e.g. the GUI has it open
    run_job(Project.open(folder).extend(engine, CancelToken(), 2.5))   # meanwhile the CLI extends it
    files_before = sorted(p.name for p in (folder / "blocks").iterdir())
    errors = _errors(stale_handle.extend(engine, CancelToken(), 2.5))
    assert errors and "changed by another window or process" in errors[0].message
    with pytest.raises(ProjectError, match="another window or process"):
        stale_handle.set_settings(crf=20)
    assert sorted(p.name for p in (folder / "blocks").iterdir()) == files_before
    assert len(Project.open(folder).blocks()) == 2


def test_review_fixes_short_extend_motion_score_base_sampler_and_seeds(engine, tmp_path):
    from core.events import CancelToken
    from core.timeline import MAX_SEED, Clip, Timeline

    short = Project.create(tmp_path / "short", engine.info, Timeline([Clip("a cat", 1.0)]), 1)
    run_job(short.generate(engine, CancelToken()))
    errors = _errors(short.extend(engine, CancelToken(), 2.5))
    assert errors and "shorter than one 2.5 s block" in errors[0].message

    p = Project.create(tmp_path / "motion", engine.info, Timeline([Clip("a cat", 2.5)]), 1)
    run_job(p.generate(engine, CancelToken()))
    p.set_timeline(Timeline([Clip("a cat", 2.5)], motion_score=80))
    assert [r.stale for r in p.blocks()] == [True]

    base_info = dict(engine.info, sampler="base")
    base_engine = type("E", (), {"info": base_info})()
    q = Project.create(tmp_path / "base", base_info, Timeline([Clip("a cat", 2.5)]), 1)
    errors = _errors(q.generate(base_engine, CancelToken()))
    assert errors and "longsana-480p" in errors[0].message

    with pytest.raises(ProjectError, match="seed must be an integer from 0"):
        Project.create(tmp_path / "bigseed", engine.info, Timeline([Clip("a cat", 2.5)]), MAX_SEED + 1)


def test_regenerate_after_an_edit_redoes_the_outdated_blocks_too(engine, tmp_path):
    from core.events import CancelToken
    from core.timeline import Clip, Timeline

    p = Project.create(tmp_path / "edit", engine.info, Timeline([Clip("a cat", 5.0)]), 2)
    run_job(p.generate(engine, CancelToken()))
    p.set_timeline(Timeline([Clip("a dog", 5.0)]))
    run_job(p.regenerate(engine, CancelToken(), from_block=1, seed=9))
    assert [(r.prompt, r.stale) for r in p.blocks()] == [("a dog", False), ("a dog", False)]
