"""`sana-video`: the command-line front end (no Qt). Lives in app/ because it wires quant into the engine."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.quant_hook import encode_prompts_for_model, engine_model_transform, load_model_for_quantize
from core.errors import StudioError
from core.events import BlockDoneEvent, CancelToken, ErrorEvent, FinishedEvent, StageEvent, StepEvent


def _load_engine(args):
    from core.engine import Engine
    from core.registry import DEMO_ID, installed_models

    model = args.model
    if args.demo:
        model = DEMO_ID
    elif model == "auto":
        installed = [m for m, ok in installed_models().items() if ok]
        model = "longsana-480p" if "longsana-480p" in installed else (installed[0] if installed else DEMO_ID)
        if model == DEMO_ID:
            print("no model is installed: using the DEMO model (tiny random weights). "
                  "Run `sana-video models download longsana-480p` for the real one.", file=sys.stderr)
    if args.quant_recipe and args.precision in ("bf16", "fp32"):
        print(f"note: --quant-recipe is not used with --precision {args.precision}", file=sys.stderr)
    engine = Engine.load(model, device=args.device, precision=args.precision,
                         model_transform=engine_model_transform(args.precision, args.quant_recipe),
                         download=args.download, cuda_graphs=not args.no_cuda_graphs)
    if engine.info["is_demo"]:
        print(f"[{engine.info['label']}]", file=sys.stderr)
    return engine


def _timeline_from_args(args):
    from core.errors import TimelineError
    from core.timeline import Timeline

    if args.timeline and args.prompt:
        raise TimelineError("give either --prompt or --timeline, not both")
    if args.timeline:
        timeline = Timeline.from_json_file(args.timeline)
        if args.seconds is not None:
            raise TimelineError("--seconds applies to --prompt; a timeline file sets each clip's duration")
        return timeline
    if not args.prompt:
        raise TimelineError("give a --prompt (and --seconds) or a --timeline JSON file")
    return Timeline.single(args.prompt, 5.0 if args.seconds is None else args.seconds)


class _Progress:
    """A tqdm bar over all denoising steps, with block and stage in its description."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def __call__(self, ev) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if isinstance(ev, StepEvent):
            if self.bar is None:
                self.bar = tqdm(total=ev.num_blocks * ev.num_steps, unit="step", file=sys.stderr, dynamic_ncols=True)
            self.bar.set_description(f"block {ev.block + 1}/{ev.num_blocks} step {ev.step}/{ev.num_steps}")
            self.bar.update(1)
        elif isinstance(ev, StageEvent) and self.bar is None:
            print(f"{ev.stage}: {ev.detail}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _consume(events, quiet: bool, png_dir: str | None = None) -> int:
    from core.events import BlockPreviewEvent

    progress = _Progress(quiet)
    code = 0
    frames = []
    try:
        for ev in events:
            progress(ev)
            if png_dir is not None and isinstance(ev, BlockPreviewEvent):
                frames.extend(ev.frames)
            if isinstance(ev, ErrorEvent):
                progress.close()
                print(f"error: {ev.message}", file=sys.stderr)
                code = 2
            elif isinstance(ev, FinishedEvent):
                progress.close()
                if ev.cancelled:
                    print("cancelled", file=sys.stderr)
                    code = 130
                else:
                    if png_dir is not None:
                        from core.export import write_png_frames
                        write_png_frames(png_dir, frames)
                    if not quiet:
                        where = f" -> {ev.output}" if ev.output else ""
                        extra = f", PNG frames in {png_dir}" if png_dir else ""
                        print(f"done: {ev.num_frames} frames in {ev.seconds:.1f} s{where}{extra}", file=sys.stderr)
            elif isinstance(ev, BlockDoneEvent) and quiet is False and progress.bar is None:
                print(f"block {ev.block + 1}/{ev.num_blocks} done", file=sys.stderr)
    finally:
        progress.close()
    return code


def _check_early(args) -> None:
    """Argument problems that would otherwise surface only after the model has loaded or a block was made."""
    from core.errors import ExportError, ProjectError

    if not 0 <= args.crf <= 51:
        raise ExportError(f"--crf must be 0..51 (lower is better quality), got {args.crf}")
    project = getattr(args, "project", None)
    if project and Path(project).exists() and (not Path(project).is_dir() or any(Path(project).iterdir())):
        raise ProjectError(f"--project {project} exists and is not an empty folder; use `sana-video extend` or "
                           "`regenerate` on an existing project")
    png_dir = getattr(args, "png_dir", None)
    if png_dir and Path(png_dir).exists() and not Path(png_dir).is_dir():
        raise ExportError(f"--png-dir {png_dir} is not a folder")


def cmd_generate(args) -> int:
    from core.engine import GenerateRequest

    _check_early(args)
    timeline = _timeline_from_args(args)
    engine = _load_engine(args)
    cancel = CancelToken()
    if args.project:
        from core.project import Project

        project = Project.create(args.project, engine.info, timeline, args.seed)
        events = project.generate(engine, cancel, output=args.output, crf=args.crf)
    else:
        events = engine.generate(GenerateRequest(timeline, seed=args.seed, output=args.output, crf=args.crf), cancel)
    try:
        return _consume(events, args.quiet, args.png_dir)
    except KeyboardInterrupt:
        cancel.cancel()
        return _consume(events, args.quiet) or 130


def cmd_extend(args) -> int:
    from core.project import Project

    project = Project.open(args.project)
    engine = _load_engine(args)
    project.check_model(engine.info)
    events = project.extend(engine, CancelToken(), seconds=args.seconds, prompt=args.prompt, output=args.output,
                            crf=args.crf)
    return _consume(events, args.quiet)


def cmd_regenerate(args) -> int:
    from core.project import Project

    project = Project.open(args.project)
    engine = _load_engine(args)
    project.check_model(engine.info)
    if args.block < 1:
        raise StudioError(f"--block counts from 1 (the first block is 1), got {args.block}")
    events = project.regenerate(engine, CancelToken(), from_block=args.block - 1, seed=args.seed, prompt=args.prompt,
                                output=args.output, crf=args.crf)
    return _consume(events, args.quiet)


def cmd_export(args) -> int:
    from core.project import Project

    project = Project.open(args.project)
    path = project.export_mp4(args.output, take=args.take, crf=args.crf)
    print(path)
    return 0


def cmd_models(args) -> int:
    from core.registry import MODELS, installed_models, resolve_model

    if args.action == "download":
        if not args.name:
            raise StudioError("name the model to download, e.g. `sana-video models download longsana-480p`")

        def progress(done, total, name):
            pct = f"{100 * done / total:5.1f}%" if total else f"{done / 2**20:8.1f} MiB"
            print(f"\r{name}: {pct}", end="", file=sys.stderr)

        resolved = resolve_model(args.name, download=True, progress=progress)
        print(f"\ninstalled {resolved.id}: transformer {resolved.transformer}", file=sys.stderr)
        return 0
    installed = installed_models()
    rows = [{"id": spec.id, "title": spec.title, "installed": installed.get(spec.id, False),
             "download_gb": spec.approx_download_gb, "repo": spec.transformer.repo_id} for spec in MODELS.values()]
    rows.append({"id": "demo", "title": "Demo pack: tiny random weights (always available)", "installed": True,
                 "download_gb": 0.0, "repo": "(generated locally)"})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            mark = "installed" if r["installed"] else f"not installed (~{r['download_gb']:.1f} GB)"
            print(f"{r['id']:18s} {mark:28s} {r['title']}")
    return 0


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="auto", help="registry id (longsana-480p, sana-video-480p), a local model "
                   "folder, or 'demo'; default: longsana-480p if installed, else the demo model")
    p.add_argument("--demo", action="store_true", help="use the embedded demo model (tiny random weights)")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:1, cpu")
    p.add_argument("--precision", default="auto", choices=["auto", "nvfp4", "fp8", "bf16", "fp32"])
    p.add_argument("--quant-recipe", default=None, help="layers to quantize with nvfp4 / fp8: default, all-blocks "
                   "(every block; fastest) or a JSON recipe file")
    p.add_argument("--download", action="store_true", help="download missing model files")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="run every denoising forward eagerly (debugging; CUDA graphs are on by default on GPUs)")
    p.add_argument("-q", "--quiet", action="store_true")


