"""Annotation, object and prompt files: one place per format.

* ``geojson``: the one GeoJSON reader (QuPath bare lists, FeatureCollections, single Features)
  and the one writer (objects, prompts and synthetic truth; stable UUID feature ids).
* ``geoparquet``: GeoParquet write/read and plain Parquet tables; ``csv_table``: CSV tables;
  ``geopackage``: the y-flipped GeoPackage for GIS.
* ``values``: reading single values (class names, ids, missing cells) and ``FileFormatError``.
* ``objects``: object polygons (truth, training annotations) from GeoJSON or GeoParquet.
* ``prompt_files``: prompt files to per-feature parts, and prompts to GeoJSON.
* ``colors``: the one class-colour scheme; ``atomic``: the one atomic write.

All coordinates are level-0 pixels of the slide as tiatoolbox opens it, x right, y down, no CRS.
Submodules are imported where used (this package imports nothing heavy by itself).
"""
