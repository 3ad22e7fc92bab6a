"""Packing for crowded prompts: a grid of windows, in linear time and memory.

The default packing (``engine.scheduler``) starts from the pairs of prompts that fit one window
together. Where prompts are crowded, say a nucleus detector's boxes in dense tissue (about 5,000
per mm², so thousands per window), those pairs grow as the square of the density: 20,000 such
boxes over 2 x 2 mm made 10**8 pairs, 84 s and 11 GiB of planning. There every window is full
anyway, so a grid packs them about as well:

- A cell of a grid of ``usable``-sided cells is crowded when the 3 x 3 block of cells around it
  holds more than ``CROWDED_PROMPTS`` prompts (by their top-left corners). A prompt is crowded
  when its cell or a cell next to it is, and its extent is small (at most ``usable /
  SMALL_FRACTION`` on each side): a crowd's edge joins it rather than leaving stragglers.
- Crowded prompts go to the cells of a grid whose pitch is ``usable`` less the largest crowded
  extent, anchored at their smallest left and top: each cell's prompts (by top-left corner) fit
  one window. Each non-empty cell is a window.

Everything else is packed as before, apart from the crowded prompts. The same prompts give the
same windows in any order.
"""
from __future__ import annotations

import numpy as np

CROWDED_PROMPTS = 1000  # prompts in a 3 x 3 block of window-sided cells above which small prompts are gridded
SMALL_FRACTION = 8  # a gridded prompt's extent is at most usable / SMALL_FRACTION on each side


def crowded_prompts(ext: np.ndarray, usable: float) -> np.ndarray:
    """(k,) bool: the prompts (``ext``, (k, 4) level-0 px) to pack on the grid. O(k log k)."""
    if len(ext) <= CROWDED_PROMPTS:
        return np.zeros(len(ext), dtype=bool)
    cell = np.floor(ext[:, :2] / usable).astype(np.int64)
    cell -= cell.min(axis=0) - 1  # >= 1, so that neighbours' keys stay >= 0
    rows = int(cell[:, 1].max()) + 2
    key = cell[:, 0] * rows + cell[:, 1]
    keys, counts = np.unique(key, return_counts=True)

    def around(values: np.ndarray, reduce) -> np.ndarray:
        """``reduce`` over the 3 x 3 cells around each cell of ``keys`` of ``values`` (per cell)."""
        out = np.zeros(len(keys), dtype=values.dtype)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                other = keys + dx * rows + dy
                at = np.minimum(np.searchsorted(keys, other), len(keys) - 1)
                out = reduce(out, np.where(keys[at] == other, values[at], 0))
        return out

    crowded_cell = around(counts, np.add) > CROWDED_PROMPTS
    near_crowd = around(crowded_cell, np.logical_or)  # the cells next to a crowd join it: no stragglers
    block = near_crowd[np.searchsorted(keys, key)]
    small = np.maximum(ext[:, 2] - ext[:, 0], ext[:, 3] - ext[:, 1]) <= usable / SMALL_FRACTION
    return block & small


def grid_groups(ext: np.ndarray, usable: float) -> list[list[int]]:
    """Windows for crowded prompts (``ext``, (k, 4) level-0 px, each side at most ``usable /
    SMALL_FRACTION``): indices grouped by grid cell, each group's union of extents within
    ``usable``, groups in order of their first index."""
    side = np.maximum(ext[:, 2] - ext[:, 0], ext[:, 3] - ext[:, 1])
    pitch = (usable - float(side.max())) * (1 - 1e-9)  # the margin covers the rounding of the cell index
    col = np.floor((ext[:, 0] - ext[:, 0].min()) / pitch).astype(np.int64)
    row = np.floor((ext[:, 1] - ext[:, 1].min()) / pitch).astype(np.int64)
    order = np.lexsort((np.arange(len(ext)), col, row))
    cell = row[order] * (int(col.max()) + 1) + col[order]
    cuts = np.flatnonzero(np.diff(cell)) + 1
    groups = []
    for members in np.split(order, cuts):
        e = ext[members]
        if e[:, 2].max() - e[:, 0].min() <= usable and e[:, 3].max() - e[:, 1].min() <= usable:
            groups.append(sorted(members.tolist()))
        else:  # not expected (the pitch's margin): the cell's prompts by the row greedy
            from .scheduler import _greedy_groups

            members = sorted(members.tolist(), key=lambda i: (ext[i, 1], ext[i, 0], i))
            groups += [sorted(members[j] for j in g)
                       for g in _greedy_groups([tuple(ext[i]) for i in members], usable)]
    return sorted(groups, key=lambda g: g[0])
