"""Slides: opening whole-slide images and reading their pixels.

- :mod:`~engine.slides.slide`: :func:`open_slide`, :class:`Slide` (patches at a pixel size, in
  level-0 px), :class:`SlideInfo` (what crosses processes), slide ids and :class:`SlideError`;
- :mod:`~engine.slides.tiles`: TIFF pyramid levels read tile by tile, with a bounded tile cache;
- :mod:`~engine.slides.integrity`: is the file whole (checked when a slide is opened);
- :mod:`~engine.slides.thumbnail`: the thumbnail behind ``qc.png``, in bounded memory.

Nothing here imports tiatoolbox at import time (writer processes import this package).
"""
from .slide import PAD_VALUE, Slide, SlideError, SlideInfo, check_slide_id, open_slide, slide_id_from_path

__all__ = ["PAD_VALUE", "Slide", "SlideError", "SlideInfo", "check_slide_id", "open_slide", "slide_id_from_path"]
