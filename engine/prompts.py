"""Reading prompt files into :class:`engine.records.Prompt` records (level-0 pixels).

A prompt is one object to segment: a box, points (positive and/or negative), or both.
``read_prompts`` picks the format by extension and returns ``{slide_id: [Prompt, ...]}``;
``prompt_id`` is ``0..N-1`` per slide in file order (the order of a prompt's first
feature/row), so re-reading a file gives the same ids.

Coordinates
    Level-0 pixels of the slide as tiatoolbox opens it, x right, y down (``units="px"``), or
    micrometres from the slide's top-left corner (``units="um"``, converted with ``slide_mpp``,
    one float or a ``{slide_id: mpp}`` mapping for cohort files). No CRS is ever applied:
    GeoJSON is parsed with :mod:`json` and :func:`shapely.geometry.shape` (GDAL/geopandas would
    read it as EPSG:4326). QuPath crops OpenSlide images to ``openslide.bounds-x/y`` and
    tiatoolbox does not: for such slides, shift QuPath coordinates by those offsets first.

GeoJSON (``.geojson``, ``.json``), as QuPath or QGIS export it
    A FeatureCollection, a single Feature, a bare geometry, or QuPath's bare list of Features.
    * Polygon / MultiPolygon (QuPath rectangles, polygons, ellipses, brushes) -> a box prompt:
      the geometry's bounds ``(minx, miny, maxx, maxy)``.
    * Point -> one point; MultiPoint -> one prompt with all its points (several clicks on one
      object; to get one object per point, export one Point feature per object).
    * Other geometry types (LineString, GeometryCollection, ...) are errors.
    * ``properties.name`` -> ``Prompt.name``.
    * ``properties.classification.name`` (QuPath), or ``properties.classification`` as a
      string, or ``properties.class_name`` -> ``Prompt.class_name``.
    * ``properties.group``: features sharing a group id (per slide) form one prompt, e.g. a
      rectangle plus a negative point. At most one box per group; class names must agree.
    * ``properties.<slide_column>`` (default ``slide_id``): the slide, for cohort files.

Point labels (1 positive, 0 negative), first rule that applies:
    1. ``properties.point_labels``: a list with one 0/1 per point of the (Multi)Point;
    2. ``properties.label``: 0/1 (also ``true``/``false``, ``"positive"``/``"negative"``);
    3. classification name ``"negative"`` or ``"background"`` (case-insensitive) -> 0; such a
       classification marks the label only and is not kept as ``class_name``;
    4. otherwise 1.
    Boxes carry no label: a Polygon marked negative is an error. A prompt with only negative
    points and no box is an error (it asks for nothing). Beware: QuPath's built-in class
    "Negative" (e.g. Ki67-negative cells) therefore reads as negative points; set
    ``properties.label = 1`` on such points, or rename the class.

CSV (``.csv``): one header row, comma-separated, UTF-8 (a BOM is fine); empty cell = missing.
    ========================  ====================================================
    column                    meaning
    ========================  ====================================================
    ``x0, y0, x1, y1``        a box (all four filled, or all four empty)
    ``x, y``                  a point (both filled, or both empty)
    ``label``                 the point's label, 1/0 (also true/false,
                              positive/negative); empty -> 1
    ``class_name``            optional class name
    ``name``                  optional name
    ``slide_id``              the slide (name set by ``slide_column``), cohort files
    ``group``                 rows sharing a group id (per slide) form one prompt
    ========================  ====================================================
    The header must hold all four box columns and/or both point columns. Each row must fill
    a box, a point, or both (a box plus a point is one prompt). Rows without a group are one
    prompt each. Other columns are ignored. Errors name the file line (header = line 1).

Parquet (``.parquet``, ``.geoparquet``)
    GeoParquet (read with :func:`geopandas.read_parquet`): the active geometry column follows
    the GeoJSON rules and other columns act as GeoJSON properties (``label``,
    ``point_labels``, ``classification``, ``class_name``, ``name``, ``group``, slide column).
    A CRS other than none is warned about and ignored. A plain Parquet table without geometry
    follows the CSV column rules. Errors name the 0-based row.

Slides
    With ``slide_id``: every prompt belongs to that slide; if the file has a slide column,
    only rows for ``slide_id`` (or with an empty slide cell) are read, and none matching is an
    error. Without ``slide_id`` the file must have the slide column, filled on every row.
    With ``known_slide_ids`` (the cohort), a row naming any other slide is an error, with or
    without ``slide_id``; :func:`check_slide_ids` does the same check on a read mapping.

Empty files (an empty FeatureCollection or list, a CSV with only its header, a Parquet table
without rows) give no prompts: ``{slide_id: []}`` with ``slide_id``, ``{}`` without.

Validation against a slide: :func:`validate_prompts` (see there).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .records import Prompt

__all__ = [
    "PromptError",
    "PromptFileError",
    "ValidationReport",
    "read_prompts",
    "check_slide_ids",
    "validate_prompts",
    "write_prompts_geojson",
    "NEGATIVE_CLASS_NAMES",
]

GEOJSON_SUFFIXES = (".geojson", ".json")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".geoparquet")
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
POINT_COLUMNS = ("x", "y")
NEGATIVE_CLASS_NAMES = frozenset({"negative", "background"})
_BOX_GEOMS = ("Polygon", "MultiPolygon")
_POINT_GEOMS = ("Point", "MultiPoint")


class PromptError(ValueError):
    """A prompt is invalid (names the slide and prompt)."""


class PromptFileError(PromptError):
    """A prompt file cannot be read; the message names the file and, where relevant, the
    feature/row and what is wrong."""

    def __init__(self, path: str | Path | None, message: str, where: str | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.where = where
        self.reason = message
        parts = [str(self.path) if self.path is not None else "prompts"]
        if where:
            parts.append(where)
        parts.append(message)
        super().__init__(": ".join(parts))


# --------------------------------------------------------------------------------------------
# One feature/row before grouping


@dataclass
class _Part:
    where: str
    slide_id: str | None
    group: str | None
    box: tuple[float, float, float, float] | None
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    class_name: str | None = None
    name: str | None = None


def _is_missing(v: Any) -> bool:
    """None, NaN, a blank string or a pandas NA scalar (empty CSV cell, null Parquet value)."""
    if v is None:
        return True
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # numpy scalar
        v = v.item()
    if isinstance(v, float):
        return math.isnan(v)
    if isinstance(v, str):
        return not v.strip()
    return type(v).__name__ in ("NAType", "NaTType")


def _as_id(v: Any) -> str | None:
    """Slide/group ids as strings (1, 1.0 and "1" are the same id)."""
    if _is_missing(v):
        return None
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalar
        return _as_id(v.item())
    return str(v).strip()


def _as_text(v: Any) -> str | None:
    return None if _is_missing(v) else str(v)


def _parse_label(v: Any, path: Path, where: str) -> int | None:
    if _is_missing(v):
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


def _classification_name(props: Mapping[str, Any]) -> str | None:
    c = props.get("classification")
    if isinstance(c, str) and c.strip().startswith("{"):
        try:
            c = json.loads(c)
        except json.JSONDecodeError:
            pass
    if isinstance(c, Mapping):
        name = c.get("name")
        if not _is_missing(name):
            return str(name)
    elif not _is_missing(c):
        return str(c)
    return _as_text(props.get("class_name"))


# --------------------------------------------------------------------------------------------
# Geometry features (GeoJSON and GeoParquet)


def _part_from_geometry(
    geom: Any, props: Mapping[str, Any], path: Path, where: str, slide_column: str
) -> _Part:
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
    class_name = _classification_name(props)
    class_is_negative = class_name is not None and class_name.strip().lower() in NEGATIVE_CLASS_NAMES
    label = _parse_label(props.get("label"), path, where)
    part = _Part(
        where=where,
        slide_id=_as_id(props.get(slide_column)),
        group=_as_id(props.get("group")),
        box=None,
        name=_as_text(props.get("name")),
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
    if isinstance(raw, list) or not _is_missing(raw):
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


def _check_geojson_coordinates(coords: Any, gtype: Any, path: Path, where: str) -> None:
    """Every leaf of a GeoJSON ``coordinates`` array must be a finite number (checked before
    shapely, which reports a NaN vertex as an unclosed ring or leaves it out of the bounds)."""
    stack = [] if coords is None else [coords]  # no coordinates: shapely says what is wrong
    while stack:
        c = stack.pop()
        if isinstance(c, list):
            stack.extend(reversed(c))
        elif isinstance(c, bool) or not isinstance(c, (int, float)):
            raise PromptFileError(path, f"{gtype} coordinate {c!r} is not a number", where)
        elif not math.isfinite(c):
            raise PromptFileError(path, f"non-finite coordinate {c} in {gtype}", where)


def _geojson_parts(path: Path, slide_column: str) -> tuple[list[_Part], bool]:
    from shapely.geometry import shape

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptFileError(path, f"not a UTF-8 text file ({exc.reason})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptFileError(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None

    geometry_types = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                      "GeometryCollection"}
    if isinstance(doc, list):
        features = doc
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise PromptFileError(path, "FeatureCollection without a 'features' list")
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    elif isinstance(doc, dict) and doc.get("type") in geometry_types:
        features = [{"type": "Feature", "geometry": doc, "properties": {}}]
    else:
        what = type(doc).__name__
        if isinstance(doc, dict):
            what = f"an object with type {doc['type']!r}" if "type" in doc else "an object without a 'type'"
        raise PromptFileError(
            path, f"not GeoJSON: expected a FeatureCollection, a Feature or a list of Features, got {what}"
        )

    parts = []
    has_slide_column = False
    for i, feat in enumerate(features):
        where = f"feature {i}"
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            got = feat.get("type") if isinstance(feat, dict) else type(feat).__name__
            raise PromptFileError(path, f"not a GeoJSON Feature (type {got!r})", where)
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            raise PromptFileError(path, "'properties' is not an object", where)
        has_slide_column |= slide_column in props
        g = feat.get("geometry")
        if g is None:
            raise PromptFileError(path, "feature has no geometry", where)
        if isinstance(g, dict):
            _check_geojson_coordinates(g.get("coordinates"), g.get("type"), path, where)
        try:
            geom = shape(g)
        except Exception as exc:  # shapely raises several types for malformed geometries
            raise PromptFileError(path, f"invalid geometry: {exc}", where) from None
        parts.append(_part_from_geometry(geom, props, path, where, slide_column))
    return parts, has_slide_column


# --------------------------------------------------------------------------------------------
# Tables (CSV and plain Parquet)


def _table_parts(
    rows: Iterable[tuple[str, Mapping[str, Any]]], columns: list[str], path: Path, slide_column: str
) -> tuple[list[_Part], bool]:
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
            filled = [not _is_missing(v) for v in vals]
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
            if _is_missing(vx) != _is_missing(vy):
                raise PromptFileError(path, "incomplete point: x and y must both be filled", where)
            if not _is_missing(vx):
                points = [(_parse_float(vx, "x", path, where), _parse_float(vy, "y", path, where))]
                lab = _parse_label(row.get("label"), path, where)
                labels = [1 if lab is None else lab]
        if box is None and not points:
            raise PromptFileError(path, "row has neither a box (x0,y0,x1,y1) nor a point (x,y)", where)
        parts.append(
            _Part(
                where=where,
                slide_id=_as_id(row.get(slide_column)),
                group=_as_id(row.get("group")),
                box=box,
                points=points,
                labels=labels,
                class_name=_as_text(row.get("class_name")),
                name=_as_text(row.get("name")),
            )
        )
    return parts, slide_column in cols


def _csv_parts(path: Path, slide_column: str) -> tuple[list[_Part], bool]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            rows = []
            for row in reader:
                if None in row:
                    raise PromptFileError(path, "more cells than header columns", f"line {reader.line_num}")
                if all(_is_missing(v) for v in row.values()):
                    continue  # blank line
                rows.append((f"line {reader.line_num}", row))
    except UnicodeDecodeError as exc:
        raise PromptFileError(path, f"not a UTF-8 text file ({exc.reason})") from None
    except csv.Error as exc:
        raise PromptFileError(path, f"not a readable CSV file: {exc}") from None
    return _table_parts(rows, columns, path, slide_column)


def _parquet_parts(path: Path, slide_column: str) -> tuple[list[_Part], bool]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for non-Parquet input
        raise PromptFileError(path, f"not a readable Parquet file: {exc}") from None
    meta = schema.metadata or {}
    if b"geo" not in meta:
        import pandas as pd

        df = pd.read_parquet(path)
        columns = [str(c) for c in df.columns]
        records = df.to_dict(orient="records")
        return _table_parts(((f"row {i}", r) for i, r in enumerate(records)), columns, path, slide_column)

    import geopandas as gpd

    try:
        gdf = gpd.read_parquet(path)
    except Exception as exc:
        raise PromptFileError(path, f"not a readable GeoParquet file: {exc}") from None
    if gdf.crs is not None:
        warnings.warn(
            f"{path}: GeoParquet has CRS {gdf.crs.to_string()}; prompts are read as level-0 slide pixels "
            "(no CRS) regardless",
            stacklevel=3,
        )
    geom_col = gdf.geometry.name
    prop_cols = [c for c in gdf.columns if c != geom_col]
    props_list = gdf[prop_cols].to_dict(orient="records")
    parts = [
        _part_from_geometry(geom, props, path, f"row {i}", slide_column)
        for i, (geom, props) in enumerate(zip(gdf.geometry, props_list))
    ]
    return parts, slide_column in prop_cols


# --------------------------------------------------------------------------------------------
# Assembly


def _mpp_for(slide: str, slide_mpp: float | Mapping[str, float] | None, path: Path) -> float:
    mpp = slide_mpp.get(slide) if isinstance(slide_mpp, Mapping) else slide_mpp
    if mpp is None:
        raise PromptFileError(path, f'units="um" needs slide_mpp (µm per level-0 pixel) for slide {slide!r}')
    mpp = float(mpp)
    if not (math.isfinite(mpp) and mpp > 0):
        raise PromptFileError(path, f"slide_mpp for slide {slide!r} must be a positive number, got {mpp}")
    return mpp


def _assemble(
    parts: list[_Part],
    has_slide_column: bool,
    path: Path,
    slide_id: str | None,
    slide_column: str,
    units: str,
    slide_mpp: float | Mapping[str, float] | None,
    known_slide_ids: Iterable[str] | None = None,
) -> dict[str, list[Prompt]]:
    if slide_id is None and not has_slide_column and parts:
        raise PromptFileError(
            path, f"no slide id: pass slide_id for a one-slide file, or give each row a {slide_column!r} column/property"
        )
    kept: list[tuple[str, _Part]] = []
    seen_other: set[str] = set()
    for p in parts:
        if slide_id is not None:
            if p.slide_id is None or p.slide_id == slide_id:
                kept.append((slide_id, p))
            else:
                seen_other.add(p.slide_id)
        else:
            if p.slide_id is None:
                raise PromptFileError(path, f"empty {slide_column!r} (and no slide_id given)", p.where)
            kept.append((p.slide_id, p))
    if known_slide_ids is not None:
        check_slide_ids(dict.fromkeys(sorted({s for s, _ in kept} | seen_other)), known_slide_ids, path)
    if slide_id is not None and parts and not kept:
        raise PromptFileError(
            path, f"no prompts for slide {slide_id!r}; the file's {slide_column!r} values are {sorted(seen_other)}"
        )

    # group: (slide, group id or a unique key) -> parts, in order of first appearance
    groups: dict[tuple[str, Any], list[_Part]] = {}
    for i, (slide, p) in enumerate(kept):
        key = (slide, ("group", p.group) if p.group is not None else ("single", i))
        groups.setdefault(key, []).append(p)

    out: dict[str, list[Prompt]] = {slide_id: []} if slide_id is not None else {}
    for (slide, key), members in groups.items():
        where = members[0].where if len(members) == 1 else f"group {key[1]!r} ({', '.join(m.where for m in members)})"
        boxes = [m.box for m in members if m.box is not None]
        if len(boxes) > 1:
            raise PromptFileError(path, f"a prompt can have only one box, group has {len(boxes)}", where)
        classes = {m.class_name for m in members if m.class_name is not None}
        if len(classes) > 1:
            raise PromptFileError(path, f"conflicting class names in one prompt: {sorted(classes)}", where)
        names = [m.name for m in members if m.name is not None]
        points = [pt for m in members for pt in m.points]
        labels = [lab for m in members for lab in m.labels]
        box = boxes[0] if boxes else None
        if box is None and 1 not in labels:
            raise PromptFileError(
                path,
                "prompt has only negative points and no box (a negative classification such as 'Negative' or "
                "'Background' marks a negative point; set label=1 for positive points)",
                where,
            )
        if units == "um":
            s = 1.0 / _mpp_for(slide, slide_mpp, path)
            box = None if box is None else (box[0] * s, box[1] * s, box[2] * s, box[3] * s)
            points = [(x * s, y * s) for x, y in points]
        lst = out.setdefault(slide, [])
        lst.append(
            Prompt(
                slide_id=slide,
                prompt_id=len(lst),
                box_l0_px=box,
                points_l0_px=tuple(points),
                point_labels=tuple(labels),
                class_name=next(iter(classes)) if classes else None,
                name=names[0] if names else None,
            )
        )
    return out


def read_prompts(
    path: str | Path,
    slide_id: str | None = None,
    units: str = "px",
    slide_mpp: float | Mapping[str, float] | None = None,
    slide_column: str = "slide_id",
    known_slide_ids: Iterable[str] | None = None,
) -> dict[str, list[Prompt]]:
    """Read a prompt file (GeoJSON, CSV or (Geo)Parquet, by extension) into level-0 px prompts.

    Args:
        path: the file.
        slide_id: the slide a one-slide file belongs to (also selects that slide's rows from a
            cohort file). ``None``: the file must carry ``slide_column`` on every row.
        units: ``"px"`` (level-0 pixels) or ``"um"`` (micrometres, converted with ``slide_mpp``).
        slide_mpp: level-0 µm per pixel, one value or ``{slide_id: mpp}``; needed for ``"um"``.
        slide_column: name of the slide column/property.
        known_slide_ids: the cohort's slide ids; if given, a row naming any other slide is an
            error (:func:`check_slide_ids`), also when ``slide_id`` selects one slide's rows.

    Returns:
        ``{slide_id: [Prompt, ...]}`` with ``prompt_id`` 0..N-1 in file order per slide. With
        ``slide_id`` given the key is always present (possibly with an empty list).

    Raises:
        PromptFileError: the file is missing, unreadable, not of its format, or holds an
            invalid prompt (the message names file, feature/row and problem).
    """
    path = Path(path)
    if units not in ("px", "um"):
        raise ValueError(f'units must be "px" or "um", got {units!r}')
    if slide_id is not None:
        slide_id = str(slide_id)
    if not path.is_file():
        raise PromptFileError(path, "file not found" if not path.exists() else "not a file")
    suffix = path.suffix.lower()
    if suffix in GEOJSON_SUFFIXES:
        parts, has_col = _geojson_parts(path, slide_column)
    elif suffix in CSV_SUFFIXES:
        parts, has_col = _csv_parts(path, slide_column)
    elif suffix in PARQUET_SUFFIXES:
        parts, has_col = _parquet_parts(path, slide_column)
    else:
        known = ", ".join(GEOJSON_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES)
        raise PromptFileError(path, f"unknown prompt file type {suffix!r}; expected one of {known}")
    return _assemble(parts, has_col, path, slide_id, slide_column, units, slide_mpp, known_slide_ids)


def check_slide_ids(
    prompts_by_slide: Mapping[str, list[Prompt]], known_ids: Iterable[str], path: str | Path | None = None
) -> None:
    """Raise :class:`PromptFileError` listing slide ids in ``prompts_by_slide`` that are not in
    ``known_ids`` (e.g. a cohort prompt file naming a slide the cohort does not have)."""
    known = {str(k) for k in known_ids}
    unknown = sorted(s for s in prompts_by_slide if s not in known)
    if unknown:
        sample = sorted(known)[:10]
        more = "" if len(known) <= 10 else f" (and {len(known) - 10} more)"
        raise PromptFileError(
            path, f"prompts name {len(unknown)} unknown slide id(s): {unknown}; known ids: {sample}{more}"
        )


# --------------------------------------------------------------------------------------------
# Validation against a slide


@dataclass(frozen=True)
class ValidationReport:
    """Counts from :func:`validate_prompts` (``read == kept + dropped_outside``)."""

    read: int
    kept: int
    dropped_outside: int
    clipped: int
    dropped_prompt_ids: tuple[int, ...] = ()


def _finite(*vals: float) -> bool:
    return all(math.isfinite(float(v)) for v in vals)


def validate_prompts(
    prompts: Iterable[Prompt], width_l0_px: float, height_l0_px: float
) -> tuple[list[Prompt], ValidationReport]:
    """Check prompts against a slide of ``width_l0_px`` x ``height_l0_px`` level-0 pixels.

    Errors (:class:`PromptError`, naming slide and prompt): NaN/infinite coordinates; a
    zero-area box (``x1 <= x0`` or ``y1 <= y0``) - a user mistake, never silently dropped; a
    prompt with neither box nor points; labels not 0/1 or not one per point; no box and no
    positive point.

    Outside the slide (the slide spans ``[0, W) x [0, H)``): a prompt whose box does not
    overlap the slide and whose points all lie outside is dropped (one ``warnings.warn`` per
    call, counted in ``dropped_outside``). A box partly outside is clipped to the slide, and
    points outside are removed when the rest of the prompt is inside; such a prompt counts once
    in ``clipped``. If removing outside points leaves no box and no positive point, the prompt
    is dropped as outside. ``prompt_id`` is kept (ids stay those of the file; kept ids may have
    gaps). Order is preserved.
    """
    W, H = float(width_l0_px), float(height_l0_px)
    if not (W > 0 and H > 0):
        raise ValueError(f"slide size must be positive, got {W} x {H}")
    kept: list[Prompt] = []
    dropped: list[Prompt] = []
    clipped = 0
    n = 0
    for p in prompts:
        n += 1
        who = f"prompt {p.prompt_id} of slide {p.slide_id!r}" + (f" ({p.name!r})" if p.name else "")
        if p.box_l0_px is None and not p.points_l0_px:
            raise PromptError(f"{who} has neither box nor points")
        if len(p.point_labels) != len(p.points_l0_px) or any(lab not in (0, 1) for lab in p.point_labels):
            raise PromptError(f"{who}: point_labels {p.point_labels} must be one 0/1 per point")
        box = p.box_l0_px
        if box is not None:
            if len(box) != 4 or not _finite(*box):
                raise PromptError(f"{who}: box {box} has NaN or infinite coordinates")
            x0, y0, x1, y1 = (float(v) for v in box)
            if not (x1 > x0 and y1 > y0):
                raise PromptError(f"{who}: zero-area box {box} (x1 <= x0 or y1 <= y0)")
        for pt in p.points_l0_px:
            if not _finite(*pt):
                raise PromptError(f"{who}: point {pt} has NaN or infinite coordinates")
        if box is None and 1 not in p.point_labels:
            raise PromptError(f"{who} has no box and no positive point")

        changed = False
        new_box = None
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, W), min(y1, H)
            if cx1 > cx0 and cy1 > cy0:
                new_box = (cx0, cy0, cx1, cy1)
                changed |= new_box != (x0, y0, x1, y1)
        inside = [(0 <= x < W and 0 <= y < H) for x, y in p.points_l0_px]
        pts = tuple(pt for pt, ok in zip(p.points_l0_px, inside) if ok)
        labs = tuple(lab for lab, ok in zip(p.point_labels, inside) if ok)
        changed |= len(pts) != len(p.points_l0_px)
        if new_box is None and 1 not in labs:
            dropped.append(p)
            continue
        if changed:
            clipped += 1
            p = Prompt(
                slide_id=p.slide_id,
                prompt_id=p.prompt_id,
                box_l0_px=new_box,
                points_l0_px=pts,
                point_labels=labs,
                class_name=p.class_name,
                name=p.name,
            )
        kept.append(p)
    if dropped:
        ids = [d.prompt_id for d in dropped]
        slides = sorted({d.slide_id for d in dropped})
        shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
        warnings.warn(
            f"dropped {len(dropped)} of {n} prompt(s) wholly outside the slide ({W:g} x {H:g} level-0 px) "
            f"of slide(s) {slides}: prompt ids {shown}",
            stacklevel=2,
        )
    report = ValidationReport(
        read=n, kept=len(kept), dropped_outside=len(dropped), clipped=clipped,
        dropped_prompt_ids=tuple(d.prompt_id for d in dropped),
    )
    return kept, report


# --------------------------------------------------------------------------------------------
# Writer


def _class_color(name: str) -> list[int]:
    h = hashlib.sha1(name.encode("utf-8")).digest()
    return [64 + h[0] % 192, 64 + h[1] % 192, 64 + h[2] % 192]


def write_prompts_geojson(
    prompts: Iterable[Prompt], path: str | Path, slide_column: str | None = "slide_id",
    id_column: str | None = None,
) -> Path:
    """Write prompts as a QuPath-style GeoJSON FeatureCollection (level-0 px, no CRS).

    A box becomes a rectangle Polygon annotation, points a Point (one) or MultiPoint (several)
    annotation with ``label`` (all points alike) or ``point_labels``. A prompt written as
    two features (box and points) gets ``properties.group = "<slide>:<prompt_id>"``. The
    class is ``properties.classification = {name, color}``; ``slide_column`` (unless None)
    holds the slide id; ``id_column`` (unless None) the ``prompt_id``. :func:`read_prompts` reads
    the file back to the same prompts (ids renumbered 0..N-1 in file order).
    """
    path = Path(path)
    features = []
    for p in prompts:
        base: dict[str, Any] = {"objectType": "annotation"}
        if p.name is not None:
            base["name"] = p.name
        if p.class_name is not None:
            base["classification"] = {"name": p.class_name, "color": _class_color(p.class_name)}
        if slide_column is not None:
            base[slide_column] = p.slide_id
        if id_column is not None:
            base[id_column] = int(p.prompt_id)
        if p.box_l0_px is not None and p.points_l0_px:
            base["group"] = f"{p.slide_id}:{p.prompt_id}"
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
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1), encoding="utf-8")
    return path
