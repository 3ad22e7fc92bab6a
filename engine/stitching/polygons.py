"""Vector outlines of ObjectMask records, in level-0 pixel coordinates.

Each crop is traced with ``rasterio.features.shapes`` (4-connectivity: exact pixel-edge polygons
that are valid, holes included), mapped to level-0 px (scale ``mask_mpp / slide_mpp``, shift by
``origin_l0_px``), unioned into one Polygon or MultiPolygon, repaired with ``make_valid`` if
ever needed, and cleaned:

* parts smaller than ``min_area_um2`` (default 10 µm², about a 3 x 3 µm speck, i.e. a fifth of a
  small lymphocyte) are dropped;
* holes are kept (a duct's lumen is a hole) unless smaller than ``min_hole_um2`` (default 0:
  keep all).

These per-mask outlines may overlap each other. The slide writer instead traces each object's
final pixels in the label image (:func:`label_block_polygons`, after the overlap rule), so its
polygons never overlap and their areas are the label pixel counts.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import geopandas as gpd
import numpy as np
import shapely
from rasterio.transform import Affine
from rasterio.features import shapes
from shapely.geometry import MultiPolygon, Polygon, shape

from engine.records import ObjectMask

DEFAULT_MIN_AREA_UM2 = 10.0
Polygonal = Polygon | MultiPolygon


def mask_to_polygons(
    mask: np.ndarray, origin_l0_px: tuple[float, float], l0_px_per_mask_px: float
) -> list[Polygon]:
    """4-connected components of ``mask`` (bool (h, w)) as polygons in level-0 px."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return []
    transform = Affine(l0_px_per_mask_px, 0.0, float(origin_l0_px[0]), 0.0, l0_px_per_mask_px, float(origin_l0_px[1]))
    return [shape(geom) for geom, _ in shapes(m, mask=m.astype(bool), connectivity=4, transform=transform)]


