"""segment_anything's model classes without its package ``__init__`` until something needs it.

WSI-SAM builds on ``segment_anything.modeling`` (the image encoder, prompt encoder, mask
decoder and two-way transformer). ``segment_anything/__init__.py`` also imports SAM's predictor
and automatic mask generator, whose image transforms import torchvision: about 1.3 s of a model
process's start on a 2-core machine, for code WSI-SAM never runs.

:func:`defer_package_init` registers the ``segment_anything`` package without running its
``__init__``, so its subpackages import as usual; the first name looked up on the package
itself (``from segment_anything import SamPredictor``, ``segment_anything.sam_model_registry``)
runs the ``__init__`` then (PEP 562 module ``__getattr__``), and everything works as after a
plain import.
"""
from __future__ import annotations

import importlib.util
import sys

PACKAGE = "segment_anything"


def defer_package_init() -> None:
    """Register ``segment_anything`` with its ``__init__`` deferred (no-op if already imported)."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed (the import that follows raises as usual) or not a package
    package = importlib.util.module_from_spec(spec)

    def __getattr__(name: str):
        # A name the package defines itself: run its __init__ now, once.
        if package.__dict__.pop("__getattr__", None) is None:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
        spec.loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = __getattr__
    sys.modules[PACKAGE] = package
