"""GeoJSON as QuPath and QGIS write it: the one reader and the one writer.

Coordinates are level-0 pixels of the slide as tiatoolbox opens it, x right, y down, and no CRS
is ever applied: the file is parsed with :mod:`json` and :func:`shapely.geometry.shape`
(GDAL/geopandas would read it as EPSG:4326 degrees) and written without a ``crs`` member.

Reading (:func:`read_geojson_features`): a FeatureCollection, QuPath's bare list of Features, a
single Feature or a bare geometry; every coordinate must be a finite number. Properties are kept
as they are (``classification`` as ``{name, color}`` or a plain string, ``group``, ``slide_id``,
``object_id``, ``measurements``...); :mod:`engine.io.values` reads them.

Writing (:func:`write_features`, :func:`write_qupath_geojson`): a FeatureCollection, atomically.
An object's Feature carries ``id``, a UUID that depends only on (source, slide id, object id),
so reruns write the same bytes; QuPath uses it as the object's id.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .atomic import write_json
from .colors import RGB, qupath_classification
from .values import FileFormatError, is_missing

QuPathObjectType = Literal["detection", "annotation", "cell"]
QUPATH_OBJECT_TYPES = ("detection", "annotation", "cell")
GEOJSON_SUFFIXES = (".geojson", ".json")
GEOMETRY_TYPES = frozenset({"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                            "GeometryCollection"})
#: ``source`` of the objects' feature ids (see :func:`feature_uuid`).
ENGINE_ID_SOURCE = "wsisam-engine"


@dataclass(frozen=True)
class Feature:
    """One feature or row: where it is in its file (``"feature 3"``, ``"row 3"``), its shapely
    geometry (None when it has none) and its properties."""

    where: str
    geometry: Any
    properties: Mapping[str, Any]


def _check_coordinates(coords: Any, gtype: Any, path: Path, where: str, error: type[FileFormatError]) -> None:
    """Every leaf of a GeoJSON ``coordinates`` array must be a finite number (checked before
    shapely, which reports a NaN vertex as an unclosed ring or leaves it out of the bounds)."""
    stack = [] if coords is None else [coords]  # no coordinates: shapely says what is wrong
    while stack:
        c = stack.pop()
        if isinstance(c, list):
            stack.extend(reversed(c))
        elif isinstance(c, bool) or not isinstance(c, (int, float)):
            raise error(path, f"{gtype} coordinate {c!r} is not a number", where)
        elif not math.isfinite(c):
            raise error(path, f"non-finite coordinate {c} in {gtype}", where)


def _feature_list(doc: Any, path: Path, error: type[FileFormatError]) -> list:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise error(path, "FeatureCollection without a 'features' list")
        return features
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [doc]
    if isinstance(doc, dict) and doc.get("type") in GEOMETRY_TYPES:
        return [{"type": "Feature", "geometry": doc, "properties": {}}]
    what = type(doc).__name__
    if isinstance(doc, dict):
        what = f"an object with type {doc['type']!r}" if "type" in doc else "an object without a 'type'"
    raise error(path, f"not GeoJSON: expected a FeatureCollection, a Feature or a list of Features, got {what}")


def read_geojson_features(path: str | Path, error: type[FileFormatError] = FileFormatError) -> list[Feature]:
    """The features of a GeoJSON file (see the module docstring), in file order.

    Raises ``error`` (naming the file and feature) for a file that is not UTF-8 JSON, not GeoJSON,
    an item that is not a Feature, properties that are not an object, a coordinate that is not a
    finite number, or a geometry shapely cannot build. A feature without geometry is returned
    with ``geometry=None``: callers decide.
    """
    from shapely.geometry import shape

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise error(path, f"not a UTF-8 text file ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise error(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    out = []
    for i, feat in enumerate(_feature_list(doc, path, error)):
        where = f"feature {i}"
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            got = feat.get("type") if isinstance(feat, dict) else type(feat).__name__
            raise error(path, f"not a GeoJSON Feature (type {got!r})", where)
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            raise error(path, "'properties' is not an object", where)
        g = feat.get("geometry")
        geom = None
        if g is not None:
            if isinstance(g, dict):
                _check_coordinates(g.get("coordinates"), g.get("type"), path, where, error)
            try:
                geom = shape(g)
            except Exception as exc:  # shapely raises several types for malformed geometries
                raise error(path, f"invalid geometry: {exc}", where) from None
        out.append(Feature(where, geom, props))
    return out


# --------------------------------------------------------------------------------------------
# Writing


def write_features(features: Iterable[dict], path: str | os.PathLike[str], indent: int | None = None) -> Path:
    """A FeatureCollection of ``features`` (GeoJSON dicts) to ``path``, atomically; no ``crs``
    member; NaN or infinity anywhere is an error (JSON has neither)."""
    doc = {"type": "FeatureCollection", "features": list(features)}
    return write_json(path, doc, indent=indent, allow_nan=False)


def feature_uuid(slide_id: str, object_id: int, source: str = ENGINE_ID_SOURCE) -> str:
    """The Feature ``id`` of an object: ``uuid5(NAMESPACE_URL, f"{source}/{slide_id}/{object_id}")``,
    the same in every run; ``source`` keeps truth and predictions of one slide apart."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{source}/{slide_id}/{int(object_id)}"))


