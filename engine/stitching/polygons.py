"""Vector outlines of ObjectMask records, in level-0 pixel coordinates.

Each crop is traced with ``rasterio.features.shapes`` (4-connectivity: exact pixel-edge polygons
that are valid, holes included), mapped to level-0 px (scale ``mask_mpp / slide_mpp``, shift by
``origin_l0_px``), unioned into one Polygon or MultiPolygon, repaired with ``make_valid`` if
ever needed, and cleaned:

* parts smaller than ``min_area_um2`` (default 10 µm², about a 3 x 3 µm speck, i.e. a fifth of a
  small lymphocyte) are dropped;
* holes are kept (a duct's lumen is a hole) unless smaller than ``min_hole_um2`` (default 0:
  keep all).

Vectors are per object and may overlap each other; the overlap rule applies to the label
image only.
"""
from __future__ import annotations

from collections.abc import Iterable

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


def rows_to_geodataframe(rows: list[dict]) -> gpd.GeoDataFrame:
    """Rows from :func:`object_row` -> GeoDataFrame sorted by object_id, crs=None."""
    rows = sorted(rows, key=lambda r: r["object_id"])
    gdf = gpd.GeoDataFrame(rows, columns=COLUMNS, geometry="geometry", crs=None)
    return gdf.astype({"object_id": "int64", "prompt_id": "int64", "score": "float64", "area_um2": "float64"})


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
