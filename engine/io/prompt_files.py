"""Prompt files (GeoJSON, CSV, (Geo)Parquet) to per-feature/row prompt parts, and prompts back to
QuPath GeoJSON. The rules (geometry types, point labels, columns) are in :mod:`engine.prompts`,
which groups the parts into :class:`engine.records.Prompt` records."""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..records import Prompt
from .colors import qupath_classification
from .csv_table import CSV_SUFFIXES, read_csv_rows
from .geojson import GEOJSON_SUFFIXES, read_geojson_features, write_features
from .geoparquet import PARQUET_SUFFIXES, is_geoparquet, read_geoparquet_features, read_parquet_rows
from .values import FileFormatError, as_id, as_text, classification_name, is_missing

PROMPT_SUFFIXES = GEOJSON_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
POINT_COLUMNS = ("x", "y")
NEGATIVE_CLASS_NAMES = frozenset({"negative", "background"})
_BOX_GEOMS = ("Polygon", "MultiPolygon")
_POINT_GEOMS = ("Point", "MultiPoint")


class PromptError(ValueError):
    """A prompt is invalid (names the slide and prompt)."""


class PromptFileError(PromptError, FileFormatError):
    """A prompt file cannot be read; the message names the file and, where relevant, the
    feature/row and what is wrong."""

    subject = "prompts"


@dataclass
class PromptPart:
    """One feature/row of a prompt file, before grouping."""

    where: str
    slide_id: str | None
    group: str | None
    box: tuple[float, float, float, float] | None
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    class_name: str | None = None
    name: str | None = None


def _parse_label(v: Any, path: Path, where: str) -> int | None:
    if is_missing(v):
        return None
    if hasattr(v, "item") and not isinstance(v, str):
        v = v.item()
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)) and v in (0, 1):
        return int(v)
    if isinstance(v, str):
        s = v.strip().lower()
        table = {"1": 1, "0": 0, "1.0": 1, "0.0": 0, "true": 1, "false": 0, "positive": 1, "negative": 0}
        if s in table:
            return table[s]
    raise PromptFileError(path, f"label must be 1 (positive) or 0 (negative), got {v!r}", where)


