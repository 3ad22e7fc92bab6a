"""Fewer windows for a packed cluster of prompts: windows removed one at a time by an
ejection-chain local search (the last step of the default packing, ``packing="local-search"``).

Starting from a cluster's packing (row greedy or rarest first, ``engine.scheduler``):

1. The window whose prompts weigh least is removed (every prompt starts at weight 1); its
   prompts wait in a queue.
2. The first waiting prompt goes into the window that it ejects the least weight from, among the
   windows holding a prompt it fits with: the window moves so that it holds the prompt (the left
   of its union at a member's left or the prompt's own, its top likewise; the best place comes
   from 2D prefix sums over those edges), and the members it no longer holds join the queue
   (ties: fewer ejected). A prompt that finds no window goes back into the queue. Each step,
   every waiting prompt gains weight 1, so prompts that are hard to place are ejected less and
   less, as in weighted local searches for set cover; that also breaks cycles.
3. When the queue empties, the packing has one window fewer: it is kept, and step 1 repeats.
   An attempt that uses up ``ATTEMPT_OPS`` work units goes back to the last packing kept, with
   the weights it raised, so another window is tried next. The search ends at the cluster's
   lower bound or after ``OPS_PER_PROMPT`` units per prompt.

Work is counted in units, not time, so the same prompts give the same windows on any machine:
per step, 1 plus the prompt's compatible prompts; per window tried, 4 per member plus 2 per
(left, top) place; per attempt, 1 per prompt. On the 500-object layout of ``bench passes`` this
takes rarest first's 84 windows to 80 (lower bound 79) in about 0.012 s; 10,000 prompts in one
cluster take about 0.15 s of search.

The search is compiled by numba: about 5 s the first time, then loaded from numba's cache (next
to this file, or the user's cache folder): importing numba and loading it take about 0.6 s, once
per process. ``scripts/setup.sh`` and the container build compile it (``python -m
engine.packing_search``). The scheduler imports this module only for a cluster that needs it.
"""
from __future__ import annotations

import numba
import numpy as np

OPS_PER_PROMPT = 4000  # work units per prompt of the cluster: the search's cap (deterministic, not time)
ATTEMPT_OPS = 100_000  # work units per attempt to remove one window


def eliminate_windows(ext: np.ndarray, usable: float, adjacency: tuple[np.ndarray, np.ndarray],
                      groups: list[list[int]], lower_bound: int) -> list[list[int]]:
    """``groups`` (a packing of the cluster's prompts ``ext``, (k, 4) level-0 px) with as many
    windows removed as the search manages, each window's union of extents within ``usable``.
    ``adjacency``: CSR neighbour lists of the prompts that fit one window together
    (``scheduler._adjacency``); ``lower_bound``: no fewer windows are tried."""
    assign = np.empty(len(ext), dtype=np.int64)
    for w, members in enumerate(groups):
        assign[members] = w
    indptr, nbrs = adjacency
    best = _search(np.ascontiguousarray(ext, dtype=np.float64), float(usable), indptr.astype(np.int64),
                   nbrs.astype(np.int64), assign, len(groups), int(lower_bound), OPS_PER_PROMPT * len(ext),
                   ATTEMPT_OPS)
    order = np.argsort(best, kind="stable")
    cuts = np.flatnonzero(np.diff(best[order])) + 1
    return [g.tolist() for g in np.split(order, cuts)]


