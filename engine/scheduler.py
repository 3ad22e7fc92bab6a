"""Packing a slide's prompts into concentric HR/LR windows (patch-pair jobs).

Rules (all deterministic: the same prompts and settings give the same windows):

- Each prompt's *extent* is its box (and points) in level-0 px; a points-only prompt gets a
  square of ``points_extent_um`` around its points, since the object's size is unknown.
- Scale: a prompt goes to the finest pyramid level ``k`` (HR at ``hr_mpp * 2**k``, LR at
  ``lr_mpp * 2**k``, the same HR/LR ratio) at which its extent plus ``context_px`` HR pixels on
  every side fits in the HR patch. Objects larger than a 10x window are segmented at 5x/2.5x,
  and so on.
- Packing: within a level, prompts sorted by (top, left, id) seed windows in turn; each window
  takes, in the same order, every still-unplaced prompt whose extent keeps the union of extents
  (plus context) inside one HR patch (the row greedy). Prompts that can share windows form
  clusters (connected through pairs that fit one window together). Unless ``packing="row-
  greedy"``, each cluster the greedy packs into more windows than a lower bound is packed again
  by a rarest-first set cover (:func:`_rarest_first_groups`), kept when it gives fewer windows.
  With ``packing="local-search"`` (the default), each such cluster of more than
  ``EXACT_MAX_PROMPTS`` prompts still above the bound then loses windows to an ejection-chain
  local search (``engine.packing_search``: a window is removed when its prompts can be placed in
  the others, moving them). Then each cluster of at most ``EXACT_MAX_PROMPTS`` prompts (every
  cluster with ``exact_packing``) still above the bound is re-packed by an exact set cover
  (HiGHS, capped in branch-and-bound nodes, not time), kept when it gives fewer windows again:
  each packing uses no more windows than the one before it ("row-greedy" and "rarest-first" pack
  as older versions did). On the 500-object layout of ``bench passes``: 80 windows by default,
  lower bound 79 (rarest first 84, row greedy 87, exact 79); 10,000 prompts planned in about
  0.3 s. A window is centred on the union of its prompts' extents. Every prompt lands in exactly
  one window; encoder passes per prompt = 2 x windows / prompts.
- Crowded prompts (with ``packing="local-search"``): where more than 1,000 prompts
  (``packing_grid.CROWDED_PROMPTS``) lie within a 3 x 3 block of window-sized cells, as a nucleus
  detector's boxes in dense tissue do, small prompts are packed on a grid
  (``engine.packing_grid``) in linear time and memory, not through the pairs of prompts that fit
  one window together, which grow as the square of the density (200,000 nucleus boxes over
  6 x 6 mm: 49 windows in about 1 s, where those pairs would number 2 x 10**9).
- A mask cut by its window is completed afterwards (``engine.completion``), which may send its
  prompt to a coarser window packed by :func:`pack_level`; those windows add to the count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .geometry import PatchPair, concentric_pair
from .protocol_names import PACKINGS
from .records import Prompt

if TYPE_CHECKING:
    from scipy.sparse import csc_matrix


@dataclass(frozen=True)
class ScheduleConfig:
    patch_px: int = 1024  # the model's input side
    hr_mpp: float = 1.0  # about 10x
    lr_mpp: float = 2.0  # about 5x
    context_px: int = 32  # HR pixels kept between an object's box and the HR patch's edge
    points_extent_um: float = 256.0  # assumed object size for points-only prompts
    max_level: int = 8  # coarsest level: hr_mpp * 2**max_level
    complete_cut_objects: bool = True  # masks cut by their window: LR mask, then coarser pairs (completion.py)
    exact_packing: bool = False  # every cluster packed by exact set cover: fewer windows, slower planning
    packing: str = PACKINGS[0]  # "local-search"; "rarest-first", "row-greedy": the packings of older versions

    def __post_init__(self) -> None:
        for name in ("hr_mpp", "lr_mpp", "points_extent_um"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be a positive number, got {v!r}")
        if self.context_px < 0 or self.max_level < 0 or self.patch_px < 16:
            raise ValueError(f"context_px ({self.context_px}), max_level ({self.max_level}) must be >= 0 and "
                             f"patch_px ({self.patch_px}) >= 16")
        if self.packing not in PACKINGS:
            raise ValueError(f"packing (--packing) must be one of {', '.join(PACKINGS)}, got {self.packing!r}")
        if self.lr_mpp < self.hr_mpp:
            raise ValueError(f"lr_mpp ({self.lr_mpp}) must be >= hr_mpp ({self.hr_mpp})")
        if 2 * self.context_px >= self.patch_px:
            raise ValueError(f"context_px ({self.context_px}) leaves no room in a {self.patch_px} px patch")


@dataclass(frozen=True)
class Window:
    """One patch-pair job: the pair to read and the prompts it segments."""

    slide_id: str
    window_id: int
    level: int
    pair: PatchPair
    prompt_ids: tuple[int, ...]


def prompt_extent_l0_px(prompt: Prompt, cfg: ScheduleConfig, slide_mpp: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = prompt.extent_l0_px()
    if prompt.box_l0_px is None:
        half = 0.5 * cfg.points_extent_um / slide_mpp
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        x0, y0, x1, y1 = min(x0, cx - half), min(y0, cy - half), max(x1, cx + half), max(y1, cy + half)
    return x0, y0, x1, y1


def _usable_l0_px(cfg: ScheduleConfig, level: int, slide_mpp: float) -> float:
    """Side, in level-0 px, that extents may span in one HR patch at ``level``."""
    return (cfg.patch_px - 2 * cfg.context_px) * cfg.hr_mpp * 2**level / slide_mpp


def prompt_level(extent: tuple[float, float, float, float], cfg: ScheduleConfig, slide_mpp: float) -> int:
    """Finest level whose HR patch holds the extent with its context."""
    side = max(extent[2] - extent[0], extent[3] - extent[1])
    for level in range(cfg.max_level + 1):
        if side <= _usable_l0_px(cfg, level, slide_mpp):
            return level
    raise ValueError(f"an object of {side * slide_mpp:.0f} µm does not fit a window even at level {cfg.max_level}")


_Extent = tuple[float, float, float, float]
EXACT_MAX_PROMPTS = 40  # clusters up to this size are packed by a small exact solve
_EXACT_NODE_LIMIT = 200  # branch-and-bound nodes per exact solve (a work cap, not a time cap: deterministic)


def _fits(a: _Extent, b: _Extent, usable: float) -> bool:
    return max(a[2], b[2]) - min(a[0], b[0]) <= usable and max(a[3], b[3]) - min(a[1], b[1]) <= usable


def _greedy_groups(exts: list[_Extent], usable: float, pairs: np.ndarray | None = None) -> list[list[int]]:
    """Row greedy on extents sorted by (top, left, id): each unplaced prompt seeds a window that
    takes, in order, every later unplaced prompt keeping the union inside ``usable``. Only prompts
    that fit the seed (``pairs``, from :func:`_compatible_pairs`) are tried."""
    n = len(exts)
    if pairs is None:
        pairs = _compatible_pairs(np.asarray(exts, dtype=np.float64).reshape(n, 4), usable)
    starts = np.searchsorted(pairs[:, 0], np.arange(n + 1)).tolist()  # pairs are sorted (i, then j)
    later = pairs[:, 1].tolist()
    placed = [False] * n
    groups = []
    for i, union in enumerate(exts):
        if placed[i]:
            continue
        members = [i]
        placed[i] = True
        for j in later[starts[i]:starts[i + 1]]:
            if not placed[j] and _fits(union, exts[j], usable):
                x0, y0, x1, y1 = exts[j]
                union = (min(union[0], x0), min(union[1], y0), max(union[2], x1), max(union[3], y1))
                members.append(j)
                placed[j] = True
        groups.append(members)
    return groups


def _compatible_pairs(ext: np.ndarray, usable: float) -> np.ndarray:
    """(E, 2) index pairs i < j of prompts that fit one window together."""
    from scipy.spatial import cKDTree

    if len(ext) < 2:
        return np.zeros((0, 2), dtype=np.intp)
    pairs = cKDTree(ext[:, :2]).query_pairs(usable, p=np.inf, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    ok = ((np.maximum(ext[i, 2], ext[j, 2]) - np.minimum(ext[i, 0], ext[j, 0]) <= usable)
          & (np.maximum(ext[i, 3], ext[j, 3]) - np.minimum(ext[i, 1], ext[j, 1]) <= usable))
    pairs = np.sort(pairs[ok], axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _clusters(n: int, pairs: np.ndarray) -> list[np.ndarray]:
    """Connected components of the compatibility graph (prompts that can never share a window
    with anyone outside their cluster), each as sorted indices, in order of their first index."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return sorted(np.split(order, cuts), key=lambda c: int(c[0]))


