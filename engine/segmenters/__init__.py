"""Window segmenters: patch pairs and their prompts in, ObjectMask records out.

- :class:`WsiSamSegmenter`: the WSI-SAM model (or its SAM path, for comparison).
- :class:`TruthSegmenter`: returns each prompt's ground-truth object (an oracle for checking
  geometry, stitching and outputs end to end, and the ceiling in evaluations).
"""
from .base import WindowJob, WindowSegmenter, prompt_arrays_hr_px
from .truth import TruthSegmenter
from .wsisam_segmenter import WsiSamSegmenter

__all__ = ["WindowJob", "WindowSegmenter", "prompt_arrays_hr_px", "TruthSegmenter", "WsiSamSegmenter"]