@numba.njit(cache=True)
def _search(ext, usable, indptr, nbrs, assign, n_windows, lower_bound, max_ops, attempt_ops):  # pragma: no cover
    """The search (module docstring) on ``assign`` (window of each prompt, 0..n_windows-1);
    returns the assignment with the fewest windows it reached."""
    k = ext.shape[0]
    x0, y0, x1, y1 = ext[:, 0], ext[:, 1], ext[:, 2], ext[:, 3]
    a = assign.copy()
    best = assign.copy()
    head = np.empty(n_windows, np.int64)  # members of each window: a doubly linked list
    nxt = np.empty(k, np.int64)
    prv = np.empty(k, np.int64)
    alive = np.empty(n_windows, np.bool_)
    n_alive = _link_all(a, head, nxt, prv, alive)
    weight = np.ones(k, np.int64)
    seen = np.full(n_windows, -1, np.int64)
    queue = np.empty(k + 1, np.int64)  # ring buffer: every prompt waits at most once
    q_head = 0
    q_len = 0
    members = np.empty(k, np.int64)
    lefts = np.empty(k + 1, np.float64)
    tops = np.empty(k + 1, np.float64)
    kept_w = np.empty(0, np.int64)  # per (left, top) of a window: weight and number of members kept
    kept_n = np.empty(0, np.int64)
    ops = 0
    step = 0
    while n_alive > lower_bound and ops < max_ops:
        removed = -1
        least = 1 << 62
        for w in range(n_windows):
            if alive[w]:
                s = 0
                q = head[w]
                while q >= 0:
                    s += weight[q]
                    q = nxt[q]
                if s < least:
                    least = s
                    removed = w
        ops += k
        alive[removed] = False
        n_alive -= 1
        while head[removed] >= 0:
            p = head[removed]
            head[removed] = nxt[p]
            a[p] = -1
            queue[(q_head + q_len) % (k + 1)] = p
            q_len += 1
        attempt_end = min(max_ops, ops + attempt_ops)
        while q_len > 0 and ops < attempt_end:
            step += 1
            p = queue[q_head]
            q_head = (q_head + 1) % (k + 1)
            q_len -= 1
            ops += 1 + indptr[p + 1] - indptr[p]
            best_cost = 1 << 62
            best_out = 0
            best_w = -1
            best_left = 0.0
            best_top = 0.0
            for t in range(indptr[p], indptr[p + 1]):
                v = a[nbrs[t]]
                if v < 0 or seen[v] == step:
                    continue
                seen[v] = step
                m = 0
                q = head[v]
                while q >= 0:
                    members[m] = q
                    m += 1
                    q = nxt[q]
                n_left = 1
                n_top = 1
                lefts[0] = x0[p]
                tops[0] = y0[p]
                for i in range(m):
                    q = members[i]
                    if x0[q] < x0[p] and x1[p] - x0[q] <= usable:
                        lefts[n_left] = x0[q]
                        n_left += 1
                    if y0[q] < y0[p] and y1[p] - y0[q] <= usable:
                        tops[n_top] = y0[q]
                        n_top += 1
                ops += 4 * m + 2 * n_left * n_top
                _sort_head(lefts, n_left)
                _sort_head(tops, n_top)
                stride = n_top + 1
                size = (n_left + 1) * stride
                if size > kept_w.size:
                    kept_w = np.empty(2 * size, np.int64)
                    kept_n = np.empty(2 * size, np.int64)
                kept_w[:size] = 0
                kept_n[:size] = 0
                total = 0
                for i in range(m):  # member q stays for the lefts in [l_lo, l_hi) and tops in [t_lo, t_hi)
                    q = members[i]
                    total += weight[q]
                    l_lo = _first_within(lefts, n_left, x1[q], usable)
                    l_hi = _first_after(lefts, n_left, x0[q])
                    t_lo = _first_within(tops, n_top, y1[q], usable)
                    t_hi = _first_after(tops, n_top, y0[q])
                    if l_lo < l_hi and t_lo < t_hi:
                        for c, add in ((l_lo * stride + t_lo, 1), (l_hi * stride + t_lo, -1),
                                       (l_lo * stride + t_hi, -1), (l_hi * stride + t_hi, 1)):
                            kept_w[c] += add * weight[q]
                            kept_n[c] += add
                for il in range(n_left):  # prefix sums: what each (left, top) keeps
                    for it in range(n_top):
                        c = il * stride + it
                        if il > 0:
                            kept_w[c] += kept_w[c - stride]
                            kept_n[c] += kept_n[c - stride]
                        if it > 0:
                            kept_w[c] += kept_w[c - 1]
                            kept_n[c] += kept_n[c - 1]
                        if il > 0 and it > 0:
                            kept_w[c] -= kept_w[c - stride - 1]
                            kept_n[c] -= kept_n[c - stride - 1]
                        cost = total - kept_w[c]
                        out = m - kept_n[c]
                        if cost < best_cost or (cost == best_cost and out < best_out):
                            best_cost = cost
                            best_out = out
                            best_w = v
                            best_left = lefts[il]
                            best_top = tops[it]
            if best_w < 0:
                queue[(q_head + q_len) % (k + 1)] = p
                q_len += 1
                weight[p] += 1
                continue
            q = head[best_w]
            while q >= 0:  # eject the members the moved window no longer holds
                after = nxt[q]
                if not (x0[q] >= best_left and x1[q] - best_left <= usable and y0[q] >= best_top
                        and y1[q] - best_top <= usable):
                    if prv[q] >= 0:
                        nxt[prv[q]] = nxt[q]
                    else:
                        head[best_w] = nxt[q]
                    if nxt[q] >= 0:
                        prv[nxt[q]] = prv[q]
                    a[q] = -1
                    queue[(q_head + q_len) % (k + 1)] = q
                    q_len += 1
                q = after
            a[p] = best_w
            prv[p] = -1
            nxt[p] = head[best_w]
            if head[best_w] >= 0:
                prv[head[best_w]] = p
            head[best_w] = p
            for i in range(q_len):
                weight[queue[(q_head + i) % (k + 1)]] += 1
        if q_len == 0:
            best[:] = a
        else:  # back to the last packing kept; the weights stay, so another window goes next
            q_len = 0
            a[:] = best
            n_alive = _link_all(a, head, nxt, prv, alive)
    return best


@numba.njit(cache=True)
def _sort_head(values, n):  # pragma: no cover
    """Sort ``values[:n]`` in place (insertion sort: n is a window's members, few)."""
    for i in range(1, n):
        v = values[i]
        j = i - 1
        while j >= 0 and values[j] > v:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = v


@numba.njit(cache=True)
def _first_within(edges, n, far_edge, usable):  # pragma: no cover
    """First index of ``edges[:n]`` (ascending) within ``usable`` of ``far_edge`` (``far_edge - edge
    <= usable``: the test the ejection makes)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if far_edge - edges[mid] <= usable:
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True)
def _first_after(edges, n, edge):  # pragma: no cover
    """First index of ``edges[:n]`` (ascending) past ``edge``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if edges[mid] > edge:
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True)
def _link_all(a, head, nxt, prv, alive):  # pragma: no cover
    """The members' linked lists of assignment ``a``; returns the number of windows with members."""
    head[:] = -1
    nxt[:] = -1
    prv[:] = -1
    alive[:] = False
    for p in range(len(a) - 1, -1, -1):
        w = a[p]
        nxt[p] = head[w]
        if head[w] >= 0:
            prv[head[w]] = p
        head[w] = p
        alive[w] = True
    return alive.sum()


def compile_kernels() -> None:
    """Compile the search now (numba caches it), so that a run's first plan does not wait for it."""
    ext = np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    eliminate_windows(ext, 100.0, (np.array([0, 1, 2]), np.array([1, 0])), [[0], [1]], 1)


if __name__ == "__main__":
    compile_kernels()