def _json_number(v: Any) -> Any:
    """Plain-JSON value: numpy scalars to Python, NaN/inf to None (JSON has neither)."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _rounded(coords: Any, ndigits: int) -> Any:
    if isinstance(coords[0], (int, float)):
        return [round(float(v), ndigits) for v in coords]
    return [_rounded(c, ndigits) for c in coords]


def geometry_json(geom: Any, ndigits: int | None = None) -> dict:
    """GeoJSON geometry dict of a shapely geometry, coordinates rounded to ``ndigits`` if given."""
    from shapely.geometry import mapping

    g = mapping(geom)
    if ndigits is None:
        return g
    return {"type": g["type"], "coordinates": _rounded(g["coordinates"], ndigits)}


#: Object columns written as QuPath measurements when present.
MEASUREMENTS = ("score", "area_um2", "object_id")


def object_feature(
    row: Mapping[str, Any],
    slide_id: str,
    object_type: QuPathObjectType = "detection",
    class_colors_rgb: Mapping[str, RGB] | None = None,
    id_source: str = ENGINE_ID_SOURCE,
    ndigits: int | None = None,
) -> dict[str, Any]:
    """One QuPath Feature from a row with ``geometry``, ``object_id`` and optional ``class_name``,
    ``name``, ``score``, ``area_um2``: ``id`` (:func:`feature_uuid`), ``objectType``,
    ``classification`` {name, color} when the object has a class, ``name`` (the row's, else
    "<class> <object_id>"), ``object_id`` and ``measurements`` (:data:`MEASUREMENTS` present)."""
    oid = int(row["object_id"])
    props: dict[str, Any] = {"objectType": object_type}
    cls = row.get("class_name")
    if not is_missing(cls):
        props["classification"] = qupath_classification(str(cls), class_colors_rgb)
    name = row.get("name")
    props["name"] = str(name) if not is_missing(name) else f"{'object' if is_missing(cls) else cls} {oid}"
    props["object_id"] = oid
    props["measurements"] = {key: _json_number(row[key]) for key in MEASUREMENTS if key in row}
    if "truncated" in row:  # QuPath measurements are numbers: 1 = still cut by a window
        props["measurements"]["truncated"] = int(bool(row["truncated"]))
    return {"type": "Feature", "id": feature_uuid(slide_id, oid, id_source), "geometry": geometry_json(row["geometry"], ndigits),
            "properties": props}


def write_qupath_geojson(
    gdf,
    path: str | os.PathLike[str],
    object_type: QuPathObjectType = "detection",
    class_colors_rgb: Mapping[str, RGB] | None = None,
    *,
    slide_id: str | None = None,
    id_source: str = ENGINE_ID_SOURCE,
    ndigits: int | None = None,
) -> Path:
    """QuPath-importable FeatureCollection of objects (a GeoDataFrame with ``object_id``, optional
    ``class_name``, ``name``, measurements; level-0 px), atomically; rows in frame order, empty
    geometries left out. Each Feature: see :func:`object_feature`.

    ``slide_id`` (for the features' ids) defaults to the slide of the folder the file is written
    to (:func:`engine.output_folder.slide_id_of_folder`: ``<output>/<slide_id>/objects.geojson``).
    """
    from engine.output_folder import slide_id_of_folder

    if object_type not in QUPATH_OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {', '.join(QUPATH_OBJECT_TYPES)}, got {object_type!r}")
    if slide_id is None:
        slide_id = slide_id_of_folder(Path(path).parent)
    features = [
        object_feature(row, slide_id, object_type, class_colors_rgb, id_source, ndigits)
        for row in gdf.to_dict(orient="records")
        if row["geometry"] is not None and not row["geometry"].is_empty
    ]
    return write_features(features, path)
