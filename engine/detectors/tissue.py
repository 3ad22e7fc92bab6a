"""``TissueDetector``: one box prompt per tissue piece (connected component of the tissue mask)."""
from __future__ import annotations

from ..records import Prompt
from ._tissue import slide_tissue_mask
from .base import Detector, SlideLike, components_to_boxes


class TissueDetector(Detector):
    """Box prompts around tissue pieces, found on a thumbnail with tiatoolbox's tissue masker.

    Args:
        min_area_um2: pieces smaller than this (µm² of tissue mask) give no prompt.
        thumbnail_max_px: longest side of the thumbnail the mask is computed on.
        method: ``"morphological"`` (Otsu + small-region removal + ~32 µm dilation, which
            merges nearby fragments) or ``"otsu"``.
        class_name: class of the prompts.
    """

    name = "tissue"

    def __init__(
        self,
        min_area_um2: float = 50_000.0,
        thumbnail_max_px: int = 2048,
        method: str = "morphological",
        class_name: str | None = "tissue",
    ) -> None:
        self.min_area_um2 = float(min_area_um2)
        self.thumbnail_max_px = int(thumbnail_max_px)
        self.method = method
        self.class_name = class_name

    def detect(self, slide: SlideLike) -> list[Prompt]:
        tm = slide_tissue_mask(slide, self.thumbnail_max_px, self.method, self.min_area_um2)
        boxes = components_to_boxes(tm.mask, tm.l0_px_per_px, slide.dimensions_l0_px)
        return [
            Prompt(slide_id=slide.slide_id, prompt_id=i, box_l0_px=box, class_name=self.class_name)
            for i, (box, _) in enumerate(boxes)
        ]
