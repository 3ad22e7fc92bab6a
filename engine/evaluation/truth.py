"""Ground-truth objects: QuPath-style GeoJSON or GeoParquet polygons in level-0 px.

A truth set is a GeoDataFrame with columns ``object_id`` (int, unique per slide), ``class_name``
(str) and ``geometry`` (valid Polygon / MultiPolygon, level-0 px of the slide as tiatoolbox opens
it, no CRS). Holes (e.g. a duct's lumen) are not part of the object.

Files are read by :func:`engine.io.objects.read_object_polygons` (formats, ``object_id`` and class
rules there); an object without a class gets ``"object"``.
"""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd

from ..io.objects import POLYGON_SUFFIXES, read_object_polygons

DEFAULT_CLASS = "object"


def read_truth(path: str | Path) -> gpd.GeoDataFrame:
    """Truth polygons of one slide, sorted by ``object_id``."""
    gdf = read_object_polygons(path, what="truth")
    gdf["class_name"] = gdf["class_name"].fillna(DEFAULT_CLASS)
    return gdf


def find_truth_file(source: str | Path, slide_id: str) -> Path:
    """``source`` itself when it is a file, else ``<source>/<slide_id>.<geojson|json|parquet|geoparquet>``."""
    source = Path(source)
    if source.is_file():
        return source
    if source.is_dir():
        for ext in POLYGON_SUFFIXES:
            p = source / f"{slide_id}{ext}"
            if p.is_file():
                return p
        raise FileNotFoundError(f"no truth file for slide {slide_id!r} in {source} (expected {slide_id}.geojson)")
    raise FileNotFoundError(f"truth {source} not found")