def label_block_polygons(block: np.ndarray, origin_rc: tuple[int, int]) -> Iterator[tuple[int, Polygon]]:
    """(object id, polygon) for each 4-connected region of a uint label block, in label px.

    ``origin_rc`` is the block's top-left (row, column) on the label grid; coordinates are
    integers (x = column, y = row), so parts of one object traced in neighbouring blocks share
    exact edges and union cleanly.
    """
    rows, cols = np.flatnonzero(block.any(axis=1)), np.flatnonzero(block.any(axis=0))
    if rows.size == 0:
        return
    # only the rows and columns holding objects are traced (the same polygons, less raster)
    block = block[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    top = int(block.max())
    if top <= np.iinfo(np.int32).max:  # rasterio traces int32; labels are uint32
        ids, small = None, block.astype(np.int32)
    else:
        ids, inverse = np.unique(block, return_inverse=True)
        small = inverse.reshape(block.shape).astype(np.int32)
    transform = Affine.translation(float(origin_rc[1] + cols[0]), float(origin_rc[0] + rows[0]))
    for geom, k in shapes(small, mask=block > 0, connectivity=4, transform=transform):
        yield (int(k) if ids is None else int(ids[int(k)])), _polygon(geom["coordinates"])


def _polygon(rings: list) -> Polygon:
    """A GeoJSON-like polygon's rings (shell, then holes) as a shapely Polygon; built from arrays,
    several times faster than ``shape()`` for rings of many vertices."""
    shell, *holes = (shapely.linearrings(np.asarray(r, dtype=float)) for r in rings)
    return shapely.polygons(shell, holes=holes or None)


def union_parts(parts: list[Polygon]) -> Polygonal:
    """Pixel-edge polygons of one object -> one valid Polygon or MultiPolygon."""
    merged = parts[0] if len(parts) == 1 else shapely.union_all(parts)
    if not merged.is_valid:
        merged = shapely.make_valid(merged)
    polys = _polygon_parts(merged)
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def label_px_to_l0_px(geom: Polygonal, l0_px_per_label_px: float) -> Polygonal:
    """Label-grid coordinates -> level-0 px (label pixel (r, c) spans x in [c*f, (c+1)*f))."""
    return shapely.transform(geom, lambda xy: xy * l0_px_per_label_px)


def _polygon_parts(geom: shapely.Geometry) -> list[Polygon]:
    return [g for g in shapely.get_parts(geom) if isinstance(g, Polygon) and not g.is_empty]


def clean_polygonal(geom: shapely.Geometry, min_area_l0_px2: float, min_hole_l0_px2: float = 0.0) -> Polygonal | None:
    """Drop parts below ``min_area_l0_px2`` and holes below ``min_hole_l0_px2``; None if empty."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    kept: list[Polygon] = []
    for p in _polygon_parts(geom):
        holes = [r for r in p.interiors if Polygon(r).area >= min_hole_l0_px2]
        if len(holes) != len(p.interiors):
            p = Polygon(p.exterior, holes)
        if p.area >= min_area_l0_px2:
            kept.append(p)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else MultiPolygon(kept)


def object_polygon(
    obj: ObjectMask,
    slide_mpp: float,
    min_area_um2: float = DEFAULT_MIN_AREA_UM2,
    min_hole_um2: float = 0.0,
) -> Polygonal | None:
    """The object's outline in level-0 px (holes kept), or None if nothing above the minimum."""
    parts = mask_to_polygons(obj.mask, obj.origin_l0_px, obj.mask_mpp / slide_mpp)
    if not parts:
        return None
    um2_per_l0_px2 = slide_mpp**2
    merged = shapely.union_all(parts)
    return clean_polygonal(merged, min_area_um2 / um2_per_l0_px2, min_hole_um2 / um2_per_l0_px2)


COLUMNS = ["object_id", "prompt_id", "class_name", "score", "area_um2", "geometry"]


def object_row(obj: ObjectMask, geom: Polygonal, slide_mpp: float) -> dict:
    """One GeoDataFrame row for an object and its outline (see :data:`COLUMNS`)."""
    return {
        "object_id": int(obj.object_id),
        "prompt_id": int(obj.prompt_id),
        "class_name": obj.class_name,
        "score": float(obj.score),
        "area_um2": float(geom.area * slide_mpp**2),
        "geometry": geom,
    }


#: Columns of the slide writer's objects table: :data:`COLUMNS` plus the object's area before the
#: overlap rule, whether a neighbour took some of its pixels, and whether its mask is still cut by
#: a window at the coarsest level (``truncated``, see ``engine.completion``).
SLIDE_COLUMNS = COLUMNS[:-1] + ["area_raw_um2", "lost_to_neighbour", "truncated", "geometry"]
_DTYPES = {"object_id": "int64", "prompt_id": "int64", "score": "float64", "area_um2": "float64",
           "area_raw_um2": "float64", "lost_to_neighbour": "bool", "truncated": "bool"}


def rows_to_geodataframe(rows: list[dict], columns: list[str] = COLUMNS) -> gpd.GeoDataFrame:
    """Rows (:func:`object_row` or the slide writer's) -> GeoDataFrame sorted by object_id, crs=None."""
    rows = sorted(rows, key=lambda r: r["object_id"])
    gdf = gpd.GeoDataFrame(rows, columns=columns, geometry="geometry", crs=None)
    return gdf.astype({k: v for k, v in _DTYPES.items() if k in columns})


def objects_to_geodataframe(
    records: Iterable[ObjectMask],
    slide_mpp: float,
    min_area_um2: float = DEFAULT_MIN_AREA_UM2,
    min_hole_um2: float = 0.0,
) -> gpd.GeoDataFrame:
    """One row per object with an outline left (objects that are all specks are dropped).

    Columns: object_id, prompt_id, class_name, score, area_um2, geometry (level-0 px), crs=None;
    sorted by object_id. ``records`` is consumed once; only the polygons are kept.
    """
    rows = []
    for obj in records:
        geom = object_polygon(obj, slide_mpp, min_area_um2, min_hole_um2)
        if geom is not None:
            rows.append(object_row(obj, geom, slide_mpp))
    return rows_to_geodataframe(rows)
