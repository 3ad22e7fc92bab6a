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

The formats are parsed in :mod:`engine.io.prompt_files` (one feature/row to one part); this module
groups the parts into prompts, assigns slides and ids, converts units and validates. Prompts are
written back by :func:`engine.io.prompt_files.write_prompts_geojson`.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io.prompt_files import NEGATIVE_CLASS_NAMES, PromptError, PromptFileError, PromptPart, read_prompt_parts
from .records import Prompt

__all__ = [
    "PromptError",
    "PromptFileError",
    "ValidationReport",
    "read_prompts",
    "check_slide_ids",
    "validate_prompts",
    "NEGATIVE_CLASS_NAMES",
]


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
    parts: list[PromptPart],
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
    kept: list[tuple[str, PromptPart]] = []
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
    groups: dict[tuple[str, Any], list[PromptPart]] = {}
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
    parts, has_col = read_prompt_parts(path, slide_column)
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