def _cluster_pairs(n: int, pairs: np.ndarray, clusters: list[np.ndarray]) -> list[np.ndarray]:
    """The pairs inside each cluster, renumbered 0..len(cluster)-1 (sorted, as ``pairs``)."""
    label = np.empty(n, dtype=np.intp)
    local = np.empty(n, dtype=np.intp)
    members = np.concatenate(clusters)
    sizes = [len(c) for c in clusters]
    label[members] = np.repeat(np.arange(len(clusters)), sizes)
    local[members] = np.concatenate([np.arange(k) for k in sizes])
    lab = label[pairs[:, 0]]
    order = np.argsort(lab, kind="stable")
    cuts = np.searchsorted(lab[order], np.arange(len(clusters) + 1)).tolist()
    renumbered = local[pairs[order]]
    return [renumbered[a:b] for a, b in zip(cuts, cuts[1:])]


def _adjacency(k: int, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR neighbour lists of the compatibility graph: prompt i's compatible prompts are
    ``nbrs[indptr[i]:indptr[i + 1]]``, ascending."""
    both = np.concatenate([pairs[:, ::-1], pairs])  # pairs are sorted (i, then j): a stable sort keeps j ascending
    both = both[np.argsort(both[:, 0], kind="stable")]
    return np.searchsorted(both[:, 0], np.arange(k + 1)), both[:, 1]


def _gather(indptr: np.ndarray, nbrs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The neighbour lists of ``rows``, concatenated."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lens = ends - starts
    if not lens.sum():
        return nbrs[:0]
    offsets = np.repeat(starts - np.cumsum(lens) + lens, lens)
    return nbrs[offsets + np.arange(lens.sum())]


def _clique_columns(ext: np.ndarray, usable: float, pairs: np.ndarray) -> csc_matrix:
    """(k, m) 0/1 matrix, prompts x candidate windows: every maximal set of prompts that fits one
    window is a column (plus some non-maximal ones). A window whose union starts at prompt a's left
    and prompt b's top holds exactly the prompts right of a and below b that end within
    ``usable`` (level-0 px) of those edges; they all fit a window with a, so only a's compatible
    prompts (``pairs``, renumbered to ``ext``) are tried."""
    from scipy.sparse import csc_matrix

    x0, y0, x1, y1 = ext.T
    near: list[list[int]] = [[i] for i in range(len(ext))]
    for i, j in pairs.tolist():
        near[i].append(j)
        near[j].append(i)
    windows = set()
    for a in range(len(ext)):
        n = np.sort(near[a])
        in_x = (x0[n] >= x0[a]) & (x1[n] - x0[a] <= usable)
        in_y = (y0[n][None, :] >= y0[n][:, None]) & (y1[n][None, :] - y0[n][:, None] <= usable)  # [b, j]
        for row in in_y[in_x & in_y[:, np.searchsorted(n, a)]] & in_x:  # b inside, a below b's top
            windows.add(tuple(n[row].tolist()))
    cols = sorted(windows)
    indptr = np.cumsum([0] + [len(c) for c in cols])
    return csc_matrix((np.ones(indptr[-1]), np.concatenate(cols), indptr), shape=(len(ext), len(cols)))


def _independent_count(k: int, pairs: np.ndarray, adjacency: tuple[np.ndarray, np.ndarray] | None = None) -> int:
    """Size of a greedy set of pairwise incompatible prompts (fewest compatible ones first): each
    needs its own window, so this is a lower bound on the windows. ``adjacency``: of ``pairs``."""
    indptr, nbrs = adjacency or _adjacency(k, pairs)
    blocked = np.zeros(k, dtype=bool)
    count = 0
    for i in np.argsort(np.diff(indptr), kind="stable").tolist():
        if not blocked[i]:
            count += 1
            blocked[nbrs[indptr[i]:indptr[i + 1]]] = True
    return count


def _rarest_first_groups(ext: np.ndarray, usable: float, adjacency: tuple[np.ndarray, np.ndarray]) -> list[list[int]]:
    """Set cover, rarest prompt first: the uncovered prompt with the fewest uncovered compatible
    prompts (``n``; ties: lowest index) opens, of the windows that hold it, the one whose uncovered
    prompts weigh most, each weighing 1/(1 + n)**2 (rare prompts are taken while they can be), and
    the window takes them. Candidate windows start at an uncovered compatible prompt's left and
    one's top (ties: the lowest left prompt, then top prompt, by index): every window's uncovered
    prompts fit one of those. Weights are whole numbers summed in float64 (exact in any order, so
    the same windows on any BLAS). Work per window: its prompt's compatible prompts, squared (a
    matrix product), plus the neighbour counts of the prompts it takes. ``adjacency``:
    :func:`_adjacency` of the compatible pairs."""
    k = len(ext)
    x0, y0, x1, y1 = ext.T
    indptr, nbrs = adjacency
    n = np.diff(indptr).astype(np.int64)  # uncovered compatible prompts (huge once covered)
    uncovered = np.ones(k, dtype=bool)
    left = k
    groups = []
    while left:
        i = int(np.argmin(n))
        near = nbrs[indptr[i]:indptr[i + 1]]
        s = np.insert(near, np.searchsorted(near, i), i)
        s = s[uncovered[s]]
        a = s[(x0[s] <= x0[i]) & (x1[i] - x0[s] <= usable)]  # left edges of windows holding i
        b = s[(y0[s] <= y0[i]) & (y1[i] - y0[s] <= usable)]  # top edges
        in_x = (x0[s] >= x0[a][:, None]) & (x1[s] - x0[a][:, None] <= usable)
        in_y = (y0[s] >= y0[b][:, None]) & (y1[s] - y0[b][:, None] <= usable)
        weight = np.floor(2.0**52 / len(s) / (1.0 + n[s]) ** 2)  # sums stay below 2**53
        score = (in_x * weight) @ in_y.T.astype(np.float64)
        best_a, best_b = np.unravel_index(int(np.argmax(score)), score.shape)
        members = s[in_x[best_a] & in_y[best_b]]
        groups.append(members.tolist())
        left -= len(members)
        np.subtract.at(n, _gather(indptr, nbrs, members), 1)
        n[members] = np.iinfo(np.int64).max
        uncovered[members] = False
    return groups


def _exact_groups(ext: np.ndarray, usable: float, pairs: np.ndarray) -> list[list[int]] | None:
    """Fewest windows for a cluster (set cover over :func:`_clique_columns`, HiGHS capped at
    ``_EXACT_NODE_LIMIT`` nodes: its best packing found, not always proven the fewest); None when
    the solver stops without one."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    cols = _clique_columns(ext, usable, pairs)
    m = cols.shape[1]
    res = milp(np.ones(m), constraints=LinearConstraint(cols, lb=1), integrality=np.ones(m), bounds=Bounds(0, 1),
               options={"node_limit": _EXACT_NODE_LIMIT})
    if res.x is None:
        return None
    left = np.ones(len(ext), dtype=bool)
    groups = []
    for c in np.flatnonzero(res.x > 0.5):
        members = cols.indices[cols.indptr[c]:cols.indptr[c + 1]]
        members = members[left[members]]
        if len(members):
            left[members] = False
            groups.append(members.tolist())
    return groups


