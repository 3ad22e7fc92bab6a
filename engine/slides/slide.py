"""Opening whole-slide images with tiatoolbox and reading square patches at a given mpp.

Frames: see ``engine.geometry``. ``Slide.read_region(origin_l0_px, size_px, mpp)`` returns
pixel ``(r, c)`` covering level-0 ``[ox + c*f, ox + (c+1)*f) x [oy + r*f, oy + (r+1)*f)`` with
``f = mpp / slide.mpp``, where ``(ox, oy)`` is the origin as read (see
:meth:`Slide.read_location_l0_px`).

Facts about tiatoolbox 2.1.3 this module relies on or works around:

- ``read_rect`` takes an integer level-0 location and rounds it to the grid of the pyramid
  level it reads from (``round(x / downsample)``): reads from level ``k`` start on multiples
  of its downsample. :meth:`Slide.patch_pair` snaps centres so HR/LR origins are on-grid.
- Outside the slide ``read_rect`` pads with a constant (0 by default). A region that starts
  past the right/bottom edge comes back with the wrong size when no resampling is needed (e.g.
  64 x 4160 for a 64 x 64 request), so regions that miss the slide are not read at all here.
- A truncated JPEG tile (or JPEG image) decodes without error to partly wrong pixels, so
  :func:`open_slide` checks that the file holds every byte its structure points to
  (``engine.slides.integrity``). Garbled bytes inside a JPEG tile may also decode silently
  (JPEG has no checksum); zeroed JPEG tiles and damaged deflate tiles raise when read.

Levels of TIFF files that are plain tiled pages are read tile by tile (``engine.slides.tiles``,
through a tile cache) with tiatoolbox's own choice of level and resampling, so the pixels are
the ones ``read_rect`` gives; every other slide and level is read by ``read_rect``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.geometry import PatchPair, concentric_pair, l0_per_px
from .integrity import check_complete
from .tiles import TiledTiff

#: Value of every channel of pixels outside the slide (black, unlike white glass).
PAD_VALUE = 0


class SlideError(ValueError):
    """A slide cannot be opened or read; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"slide {self.path}: {problem}")

    def __reduce__(self):
        return (SlideError, (self.path, self.problem))


@dataclass(frozen=True)
class SlideInfo:
    """Plain, picklable description of an opened slide (crosses process boundaries)."""

    slide_id: str
    path: str
    width_l0_px: int
    height_l0_px: int
    mpp: float  # level-0 µm per pixel

    def open(self) -> "Slide":
        """Reopen the slide this describes (same id, same mpp)."""
        return open_slide(self.path, mpp=self.mpp, slide_id=self.slide_id)


