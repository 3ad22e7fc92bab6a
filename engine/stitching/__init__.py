"""Stitching: ObjectMask records -> slide-level outputs.

* ``label_image.LabelImageWriter``: uint32 OME-NGFF label pyramid (``labels.ome.zarr``).
* ``polygons``: per-object (Multi)Polygons in level-0 px and a GeoDataFrame of them.
* ``vector_io``: GeoParquet, QuPath GeoJSON and a y-flipped GeoPackage for GIS.
"""
from engine.stitching.label_image import LabelImageWriter
from engine.stitching.polygons import mask_to_polygons, object_polygon, objects_to_geodataframe
from engine.stitching.vector_io import write_geoparquet, write_gis_geopackage, write_qupath_geojson

__all__ = [
    "LabelImageWriter",
    "mask_to_polygons",
    "object_polygon",
    "objects_to_geodataframe",
    "write_geoparquet",
    "write_gis_geopackage",
    "write_qupath_geojson",
]
