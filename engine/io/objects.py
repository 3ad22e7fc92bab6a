"""Object polygons (ground truth, training annotations) from GeoJSON or GeoParquet, level-0 px.

One table for every reader: ``object_id`` (int64), ``class_name`` (str or None), ``geometry``
(valid Polygon / MultiPolygon, holes kept, no CRS), sorted by ``object_id``.

Per feature/row: ``object_id`` from the property/column (or QuPath ``measurements.object_id``),
else the 1-based feature number; the class from :func:`engine.io.values.classification_name`.
Features whose geometry is not polygonal (points, lines) or that have none are skipped with one
warning. Invalid polygons are repaired with :func:`shapely.make_valid`, keeping the polygonal
parts.
"""
from __future__ import annotations

import os
from collections import Counter
import warnings
from pathlib import Path

from .geojson import GEOJSON_SUFFIXES, Feature, read_geojson_features
from .geoparquet import PARQUET_SUFFIXES, read_geoparquet_features
from .values import classification_name, object_id_of

POLYGON_SUFFIXES = GEOJSON_SUFFIXES + PARQUET_SUFFIXES


def read_features(path: str | os.PathLike, what: str = "polygon") -> list[Feature]:
    """The features of a GeoJSON or GeoParquet file, by extension; ``what`` names the file in
    errors ("truth", "annotation")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} not found")
    suffix = path.suffix.lower()
    if suffix in GEOJSON_SUFFIXES:
        return read_geojson_features(path)
    if suffix in PARQUET_SUFFIXES:
        return read_geoparquet_features(path)[0]
    raise ValueError(f"{path}: {what} file must be GeoJSON (.geojson/.json) or GeoParquet (.parquet), not {suffix!r}")


def polygonal(geom):
    """The polygonal part of ``geom`` (made valid first), a Polygon or MultiPolygon; None if none."""
    import shapely
    from shapely.geometry import MultiPolygon, Polygon

    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    parts: list[Polygon] = []
    for g in shapely.get_parts(geom):
        if isinstance(g, MultiPolygon):
            parts += [q for q in g.geoms if not q.is_empty]
        elif isinstance(g, Polygon) and not g.is_empty:
            parts.append(g)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def read_object_polygons(path: str | os.PathLike, what: str = "polygon"):
    """The object table of a GeoJSON or GeoParquet file (see the module docstring)."""
    import geopandas as gpd
    import numpy as np

    ids: list[int] = []
    classes: list[str | None] = []
    geoms: list = []
    skipped = 0
    for i, feat in enumerate(read_features(path, what)):
        geom = polygonal(feat.geometry)
        if geom is None:
            skipped += 1
            continue
        oid = object_id_of(feat.properties)
        ids.append(i + 1 if oid is None else oid)
        classes.append(classification_name(feat.properties))
        geoms.append(geom)
    if skipped:
        warnings.warn(f"{path}: {skipped} feature(s) without polygonal geometry skipped", stacklevel=2)
    if len(set(ids)) != len(ids):
        dup = sorted(k for k, n in Counter(ids).items() if n > 1)[:10]
        raise ValueError(f"{path}: object_id values are not unique (repeated: {dup})")
    gdf = gpd.GeoDataFrame({"object_id": np.asarray(ids, dtype=np.int64), "class_name": classes},
                           geometry=geoms, crs=None)
    return gdf.sort_values("object_id", kind="stable").reset_index(drop=True)
