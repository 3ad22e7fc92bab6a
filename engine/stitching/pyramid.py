"""Chunk-wise nearest-neighbour downsampling by 2 for label pyramids.

Level ``k+1`` is level ``k`` sampled at every second row and column (``a[::2, ::2]``), so it
holds only ids that exist at level ``k``: labels are never interpolated. Only chunks that
hold data are visited: chunk ``(i, j)`` of level ``k+1`` comes from the 2 x 2 chunks
``(2i..2i+1, 2j..2j+1)`` of level ``k``, and chunks with no data are never written (they read
as the fill value 0).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

ChunkIndex = tuple[int, int]


def level_shapes(shape_px: tuple[int, int], n_levels: int) -> list[tuple[int, int]]:
    """Shapes (h, w) of levels 0..n_levels-1; each level is ``ceil(previous / 2)``."""
    shapes = [tuple(shape_px)]
    for _ in range(n_levels - 1):
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes  # type: ignore[return-value]


def default_n_levels(shape_px: tuple[int, int], chunk_px: int) -> int:
    """Levels until the coarsest one fits in a single chunk."""
    n, (h, w) = 1, shape_px
    while max(h, w) > chunk_px:
        h, w, n = math.ceil(h / 2), math.ceil(w / 2), n + 1
    return n


def chunk_window(index: ChunkIndex, chunk_px: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    i, j = index
    return (
        slice(i * chunk_px, min((i + 1) * chunk_px, shape[0])),
        slice(j * chunk_px, min((j + 1) * chunk_px, shape[1])),
    )


def build_pyramid(
    chunks0: Iterable[ChunkIndex],
    level0_block: Callable[[ChunkIndex], np.ndarray],
    shapes: list[tuple[int, int]],
    chunk_px: int,
    on_block: Callable[[int, ChunkIndex, np.ndarray], None],
) -> None:
    """Every level's chunks that hold data, level ``k+1`` = level ``k`` ``[::2, ::2]``.

    chunks0: the level-0 chunks holding data; ``level0_block(index)`` gives one (each is asked
    for once). ``on_block(level, index, block)`` gets every chunk of ``chunks0`` at level 0 and
    every non-zero chunk above (to write it). Depth first: a chunk of level ``k+1`` is assembled
    from its (up to) 4 chunks of level ``k`` as they are made, so nothing is read back and memory
    is about two chunks per level.
    """
    needed = [set(chunks0)]
    for _ in range(1, len(shapes)):
        needed.append({(i // 2, j // 2) for i, j in needed[-1]})

    def build(level: int, index: ChunkIndex) -> np.ndarray | None:
        if level == 0:
            block = level0_block(index)
        else:
            rows, cols = chunk_window(index, chunk_px, shapes[level])
            block = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=np.uint32)
            i, j = index
            for child in [(2 * i + di, 2 * j + dj) for di in (0, 1) for dj in (0, 1)]:
                sub = build(level - 1, child) if child in needed[level - 1] else None
                if sub is None:
                    continue
                crows, ccols = chunk_window(child, chunk_px, shapes[level - 1])
                dr, dc = crows.start % 2, ccols.start % 2  # even rows and columns of the level below
                part = sub[dr::2, dc::2]
                r0, c0 = (crows.start + dr) // 2 - rows.start, (ccols.start + dc) // 2 - cols.start
                block[r0:r0 + part.shape[0], c0:c0 + part.shape[1]] = part
            if not block.any():
                return None
        on_block(level, index, block)
        return block

    for index in sorted(needed[-1]):
        build(len(shapes) - 1, index)
