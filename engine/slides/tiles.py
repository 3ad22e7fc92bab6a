"""Pyramid levels of tiled TIFF slides read tile by tile, straight from the file.

tiatoolbox's ``TIFFWSIReader`` reads a level through a zarr array over tifffile's store, which
costs more CPU per tile than decoding the tile does. :class:`TiledTiff` reads the tiles a region
needs with ``os.pread`` (safe from several threads) and decodes each with the decoder tifffile
itself uses for that page (imagecodecs; libjpeg-turbo for JPEG), so a region's pixels are the
ones tiatoolbox's path gives, bit for bit. Only levels that are one tiled, contiguous uint8 page
whose size matches tiatoolbox's level are read this way; the slide reads every other level
through tiatoolbox.

Decoded tiles go to a process-wide bounded LRU (:data:`TILE_CACHE`), shared by every open slide
and thread of the process: the HR and LR patch of a window, neighbouring windows and a slide
opened again by another thread decode each tile once. Keys name the file by device, inode, size
and modification time, so a file replaced on disk is never served from the cache.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

#: Environment variable: the tile cache's size in MiB (0 turns it off).
TILE_CACHE_ENV = "WSISAM_TILE_CACHE_MB"
#: Default size of the tile cache: the tiles of about a dozen 1024 px HR + LR windows.
DEFAULT_TILE_CACHE_MB = 128


class TileCache:
    """A thread-safe LRU of decoded tiles, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._tiles: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            tile = self._tiles.get(key)
            if tile is None:
                self.misses += 1
                return None
            self._tiles.move_to_end(key)
            self.hits += 1
            return tile

    def put(self, key: tuple, tile: np.ndarray) -> None:
        if tile.nbytes > self.max_bytes:
            return
        tile.flags.writeable = False  # shared between readers: nobody may change it
        with self._lock:
            old = self._tiles.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._tiles[key] = tile
            self.bytes += tile.nbytes
            while self.bytes > self.max_bytes:
                self.bytes -= self._tiles.popitem(last=False)[1].nbytes

    def clear(self) -> None:
        with self._lock:
            self._tiles.clear()
            self.bytes = 0


def _cache_bytes_from_env() -> int:
    text = os.environ.get(TILE_CACHE_ENV, "").strip()
    try:
        mb = float(text) if text else DEFAULT_TILE_CACHE_MB
    except ValueError:
        raise ValueError(f"{TILE_CACHE_ENV} must be a number of MiB, got {text!r}") from None
    if not mb >= 0:
        raise ValueError(f"{TILE_CACHE_ENV} must be a number of MiB >= 0, got {text!r}")
    return int(mb * 2**20)


#: The process's tile cache (see the module docstring).
TILE_CACHE = TileCache(_cache_bytes_from_env())


