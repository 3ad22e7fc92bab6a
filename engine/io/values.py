"""Reading single values out of annotation/prompt files: missing cells, ids, class names, and the
error that names the file, the feature/row and what is wrong."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class FileFormatError(ValueError):
    """A file cannot be read as what it should be; the message names the file and, where
    relevant, the feature/row and what is wrong."""

    #: What the message names when there is no file.
    subject = "input"

    def __init__(self, path: str | Path | None, message: str, where: str | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.where = where
        self.reason = message
        parts = [str(self.path) if self.path is not None else self.subject]
        if where:
            parts.append(where)
        parts.append(message)
        super().__init__(": ".join(parts))


def is_missing(v: Any) -> bool:
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


def as_id(v: Any) -> str | None:
    """Slide/group ids as strings (1, 1.0 and "1" are the same id)."""
    if is_missing(v):
        return None
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalar
        return as_id(v.item())
    return str(v).strip()


def as_text(v: Any) -> str | None:
    return None if is_missing(v) else str(v)


def classification_name(props: Mapping[str, Any]) -> str | None:
    """The class of a feature/row: ``classification.name`` (QuPath; also a JSON string of it, as
    Parquet stores it), ``classification`` as a plain string, else ``class_name``; None if none."""
    c = props.get("classification")
    if isinstance(c, str) and c.strip().startswith("{"):
        try:
            c = json.loads(c)
        except json.JSONDecodeError:
            pass
    if isinstance(c, Mapping):
        name = c.get("name")
        if not is_missing(name):
            return str(name)
    elif not is_missing(c):
        return str(c)
    return as_text(props.get("class_name"))


def object_id_of(props: Mapping[str, Any]) -> int | None:
    """``object_id`` of a feature/row: the property/column, else QuPath's ``measurements``
    entry (as the objects' GeoJSON carries it); None if neither."""
    oid = props.get("object_id")
    if is_missing(oid):
        m = props.get("measurements")
        oid = m.get("object_id") if isinstance(m, Mapping) else None
    return None if is_missing(oid) else int(oid)
