"""The engine on the embedded demo model: events, MP4 output, timelines, cancel, bad input, sampler equivalence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.events import (
    BlockDoneEvent,
    BlockPreviewEvent,
    CancelToken,
    ErrorEvent,
    FinishedEvent,
    StageEvent,
    StepEvent,
)
from core.timeline import Clip, Timeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def studio_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("studio_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("SANA_VIDEO_STUDIO_HOME", str(home))
    yield home
    mp.undo()


@pytest.fixture(scope="session")
def engine(studio_home):
    from core.engine import Engine

    return Engine.load("demo", device="cpu")


def _run(engine, timeline, seed=0, output=None, cancel=None):
    from core.engine import GenerateRequest

    return list(engine.generate(GenerateRequest(timeline, seed=seed, output=output), cancel or CancelToken()))


@pytest.fixture(scope="session")
def five_second_run(engine, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "out.mp4"
    events = _run(engine, Timeline.single("a red fox running through snow", 5.0), seed=3, output=str(out))
    return out, events


def test_demo_generates_h264_mp4_with_expected_frames(engine, five_second_run):
    from core.export import read_mp4_info

    out, events = five_second_run
    assert not [e for e in events if isinstance(e, ErrorEvent)], events
    fin = events[-1]
    assert isinstance(fin, FinishedEvent) and not fin.cancelled and fin.output == str(out)
    info = read_mp4_info(out)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["frames"] == 81 == fin.num_frames
    assert (info["height"], info["width"]) == (engine.info["height"], engine.info["width"])
    assert info["metadata"]["model"] == "demo" and "random weights" in info["metadata"]["label"]
    assert info["metadata"]["timeline"]["clips"][0]["prompt"] == "a red fox running through snow"


def test_event_order_blocks_and_steps(five_second_run):
    _, events = five_second_run
    steps = [e for e in events if isinstance(e, StepEvent)]
    done = [e for e in events if isinstance(e, BlockDoneEvent)]
    previews = [e for e in events if isinstance(e, BlockPreviewEvent)]
    assert [(e.block, e.step) for e in steps] == [(b, s) for b in range(2) for s in range(1, 5)]
    assert all(e.preview is not None and e.preview.dtype == np.uint8 and e.preview.ndim == 3 for e in steps)
    assert [e.block for e in done] == [0, 1] and [e.block for e in previews] == [0, 1]
    assert [(e.frame_start, e.frame_end) for e in done] == [(0, 11), (11, 21)]
    assert [len(e.frames) for e in previews] == [41, 40]
    assert [e.first_frame_index for e in previews] == [0, 41]
    # every block's preview comes before its done event, and block k is done before block k+1 starts
    order = [(type(e).__name__, getattr(e, "block", None)) for e in events if not isinstance(e, StageEvent)]
    assert order.index(("BlockDoneEvent", 0)) < order.index(("StepEvent", 1))


def test_same_seed_same_video_other_seed_differs(engine, five_second_run):
    _, events = five_second_run
    first = [e.latents for e in events if isinstance(e, BlockDoneEvent)]
    again = [e.latents for e in _run(engine, Timeline.single("a red fox running through snow", 2.5), seed=3)
             if isinstance(e, BlockDoneEvent)]
    # a 2.5 s video is one block of 11 latent frames: the first block of the 5 s one (same seed, same prompt)
    assert torch.equal(again[0], first[0])
    other = [e.latents for e in _run(engine, Timeline.single("a red fox running through snow", 2.5), seed=4)
             if isinstance(e, BlockDoneEvent)]
    assert not torch.allclose(other[0], first[0])


def test_engine_block_equals_sampler_denoise_block(engine):
    """The engine's unrolled step loop is core.samplers.denoise_block: same latents for block 0."""
    from core.engine import LATENT_CHANNELS
    from core.samplers import BlockNoise, denoise_block

    prompt = "a lighthouse at dusk"
    events = _run(engine, Timeline.single(prompt, 2.5), seed=11)
    ours = [e.latents for e in events if isinstance(e, BlockDoneEvent)][0]
    model = engine.transformer
    text = engine._encode(prompt, 10)
    h, w = engine._latent_hw()
    noise_fn = BlockNoise.for_block(11, 0, "cpu")
    noise = noise_fn((1, LATENT_CHANNELS, 11, h, w))
    state = model.empty_state()

    def velocity(x, model_t, i):
        return model(x, torch.full((1,), float(model_t)), text, state=state, frame_offset=0)

    with torch.no_grad():
        ref = denoise_block(velocity, noise, noise_fn)
    torch.testing.assert_close(ours, ref[0], rtol=0, atol=0)


