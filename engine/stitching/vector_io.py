"""Writers for object vectors (GeoDataFrame from ``polygons.objects_to_geodataframe``).

Coordinates are level-0 pixels, x right, y down, with no CRS:

* ``write_geoparquet``: GeoParquet with ``"crs": null`` (GDAL, QGIS and geopandas then treat the
  coordinates as unitless/engineering, not degrees).
* ``write_qupath_geojson``: a FeatureCollection QuPath imports as objects; no ``crs`` member
  (QuPath ignores it and GeoJSON has none); GDAL/geopandas read it as WGS84, so use GeoParquet
  or the GeoPackage for GIS work.
* ``write_gis_geopackage``: GeoPackage without CRS and with y negated. In slide pixels y points
  down, GIS tools draw y up, so without the flip QGIS shows the slide mirrored; a raster of the
  slide opened in QGIS with no georeference also lands at y <= 0, so the two overlay.

All writes are atomic: data go to a temporary file in the target folder and ``os.replace``
moves it into place, so an error leaves neither a half-written file nor the temporary behind.
"""
from __future__ import annotations

import json
import math
import os
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import shapely
from shapely.geometry import mapping

from engine.stitching.colors import RGB, class_color_rgb

QuPathObjectType = Literal["detection", "annotation"]


def _atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temp path next to ``path`` (same suffix), then move it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_geoparquet(gdf: gpd.GeoDataFrame, path: str | os.PathLike[str]) -> Path:
    """GeoParquet (level-0 px; ``crs=None`` is written as ``"crs": null``)."""
    return _atomic(path, lambda tmp: gdf.to_parquet(tmp, index=False))


def _json_number(v: Any) -> Any:
    """Plain-JSON value: numpy scalars to Python, NaN/inf to None (JSON has neither)."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def qupath_feature(
    row: Mapping[str, Any],
    object_type: QuPathObjectType = "detection",
    class_colors_rgb: Mapping[str, RGB] | None = None,
) -> dict[str, Any]:
    """One QuPath GeoJSON Feature from a row with geometry, object_id, class_name, score, area_um2."""
    props: dict[str, Any] = {"objectType": object_type}
    cls = row.get("class_name")
    if cls is not None and cls == cls:  # not None / NaN
        props["classification"] = {"name": str(cls), "color": list(class_color_rgb(str(cls), class_colors_rgb))}
    name = row.get("name")
    props["name"] = str(name) if name is not None and name == name else f"object {int(row['object_id'])}"
    props["measurements"] = {
        key: _json_number(row[key]) for key in ("score", "area_um2", "object_id") if key in row
    }
    if "truncated" in row:  # QuPath measurements are numbers: 1 = still cut by a window
        props["measurements"]["truncated"] = int(bool(row["truncated"]))
    return {"type": "Feature", "geometry": mapping(row["geometry"]), "properties": props}


def write_qupath_geojson(
    gdf: gpd.GeoDataFrame,
    path: str | os.PathLike[str],
    object_type: QuPathObjectType = "detection",
    class_colors_rgb: Mapping[str, RGB] | None = None,
) -> Path:
    """QuPath-importable FeatureCollection (coordinates: level-0 px of the slide as opened).

    Each Feature: properties.objectType (``detection`` or ``annotation``), classification
    {name, color [r, g, b]} when the object has a class, name, measurements {score, area_um2,
    object_id}. No ``crs`` member.
    """
    if object_type not in ("detection", "annotation"):
        raise ValueError(f"object_type must be 'detection' or 'annotation', got {object_type!r}")
    features = [
        qupath_feature(row, object_type, class_colors_rgb)
        for row in gdf.to_dict(orient="records")
        if row["geometry"] is not None and not row["geometry"].is_empty
    ]
    doc = {"type": "FeatureCollection", "features": features}

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, allow_nan=False)

    return _atomic(path, write)


def write_gis_geopackage(gdf: gpd.GeoDataFrame, path: str | os.PathLike[str], layer: str = "objects") -> Path:
    """GeoPackage for QGIS: no CRS, y negated (x right, y up; see module docstring)."""
    flipped = gdf.copy()
    flipped["geometry"] = shapely.transform(gdf.geometry.values, lambda xy: xy * [1.0, -1.0])
    flipped = flipped.set_crs(None, allow_override=True)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():  # "no crs" is deliberate: slide pixels have none
            warnings.filterwarnings("ignore", message=".*crs.*not provided", category=UserWarning)
            flipped.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio")

    return _atomic(path, write)