def _pack_level(exts: list[_Extent], usable: float, exact_all: bool = False,
                packing: str = PACKINGS[0]) -> list[list[int]]:
    """Groups of indices into ``exts`` (sorted by top, left, id), each a window, sorted by their
    first index. With ``packing="local-search"``, crowded prompts (``engine.packing_grid``) are
    packed on a grid and the others by :func:`_pack_clusters`; otherwise all by the latter."""
    if packing == "local-search" and len(exts) > 1:
        from .packing_grid import crowded_prompts, grid_groups

        ext = np.asarray(exts, dtype=np.float64)
        crowded = crowded_prompts(ext, usable)
        if crowded.any():
            grid, rest = np.flatnonzero(crowded), np.flatnonzero(~crowded)
            out = [grid[g].tolist() for g in grid_groups(ext[grid], usable)]
            out += [rest[g].tolist() for g in _pack_clusters([exts[i] for i in rest], usable, exact_all, packing)]
            return sorted(out, key=lambda g: g[0])
    return _pack_clusters(exts, usable, exact_all, packing)


def _pack_clusters(exts: list[_Extent], usable: float, exact_all: bool = False,
                   packing: str = PACKINGS[0]) -> list[list[int]]:
    """Groups of indices into ``exts`` (sorted by top, left, id): the row greedy; each cluster it
    packs into more windows than a lower bound re-packed rarest first (unless ``packing`` is
    "row-greedy"), then improved by the window-removing local search (``packing`` "local-search",
    clusters of more than ``EXACT_MAX_PROMPTS`` prompts) and, if small (any size if ``exact_all``)
    and still above the bound, packed exactly; each step kept only when it gives fewer windows."""
    if len(exts) < 2:
        return [[0]] if exts else []
    ext = np.asarray(exts, dtype=np.float64)
    pairs = _compatible_pairs(ext, usable)
    groups = _greedy_groups(exts, usable, pairs)
    group_of = np.empty(len(exts), dtype=np.intp)
    for g, members in enumerate(groups):
        group_of[members] = g
    clusters = _clusters(len(exts), pairs)
    out: list[list[int]] = []
    for cluster, inner in zip(clusters, _cluster_pairs(len(exts), pairs, clusters)):
        mine = [np.searchsorted(cluster, groups[g]).tolist() for g in dict.fromkeys(group_of[cluster].tolist())]
        exact = exact_all or len(cluster) <= EXACT_MAX_PROMPTS
        if len(mine) > 1 and (packing != "row-greedy" or exact):
            adjacency = _adjacency(len(cluster), inner)
            bound = _independent_count(len(cluster), inner, adjacency)
            if packing != "row-greedy" and bound < len(mine):
                other = _rarest_first_groups(ext[cluster], usable, adjacency)
                if len(other) < len(mine):
                    mine = other
            if packing == "local-search" and len(cluster) > EXACT_MAX_PROMPTS and bound < len(mine):
                from .packing_search import eliminate_windows

                mine = eliminate_windows(ext[cluster], usable, adjacency, mine, bound)
            if exact and bound < len(mine):
                other = _exact_groups(ext[cluster], usable, inner)
                if other is not None and len(other) < len(mine):
                    mine = other
        out += [cluster[g].tolist() for g in mine]
    return sorted((sorted(g) for g in out), key=lambda g: g[0])


