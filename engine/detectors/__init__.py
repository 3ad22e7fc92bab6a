"""Detectors: find prompts on a slide (``detect(slide) -> list[Prompt]``, level-0 px).

Built-ins: ``"tissue"`` (:class:`TissueDetector`), ``"mask-to-boxes"``
(:class:`MaskToBoxesDetector`), ``"grid-points"`` (:class:`GridPointsDetector`); plugins via
the ``wsisam_engine.detectors`` entry-point group (see :mod:`engine.detectors.registry`).
tiatoolbox is imported only when a tissue mask is computed.
"""
from .base import Detector, SlideLike, components_to_boxes
from .grid_points import GridPointsDetector
from .mask_to_boxes import MaskToBoxesDetector, load_label_image
from .registry import BUILTIN_DETECTORS, ENTRY_POINT_GROUP, available_detectors, get_detector
from .tissue import TissueDetector

__all__ = [
    "Detector",
    "SlideLike",
    "components_to_boxes",
    "TissueDetector",
    "MaskToBoxesDetector",
    "GridPointsDetector",
    "load_label_image",
    "get_detector",
    "available_detectors",
    "BUILTIN_DETECTORS",
    "ENTRY_POINT_GROUP",
]
