"""Stitching: ObjectMask records -> slide-level outputs.

* ``label_image.LabelImageWriter``: uint32 OME-NGFF label pyramid (``labels.ome.zarr``).
* ``polygons``: per-object (Multi)Polygons in level-0 px and a GeoDataFrame of them.

The vector files (GeoParquet, QuPath GeoJSON, a y-flipped GeoPackage) are written by
:mod:`engine.io`.
"""
from engine.stitching.label_image import LabelImageWriter
from engine.stitching.polygons import mask_to_polygons, object_polygon, objects_to_geodataframe

__all__ = [
    "LabelImageWriter",
    "mask_to_polygons",
    "object_polygon",
    "objects_to_geodataframe",
]
