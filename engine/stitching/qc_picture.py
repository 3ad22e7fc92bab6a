"""Quality-control picture: the slide's thumbnail with object outlines drawn on it."""
from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
from PIL import Image, ImageDraw

from ..slides import Slide

TRUTH_RGB = (20, 20, 20)
DEFAULT_RGB = (0, 200, 255)


def _rings(geom) -> list:
    polys = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
    return [ring for p in polys for ring in (p.exterior, *p.interiors)]


def draw_outlines(image: Image.Image, gdf: gpd.GeoDataFrame, scale: float, colors: dict[str, tuple[int, int, int]],
                  width: int = 2, default: tuple[int, int, int] = DEFAULT_RGB) -> None:
    """Draw every polygon of ``gdf`` (level-0 px) scaled by ``scale`` onto ``image``, coloured by class."""
    draw = ImageDraw.Draw(image)
    for geom, cls in zip(gdf.geometry, gdf.get("class_name", [None] * len(gdf))):
        if geom is None or geom.is_empty:
            continue
        for ring in _rings(geom):
            xy = [(x * scale, y * scale) for x, y in np.asarray(ring.coords)]
            draw.line(xy, fill=colors.get(cls, default), width=width)


def qc_picture(slide: Slide, predictions: gpd.GeoDataFrame, path: str | os.PathLike, max_px: int = 2048,
               truth: gpd.GeoDataFrame | None = None, colors: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """Write a PNG: thumbnail, truth outlines (thin, dark) if given, predicted outlines by class."""
    thumb = Image.fromarray(slide.thumbnail(max_px)).convert("RGB")
    scale = thumb.width / slide.dimensions_l0_px[0]
    if truth is not None:
        draw_outlines(thumb, truth, scale, {}, width=1, default=TRUTH_RGB)
    draw_outlines(thumb, predictions, scale, colors or {}, width=2)
    path = Path(path)
    thumb.save(path)
    return path
