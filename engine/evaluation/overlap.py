"""Areas and pairwise intersections of truth and predicted objects, in level-0 px².

Two exact ways to get them:

- :func:`polygon_overlaps`: shapely on the polygons (truth and predictions in level-0 px);
- :func:`label_overlaps`: pixel counts on a label image's grid. Each truth polygon is rasterised
  onto the label grid by pixel centre (``rasterio.features.rasterize``, ``all_touched=False``, the
  rule the pipeline's label grid follows); counts are scaled to level-0 px² by
  ``(label_mpp / slide_mpp)²``. The image is read chunk by chunk (one chunk in memory).

Both give an :class:`Overlaps`; matching and scoring work on it alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import box as shapely_box


@dataclass
class Overlaps:
    """Object areas and non-zero intersections of one slide (all in level-0 px²).

    ``foreground_*``: the union of all truth objects against the union of all predictions,
    class-agnostic (a slide-level pixel dice that also penalises false positives).
    """

    truth_area_l0_px2: dict[int, float]
    pred_area_l0_px2: dict[int, float]
    inter_l0_px2: dict[tuple[int, int], float] = field(default_factory=dict)  # (truth_id, pred_id)
    foreground_truth_l0_px2: float = 0.0
    foreground_pred_l0_px2: float = 0.0
    foreground_inter_l0_px2: float = 0.0

    def iou(self, truth_id: int, pred_id: int) -> float:
        i = self.inter_l0_px2.get((truth_id, pred_id), 0.0)
        u = self.truth_area_l0_px2[truth_id] + self.pred_area_l0_px2[pred_id] - i
        return i / u if u > 0 else 0.0


def _valid(geoms: np.ndarray) -> np.ndarray:
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms = geoms.copy()
        geoms[bad] = shapely.make_valid(geoms[bad])
    return geoms


def polygon_overlaps(truth: gpd.GeoDataFrame, pred: gpd.GeoDataFrame, pred_id_column: str = "object_id") -> Overlaps:
    """Exact areas and intersections of truth (``object_id``) and predicted (``pred_id_column``) polygons."""
    tg = _valid(np.asarray(truth.geometry.values, dtype=object))
    pg = _valid(np.asarray(pred.geometry.values, dtype=object))
    tid = truth["object_id"].to_numpy(dtype=np.int64)
    pid = pred[pred_id_column].to_numpy(dtype=np.int64)
    ov = Overlaps({int(i): float(a) for i, a in zip(tid, shapely.area(tg))},
                  {int(i): float(a) for i, a in zip(pid, shapely.area(pg))})
    if len(tg) and len(pg):
        ti, pj = shapely.STRtree(pg).query(tg, predicate="intersects")
        areas = shapely.area(shapely.intersection(tg[ti], pg[pj]))
        for a, b, area in zip(ti, pj, areas):
            if area > 0:
                key = (int(tid[a]), int(pid[b]))
                ov.inter_l0_px2[key] = ov.inter_l0_px2.get(key, 0.0) + float(area)
    tu = shapely.union_all(tg) if len(tg) else shapely.Polygon()
    pu = shapely.union_all(pg) if len(pg) else shapely.Polygon()
    ov.foreground_truth_l0_px2 = float(tu.area)
    ov.foreground_pred_l0_px2 = float(pu.area)
    ov.foreground_inter_l0_px2 = float(tu.intersection(pu).area) if len(tg) and len(pg) else 0.0
    return ov


def label_overlaps(truth: gpd.GeoDataFrame, labels, l0_px_per_label_px: float, chunk_px: int | None = None
                   ) -> Overlaps:
    """Areas and intersections from a label image (2-D array-like of object ids, 0 = background)
    whose pixel ``(r, c)`` spans level-0 ``[c*f, (c+1)*f) x [r*f, (r+1)*f)``, ``f = l0_px_per_label_px``."""
    f = float(l0_px_per_label_px)
    px2 = f * f
    h, w = labels.shape
    step = chunk_px or (int(labels.chunks[0]) if hasattr(labels, "chunks") else 1024)
    geoms = np.asarray(truth.geometry.values, dtype=object)
    tid = truth["object_id"].to_numpy(dtype=np.int64)
    tree = shapely.STRtree(geoms)
    t_count: dict[int, int] = {int(i): 0 for i in tid}
    p_count: dict[int, int] = {}
    inter: dict[tuple[int, int], int] = {}
    fg_t = fg_p = fg_i = 0
    for r0 in range(0, h, step):
        for c0 in range(0, w, step):
            block = np.asarray(labels[r0:min(r0 + step, h), c0:min(c0 + step, w)])
            vals, counts = np.unique(block, return_counts=True)
            for v, n in zip(vals, counts):
                if v:
                    p_count[int(v)] = p_count.get(int(v), 0) + int(n)
            pred_fg = block > 0
            fg_p += int(pred_fg.sum())
            hits = tree.query(shapely_box(c0 * f, r0 * f, (c0 + block.shape[1]) * f, (r0 + block.shape[0]) * f),
                              predicate="intersects")
            if hits.size == 0:
                continue
            transform = Affine(f, 0.0, c0 * f, 0.0, f, r0 * f)
            union = np.zeros(block.shape, dtype=bool)
            for k in np.sort(hits):
                m = rasterio.features.rasterize([(geoms[k], 1)], out_shape=block.shape, transform=transform,
                                                dtype="uint8").astype(bool)
                if not m.any():
                    continue
                t = int(tid[k])
                t_count[t] += int(m.sum())
                union |= m
                vals, counts = np.unique(block[m], return_counts=True)
                for v, n in zip(vals, counts):
                    if v:
                        inter[(t, int(v))] = inter.get((t, int(v)), 0) + int(n)
            fg_t += int(union.sum())
            fg_i += int((union & pred_fg).sum())
    return Overlaps({k: v * px2 for k, v in t_count.items()}, {k: v * px2 for k, v in p_count.items()},
                    {k: v * px2 for k, v in inter.items()}, fg_t * px2, fg_p * px2, fg_i * px2)
