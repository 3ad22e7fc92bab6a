"""Stitching: ObjectMask records -> slide-level outputs.

* ``label_image.LabelImageWriter``: uint32 OME-NGFF label pyramid (``labels.ome.zarr``).
* ``polygons``: per-object (Multi)Polygons in level-0 px and a GeoDataFrame of them.

The vector files (GeoParquet, QuPath GeoJSON, a y-flipped GeoPackage) are written by
:mod:`engine.io`. The names below are imported on first use, so that importing a light module of
this package (``nms``, ``grid``) does not import ome-zarr and geopandas.
"""
from importlib import import_module

_LAZY = {"LabelImageWriter": ".label_image", "mask_to_polygons": ".polygons", "object_polygon": ".polygons",
         "objects_to_geodataframe": ".polygons"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
