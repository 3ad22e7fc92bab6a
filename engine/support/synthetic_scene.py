"""The scene of a synthetic slide: tissue outline and non-overlapping objects with their truth,
everything in level-0 px and derived from the seed alone (see :mod:`engine.support.synthetic` for
the picture and the classes)."""
from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import Polygon, box

CLASS_NAMES = ("duct", "nest", "large", "dcis")
#: Classes whose extent is ambiguous in a 256 µm HR field and clear in the 512 µm LR field.
CONTEXT_CLASS_NAMES = ("dcis",)
#: Rendered pixel classes (the renderer gives each its colour and texture).
PX_BG, PX_STROMA, PX_LUMEN, PX_OBJECT, PX_DEBRIS = 0, 1, 2, 3, 4

# Object sizes in µm.
_DUCT_R_UM = (40.0, 110.0)  # outer mean radius
_LUMEN_FRACTION = (0.4, 0.65)  # lumen radius / outer radius
_NEST_R_UM = (25.0, 80.0)
_LARGE_A_UM = (560.0, 660.0)  # semi-major axis; extent must exceed _LARGE_MIN_EXTENT_UM
_LARGE_MIN_EXTENT_UM = 1024.0
_HALO_UM = 20.0
_DCIS_A_UM = (130.0, 190.0)  # mean radius before the lobes
_DCIS_LOBES = (0.12, 0.25)  # amplitude of the 2- and 3-fold lobes (>= 0.12: concave bays)
_DCIS_EXTENT_UM = (300.0, 500.0)  # across: between the 256 µm HR and the 512 µm LR field
_DCIS_WALL_UM = (6.0, 10.0)
_DCIS_DEBRIS_FRACTION = (0.25, 0.4)  # debris lumen radius / outer radius


# --------------------------------------------------------------------------------------------
# Shapes


@dataclass
class SceneObject:
    class_name: str
    cx: float
    cy: float
    r_max: float  # bounding circle radius, level-0 px
    outer: Polygon  # filled outline, unclipped
    truth: Polygon  # object (with hole for ducts), clipped to the slide
    full: Polygon  # filled outline clipped to the slide (truth + lumen)
    halo: Polygon  # stroma around the object, clipped to the slide
    paint: list[tuple[Polygon, int]] | None = None  # pixel classes inside ``full``; None: lumen + object


