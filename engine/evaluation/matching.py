"""Which prediction scores each truth object.

- **By prompt**: when the prompts were made from the truth, each prompt names its truth object
  (``Prompt.name = "truth_id=<object_id>"``, written to the prompt file as ``properties.name``
  and ``properties.truth_id``). A prediction carries its ``prompt_id``, so its truth object is
  known. Should several predictions name one truth object, the one with the highest IoU is kept.
- **By overlap**: an IoU-maximal one-to-one assignment (Hungarian algorithm,
  :func:`scipy.optimize.linear_sum_assignment`, on each connected group of overlapping
  objects). Pairs that do not overlap are never matched.

A truth object without a prediction is *missed* (dice and IoU 0); a prediction matched to no
truth object is a *false positive* (counted per slide).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..records import Prompt
from .overlap import Overlaps

_LINK = re.compile(r"^truth_id=(-?\d+)$")


def truth_link_name(truth_id: int) -> str:
    """The ``Prompt.name`` that links a prompt to truth object ``truth_id``."""
    return f"truth_id={int(truth_id)}"


def parse_truth_link(name: str | None) -> int | None:
    """``truth_id`` from a prompt name made by :func:`truth_link_name`, else None."""
    if not name:
        return None
    m = _LINK.match(name.strip())
    return int(m.group(1)) if m else None


def prompt_links(prompts: Iterable[Prompt]) -> dict[int, int]:
    """``{prompt_id: truth_id}`` for the prompts whose name links them to a truth object."""
    out = {}
    for p in prompts:
        t = parse_truth_link(p.name)
        if t is not None:
            out[p.prompt_id] = t
    return out


def match_by_prompt(ov: Overlaps, pred_prompt_ids: Mapping[int, int], links: Mapping[int, int]
                    ) -> dict[int, int | None]:
    """``{truth_id: pred_id or None}``: each prediction goes to the truth object its prompt names."""
    out: dict[int, int | None] = {t: None for t in ov.truth_area_l0_px2}
    for pred_id, prompt_id in pred_prompt_ids.items():
        t = links.get(prompt_id)
        if t is None or t not in out:
            continue
        cur = out[t]
        if cur is None or ov.iou(t, pred_id) > ov.iou(t, cur):
            out[t] = pred_id
    return out


def match_by_overlap(ov: Overlaps) -> dict[int, int | None]:
    """``{truth_id: pred_id or None}``: the one-to-one assignment of largest total IoU."""
    out: dict[int, int | None] = {t: None for t in ov.truth_area_l0_px2}
    pairs = [(t, p) for (t, p), a in ov.inter_l0_px2.items() if a > 0 and t in out and p in ov.pred_area_l0_px2]
    if not pairs:
        return out
    t_ids = sorted({t for t, _ in pairs})
    p_ids = sorted({p for _, p in pairs})
    ti = {t: i for i, t in enumerate(t_ids)}
    pj = {p: j for j, p in enumerate(p_ids)}
    nt = len(t_ids)
    rows = np.array([ti[t] for t, _ in pairs])
    cols = np.array([nt + pj[p] for _, p in pairs])
    graph = coo_matrix((np.ones(len(pairs)), (rows, cols)), shape=(nt + len(p_ids),) * 2)
    _, comp = connected_components(graph, directed=False)
    for c in np.unique(comp):
        ts = [t for t in t_ids if comp[ti[t]] == c]
        ps = [p for p in p_ids if comp[nt + pj[p]] == c]
        iou = np.array([[ov.iou(t, p) for p in ps] for t in ts])
        r, k = linear_sum_assignment(iou, maximize=True)
        for a, b in zip(r, k):
            if iou[a, b] > 0:
                out[ts[a]] = ps[b]
    return out