def slide_id_from_path(path: str | Path) -> str:
    """File stem, with ``.ome.tif(f)`` / ``.ome.zarr`` removed whole (``a.ome.tif`` -> ``a``)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def check_slide_id(slide_id: str, path: str | Path) -> str:
    """``slide_id`` if it can name the slide's output folder, else :class:`SlideError`.

    Refused: empty, ``.``/``..``, a leading dot (hidden, and the engine's own temporary names
    start with one), a path separator, or a control character. Spaces and non-ASCII are fine.
    """
    problem = None
    if not slide_id or not slide_id.strip():
        problem = "is empty"
    elif slide_id in (".", ".."):
        problem = f"is {slide_id!r}, which names a folder itself"
    elif slide_id.startswith("."):
        problem = "starts with a dot (a hidden name; the engine's temporary folders start with one)"
    elif "/" in slide_id or "\\" in slide_id:
        problem = "holds a path separator"
    elif _has_control_character(slide_id):
        problem = "holds a control character"
    if problem:
        if _has_control_character(str(path)):
            path = repr(str(path))  # show the invisible character
        raise SlideError(path, f"its slide id {slide_id!r} (the file name without extension) {problem}, "
                               "so it cannot name an output folder; rename the file")
    return slide_id


def _has_control_character(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def _reader_mpp(reader) -> np.ndarray | None:
    mpp = reader.info.mpp
    if mpp is None:
        return None
    arr = np.asarray(mpp, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        return None
    return arr[:2]


def open_slide(path: str | Path, mpp: float | None = None, slide_id: str | None = None) -> "Slide":
    """Open a slide (any format tiatoolbox reads; PNG/JPEG through its VirtualWSIReader).

    ``mpp`` (level-0 µm per pixel) overrides the slide's metadata; it is required when the
    slide has none (plain images). ``slide_id`` defaults to the file stem (``a`` for
    ``a.ome.tif``). Raises :class:`SlideError` (naming the file) when the file is missing,
    unreadable, truncated (:func:`engine.slides.integrity.check_complete`), or has no usable mpp.
    """
    path = Path(path)
    slide_id = check_slide_id(slide_id_from_path(path) if slide_id is None else slide_id, path)
    if not path.exists():
        raise SlideError(path, "not found")
    if path.is_file() and path.stat().st_size == 0:
        raise SlideError(path, "is an empty file (0 bytes)")
    if mpp is not None and not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise SlideError(path, f"mpp (--slide-mpp) must be a positive number of level-0 µm per pixel, got {mpp!r}")
    from tiatoolbox.wsicore.wsireader import WSIReader  # slow import (about 3 s)

    try:
        reader = WSIReader.open(path, mpp=None if mpp is None else (float(mpp), float(mpp)))
        info = reader.info
        dims = tuple(int(v) for v in info.slide_dimensions)
    except Exception as e:  # noqa: BLE001 - the reader raises many kinds; all mean "unreadable"
        raise SlideError(path, f"cannot be read ({type(e).__name__}: {e})") from e
    if dims[0] <= 0 or dims[1] <= 0:
        raise SlideError(path, f"has an empty level 0 ({dims[0]} x {dims[1]} px)")
    mpp_xy = _reader_mpp(reader)
    if mpp_xy is None:
        raise SlideError(
            path, "has no pixel size (µm per pixel) in its metadata; give its level-0 µm per pixel with mpp= "
            "(--slide-mpp on the command line)"
        )
    if abs(mpp_xy[0] - mpp_xy[1]) > 0.01 * max(mpp_xy):
        raise SlideError(path, f"has non-square pixels (mpp x={mpp_xy[0]}, y={mpp_xy[1]}); "
                               "pass mpp= (--slide-mpp) to override")
    slide = Slide(reader, path, slide_id, float(mpp_xy.mean()), dims)
    problem = check_complete(slide)
    if problem:
        slide.close()
        raise SlideError(path, problem)
    return slide


class Slide:
    """A thin wrapper around a tiatoolbox ``WSIReader`` with level-0/mpp bookkeeping.

    Not picklable (it holds a reader); send :meth:`info` across processes instead.
    """

    def __init__(self, reader, path: Path, slide_id: str, mpp: float, dimensions_l0_px: tuple[int, int]):
        self.reader = reader
        self.path = Path(path)
        self.slide_id = slide_id
        self.mpp = mpp
        self.dimensions_l0_px = dimensions_l0_px
        self._tiles: TiledTiff | None | bool = False  # False: not looked for yet (see _tiled)

    def __repr__(self) -> str:
        w, h = self.dimensions_l0_px
        return f"Slide({self.slide_id!r}, {w} x {h} px at {self.mpp:g} µm/px, {self.level_count} levels)"

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the file (TIFF readers hold it open)."""
        if self._tiles:
            self._tiles.close()
        self._tiles = None
        tiff = getattr(self.reader, "tiff", None)
        if tiff is not None:
            tiff.close()

    # -- metadata -------------------------------------------------------------------------------

    @property
    def level_count(self) -> int:
        return int(self.reader.info.level_count)

    @property
    def level_dimensions_px(self) -> list[tuple[int, int]]:
        """(width, height) of each pyramid level, in that level's pixels."""
        return [(int(w), int(h)) for w, h in self.reader.info.level_dimensions]

    @property
    def level_downsamples(self) -> list[float]:
        """Level-0 px per level px, per level (as tiatoolbox computes it: W0 / Wk)."""
        return [float(d) for d in self.reader.info.level_downsamples]

    def info(self) -> SlideInfo:
        w, h = self.dimensions_l0_px
        return SlideInfo(self.slide_id, str(self.path), w, h, self.mpp)

    # -- reading --------------------------------------------------------------------------------

    def read_location_l0_px(self, origin_l0_px: tuple[float, float], mpp: float) -> tuple[float, float]:
        """Level-0 origin that ``read_region(origin_l0_px, ..., mpp)`` actually reads.

        tiatoolbox rounds the location to the grid of the pyramid level it reads from.
        """
        ox, oy = (int(round(float(v))) for v in origin_l0_px)
        return self._read_origin_l0_px(self.reader.find_read_rect_params(
            location=(ox, oy), size=(1, 1), resolution=float(mpp), units="mpp"))

    def _read_origin_l0_px(self, params) -> tuple[float, float]:
        """The level-0 origin a read with tiatoolbox's ``find_read_rect_params`` answer starts at
        (its level and location on that level's grid; neither depends on the read's size)."""
        level, level_xy, *_ = params
        d = float(self.reader.info.level_downsamples[level])
        return float(level_xy[0]) * d, float(level_xy[1]) * d

    def read_region(self, origin_l0_px: tuple[float, float], size_px: int, mpp: float) -> np.ndarray:
        """Square RGB region (size_px, size_px, 3) uint8 at ``mpp`` µm/px, top-left at
        ``origin_l0_px`` (rounded to whole level-0 px, then by tiatoolbox to its read level's
        grid: see :meth:`read_location_l0_px`).

        Pixels outside the slide are ``PAD_VALUE`` (0, black) in every channel; a pixel
        straddling the slide edge may blend the two when the read is resampled.
        """
        size_px = int(size_px)
        if size_px <= 0:
            raise ValueError(f"size_px must be positive, got {size_px}")
        if not mpp > 0:
            raise ValueError(f"mpp must be positive, got {mpp}")
        ox, oy = (int(round(float(v))) for v in origin_l0_px)
        f = l0_per_px(mpp, self.mpp)
        w, h = self.dimensions_l0_px
        ext = size_px * f
        if ox >= w or oy >= h or ox + ext <= 0 or oy + ext <= 0:
            return np.full((size_px, size_px, 3), PAD_VALUE, np.uint8)
        try:
            params = self.reader.find_read_rect_params(location=(ox, oy), size=(size_px, size_px),
                                                       resolution=float(mpp), units="mpp")
            img = self._read_rect((ox, oy), (size_px, size_px), float(mpp), params)
        except Exception as e:  # noqa: BLE001
            raise SlideError(self.path, f"cannot read {size_px} px at {mpp} µm/px from ({ox}, {oy}): {e}") from e
        img = _as_rgb_uint8(img)
        if img.shape[:2] != (size_px, size_px):
            raise SlideError(
                self.path, f"reader returned {img.shape[:2]} for a {size_px} px read at ({ox}, {oy}), {mpp} µm/px"
            )
        # Make out-of-slide pixels (centre outside [0, w) x [0, h)) exactly PAD_VALUE: those form
        # a band of rows and of columns at either end (pixel centres increase along each axis).
        rx, ry = self._read_origin_l0_px(params)
        c0, c1 = _inside_span(rx, f, size_px, w)
        r0, r1 = _inside_span(ry, f, size_px, h)
        if (c0, c1, r0, r1) != (0, size_px, 0, size_px):
            if not (img.flags.writeable and img.flags.owndata):
                img = img.copy()
            for band in (img[:, :c0], img[:, c1:], img[:r0], img[r1:]):
                band[...] = PAD_VALUE
        return img

    def _tiled(self) -> TiledTiff | None:
        """The slide's levels read tile by tile (:mod:`engine.slides.tiles`), looked for once."""
        if self._tiles is False:
            self._tiles = TiledTiff.from_tiatoolbox(self.reader)
        return self._tiles

    def _read_rect(self, location_l0_px: tuple[int, int], size_px: tuple[int, int], mpp: float,
                   params=None) -> np.ndarray:
        """tiatoolbox's ``read_rect`` (level-0 location, (width, height) at ``mpp``, padded with
        ``PAD_VALUE``): the same level, the same resampling and the same pixels, with the level
        read tile by tile where :class:`~engine.slides.tiles.TiledTiff` can (TIFF files).
        ``params``: tiatoolbox's ``find_read_rect_params`` for this read, when the caller has it."""
        tiles = self._tiled()
        if tiles is not None:
            level, level_xy, level_wh, post_scale, _ = params or self.reader.find_read_rect_params(
                location=location_l0_px, size=size_px, resolution=mpp, units="mpp")
            if int(level) in tiles.levels:
                from tiatoolbox.utils.transforms import imresize

                region = tiles.read(int(level), int(level_xy[0]), int(level_xy[1]), int(level_wh[0]),
                                    int(level_wh[1]), PAD_VALUE)
                img = imresize(img=region, scale_factor=post_scale, output_size=size_px)
                return img if self.reader.post_proc is None else self.reader.post_proc(img)
        return self.reader.read_rect(location=location_l0_px, size=size_px, resolution=mpp, units="mpp",
                                     pad_mode="constant", pad_constant_values=PAD_VALUE)

    def patch_pair(self, centre_l0_px: tuple[float, float], patch_px: int, hr_mpp: float, lr_mpp: float) -> PatchPair:
        """Concentric HR/LR pair whose origins lie on this slide's read grids.

        The centre is snapped to a multiple of the LR read level's downsample (moving it by at
        most half an LR pixel), so both patches are read exactly where the pair says.
        """
        level, *_ = self.reader.find_read_rect_params(
            location=(0, 0), size=(1, 1), resolution=float(lr_mpp), units="mpp"
        )
        d = float(self.reader.info.level_downsamples[level])
        snap = d if abs(d - round(d)) < 1e-9 and d >= 1 else 1.0
        cx, cy = (float(np.round(float(v) / snap) * snap) for v in centre_l0_px)
        return concentric_pair((cx, cy), patch_px, hr_mpp, lr_mpp, self.mpp)

    def read_patch_pair(self, pair: PatchPair) -> tuple[np.ndarray, np.ndarray]:
        """Read ``(hr, lr)``, each (patch_px, patch_px, 3) uint8, at the pair's origins."""
        if abs(pair.slide_mpp - self.mpp) > 1e-9 * self.mpp:
            raise ValueError(f"pair was made for slide mpp {pair.slide_mpp}, slide {self.slide_id!r} has {self.mpp}")
        hr = self.read_region(pair.hr_origin_l0_px, pair.patch_px, pair.hr_mpp)
        lr = self.read_region(pair.lr_origin_l0_px, pair.patch_px, pair.lr_mpp)
        return hr, lr

    def thumbnail(self, max_px: int = 1024) -> np.ndarray:
        """Whole slide (h, w, 3) uint8 with its longer side ``max_px`` (aspect kept).

        Read from the smallest pyramid level that is large enough; a slide without a pyramid is
        read whole at level 0.
        """
        w, h = self.dimensions_l0_px
        f = max(w, h) / float(max_px)
        tw, th = max(1, round(w / f)), max(1, round(h / f))
        try:
            img = self._read_rect((0, 0), (tw, th), self.mpp * f)
        except Exception as e:  # noqa: BLE001
            raise SlideError(self.path, f"cannot read a {tw} x {th} thumbnail: {e}") from e
        return _as_rgb_uint8(img)


def _inside_span(origin_l0_px: float, l0_per_px_: float, size_px: int, extent_l0_px: int) -> tuple[int, int]:
    """Pixels ``[i0, i1)`` of a ``size_px`` read from ``origin_l0_px`` whose centres lie inside
    ``[0, extent_l0_px)`` (level-0 px; each pixel ``l0_per_px_`` wide)."""
    centres = origin_l0_px + (np.arange(size_px) + 0.5) * l0_per_px_
    inside = np.flatnonzero((centres >= 0) & (centres < extent_l0_px))
    return (0, 0) if inside.size == 0 else (int(inside[0]), int(inside[-1]) + 1)


def _as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., :3]
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return img