@dataclass(frozen=True)
class TiledLevel:
    """One pyramid level that is a single tiled, contiguous uint8 TIFF page."""

    page: object  # tifffile.TiffPage
    width_px: int
    height_px: int
    tile_width_px: int
    tile_height_px: int
    samples: int

    @property
    def tiles_across(self) -> int:
        return -(-self.width_px // self.tile_width_px)


def _tiled_level(level_series, width_px: int, height_px: int) -> TiledLevel | None:
    """``level_series`` (a tifffile series level) as a :class:`TiledLevel`, or None when it is
    not one contiguous uint8 tiled page of ``width_px`` x ``height_px``."""
    if len(level_series.pages) != 1 or level_series.axes not in ("YXS", "YX"):
        return None
    page = level_series.keyframe
    samples = int(page.samplesperpixel)
    if (not page.is_tiled or page.tiledepth != 1 or page.dtype != np.uint8
            or (samples > 1 and int(page.planarconfig) != 1)
            or (int(page.imagewidth), int(page.imagelength)) != (width_px, height_px)):
        return None
    return TiledLevel(page, width_px, height_px, int(page.tilewidth), int(page.tilelength), samples)


class TiledTiff:
    """The levels of a slide's TIFF file that can be read tile by tile, indexed as tiatoolbox
    indexes them (level 0 the largest). Use :meth:`from_tiatoolbox` to build one."""

    def __init__(self, path: str | os.PathLike, levels: dict[int, TiledLevel], cache: TileCache = TILE_CACHE):
        self.path = os.fspath(path)
        self.levels = levels
        self.cache = cache
        self._fd = os.open(self.path, os.O_RDONLY)
        st = os.fstat(self._fd)
        self._file_key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        #: Tiles this object decoded (cache misses), for benchmarks.
        self.tiles_decoded = 0

    @classmethod
    def from_tiatoolbox(cls, reader) -> TiledTiff | None:
        """The tiled levels behind a tiatoolbox ``TIFFWSIReader`` (None for any other reader, or
        when none of its levels qualifies)."""
        tiff = getattr(reader, "tiff", None)
        series_n = getattr(reader, "series_n", None)
        if tiff is None or series_n is None or type(reader).__name__ != "TIFFWSIReader":
            return None
        try:
            series = tiff.series[int(series_n)]
            dims = [(int(w), int(h)) for w, h in reader.info.level_dimensions]
            if getattr(reader, "_axes", series.axes) != series.axes or len(series.levels) != len(dims):
                return None
            levels = {k: lv for k, (w, h) in enumerate(dims)
                      if (lv := _tiled_level(series.levels[k], w, h)) is not None}
        except (AttributeError, IndexError, TypeError, ValueError):
            return None  # a layout this module does not know: tiatoolbox reads it
        return cls(tiff.filehandle.path, levels) if levels else None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def tile(self, level: int, index: int) -> np.ndarray:
        """Decoded tile ``index`` (row-major) of ``level``: (tile_h, tile_w, samples) uint8,
        read-only (it may be shared through the cache)."""
        key = (self._file_key, level, index)
        tile = self.cache.get(key)
        if tile is None:
            tile = self.decode_tile(level, index)
            self.tiles_decoded += 1
            self.cache.put(key, tile)
        return tile

    def decode_tile(self, level: int, index: int) -> np.ndarray:
        """Tile ``index`` of ``level`` read from the file and decoded, (tile_h, tile_w, samples)
        uint8, without the cache."""
        lv = self.levels[level]
        page = lv.page
        nbytes = int(page.databytecounts[index])
        data = os.pread(self._fd, nbytes, int(page.dataoffsets[index])) if nbytes else None
        if data is not None and len(data) != nbytes:
            raise OSError(f"tile {index} of level {level}: file ends {nbytes - len(data)} bytes early")
        decoded, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        if decoded is None:  # a tile the file does not hold: tifffile fills those with its fill value
            decoded = np.full((lv.tile_height_px, lv.tile_width_px, lv.samples), page.nodata, np.uint8)
        return np.asarray(decoded).reshape(lv.tile_height_px, lv.tile_width_px, lv.samples)

    def tile_indices(self, level: int, x_px: int, y_px: int, w_px: int, h_px: int) -> list[int]:
        """Row-major indices of the tiles the region ``[x, x + w) x [y, y + h)`` (level px) needs."""
        lv = self.levels[level]
        c0, c1 = max(0, x_px) // lv.tile_width_px, (min(lv.width_px, x_px + w_px) - 1) // lv.tile_width_px
        r0, r1 = max(0, y_px) // lv.tile_height_px, (min(lv.height_px, y_px + h_px) - 1) // lv.tile_height_px
        return [r * lv.tiles_across + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]

    def read(self, level: int, x_px: int, y_px: int, w_px: int, h_px: int, pad_value: int = 0) -> np.ndarray:
        """The region ``[x, x + w) x [y, y + h)`` of ``level`` in its own pixels, (h, w, samples)
        uint8; pixels outside the level are ``pad_value``."""
        lv = self.levels[level]
        out = np.empty((h_px, w_px, lv.samples), np.uint8)
        # the part of the region inside the level, in region px: the tiles fill it, the pad the rest
        c0, c1 = min(w_px, max(0, -x_px)), max(0, min(w_px, lv.width_px - x_px))
        r0, r1 = min(h_px, max(0, -y_px)), max(0, min(h_px, lv.height_px - y_px))
        if c0 >= c1 or r0 >= r1:
            out.fill(pad_value)
            return out
        for strip in (out[:r0], out[r1:], out[r0:r1, :c0], out[r0:r1, c1:]):
            strip.fill(pad_value)
        tw, th = lv.tile_width_px, lv.tile_height_px
        for index in self.tile_indices(level, x_px, y_px, w_px, h_px):
            r, c = divmod(index, lv.tiles_across)
            tx, ty = c * tw, r * th  # the tile's origin in level px
            x0, x1 = max(x_px, tx), min(x_px + w_px, tx + tw, lv.width_px)
            y0, y1 = max(y_px, ty), min(y_px + h_px, ty + th, lv.height_px)
            if x0 < x1 and y0 < y1:
                out[y0 - y_px:y1 - y_px, x0 - x_px:x1 - x_px] = self.tile(level, index)[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
        return out
