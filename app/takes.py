"""Takes: every generated block is a take; a regeneration branches a new chain of takes from a block on.

The takes form a tree (a take's parent is the take of the previous block it was conditioned on, because each block
continues the streaming state of the one before). The *path* is the chosen take per block; switching a take at block k
keeps its ancestors before k and follows its newest descendants after k. Qt-free: frames and thumbnails are opaque.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Take:
    take_id: int
    block: int
    parent_id: int | None        # the take of block-1 this one continues (None for block 0)
    seed: int | None = None
    prompt: str = ""
    thumbnail: Any = None        # QImage or None
    frames: list = field(default_factory=list)  # QImages of the decoded frames
    engine_ref: Any = None       # whatever the engine/project calls this take (for export)


class TakeTree:
    def __init__(self) -> None:
        self._takes: dict[int, Take] = {}
        self._ids = itertools.count(1)
        self.path: list[int] = []   # chosen take id per block

    # ---- queries ----
    def take(self, take_id: int) -> Take:
        return self._takes[take_id]

    def takes_for_block(self, block: int) -> list[Take]:
        return [t for t in self._takes.values() if t.block == block]

    def current(self, block: int) -> Take | None:
        return self._takes[self.path[block]] if block < len(self.path) else None

    @property
    def num_blocks(self) -> int:
        return len(self.path)

    def path_frames(self) -> list:
        frames: list = []
        for take_id in self.path:
            frames.extend(self._takes[take_id].frames)
        return frames

    def block_frame_ranges(self) -> list[tuple[int, int]]:
        out, start = [], 0
        for take_id in self.path:
            n = len(self._takes[take_id].frames)
            out.append((start, start + n))
            start += n
        return out

    def find(self, engine_ref) -> Take | None:
        """The take the engine / project calls `engine_ref` (a block id), if the window has seen it."""
        for take in self._takes.values():
            if take.engine_ref is not None and take.engine_ref == engine_ref:
                return take
        return None

    # ---- edits ----
    def clear(self) -> None:
        self._takes.clear()
        self.path = []

    def add(self, block: int, seed: int | None = None, prompt: str = "") -> Take:
        """A new take for `block`, continuing the current take of block-1; it becomes current and later blocks are
        dropped from the path (they were conditioned on the replaced take)."""
        if block > len(self.path):
            raise ValueError(f"block {block} cannot start before block {len(self.path)} exists")
        parent = self.path[block - 1] if block > 0 else None
        take = Take(next(self._ids), block, parent, seed, prompt)
        self._takes[take.take_id] = take
        self.path = self.path[:block] + [take.take_id]
        return take

    def truncate(self, num_blocks: int) -> None:
        """Forget the path after `num_blocks` (the takes themselves stay, reachable through the takes view)."""
        self.path = self.path[:num_blocks]

    def follow(self, take_id: int) -> None:
        """Put an existing take at its block of the path (replaying a saved take); later blocks are dropped."""
        take = self._takes[take_id]
        if take.block > len(self.path):
            raise ValueError(f"block {take.block} cannot follow block {len(self.path) - 1}")
        self.path = self.path[:take.block] + [take_id]

    def set_path(self, take_ids: list[int]) -> None:
        self.path = [self._takes[t].take_id for t in take_ids]

    def select(self, take_id: int) -> None:
        """Make `take_id` current: its ancestors before it, its newest descendants after it."""
        take = self._takes[take_id]
        chain = [take.take_id]
        parent = take.parent_id
        while parent is not None:
            chain.insert(0, parent)
            parent = self._takes[parent].parent_id
        tip = take
        while True:
            children = [t for t in self._takes.values() if t.parent_id == tip.take_id]
            if not children:
                break
            tip = max(children, key=lambda t: t.take_id)
            chain.append(tip.take_id)
        self.path = chain
