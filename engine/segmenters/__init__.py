"""Window segmenters: patch pairs and their prompts in, ObjectMask records out.

- :class:`WsiSamSegmenter`: the WSI-SAM model (or its SAM path, for comparison).
- :class:`TruthSegmenter`: returns each prompt's ground-truth object (an oracle for checking
  geometry, stitching and outputs end to end, and the ceiling in evaluations).

The two segmenters are imported on first use, so that importing the records (``WindowJob``)
does not import torch: Ray's reader and writer processes never load it.
"""
from importlib import import_module

from .base import WindowJob, WindowSegmenter, prompt_arrays_hr_px

_LAZY = {"TruthSegmenter": ".truth", "WsiSamSegmenter": ".wsisam_segmenter"}

__all__ = ["WindowJob", "WindowSegmenter", "prompt_arrays_hr_px", "TruthSegmenter", "WsiSamSegmenter"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