def test_three_prompt_timeline(engine, tmp_path):
    from core.export import read_mp4_info

    tl = Timeline([Clip("a cat on a sofa", 2.5), Clip("the cat jumps", 2.5), Clip("the cat sleeps", 2.5)])
    out = tmp_path / "three.mp4"
    events = _run(engine, tl, seed=1, output=str(out))
    assert isinstance(events[-1], FinishedEvent) and not events[-1].cancelled, events[-1]
    done = [e for e in events if isinstance(e, BlockDoneEvent)]
    assert [e.prompt for e in done] == ["a cat on a sofa", "the cat jumps", "the cat sleeps"]
    # each prompt switch re-caches the previous block with the new prompt (official interactive pipeline)
    recaches = [e for e in events if isinstance(e, StageEvent) and e.stage == "recache"]
    assert len(recaches) == 2
    assert "recached_previous" in done[1].extra and "recached_previous" in done[2].extra
    assert read_mp4_info(out)["frames"] == tl.num_video_frames == 121


def test_cancel_mid_block_stops_within_one_step_and_leaves_no_file(engine, tmp_path):
    from core.engine import GenerateRequest

    out = tmp_path / "cancelled.mp4"
    cancel = CancelToken()
    seen = []
    for ev in engine.generate(GenerateRequest(Timeline.single("waves", 5.0), output=str(out)), cancel):
        seen.append(ev)
        if isinstance(ev, StepEvent) and ev.block == 0 and ev.step == 2:
            cancel.cancel()
    steps_after = [e for e in seen[seen.index(next(e for e in seen if isinstance(e, StepEvent) and e.step == 2)) + 1:]
                   if isinstance(e, StepEvent)]
    assert steps_after == []
    assert isinstance(seen[-1], FinishedEvent) and seen[-1].cancelled
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("output, needle", [
    ("/nonexistent-folder/x.mp4", "does not exist"),
    ("relative.avi", "must end in .mp4"),
])
def test_bad_output_path_is_one_clear_error(engine, output, needle):
    events = _run(engine, Timeline.single("x", 2.5), output=output)
    assert len(events) == 1 and isinstance(events[0], ErrorEvent) and needle in events[0].message