def _blob(rng: np.random.Generator, cx: float, cy: float, a: float, b: float, n_vert: int,
          rough: float = 0.07, lobes: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Star-shaped irregular ellipse: returns angles-ordered vertices (n, 2) and radius factors.

    ``lobes`` (range of the 2- and 3-fold harmonics' amplitude) makes a lobed outline with bays
    (concave stretches), as for ``dcis``.
    """
    theta = np.linspace(0.0, 2 * np.pi, n_vert, endpoint=False)
    f = np.ones_like(theta)
    for k in range(2, 6):
        f += rough / k * rng.uniform(0.3, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if lobes is not None:
        for k in (2, 3):
            f += rng.uniform(*lobes) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rot = rng.uniform(0, np.pi)
    x = a * f * np.cos(theta)
    y = b * f * np.sin(theta)
    xr = cx + x * np.cos(rot) - y * np.sin(rot)
    yr = cy + x * np.sin(rot) + y * np.cos(rot)
    return np.stack([xr, yr], axis=1), f


def _make_shape(rng: np.random.Generator, class_name: str, cx: float, cy: float,
                px_per_um: float) -> tuple[Polygon, Polygon | None, float]:
    """Outline polygon, lumen polygon (ducts) or None, and bounding radius; level-0 px."""
    if class_name == "duct":
        r = rng.uniform(*_DUCT_R_UM) * px_per_um
        a, b = r, r * rng.uniform(0.7, 1.0)
    elif class_name == "nest":
        r = rng.uniform(*_NEST_R_UM) * px_per_um
        a, b = r, r * rng.uniform(0.6, 1.0)
    elif class_name == "large":
        a = rng.uniform(*_LARGE_A_UM) * px_per_um
        b = a * rng.uniform(0.55, 0.8)
    elif class_name == "dcis":
        a = rng.uniform(*_DCIS_A_UM) * px_per_um
        b = a * rng.uniform(0.8, 1.0)
    else:
        raise ValueError(f"unknown class {class_name!r}; expected one of {CLASS_NAMES}")
    n_vert = int(np.clip(2 * np.pi * a / 6.0, 48, 256))
    if class_name == "dcis":  # lobed, 300-500 µm across: past the HR field, inside the LR field
        for _ in range(100):
            pts, f = _blob(rng, cx, cy, a, b, n_vert, lobes=_DCIS_LOBES)
            extent_um = (pts.max(0) - pts.min(0)).max() / px_per_um
            if _DCIS_EXTENT_UM[0] <= extent_um <= _DCIS_EXTENT_UM[1] and Polygon(pts).is_valid:
                break
    else:
        pts, f = _blob(rng, cx, cy, a, b, n_vert)
    outer = Polygon(pts)
    lumen = None
    if class_name == "duct":
        s = rng.uniform(*_LUMEN_FRACTION)
        lumen = shapely.affinity.scale(outer, s, s, origin=(cx, cy))
    elif class_name == "dcis":  # the debris lumen, shifted off the centre
        s = rng.uniform(*_DCIS_DEBRIS_FRACTION)
        ang = rng.uniform(0, 2 * np.pi)
        shift = rng.uniform(0.0, 0.3) * b
        lumen = shapely.affinity.translate(shapely.affinity.scale(outer, s, s, origin=(cx, cy)),
                                           shift * np.cos(ang), shift * np.sin(ang))
    return outer, lumen, float(a * f.max())


# --------------------------------------------------------------------------------------------
# Layout


def _tissue_polygon(rng: np.random.Generator, w: int, h: int, fraction: float) -> Polygon:
    """Perturbed ellipse centred on the slide, scaled so it covers ``fraction`` of it."""
    slide = box(0, 0, w, h)
    if fraction >= 0.999:
        return slide
    theta = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    f = np.ones_like(theta)
    for k in range(2, 5):
        f += 0.05 / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    unit = np.stack([0.5 * w * f * np.cos(theta), 0.5 * h * f * np.sin(theta)], axis=1)

    def poly(s: float) -> Polygon:
        return Polygon(unit * s + (0.5 * w, 0.5 * h)).intersection(slide)

    lo, hi = 0.0, 1.6
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if poly(mid).area < fraction * w * h:
            lo = mid
        else:
            hi = mid
    return poly(hi)


def _layout(rng: np.random.Generator, w: int, h: int, mpp: float, n_objects: int, n_large: int,
            n_edge: int, tissue: Polygon, min_gap_um: float, max_tries: int = 2000, n_context: int = 0) -> list[SceneObject]:
    px_per_um = 1.0 / mpp
    gap = min_gap_um * px_per_um
    halo_px = _HALO_UM * px_per_um
    slide = box(0, 0, w, h)
    n_small = n_objects - n_large - n_edge - n_context
    plan = ["large"] * n_large + ["dcis"] * n_context + ["edge"] * n_edge + [
        "duct" if i % 2 == 0 else "nest" for i in range(n_small)
    ]
    shapely.prepare(tissue)
    tminx, tminy, tmaxx, tmaxy = tissue.bounds
    cxs = np.empty(len(plan))
    cys = np.empty(len(plan))
    rs = np.empty(len(plan))
    objs: list[SceneObject] = []
    edge_side = int(rng.integers(4))
    for kind in plan:
        for _ in range(max_tries):
            if kind == "edge":
                class_name = "duct" if edge_side % 2 == 0 else "nest"
                outer, lumen, r = _make_shape(rng, class_name, 0.0, 0.0, px_per_um)
                side = edge_side % 4
                length = w if side in (0, 2) else h
                if length <= 2 * r:
                    continue
                t = rng.uniform(r, length - r)
                off = rng.uniform(-0.5, 0.4) * r  # centre outside (<0) or inside the edge
                cx, cy = {0: (t, off), 1: (w - off, t), 2: (t, h - off), 3: (off, t)}[side]
                outer = shapely.affinity.translate(outer, cx, cy)
                lumen = None if lumen is None else shapely.affinity.translate(lumen, cx, cy)
            else:
                class_name = kind
                cx = rng.uniform(tminx, tmaxx)
                cy = rng.uniform(tminy, tmaxy)
                if not shapely.contains_xy(tissue, cx, cy):
                    continue
                outer, lumen, r = _make_shape(rng, class_name, cx, cy, px_per_um)
                if cx - r < 0 or cy - r < 0 or cx + r > w or cy + r > h:
                    continue
                if class_name == "large":
                    x0, y0, x1, y1 = outer.bounds
                    if max(x1 - x0, y1 - y0) * mpp <= _LARGE_MIN_EXTENT_UM:
                        continue
            k = len(objs)
            if k and np.any(np.hypot(cxs[:k] - cx, cys[:k] - cy) < rs[:k] + r + gap):
                continue
            full = outer.intersection(slide)
            obj_geom = outer if lumen is None or class_name == "dcis" else outer.difference(lumen)
            truth = obj_geom.intersection(slide)
            if not (isinstance(truth, Polygon) and isinstance(full, Polygon) and truth.is_valid):
                continue
            if truth.area < 0.25 * obj_geom.area:
                continue
            halo = outer.buffer(halo_px + 0.2 * r, quad_segs=4).intersection(slide)
            paint = None
            if class_name == "dcis":
                wall_px = rng.uniform(*_DCIS_WALL_UM) * px_per_um
                inner = outer.buffer(-wall_px)
                debris = lumen.intersection(outer.buffer(-wall_px - 10.0 * px_per_um)).intersection(slide)
                paint = [(full, PX_STROMA), (full.difference(inner), PX_OBJECT), (debris, PX_DEBRIS)]
            cxs[k], cys[k], rs[k] = cx, cy, r
            objs.append(SceneObject(class_name, cx, cy, r, outer, truth, full, halo, paint))
            if kind == "edge":
                edge_side += 1
            break
        else:
            raise ValueError(
                f"could not place {len(plan)} objects ({n_large} large, {n_edge} at the edge) without "
                f"overlap on a {w} x {h} px slide at {mpp} µm/px with tissue_fraction covering "
                f"{tissue.area / (w * h):.2f}: placed {len(objs)}; use a bigger slide or fewer objects"
            )
    return objs


def build_scene(w: int, h: int, mpp: float, n_objects: int, seed: int, n_large: int | None, n_edge: int | None,
           context_objects: int, tissue_fraction: float, min_gap_um: float):
    """Objects, tissue polygon and truth table of a slide (everything but the pixels)."""
    if w < 16 or h < 16:
        raise ValueError(f"slide too small: {w} x {h} px")
    rng = np.random.default_rng(seed)
    tissue = _tissue_polygon(rng, w, h, float(tissue_fraction))
    tissue_um2 = tissue.area * mpp * mpp
    if n_large is None:
        n_large = min(3, int(tissue_um2 // 2.5e6))
    if n_edge is None:
        n_edge = min(4, n_objects // 5)
    n_large = min(n_large, n_objects)
    n_context = min(int(context_objects), n_objects - n_large)
    n_edge = min(n_edge, n_objects - n_large - n_context)
    objs = _layout(rng, w, h, mpp, n_objects, n_large, n_edge, tissue, min_gap_um, n_context=n_context)
    truth = gpd.GeoDataFrame(
        {
            "object_id": np.arange(1, len(objs) + 1, dtype=np.int64),
            "class_name": [o.class_name for o in objs],
        },
        geometry=[o.truth for o in objs],
        crs=None,
    )
    return objs, tissue, truth