def schedule_windows(slide_id: str, prompts: list[Prompt], slide_mpp: float, cfg: ScheduleConfig) -> list[Window]:
    """Pack ``prompts`` into windows; every prompt appears in exactly one window."""
    windows: list[Window] = []
    for level, items in _by_level(prompts, slide_mpp, cfg):
        for pair, ids in pack_level(level, [(e, p.prompt_id) for e, p in items], slide_mpp, cfg):
            windows.append(Window(slide_id, len(windows), level, pair, ids))
    return windows


def pack_level(level: int, items: list[tuple[_Extent, int]], slide_mpp: float,
               cfg: ScheduleConfig) -> list[tuple[PatchPair, tuple[int, ...]]]:
    """Windows at ``level`` for (extent, prompt id) items sorted by (top, left, id): each window's
    pair (centred on the union of its extents) and its sorted prompt ids."""
    exts = [e for e, _ in items]
    out = []
    for members in _pack_level(exts, _usable_l0_px(cfg, level, slide_mpp), cfg.exact_packing, cfg.packing):
        ux0, uy0 = min(exts[m][0] for m in members), min(exts[m][1] for m in members)
        ux1, uy1 = max(exts[m][2] for m in members), max(exts[m][3] for m in members)
        pair = concentric_pair(((ux0 + ux1) / 2, (uy0 + uy1) / 2), cfg.patch_px, cfg.hr_mpp * 2**level,
                               cfg.lr_mpp * 2**level, slide_mpp)
        out.append((pair, tuple(sorted(items[m][1] for m in members))))
    return out


