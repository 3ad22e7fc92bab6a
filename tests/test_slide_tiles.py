"""TIFF levels read tile by tile (engine.slides.tiles): the same pixels as tiatoolbox's
``read_rect``, each tile decoded once through a bounded cache, safe from several threads."""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from engine.slides import PAD_VALUE, SlideError, open_slide
from engine.slides.tiles import TILE_CACHE, TileCache
from engine.support.synthetic import make_synthetic_slide


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """40x-like slides: 2x steps with JPEG tiles; Aperio's 4x steps; odd sizes with zlib tiles."""
    d = tmp_path_factory.mktemp("tiles")
    return {
        "step2": make_synthetic_slide(d / "step2.ome.tif", 4096, 3072, mpp=0.25, n_objects=12, seed=1, tile_px=256,
                                      jpeg_quality=85),
        "step4": make_synthetic_slide(d / "step4.ome.tif", 5000, 4100, mpp=0.25, n_objects=12, seed=2, tile_px=256,
                                      level_step=4),
        "odd_zlib": make_synthetic_slide(d / "odd.ome.tif", 3001, 2777, mpp=0.5, n_objects=8, seed=3, tile_px=256,
                                         compression="zlib"),
    }


def tiatoolbox_read(slide, origin, size_px, mpp):
    """What ``Slide.read_region`` returned before tiles were read directly: tiatoolbox's read_rect."""
    return slide.reader.read_rect(location=origin, size=(size_px, size_px), resolution=mpp, units="mpp",
                                  pad_mode="constant", pad_constant_values=PAD_VALUE)


@pytest.mark.parametrize("name", ["step2", "step4", "odd_zlib"])
def test_every_level_is_read_tile_by_tile_with_tiatoolbox_pixels(slides, name, rng):
    syn = slides[name]
    with open_slide(syn.path) as slide:
        w, h = slide.dimensions_l0_px
        for mpp_factor in (1, 2, 3, 4, 6, 8, 16, 0.7):  # native levels, resampled ones, finer than level 0
            for _ in range(4):
                mpp = slide.mpp * mpp_factor
                size = int(rng.integers(8, 700))
                span = size * mpp_factor
                ox, oy = (int(v) for v in rng.uniform(-0.3 * span, [w - 0.2 * span, h - 0.2 * span]))
                got = slide.read_region((ox, oy), size, mpp)
                ref = tiatoolbox_read(slide, (ox, oy), size, mpp)
                assert got.shape == ref.shape == (size, size, 3) and got.dtype == np.uint8
                # pixels whose centres lie on the slide are tiatoolbox's, bit for bit; the rest are padding
                rx, ry = slide.read_location_l0_px((ox, oy), mpp)
                centres = (np.arange(size) + 0.5) * (mpp / slide.mpp)
                cols = (rx + centres >= 0) & (rx + centres < w)
                rows = (ry + centres >= 0) & (ry + centres < h)
                np.testing.assert_array_equal(got[np.ix_(rows, cols)], ref[np.ix_(rows, cols)])
                assert (got[~rows] == PAD_VALUE).all() and (got[:, ~cols] == PAD_VALUE).all()
        # the reads above went through the tiles, not through tiatoolbox's read_rect
        tiled = slide._tiled()
        assert tiled is not None and sorted(tiled.levels) == list(range(slide.level_count))
        assert tiled.tiles_decoded > 0


def test_a_window_decodes_each_tile_once(slides):
    """The HR and LR reads of a 4x-step pyramid share a level: its tiles are decoded once, and a
    window read again decodes nothing."""
    TILE_CACHE.clear()
    with open_slide(slides["step4"].path) as slide:
        pair = slide.patch_pair((2500, 2050), 512, 1.0, 2.0)
        tiled = slide._tiled()
        slide.read_patch_pair(pair)
        first = tiled.tiles_decoded
        lr_level_tiles = 4 * 4  # LR: 512 px at 2 µm/px = 1024 px of the 1 µm/px level, 256 px tiles, on-grid
        assert first <= (lr_level_tiles + 9)  # HR lies inside LR's tiles; at most one more row and column
        slide.read_patch_pair(pair)
        assert tiled.tiles_decoded == first


def test_tile_cache_is_bounded_and_least_recently_used():
    cache = TileCache(max_bytes=3 * 1024)
    tile = np.zeros((32, 32), np.uint8)  # 1 KiB
    for k in range(3):
        cache.put(("f", 0, k), tile.copy())
    assert cache.get(("f", 0, 0)) is not None  # 0 is now the most recently used
    cache.put(("f", 0, 3), tile.copy())
    assert cache.bytes <= 3 * 1024
    assert cache.get(("f", 0, 1)) is None and cache.get(("f", 0, 0)) is not None
    with pytest.raises(ValueError):
        cache.get(("f", 0, 0))[0, 0] = 1  # cached tiles are read-only: readers share them


def test_a_replaced_file_is_not_served_from_the_cache(tmp_path):
    a = make_synthetic_slide(tmp_path / "a.ome.tif", 1024, 1024, mpp=0.5, n_objects=3, seed=5, tile_px=256)
    b = make_synthetic_slide(tmp_path / "b.ome.tif", 1024, 1024, mpp=0.5, n_objects=3, seed=6, tile_px=256)
    path = tmp_path / "slide.ome.tif"
    shutil.copy(a.path, path)
    with open_slide(path) as slide:
        before = slide.read_region((0, 0), 512, 0.5)
    os.replace(shutil.copy(b.path, tmp_path / "next.ome.tif"), path)
    with open_slide(path) as slide:
        after = slide.read_region((0, 0), 512, 0.5)
        np.testing.assert_array_equal(after, tiatoolbox_read(slide, (0, 0), 512, 0.5))
    assert not np.array_equal(before, after)


def test_threads_reading_one_slide_get_the_same_pixels(slides):
    with open_slide(slides["step2"].path) as slide:
        pairs = [slide.patch_pair((x, y), 256, 1.0, 2.0) for x in (800, 2000, 3300) for y in (700, 1600, 2400)]
        TILE_CACHE.clear()
        alone = [slide.read_patch_pair(p) for p in pairs]
        TILE_CACHE.clear()
        with ThreadPoolExecutor(3) as pool:
            together = list(pool.map(slide.read_patch_pair, pairs * 2))
    for (hr, lr), (hr2, lr2) in zip(alone * 2, together):
        np.testing.assert_array_equal(hr, hr2)
        np.testing.assert_array_equal(lr, lr2)


def test_a_damaged_tile_is_an_error_naming_the_slide(tmp_path):
    syn = make_synthetic_slide(tmp_path / "zeroed.ome.tif", 1024, 1024, mpp=0.5, n_objects=3, seed=7, tile_px=256)
    with open_slide(syn.path) as slide:
        page = slide._tiled().levels[0].page
        offset, count = int(page.dataoffsets[5]), int(page.databytecounts[5])
    with open(syn.path, "r+b") as f:  # tile 5 of level 0: (row 1, col 1)
        f.seek(offset)
        f.write(b"\0" * count)
    TILE_CACHE.clear()
    with open_slide(syn.path) as slide, pytest.raises(SlideError, match="zeroed.ome.tif"):
        slide.read_region((256, 256), 256, 0.5)
