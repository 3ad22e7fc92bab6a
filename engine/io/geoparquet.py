"""GeoParquet (and plain Parquet tables): level-0 px, no CRS.

Written with ``crs=None``, which geopandas stores as ``"crs": null`` (GDAL, QGIS and geopandas then
treat the coordinates as unitless engineering coordinates, not degrees). Read: the active
geometry column and the other columns as properties; a CRS is warned about and ignored.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .geojson import Feature
from .values import FileFormatError

PARQUET_SUFFIXES = (".parquet", ".geoparquet")


def write_geoparquet(gdf, path: str | os.PathLike[str]) -> Path:
    """GeoParquet of ``gdf`` (level-0 px; ``crs=None`` is written as ``"crs": null``), atomically."""
    return write_atomic(path, lambda tmp: gdf.to_parquet(tmp, index=False))


def is_geoparquet(path: Path, error: type[FileFormatError] = FileFormatError) -> bool:
    """True for GeoParquet, False for a plain Parquet table; ``error`` if not Parquet at all."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for non-Parquet input
        raise error(path, f"not a readable Parquet file: {exc}") from None
    return b"geo" in (schema.metadata or {})


def read_geoparquet_features(path: str | Path, error: type[FileFormatError] = FileFormatError
                             ) -> tuple[list[Feature], list[str]]:
    """Rows of a GeoParquet file as :class:`Feature` s (``"row i"``, 0-based) and the property
    column names."""
    import geopandas as gpd

    path = Path(path)
    try:
        gdf = gpd.read_parquet(path)
    except Exception as exc:
        raise error(path, f"not a readable GeoParquet file: {exc}") from None
    if gdf.crs is not None:
        warnings.warn(f"{path}: GeoParquet has CRS {gdf.crs.to_string()}; it is read as level-0 slide pixels "
                      "(no CRS) regardless", stacklevel=3)
    geom_col = gdf.geometry.name
    columns = [str(c) for c in gdf.columns if c != geom_col]
    props = gdf[columns].to_dict(orient="records")
    return [Feature(f"row {i}", g, p) for i, (g, p) in enumerate(zip(gdf.geometry, props))], columns


def read_parquet_rows(path: str | Path) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """A plain Parquet table: its column names and its rows as ``("row i", {column: value})``."""
    import pandas as pd

    df = pd.read_parquet(path)
    return [str(c) for c in df.columns], [(f"row {i}", r) for i, r in enumerate(df.to_dict(orient="records"))]