def test_unwritable_output_folder(engine, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    events = _run(engine, Timeline.single("x", 2.5), output=str(blocker / "out.mp4"))
    assert isinstance(events[-1], ErrorEvent) and "not a folder" in events[-1].message


@pytest.mark.parametrize("data, needle", [
    ({"clips": []}, "empty"),
    ({"clips": [{"prompt": "a", "seconds": 2}], "colour": 1}, "unknown timeline fields"),
    ({"clips": [{"prompt": "a", "seconds": 2, "speed": 3}]}, "unknown fields"),
    ({"clips": [{"prompt": "", "seconds": 2}]}, "prompt is empty"),
    ({"clips": [{"prompt": "a", "seconds": -1}]}, "must be positive"),
    ({"clips": [{"prompt": "a", "seconds": 0}]}, "must be positive"),
    ({"clips": [{"prompt": "a", "seconds": 1e9}]}, "at most"),
    ({"clips": [{"prompt": "a", "seconds": "ten"}]}, "number of seconds"),
    ({"clips": [{"prompt": "a"}]}, "needs both"),
    ({"clips": "a cat"}, "must be a list"),
    ({"clips": [{"prompt": "a", "seconds": 2}], "version": 9}, "version"),
])
def test_bad_timelines(data, needle):
    from core.errors import TimelineError

    with pytest.raises(TimelineError, match=needle):
        Timeline.from_dict(data)


def _cli(args, env_home, timeout=600):
    import os

    env = dict(os.environ, SANA_VIDEO_STUDIO_HOME=str(env_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def test_cli_generate_demo_timeline(studio_home, tmp_path):
    from core.export import read_mp4_info

    tl = tmp_path / "tl.json"
    tl.write_text(json.dumps({"clips": [{"prompt": "sunrise", "seconds": 2.5}, {"prompt": "noon", "seconds": 2.5}]}))
    out = tmp_path / "cli.mp4"
    r = _cli(["generate", "--demo", "--timeline", str(tl), "--seed", "5", "-o", str(out), "-q"], studio_home)
    assert r.returncode == 0, r.stderr
    assert "random weights" in r.stderr
    assert read_mp4_info(out)["frames"] == 81


@pytest.mark.parametrize("args, needle", [
    (["generate", "--demo", "--prompt", "x", "--seconds", "-3"], "must be positive"),
    (["generate", "--demo"], "give a --prompt"),
    (["generate", "--demo", "--timeline", "/nope.json"], "timeline file not found"),
    (["generate", "--model", "longsana-480p", "--prompt", "x"], "not downloaded"),
    (["generate", "--model", "longsana-480p", "--prompt", "x", "--download"], "offline"),
    (["generate", "--model", "no-such-model", "--prompt", "x"], "unknown model"),
    (["generate", "--demo", "--prompt", "x", "--device", "bogus"], "unknown device"),
    (["generate", "--demo", "--prompt", "x", "--seed", "99999999999999999999"], "seed must be an integer"),
    (["generate", "--model", "/definitely/not/here", "--prompt", "x"], "model folder not found"),
    (["generate", "--demo", "--prompt", "x", "--quant-recipe", "fastest"], "unknown quantization recipe"),
])
def test_cli_bad_input_one_clear_error(studio_home, args, needle):
    r = _cli(args, studio_home, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert needle in r.stderr, r.stderr


def test_cli_models_lists_registry(studio_home):
    r = _cli(["models", "--json"], studio_home)
    assert r.returncode == 0, r.stderr
    rows = {row["id"]: row for row in json.loads(r.stdout)}
    assert rows["longsana-480p"]["installed"] is False and rows["demo"]["installed"] is True


def test_missing_model_file_is_clear(tmp_path, studio_home):
    """A local model folder with a truncated transformer file: one CheckpointError naming the file."""
    import shutil

    from core.demo import ensure_demo_pack
    from core.engine import Engine
    from core.errors import CheckpointError

    pack = ensure_demo_pack()
    broken = tmp_path / "broken"
    shutil.copytree(pack, broken)
    weights = broken / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors"):
        Engine.load(str(broken), device="cpu")
    shutil.rmtree(broken / "vae")
    from core.errors import ModelNotFoundError
    with pytest.raises(ModelNotFoundError, match="lacks vae"):
        Engine.load(str(broken), device="cpu")


@pytest.mark.parametrize("hw, needle", [((480, 830), "multiple of 16"), ((0, 832), "multiple of 16"),
                                        ((4096, 4096), "larger than")])
def test_bad_resolution_is_a_clear_error(hw, needle):
    from core.engine import check_resolution
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        check_resolution(*hw)


def test_resolution_override_changes_the_frame_size(studio_home):
    from core.engine import Engine
    from core.export import read_mp4_info  # noqa: F401 - same import path as the CLI

    engine = Engine.load("demo", device="cpu", resolution=(48, 96), vram_mode="low")
    assert (engine.info["height"], engine.info["width"]) == (48, 96) and engine.vram_mode == "low"
    previews = [e for e in _run(engine, Timeline.single("tiny frames", 2.5)) if isinstance(e, BlockPreviewEvent)]
    assert previews[0].frames.shape[1:] == (48, 96, 3)


def _independent_longsana(engine, timeline, seed):
    """The official LongSANA loop written out separately from the engine (LongLiveFlowEuler.sample +
    _accumulate_kv_cache + the interactive pipeline's recache): per block, the state is the sum of the previous blocks'
    clean-pass contributions; on a prompt switch the previous block is re-run at t=0 with the new prompt on the state
    of the blocks before it; RoPE uses absolute frames; the cache pass sees the clean x0."""
    from core.engine import LATENT_CHANNELS
    from core.model import StreamState
    from core.samplers import BlockNoise, denoise_block

    model, cfg = engine.transformer, engine.transformer.cfg
    h, w = engine._latent_hw()
    blocks = timeline.blocks()
    prompts = [c.prompt for c in timeline.block_clips()]
    contributions, outs = [], []

    def state_of(contribs):
        return StreamState.from_contributions(cfg, contribs) if contribs else StreamState.empty(cfg)

    with torch.no_grad():
        for k, (start, end) in enumerate(blocks):
            text = engine._encode(prompts[k], timeline.motion_score)
            if k > 0 and prompts[k] != prompts[k - 1]:
                contributions[k - 1] = model.cache_pass(outs[k - 1], text, state_of(contributions[:k - 1]),
                                                        frame_offset=blocks[k - 1][0])
            state = state_of(contributions)
            noise_fn = BlockNoise.for_block(seed, k, "cpu")
            noise = noise_fn((1, LATENT_CHANNELS, end - start, h, w))

            def velocity(x, model_t, i, text=text, state=state, start=start):
                return model(x, torch.full((1,), float(model_t)), text, state=state, frame_offset=start)

            x0 = denoise_block(velocity, noise, noise_fn)
            contributions.append(model.cache_pass(x0, text, state, frame_offset=start))
            outs.append(x0)
    return [x[0] for x in outs]


def test_multi_block_loop_matches_an_independent_longsana_loop(engine):
    """Blocks after the first (state, absolute RoPE offsets, clean cache pass, prompt-switch recache) against the
    loop written out independently: catches a wrong frame_offset, a recache on the wrong state, or a cache pass on
    noisy latents."""
    tl = Timeline([Clip("a red ball", 2.5), Clip("a blue cube", 2.5), Clip("a blue cube", 2.5),
                   Clip("a green cone", 2.5)])
    ours = [e.latents for e in _run(engine, tl, seed=21) if isinstance(e, BlockDoneEvent)]
    ref = _independent_longsana(engine, tl, seed=21)
    assert len(ours) == len(ref) == 4
    for k, (a, b) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=lambda m, k=k: f"block {k}: {m}")


def test_uint8_conversion_truncates_like_the_official_script():
    from core.engine import _to_uint8

    video = torch.tensor([0.3, -0.2, 0.999, -1.5, 1.5]).view(1, 1, 1, 5).expand(3, 1, 1, 5)
    assert _to_uint8(video)[0, 0, :, 0].tolist() == [165, 102, 254, 0, 255]


@pytest.mark.parametrize("device, needle", [("bogus", "unknown device"), ("cuda:7", "CUDA"), ("mps", "not supported")])
def test_bad_device_is_a_clear_error(device, needle):
    from core.engine import pick_device
    from core.errors import ConfigError

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(ConfigError, match=needle):
        pick_device(device)


def test_timeline_from_a_folder_or_huge_number_is_a_clear_error(tmp_path):
    from core.errors import TimelineError

    with pytest.raises(TimelineError, match="cannot read the timeline file"):
        Timeline.from_json_file(tmp_path)
    with pytest.raises(TimelineError, match="finite number"):
        Timeline.from_dict({"clips": [{"prompt": "x", "seconds": 10**400}]})


def test_text_cache_is_bounded(engine):
    from core.engine import TEXT_CACHE_SIZE

    for i in range(TEXT_CACHE_SIZE + 5):
        engine._encode(f"prompt number {i}", 10)
    assert len(engine._text_cache) == TEXT_CACHE_SIZE


def test_cli_project_round_trip_generate_extend_regenerate_export(studio_home, tmp_path):
    """The CLI's project commands end to end on the demo model (block numbers count from 1 as displayed)."""
    from core.export import read_mp4_info
    from core.project import Project

    proj = tmp_path / "proj"
    r = _cli(["generate", "--demo", "-q", "-p", "a kite", "-s", "2.5", "--project", str(proj)], studio_home)
    assert r.returncode == 0, r.stderr
    r = _cli(["extend", str(proj), "--demo", "-q", "-s", "2.5", "-p", "a kite over the sea"], studio_home)
    assert r.returncode == 0, r.stderr
    before = Project.open(proj).blocks()
    r = _cli(["regenerate", str(proj), "--demo", "-q", "--block", "2", "--seed", "5"], studio_home)
    assert r.returncode == 0, r.stderr
    after = Project.open(proj).blocks()
    assert len(before) == len(after) == 2 and after[0].id == before[0].id and after[1].id != before[1].id
    out = tmp_path / "out.mp4"
    r = _cli(["export", str(proj), "-o", str(out)], studio_home)
    assert r.returncode == 0, r.stderr
    assert read_mp4_info(out)["frames"] == 81
    r = _cli(["regenerate", str(proj), "--demo", "--block", "0"], studio_home)
    assert r.returncode == 2 and "counts from 1" in r.stderr
    r = _cli(["generate", "--demo", "-p", "x", "--project", str(proj)], studio_home)
    assert r.returncode == 2 and "not an empty folder" in r.stderr
    r = _cli(["generate", "--demo", "-p", "x", "--crf", "99", "-o", str(tmp_path / "x.mp4")], studio_home)
    assert r.returncode == 2 and "--crf must be 0..51" in r.stderr


def test_quant_engine_hook_keeps_the_cpu_model_and_reports_its_precision(studio_home):
    """quant's engine hook (what `sana-video generate --precision auto` passes) on a CPU: the plan keeps the model,
    calibration captions come from the engine's own text encoder, and the reported precision stays fp32."""
    pytest.importorskip("quant.prepare")
    from app.quant_hook import engine_model_transform
    from core.engine import Engine

    hook = engine_model_transform("auto")
    assert hook is not None and engine_model_transform("bf16") is None
    assert engine_model_transform("fp8", "all-blocks") is not None
    engine = Engine.load("demo", device="cpu", precision="auto", model_transform=hook)
    assert engine.info["precision"] == "fp32"
    assert isinstance(_run(engine, Timeline.single("a fox", 2.5))[-1], FinishedEvent)


def test_blocks_compile_only_on_request(monkeypatch):
    import core.engine as engine_mod
    from core.engine import Engine

    calls = []
    monkeypatch.setattr(engine_mod, "compile_blocks", lambda transformer: calls.append(transformer))
    Engine.load("demo", device="cpu")
    assert calls == []                                   # eager by default (the faster path, compile_blocks)
    Engine.load("demo", device="cpu", compile=True)
    assert len(calls) == 1

