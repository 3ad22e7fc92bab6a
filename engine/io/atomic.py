"""One atomic write: the data go to a temporary file in the target's folder, then ``os.replace``
moves it into place, so readers see the old file or the new one, never a half-written one, and
an error leaves neither a partial file nor the temporary behind."""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Run ``write(tmp)`` on a temporary path next to ``path`` (same suffix, for libraries that pick
    the format by it), then move it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """``data`` to ``path``, atomically."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """``text`` to ``path``, atomically."""
    return write_bytes(path, text.encode(encoding))


def write_json(path: str | os.PathLike[str], doc: Any, **dumps_kwargs: Any) -> Path:
    """``json.dumps(doc, **dumps_kwargs)`` to ``path`` (UTF-8), atomically; the document is
    serialised before anything is written, so a value JSON cannot hold changes nothing."""
    return write_text(path, json.dumps(doc, **dumps_kwargs))
