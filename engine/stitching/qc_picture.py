"""Quality-control pictures: the slide's thumbnail with object outlines drawn on it.

:func:`qc_picture` (the demo: predictions against truth) and :func:`write_slide_qc` (every
segmented slide's ``qc.png``: outlines by class, truncated objects dashed red, prompts). Both draw on
a thumbnail from ``engine.slides.thumbnail``, whose memory does not grow with the slide; the
slide's ``qc.png`` gets its thumbnail from whoever has the slide open (a reader process), so the
slide writer never opens slides.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from PIL import Image, ImageDraw

from ..records import Prompt
from ..slides import Slide
from ..io.colors import class_color_rgb
from ..slides.thumbnail import bounded_thumbnail

TRUTH_RGB = (20, 20, 20)
DEFAULT_RGB = (0, 200, 255)
TRUNCATED_RGB = (255, 0, 0)
PROMPT_RGB = (255, 230, 0)
PROMPT_EDGE_RGB = (40, 40, 40)


def _rings(geom) -> list:
    polys = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
    return [ring for p in polys for ring in (p.exterior, *p.interiors)]


def draw_outlines(image: Image.Image, gdf: gpd.GeoDataFrame, scale: float, colors: dict[str, tuple[int, int, int]],
                  width: int = 2, default: tuple[int, int, int] = DEFAULT_RGB, dash_px: float = 0.0) -> None:
    """Draw every polygon of ``gdf`` (level-0 px) scaled by ``scale`` onto ``image``, coloured by
    class; ``dash_px`` > 0 draws dashes of that length (picture px) instead of solid lines."""
    draw = ImageDraw.Draw(image)
    for geom, cls in zip(gdf.geometry, gdf.get("class_name", [None] * len(gdf))):
        if geom is None or geom.is_empty:
            continue
        for ring in _rings(geom):
            xy = shapely.get_coordinates(ring) * scale
            for part in _dashes(xy, dash_px) if dash_px > 0 else [xy]:
                draw.line(part.ravel().tolist(), fill=colors.get(cls, default), width=width)  # x0, y0, x1, ...


def _dashes(xy: np.ndarray, dash_px: float) -> list[np.ndarray]:
    """A polyline cut into dashes of ``dash_px`` with gaps of the same length."""
    seg = np.hypot(*np.diff(xy, axis=0).T)
    at = np.concatenate([[0.0], np.cumsum(seg)])
    out = []
    for start in np.arange(0.0, at[-1], 2 * dash_px):
        t = np.concatenate([[start], at[(at > start) & (at < start + dash_px)], [min(start + dash_px, at[-1])]])
        out.append(np.column_stack([np.interp(t, at, xy[:, 0]), np.interp(t, at, xy[:, 1])]))
    return out


def draw_prompts(image: Image.Image, prompts: Sequence[Prompt], scale: float) -> None:
    """Boxes as thin dark rectangles, positive points as yellow dots, negative points as dark dots."""
    draw = ImageDraw.Draw(image)
    r = max(1.5, image.width / 700)
    for p in prompts:
        if p.box_l0_px is not None:
            x0, y0, x1, y1 = (v * scale for v in p.box_l0_px)
            draw.rectangle((x0, y0, x1, y1), outline=PROMPT_EDGE_RGB, width=1)
        for (x, y), label in zip(p.points_l0_px, p.point_labels):
            fill = PROMPT_RGB if label == 1 else PROMPT_EDGE_RGB
            draw.ellipse((x * scale - r, y * scale - r, x * scale + r, y * scale + r), fill=fill,
                         outline=PROMPT_EDGE_RGB)


def draw_legend(image: Image.Image, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
    """Colour swatches with their names in the top-left corner, on a white box."""
    draw = ImageDraw.Draw(image)
    line = 12
    width = 18 + 7 * max((len(t) for t, _ in entries), default=0)
    draw.rectangle((2, 2, 6 + width, 6 + line * len(entries)), fill=(255, 255, 255), outline=(0, 0, 0))
    for i, (text, rgb) in enumerate(entries):
        y = 5 + i * line
        draw.rectangle((6, y + 2, 14, y + 9), fill=rgb)
        draw.text((18, y), text, fill=(0, 0, 0))


def write_slide_qc(thumbnail: np.ndarray, width_l0_px: int, gdf: gpd.GeoDataFrame, prompts: Sequence[Prompt],
                   path: str | os.PathLike) -> Path:
    """A slide's ``qc.png``: its ``thumbnail`` (:func:`~engine.slides.thumbnail.qc_thumbnail`, of a
    slide ``width_l0_px`` wide), the prompts, the outlines of ``gdf`` (the slide writer's
    objects: ``class_name``, ``geometry`` in level-0 px) coloured by class
    (:func:`engine.io.colors.class_color_rgb`; no class: cyan), those with ``truncated`` set (a column some
    outputs carry) dashed red, and a legend with the counts."""
    thumb = Image.fromarray(thumbnail).convert("RGB")
    scale = thumb.width / width_l0_px
    draw_prompts(thumb, prompts, scale)
    cls = gdf["class_name"]
    classes = sorted(set(cls.dropna()))
    colors = {c: class_color_rgb(c) for c in classes}
    truncated = (gdf["truncated"].fillna(False).astype(bool).to_numpy() if "truncated" in gdf
                 else np.zeros(len(gdf), bool))
    draw_outlines(thumb, gdf[~truncated], scale, colors, width=2)  # no class: DEFAULT_RGB, clearer than grey
    draw_outlines(thumb, gdf[truncated], scale, {}, width=2, default=TRUNCATED_RGB, dash_px=6)
    legend = [(f"{c}: {int((cls == c).sum())}", colors[c]) for c in classes]
    if cls.isna().any():
        legend.append((f"no class: {int(cls.isna().sum())}", DEFAULT_RGB))
    if truncated.any():
        legend.append((f"truncated (dashed): {int(truncated.sum())}", TRUNCATED_RGB))
    legend.append((f"prompts: {len(prompts)}", PROMPT_RGB))
    draw_legend(thumb, legend)
    path = Path(path)
    thumb.save(path, compress_level=1)  # fast: slide texture compresses poorly anyway
    return path


def qc_picture(slide: Slide, predictions: gpd.GeoDataFrame, path: str | os.PathLike, max_px: int = 2048,
               truth: gpd.GeoDataFrame | None = None, colors: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """Write a PNG: thumbnail, truth outlines (thin, dark) if given, predicted outlines by class."""
    thumb = Image.fromarray(bounded_thumbnail(slide, max_px)).convert("RGB")
    scale = thumb.width / slide.dimensions_l0_px[0]
    if truth is not None:
        draw_outlines(thumb, truth, scale, {}, width=1, default=TRUTH_RGB)
    draw_outlines(thumb, predictions, scale, colors or {}, width=2)
    path = Path(path)
    thumb.save(path)
    return path
