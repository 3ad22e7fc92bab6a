"""Ground-truth objects: QuPath-style GeoJSON or GeoParquet polygons in level-0 px.

A truth set is a GeoDataFrame with columns ``object_id`` (int, unique per slide), ``class_name``
(str) and ``geometry`` (valid Polygon / MultiPolygon, level-0 px of the slide as tiatoolbox opens
it, no CRS). Holes (e.g. a duct's lumen) are not part of the object.

GeoJSON (``.geojson``, ``.json``): a FeatureCollection, a list of Features (QuPath) or one
Feature, parsed with :mod:`json` and :func:`shapely.geometry.shape` (no CRS is ever applied).
Per feature: ``properties.object_id`` (else the 1-based feature index), the class from
``properties.classification.name`` (QuPath), ``properties.classification`` as a string, or
``properties.class_name`` (else ``"object"``). Features whose geometry is not polygonal
(points, lines) are skipped with a warning. GeoParquet (``.parquet``, ``.geoparquet``): the
active geometry column plus optional ``object_id`` and ``class_name``/``classification``.

Invalid polygons are repaired with :func:`shapely.make_valid` (keeping the polygonal parts).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

TRUTH_SUFFIXES = (".geojson", ".json", ".parquet", ".geoparquet")
DEFAULT_CLASS = "object"


def _class_of(props: dict[str, Any]) -> str:
    c = props.get("classification")
    if isinstance(c, dict) and c.get("name"):
        return str(c["name"])
    if isinstance(c, str) and c:
        return c
    if props.get("class_name"):
        return str(props["class_name"])
    return DEFAULT_CLASS


def _polygonal(geom: shapely.Geometry) -> Polygon | MultiPolygon | None:
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


def _frame(ids: list[int], classes: list[str], geoms: list, path: Path) -> gpd.GeoDataFrame:
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: object_id values are not unique")
    gdf = gpd.GeoDataFrame({"object_id": np.asarray(ids, dtype=np.int64), "class_name": classes},
                           geometry=geoms, crs=None)
    return gdf.sort_values("object_id").reset_index(drop=True)


def read_truth(path: str | Path) -> gpd.GeoDataFrame:
    """Truth polygons of one slide (see the module docstring for the formats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"truth file {path} not found")
    suffix = path.suffix.lower()
    ids: list[int] = []
    classes: list[str] = []
    geoms: list = []
    skipped = 0
    if suffix in (".geojson", ".json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
            features = doc.get("features", [])
        elif isinstance(doc, list):
            features = doc
        elif isinstance(doc, dict) and doc.get("type") == "Feature":
            features = [doc]
        else:
            raise ValueError(f"{path}: expected a GeoJSON FeatureCollection, Feature or list of Features")
        for i, f in enumerate(features):
            props = f.get("properties") or {}
            geom = _polygonal(shape(f["geometry"])) if f.get("geometry") else None
            if geom is None:
                skipped += 1
                continue
            ids.append(int(props.get("object_id", i + 1)))
            classes.append(_class_of(props))
            geoms.append(geom)
    elif suffix in (".parquet", ".geoparquet"):
        table = gpd.read_parquet(path)
        for i, row in enumerate(table.to_dict(orient="records")):
            geom = _polygonal(row[table.geometry.name])
            if geom is None:
                skipped += 1
                continue
            oid = row.get("object_id")
            ids.append(int(oid) if oid is not None and oid == oid else i + 1)
            classes.append(_class_of(row))
            geoms.append(geom)
    else:
        raise ValueError(f"{path}: truth must be GeoJSON (.geojson/.json) or GeoParquet (.parquet), not {suffix!r}")
    if skipped:
        warnings.warn(f"{path}: {skipped} feature(s) without polygonal geometry skipped", stacklevel=2)
    return _frame(ids, classes, geoms, path)


def find_truth_file(source: str | Path, slide_id: str) -> Path:
    """``source`` itself when it is a file, else ``<source>/<slide_id>.<geojson|json|parquet|geoparquet>``."""
    source = Path(source)
    if source.is_file():
        return source
    if source.is_dir():
        for ext in TRUTH_SUFFIXES:
            p = source / f"{slide_id}{ext}"
            if p.is_file():
                return p
        raise FileNotFoundError(f"no truth file for slide {slide_id!r} in {source} (expected {slide_id}.geojson)")
    raise FileNotFoundError(f"truth {source} not found")