def _add_output_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("-o", "--output", required=required, help="MP4 file to write (H.264)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality (lower is better; 18 default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sana-video", description="Generate long videos with SANA-Video / LongSANA.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a video from a prompt or a prompt timeline")
    g.add_argument("--prompt", "-p")
    g.add_argument("--timeline", "-t", help="timeline JSON: {\"clips\": [{\"prompt\": ..., \"seconds\": ...}]}")
    g.add_argument("--seconds", "-s", type=float, help="length for --prompt (default 5)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--project", help="also save a project folder (for extend / regenerate)")
    g.add_argument("--png-dir", help="also write every frame as PNG into this folder")
    _add_engine_args(g)
    _add_output_args(g)
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("extend", help="continue a saved project from its last block")
    e.add_argument("project")
    e.add_argument("--seconds", "-s", type=float, required=True)
    e.add_argument("--prompt", "-p", help="prompt for the new part (default: the last prompt)")
    _add_engine_args(e)
    _add_output_args(e)
    e.set_defaults(func=cmd_extend)

    r = sub.add_parser("regenerate", help="redo a project from block K (earlier blocks untouched; a new take)")
    r.add_argument("project")
    r.add_argument("--block", type=int, required=True, help="the first block to redo, counting from 1 (as displayed)")
    r.add_argument("--seed", type=int)
    r.add_argument("--prompt", "-p")
    _add_engine_args(r)
    _add_output_args(r)
    r.set_defaults(func=cmd_regenerate)

    x = sub.add_parser("export", help="export a project (a take path) to MP4")
    x.add_argument("project")
    x.add_argument("--take", help="take id (default: the current take)")
    _add_output_args(x, required=True)
    x.set_defaults(func=cmd_export)

    m = sub.add_parser("models", help="list or download models")
    m.add_argument("action", nargs="?", default="list", choices=["list", "download"])
    m.add_argument("name", nargs="?")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    try:
        from quant import cli as quant_cli
    except ImportError:  # quant's optional dependencies missing: no `quantize` subcommand
        quant_cli = None
    if quant_cli is not None:
        quant_cli.add_subcommand(sub, load_model=load_model_for_quantize, encode_prompts=encode_prompts_for_model)
    try:
        from app import doctor
    except ImportError:
        doctor = None
    if doctor is not None:
        doctor.add_subcommand(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if getattr(args, "quiet", False):  # our own progress output only: no library progress bars
        try:
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
        except ImportError:
            pass
    try:
        return int(args.func(args) or 0)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