def _by_level(prompts: list[Prompt], slide_mpp: float,
              cfg: ScheduleConfig) -> list[tuple[int, list[tuple[_Extent, Prompt]]]]:
    """Prompts with their extents per level, finest level first, each sorted by (top, left, id)."""
    by_level: dict[int, list[tuple[_Extent, Prompt]]] = {}
    for p in prompts:
        ext = prompt_extent_l0_px(p, cfg, slide_mpp)
        by_level.setdefault(prompt_level(ext, cfg, slide_mpp), []).append((ext, p))
    return [(level, sorted(by_level[level], key=lambda e: (e[0][1], e[0][0], e[1].prompt_id)))
            for level in sorted(by_level)]


def windows_lower_bound(prompts: list[Prompt], slide_mpp: float, cfg: ScheduleConfig,
                        lp_max_prompts: int = 2000) -> int:
    """A lower bound on the windows any packing needs: per level and cluster of prompts that can
    share windows, the larger of a greedy set of pairwise incompatible prompts and the rounded-up
    LP relaxation of the set cover (clusters up to ``lp_max_prompts``). For benchmarks."""
    from scipy.optimize import linprog

    bound = 0
    for level, items in _by_level(prompts, slide_mpp, cfg):
        usable = _usable_l0_px(cfg, level, slide_mpp)
        ext = np.asarray([e for e, _ in items], dtype=np.float64)
        pairs = _compatible_pairs(ext, usable)
        clusters = _clusters(len(ext), pairs)
        for cluster, inner in zip(clusters, _cluster_pairs(len(ext), pairs, clusters)):
            lb = _independent_count(len(cluster), inner)
            if lb > 1 and len(cluster) <= lp_max_prompts:
                cols = _clique_columns(ext[cluster], usable, inner)
                lp = linprog(np.ones(cols.shape[1]), A_ub=-cols, b_ub=-np.ones(len(cluster)), bounds=(0, 1),
                             method="highs")
                if lp.status == 0:
                    lb = max(lb, math.ceil(lp.fun - 1e-6))
            bound += lb
    return bound


@dataclass(frozen=True)
class ScheduleStats:
    prompts: int
    windows: int
    encoder_passes: int  # image-encoder passes: two per window (HR and LR)

    @property
    def encoder_passes_per_prompt(self) -> float:
        return self.encoder_passes / self.prompts if self.prompts else math.nan


def schedule_stats(windows: list[Window]) -> ScheduleStats:
    n = sum(len(w.prompt_ids) for w in windows)
    return ScheduleStats(prompts=n, windows=len(windows), encoder_passes=2 * len(windows))