def _parse_float(v: Any, column: str, path: Path, where: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise PromptFileError(path, f"column {column!r} is not a number: {v!r}", where) from None
    if not math.isfinite(f):
        raise PromptFileError(path, f"column {column!r} is {v!r}: non-finite coordinate", where)
    return f


def _part_from_geometry(
    geom: Any, props: Mapping[str, Any], path: Path, where: str, slide_column: str
) -> PromptPart:
    """``geom``: a shapely geometry (already parsed)."""
    import shapely

    if geom is None or geom.is_empty:
        raise PromptFileError(path, "feature has no (or an empty) geometry", where)
    gtype = geom.geom_type
    xy = shapely.get_coordinates(geom)
    finite = np.isfinite(xy).all(axis=1)
    if not finite.all():  # shapely's bounds skip NaN: a NaN vertex would silently shrink the box
        x, y = (float(v) for v in xy[~finite][0])
        raise PromptFileError(path, f"non-finite coordinate ({x}, {y}) in {gtype}", where)
    if gtype not in _BOX_GEOMS + _POINT_GEOMS:
        raise PromptFileError(
            path,
            f"unsupported geometry type {gtype!r}; prompts are {', '.join(_BOX_GEOMS + _POINT_GEOMS)}",
            where,
        )
    class_name = classification_name(props)
    class_is_negative = class_name is not None and class_name.strip().lower() in NEGATIVE_CLASS_NAMES
    label = _parse_label(props.get("label"), path, where)
    part = PromptPart(
        where=where,
        slide_id=as_id(props.get(slide_column)),
        group=as_id(props.get("group")),
        box=None,
        name=as_text(props.get("name")),
        class_name=None if class_is_negative else class_name,
    )
    if gtype in _BOX_GEOMS:
        if label == 0 or (label is None and class_is_negative):
            raise PromptFileError(
                path, f"a {gtype} is a box prompt and cannot be negative (label 0 / class {class_name!r})", where
            )
        minx, miny, maxx, maxy = (float(b) for b in geom.bounds)
        if not (maxx > minx and maxy > miny):
            raise PromptFileError(
                path, f"zero-area box ({minx}, {miny}, {maxx}, {maxy}) from a {gtype}: x1 <= x0 or y1 <= y0", where
            )
        part.box = (minx, miny, maxx, maxy)
        return part
    pts = [geom] if gtype == "Point" else list(geom.geoms)
    coords = [(float(p.x), float(p.y)) for p in pts]
    raw = props.get("point_labels")
    if isinstance(raw, str) and raw.strip().startswith("["):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise PromptFileError(path, f"point_labels is not a list: {raw!r}", where) from None
    if hasattr(raw, "tolist"):
        raw = raw.tolist()
    if isinstance(raw, list) or not is_missing(raw):
        if not isinstance(raw, list) or len(raw) != len(coords):
            raise PromptFileError(
                path, f"point_labels must be a list of {len(coords)} labels (one per point), got {raw!r}", where
            )
        labels = [_parse_label(v, path, where) for v in raw]
        if any(v is None for v in labels):
            raise PromptFileError(path, f"point_labels has a missing label: {raw!r}", where)
    else:
        one = label if label is not None else (0 if class_is_negative else 1)
        labels = [one] * len(coords)
    part.points = coords
    part.labels = [int(v) for v in labels]
    return part


def _table_parts(
    rows: Iterable[tuple[str, Mapping[str, Any]]], columns: list[str], path: Path, slide_column: str
) -> tuple[list[PromptPart], bool]:
    cols = set(columns)
    has_box = all(c in cols for c in BOX_COLUMNS)
    has_point = all(c in cols for c in POINT_COLUMNS)
    partial_box = [c for c in BOX_COLUMNS if c not in cols] if any(c in cols for c in BOX_COLUMNS) else []
    partial_point = [c for c in POINT_COLUMNS if c not in cols] if any(c in cols for c in POINT_COLUMNS) else []
    if partial_box or partial_point or not (has_box or has_point):
        missing = partial_box + partial_point
        detail = f" (missing {', '.join(missing)})" if missing else ""
        raise PromptFileError(
            path,
            "missing required columns: need x0,y0,x1,y1 (boxes) and/or x,y (points)"
            f"{detail}; found {', '.join(columns) or 'no columns'}",
        )
    parts = []
    for where, row in rows:
        box = None
        if has_box:
            vals = [row.get(c) for c in BOX_COLUMNS]
            filled = [not is_missing(v) for v in vals]
            if any(filled) and not all(filled):
                empty = [c for c, f in zip(BOX_COLUMNS, filled) if not f]
                raise PromptFileError(path, f"incomplete box: {', '.join(empty)} empty", where)
            if all(filled):
                x0, y0, x1, y1 = (_parse_float(v, c, path, where) for v, c in zip(vals, BOX_COLUMNS))
                if not (x1 > x0 and y1 > y0):
                    raise PromptFileError(path, f"zero-area box ({x0}, {y0}, {x1}, {y1}): x1 <= x0 or y1 <= y0", where)
                box = (x0, y0, x1, y1)
        points: list[tuple[float, float]] = []
        labels: list[int] = []
        if has_point:
            vx, vy = row.get("x"), row.get("y")
            if is_missing(vx) != is_missing(vy):
                raise PromptFileError(path, "incomplete point: x and y must both be filled", where)
            if not is_missing(vx):
                points = [(_parse_float(vx, "x", path, where), _parse_float(vy, "y", path, where))]
                lab = _parse_label(row.get("label"), path, where)
                labels = [1 if lab is None else lab]
        if box is None and not points:
            raise PromptFileError(path, "row has neither a box (x0,y0,x1,y1) nor a point (x,y)", where)
        parts.append(
            PromptPart(
                where=where,
                slide_id=as_id(row.get(slide_column)),
                group=as_id(row.get("group")),
                box=box,
                points=points,
                labels=labels,
                class_name=as_text(row.get("class_name")),
                name=as_text(row.get("name")),
            )
        )
    return parts, slide_column in cols


def read_prompt_parts(path: Path, slide_column: str) -> tuple[list[PromptPart], bool]:
    """The parts of a prompt file (format by extension) and whether it has the slide column."""
    suffix = path.suffix.lower()
    if suffix in GEOJSON_SUFFIXES:
        features = read_geojson_features(path, PromptFileError)
        has_column = any(slide_column in f.properties for f in features)
    elif suffix in CSV_SUFFIXES:
        columns, rows = read_csv_rows(path, PromptFileError)
        return _table_parts(rows, columns, path, slide_column)
    elif suffix in PARQUET_SUFFIXES:
        if not is_geoparquet(path, PromptFileError):
            columns, rows = read_parquet_rows(path)
            return _table_parts(rows, columns, path, slide_column)
        features, columns = read_geoparquet_features(path, PromptFileError)
        has_column = slide_column in columns
    else:
        raise PromptFileError(path, f"unknown prompt file type {suffix!r}; expected one of {', '.join(PROMPT_SUFFIXES)}")
    return [_part_from_geometry(f.geometry, f.properties, path, f.where, slide_column) for f in features], has_column


# --------------------------------------------------------------------------------------------
# Writer


def write_prompts_geojson(
    prompts: Iterable[Prompt], path: str | Path, slide_column: str | None = "slide_id",
    id_column: str | None = None, extra_properties: Callable[[Prompt], Mapping[str, Any]] | None = None,
) -> Path:
    """Write prompts as a QuPath-style GeoJSON FeatureCollection (level-0 px, no CRS).

    A box becomes a rectangle Polygon annotation, points a Point (one) or MultiPoint (several)
    annotation with ``label`` (all points alike) or ``point_labels``. A prompt written as
    two features (box and points) gets ``properties.group = "<slide>:<prompt_id>"``. The
    class is ``properties.classification = {name, color}``; ``slide_column`` (unless None)
    holds the slide id; ``id_column`` (unless None) the ``prompt_id``; ``extra_properties(prompt)``
    (unless None) more properties, added last. :func:`engine.prompts.read_prompts` reads the file
    back to the same prompts (ids renumbered 0..N-1 in file order). Written atomically.
    """
    features = []
    for p in prompts:
        base: dict[str, Any] = {"objectType": "annotation"}
        if p.name is not None:
            base["name"] = p.name
        if p.class_name is not None:
            base["classification"] = qupath_classification(p.class_name)
        if slide_column is not None:
            base[slide_column] = p.slide_id
        if id_column is not None:
            base[id_column] = int(p.prompt_id)
        if p.box_l0_px is not None and p.points_l0_px:
            base["group"] = f"{p.slide_id}:{p.prompt_id}"
        if extra_properties is not None:
            base.update(extra_properties(p))
        if p.box_l0_px is not None:
            x0, y0, x1, y1 = (float(v) for v in p.box_l0_px)
            ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
            features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                             "properties": dict(base)})
        if p.points_l0_px:
            props = dict(base)
            coords = [[float(x), float(y)] for x, y in p.points_l0_px]
            labels = [int(v) for v in p.point_labels]
            if len(set(labels)) == 1:
                props["label"] = labels[0]
            else:
                props["point_labels"] = labels
            geom = ({"type": "Point", "coordinates": coords[0]} if len(coords) == 1
                    else {"type": "MultiPoint", "coordinates": coords})
            features.append({"type": "Feature", "geometry": geom, "properties": props})
    return write_features(features, path, indent=1)
