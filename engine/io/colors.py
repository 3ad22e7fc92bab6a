"""The one class-colour scheme, shared by the label image, the QuPath GeoJSON outputs (objects,
prompts, synthetic truth) and the QC picture.

A class keeps the same colour in every process and run: a class without an explicit colour is
mapped to the palette by CRC32 of its name (Python's ``hash`` is salted per process). Callers
with colours of their own (the synthetic slides' classes) pass them as ``overrides``.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping

RGB = tuple[int, int, int]

#: Qualitative palette (Tableau 10), used for classes without an explicit colour.
PALETTE_RGB: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (127, 127, 127),
)
#: Colour of objects without a class.
UNCLASSIFIED_RGB: RGB = (160, 160, 160)


def class_color_rgb(class_name: str | None, overrides: Mapping[str, RGB] | None = None) -> RGB:
    """RGB (0..255) for ``class_name``: the override if given, else a stable palette entry."""
    if class_name is None:
        return UNCLASSIFIED_RGB
    if overrides and class_name in overrides:
        r, g, b = overrides[class_name]
        return int(r), int(g), int(b)
    return PALETTE_RGB[zlib.crc32(class_name.encode("utf-8")) % len(PALETTE_RGB)]


def qupath_classification(class_name: str, overrides: Mapping[str, RGB] | None = None) -> dict:
    """QuPath's ``properties.classification``: ``{"name": ..., "color": [r, g, b]}``."""
    return {"name": class_name, "color": list(class_color_rgb(class_name, overrides))}
