"""The video being made: thumbnails per block, the takes tree, the takes list and the player, kept in step with the
block events of generation jobs (and of a saved project being replayed). No status bar, no engine calls."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from app.block_strip import BlockStrip
from app.jobs import Job
from app.player import PlayerWidget
from app.takes import Take, TakeTree
from app.takes_view import TakesView
from core.errors import StudioError
from core.events import BlockDoneEvent, BlockPreviewEvent, StepEvent


class VideoView(QObject):
    block_completed = Signal(int)   # a block's decoded frames arrived

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.takes = TakeTree()
        self.block_strip = BlockStrip(parent)
        self.player = PlayerWidget(parent)
        self.takes_view = TakesView(parent)
        self.block_strip.block_selected.connect(self._on_block_selected)
        self.takes_view.take_chosen.connect(self.choose_take)

    # ---- whole-view changes ----
    def clear(self) -> None:
        self.takes.clear()
        self.block_strip.set_num_blocks(0)
        self.player.set_frames([], keep_position=False)
        self.takes_view.show_block(self.takes, -1)

    def path_refs(self) -> list:
        """What the engine calls the takes shown (block ids): the branch the next job continues."""
        return [self.takes.take(t).engine_ref for t in self.takes.path]

    def show_path(self) -> None:
        """Thumbnails, player and takes list follow the current path of takes."""
        self.block_strip.set_num_blocks(max(self.block_strip.num_blocks, self.takes.num_blocks))
        for block, tid in enumerate(self.takes.path):
            self.block_strip.set_done(block, self.takes.take(tid).thumbnail)
        self.block_strip.reset_from(self.takes.num_blocks)
        self.player.set_frames(self.takes.path_frames())
        self.takes_view.show_block(self.takes, self.takes_view.block)

    def show_refs(self, refs: list) -> None:
        """Show the path named by engine refs (a reopened project's current take), when every block is known."""
        nodes = [self.takes.find(r) for r in refs]
        if refs and all(n is not None for n in nodes):
            self.takes.set_path([n.take_id for n in nodes])
        self.show_path()

    def choose_take(self, take_id: int) -> None:
        """Switch the video to the branch through `take_id` (the next Extend, Regenerate or Export uses it)."""
        self.takes.select(take_id)
        self.show_path()

    def _on_block_selected(self, block: int) -> None:
        self.takes_view.show_block(self.takes, block)
        if 0 <= block < self.takes.num_blocks:
            self.player.seek(self.takes.block_frame_ranges()[block][0])

    # ---- generation jobs ----
    def job_started(self, job: Job, num_blocks: int) -> None:
        job.context["path_refs"] = self.path_refs()
        # blocks are replaced from the first one the job reports (a project keeps blocks that did not change)
        self.block_strip.set_num_blocks(max(num_blocks, self.takes.num_blocks))

    def job_finished(self, cancelled: bool) -> None:
        if cancelled:   # blocks that did not finish go back to pending; finished ones stay
            self.takes.truncate(len([t for t in self.takes.path if self.takes.take(t).frames]))
            self.block_strip.reset_from(self.takes.num_blocks)

    def handle(self, job: Job, event, payload) -> None:
        """StepEvent / BlockPreviewEvent / BlockDoneEvent of a generation or project-replay job."""
        if isinstance(event, StepEvent):
            self._begin_blocks_from(job, event.block)
            if event.num_blocks > self.block_strip.num_blocks:
                self.block_strip.set_num_blocks(event.num_blocks)
            self.block_strip.set_step(event.block, event.step, event.num_steps, payload)
        elif isinstance(event, BlockPreviewEvent):
            self._begin_blocks_from(job, event.block)
            take = self._node_for_block(job, event.block)
            take.frames = list(payload or [])
            take.thumbnail = take.frames[0] if take.frames else None
            self.block_strip.set_done(event.block, take.thumbnail)
            self.player.set_frames(self.takes.path_frames())
            if self.block_strip.selected == event.block:
                self.takes_view.show_block(self.takes, event.block)
            self.block_completed.emit(event.block)
        elif isinstance(event, BlockDoneEvent):
            self._begin_blocks_from(job, event.block)
            ref = event.extra.get("take", event.extra.get("block_id"))
            take = self._node_for_block(job, event.block, ref, replay=job.kind == "open")
            take.seed, take.prompt, take.engine_ref = event.seed, event.prompt, ref
            if take.thumbnail is not None:
                self.block_strip.set_done(event.block, take.thumbnail)
            if "bytes" in event.extra or "stale" in event.extra:
                self.block_strip.set_disk_info(event.block, event.extra.get("bytes"), event.extra.get("stale", False))

    def _begin_blocks_from(self, job: Job, block: int) -> None:
        """The first block event of a generation job: blocks >= block are being redone."""
        if job.kind != "generate" or job.context.get("began"):
            return
        job.context["began"] = True
        self.takes.truncate(block)
        self.block_strip.reset_from(block)
        self.player.set_frames(self.takes.path_frames())

    def _node_for_block(self, job: Job, block: int, ref=None, replay: bool = False) -> Take:
        """The take this job writes for `block`: created on the first event about it; when replaying a saved
        project, a block already seen (shared by several takes) is followed instead of duplicated."""
        made = job.context.setdefault("takes", {})
        if replay or block not in made:
            existing = self.takes.find(ref) if ref is not None else None
            if existing is not None:
                self.takes.follow(existing.take_id)
                made[block] = existing
            else:
                if block > self.takes.num_blocks:   # an engine skipping ahead would break the path
                    raise StudioError(f"the engine reported block {block + 1} before block {self.takes.num_blocks + 1}")
                made[block] = self.takes.add(block)
        return made[block]
