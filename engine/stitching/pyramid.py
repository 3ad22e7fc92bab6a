"""Chunk-wise nearest-neighbour downsampling by 2 for label pyramids.

Level ``k+1`` is level ``k`` sampled at every second row and column (``a[::2, ::2]``), so it
holds only ids that exist at level ``k``: labels are never interpolated. Only chunks that
hold data are visited: an output chunk ``(i, j)`` reads the 2 x 2 input chunks
``(2i..2i+1, 2j..2j+1)``, and output chunks whose inputs were never written stay unwritten
(they read as the fill value 0). Memory: one input block of ``2*chunk x 2*chunk`` at a time.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import zarr

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


def downsample_level(
    src: zarr.Array,
    dst: zarr.Array,
    src_chunks: Iterable[ChunkIndex],
    chunk_px: int,
    on_block: Callable[[ChunkIndex, np.ndarray], None] | None = None,
) -> set[ChunkIndex]:
    """Write ``dst = src[::2, ::2]`` for the chunks fed by ``src_chunks``.

    src, dst: 2-D zarr arrays with square chunks of ``chunk_px``; dst.shape == ceil(src.shape/2).
    Returns the dst chunk indices that hold non-zero data. ``on_block(index, block)`` sees each
    written dst block (e.g. to derive a companion image).
    """
    dst_chunks = sorted({(i // 2, j // 2) for i, j in src_chunks})
    nonzero: set[ChunkIndex] = set()
    for i, j in dst_chunks:
        rows, cols = chunk_window((i, j), chunk_px, dst.shape)
        block = np.asarray(src[2 * rows.start : 2 * rows.stop, 2 * cols.start : 2 * cols.stop])[::2, ::2]
        block = np.ascontiguousarray(block[: rows.stop - rows.start, : cols.stop - cols.start])
        if not block.any():
            continue
        dst[rows, cols] = block
        nonzero.add((i, j))
        if on_block is not None:
            on_block((i, j), block)
    return nonzero
