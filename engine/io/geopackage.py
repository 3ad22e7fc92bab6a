"""GeoPackage for QGIS: no CRS and y negated.

In slide pixels y points down; GIS tools draw y up, so without the flip QGIS shows the slide
mirrored. A raster of the slide opened in QGIS with no georeference also lands at y <= 0, so the
two overlay.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from .atomic import write_atomic


def write_gis_geopackage(gdf, path: str | os.PathLike[str], layer: str = "objects") -> Path:
    """GeoPackage of ``gdf`` (level-0 px) with y negated (x right, y up) and no CRS, atomically."""
    import shapely

    flipped = gdf.copy()
    flipped["geometry"] = shapely.transform(gdf.geometry.values, lambda xy: xy * [1.0, -1.0])
    flipped = flipped.set_crs(None, allow_override=True)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():  # "no crs" is deliberate: slide pixels have none
            warnings.filterwarnings("ignore", message=".*crs.*not provided", category=UserWarning)
            flipped.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio")

    return write_atomic(path, write)
