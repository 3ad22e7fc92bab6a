"""``get_detector(name, **kwargs)``: built-in detectors plus plugins.

A plugin package declares an entry point in group ``wsisam_engine.detectors``, e.g. in its
``pyproject.toml``::

    [project.entry-points."wsisam_engine.detectors"]
    my-detector = "my_package.module:MyDetector"

The entry point names a class or factory; ``get_detector("my-detector", **kwargs)`` calls it
with ``kwargs`` and checks that the result has a ``detect(slide)`` method. Built-in names win
over plugins of the same name.
"""
from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .base import Detector
from .grid_points import GridPointsDetector
from .mask_to_boxes import MaskToBoxesDetector
from .tissue import TissueDetector

ENTRY_POINT_GROUP = "wsisam_engine.detectors"
BUILTIN_DETECTORS: dict[str, type[Detector]] = {
    TissueDetector.name: TissueDetector,
    MaskToBoxesDetector.name: MaskToBoxesDetector,
    GridPointsDetector.name: GridPointsDetector,
}


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_detectors() -> list[str]:
    """Built-in names, then plugin names (sorted)."""
    return list(BUILTIN_DETECTORS) + sorted(n for n in _plugins() if n not in BUILTIN_DETECTORS)


def check_options(name: str, factory: Any, kwargs: dict[str, Any]) -> None:
    """Options a detector's constructor does not take, or required ones left out -> ``ValueError``
    naming the option and the detector (factories taking ``**kwargs`` accept any name)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to check against
        return
    params = sig.parameters.values()
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        unknown = sorted(set(kwargs) - set(named))
        if unknown:
            raise ValueError(f"detector {name!r} has no option {', '.join(map(repr, unknown))}; "
                             f"its options: {', '.join(named) or 'none'}")
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        raise ValueError(f"detector {name!r}: {exc} (its options: {', '.join(named)})") from None


def _build(name: str, factory: Any, kwargs: dict[str, Any]) -> Any:
    check_options(name, factory, kwargs)
    try:
        return factory(**kwargs)
    except TypeError as exc:  # e.g. an option of the wrong type (null where a number is expected)
        raise ValueError(f"detector {name!r}: bad option value: {exc}") from exc
    except ValueError as exc:  # an option out of range
        raise ValueError(f"detector {name!r}: {exc}") from exc


def get_detector(name: str, **kwargs: Any) -> Any:
    """Build detector ``name`` with ``kwargs``. Unknown name or option, or an option of the wrong
    type -> ``ValueError`` naming it; a plugin that fails to load or does not give a detector ->
    ``ValueError`` naming it."""
    if name in BUILTIN_DETECTORS:
        return _build(name, BUILTIN_DETECTORS[name], kwargs)
    plugins = _plugins()
    if name not in plugins:
        raise ValueError(
            f"unknown detector {name!r}; known detectors: {', '.join(available_detectors())} "
            f"(plugins register in entry-point group {ENTRY_POINT_GROUP!r})"
        )
    ep = plugins[name]
    try:
        factory = ep.load()
    except Exception as exc:
        raise ValueError(f"detector plugin {name!r} ({ep.value}) failed to load: {exc!r}") from exc
    det = _build(name, factory, kwargs)
    if not callable(getattr(det, "detect", None)):
        raise ValueError(f"detector plugin {name!r} ({ep.value}) gave {type(det).__name__}, which has no detect()")
    return det
