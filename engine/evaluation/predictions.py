"""Our predictions, as polygons (``objects.parquet``) or as a label image (``labels.ome.zarr``).

:func:`resolve_predictions` turns what a user names into :class:`PredictionSource` records:

- a GeoParquet file (``objects.parquet`` or any file with ``object_id``/``prompt_id``/``class_name``/
  ``geometry`` in level-0 px);
- a ``labels.ome.zarr`` folder (level 0 of ``labels/<name>`` is read, with its scale in µm);
- a slide output folder ``<out>/<slide_id>/`` (polygons by default, the label image with
  ``prefer="labels"``);
- a run folder holding slide output folders (every slide in it).

The slide id and the slide's level-0 µm per pixel come from the slide folder's ``summary.json``
(``slide.slide_id``, ``slide.mpp``); without one, the slide id is the folder name (``objects.parquet``,
``labels.ome.zarr``) or the file stem, and the mpp must be given for label images (the label
scale is in µm while truth is in level-0 px).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import zarr

from ..output_folder import SUMMARY_NAME
from ..slide_result import LABELS_NAME, PARQUET_NAME

PredictionKind = Literal["polygons", "labels"]
PARQUET_SUFFIXES = (".parquet", ".geoparquet")


@dataclass(frozen=True)
class PredictionSource:
    """One slide's predictions of one method."""

    slide_id: str
    kind: PredictionKind
    path: Path
    slide_mpp: float | None = None  # level-0 µm per pixel, when known
    segmenter: str | None = None  # from summary.json, when known


@dataclass
class LabelImage:
    """Level 0 of a label image: ``array`` (lazy zarr, uint (y, x)), ``label_mpp`` µm per label pixel,
    and per label value its ``prompt_id`` and ``class_name`` (from the image-label properties)."""

    array: Any
    label_mpp: float
    prompt_ids: dict[int, int]
    class_names: dict[int, str | None]


def _summary(folder: Path) -> dict | None:
    p = folder / SUMMARY_NAME
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None
    return None


def _is_zarr(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "zarr.json").is_file() or (folder / ".zgroup").is_file()
                                or (folder / ".zattrs").is_file())


def _source(kind: PredictionKind, path: Path, folder: Path, fallback_id: str, slide_mpp: float | None
            ) -> PredictionSource:
    summary = _summary(folder) or {}
    slide = summary.get("slide") or {}
    mpp = slide_mpp if slide_mpp is not None else slide.get("mpp")
    return PredictionSource(str(slide.get("slide_id") or fallback_id), kind, path,
                            None if mpp is None else float(mpp), summary.get("segmenter"))


def _slide_folder(folder: Path, prefer: PredictionKind, slide_mpp: float | None) -> PredictionSource | None:
    parquet, labels = folder / PARQUET_NAME, folder / LABELS_NAME
    order = [("polygons", parquet), ("labels", labels)]
    if prefer == "labels":
        order.reverse()
    for kind, path in order:
        if path.exists():
            return _source(kind, path, folder, folder.name, slide_mpp)  # type: ignore[arg-type]
    return None


def resolve_predictions(paths: list[str | Path], prefer: PredictionKind = "polygons",
                        slide_mpp: float | None = None) -> list[PredictionSource]:
    """Prediction sources for files/folders (see the module docstring), in the order given."""
    out: list[PredictionSource] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"predictions {p} not found")
        if p.is_file():
            if p.suffix.lower() not in PARQUET_SUFFIXES:
                raise ValueError(f"{p}: predictions must be GeoParquet, a labels.ome.zarr or an output folder")
            fallback = p.parent.name if p.name == PARQUET_NAME else p.stem
            out.append(_source("polygons", p, p.parent, fallback, slide_mpp))
        elif p.name.endswith(".ome.zarr") or _is_zarr(p):
            fallback = p.parent.name if p.name == LABELS_NAME else p.name.removesuffix(".ome.zarr")
            out.append(_source("labels", p, p.parent, fallback, slide_mpp))
        elif (src := _slide_folder(p, prefer, slide_mpp)) is not None:
            out.append(src)
        else:
            found = [s for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(".")
                     and (s := _slide_folder(d, prefer, slide_mpp)) is not None]
            if not found:
                raise ValueError(f"{p}: no {PARQUET_NAME} or {LABELS_NAME} in it or in its sub-folders")
            out += found
    return out


def read_polygons(path: str | Path) -> gpd.GeoDataFrame:
    """Our GeoParquet predictions with columns object_id, prompt_id, class_name, geometry (level-0 px).

    Missing ``object_id`` becomes the 1-based row number; missing ``prompt_id`` becomes
    ``object_id - 1`` (the pipeline's rule); missing ``class_name`` becomes None.
    """
    gdf = gpd.read_parquet(path)
    gdf = gdf[~(gdf.geometry.isna() | gdf.geometry.is_empty)].reset_index(drop=True)
    if "object_id" not in gdf:
        gdf["object_id"] = np.arange(1, len(gdf) + 1, dtype=np.int64)
    if "prompt_id" not in gdf:
        gdf["prompt_id"] = gdf["object_id"].astype(np.int64) - 1
    if "class_name" not in gdf:
        gdf["class_name"] = None
    gdf = gdf.set_crs(None, allow_override=True)
    return gdf


def mpp_from_polygons(gdf: gpd.GeoDataFrame) -> float | None:
    """Level-0 µm per pixel recovered from our ``area_um2`` column (area_um2 = area_l0_px2 * mpp²)."""
    if "area_um2" not in gdf or len(gdf) == 0:
        return None
    areas = gdf.geometry.area.to_numpy()
    k = int(np.argmax(areas))
    if not areas[k] > 0 or not np.isfinite(gdf["area_um2"].iloc[k]):
        return None
    return math.sqrt(float(gdf["area_um2"].iloc[k]) / float(areas[k]))


def _ome_attrs(group: zarr.Group) -> dict:
    attrs = dict(group.attrs)
    return attrs.get("ome", attrs)


def read_label_image(path: str | Path) -> LabelImage:
    """Level 0 of the first label image under ``labels/`` (NGFF 0.4 or 0.5), lazily."""
    root = zarr.open_group(str(path), mode="r")
    names = _ome_attrs(root["labels"]).get("labels") or ["objects"]
    group = root["labels"][names[0]]
    attrs = _ome_attrs(group)
    ds = attrs["multiscales"][0]["datasets"][0]
    scale = next(t["scale"] for t in ds["coordinateTransformations"] if t["type"] == "scale")
    if abs(scale[-1] - scale[-2]) > 1e-9 * max(scale[-2:]):
        raise ValueError(f"{path}: non-square label pixels {scale}")
    prompt_ids: dict[int, int] = {}
    classes: dict[int, str | None] = {}
    for prop in (attrs.get("image-label") or {}).get("properties", []):
        v = int(prop["label-value"])
        if prop.get("prompt_id") is not None:
            prompt_ids[v] = int(prop["prompt_id"])
        classes[v] = prop.get("class")
    return LabelImage(group[ds["path"]], float(scale[-1]), prompt_ids, classes)
