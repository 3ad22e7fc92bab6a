"""Slides through real tiatoolbox: mpp, levels, patch-pair geometry on pixels, padding, errors;
and the pure geometry it rests on."""
from __future__ import annotations

import pickle
import re
import struct

import cv2
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from engine.geometry import (
    boxes_l0_to_patch_px,
    boxes_patch_px_to_l0,
    concentric_pair,
    l0_per_px,
    l0_to_patch_px,
    patch_origin_l0_px,
    patch_px_to_l0,
)
from engine.slides import PAD_VALUE, SlideError, SlideInfo, open_slide
from engine.support.synthetic import make_synthetic_slide

MPP = 0.5


def purple(img: np.ndarray) -> np.ndarray:
    return (img[..., 0] < 180) & (img[..., 2] > 100)


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    path = tmp_path_factory.mktemp("slides") / "case-7.ome.tif"
    return make_synthetic_slide(path, 4096, 3072, mpp=MPP, n_objects=24, seed=11, n_large=1)


@pytest.fixture(scope="module")
def slide(syn):
    with open_slide(syn.path) as s:
        yield s


# -- pure geometry ---------------------------------------------------------------------------


def test_scale_and_origin():
    assert l0_per_px(1.0, 0.25) == 4.0
    assert l0_per_px(0.25, 0.5) == 0.5
    # 1024 px at 1 µm/px on a 0.5 µm/px slide spans 2048 level-0 px around the centre
    assert patch_origin_l0_px((5000.0, 3000.0), 1024, 1.0, 0.5) == (3976.0, 1976.0)
    with pytest.raises(ValueError):
        l0_per_px(0.0, 0.5)


def test_point_and_box_maps_are_inverse_and_vectorised(rng):
    pts = rng.uniform(-1e4, 1e5, (3, 5, 2))
    o = (123.5, -77.0)
    px = l0_to_patch_px(pts, o, 2.0, 0.25)
    assert px.shape == (3, 5, 2)
    np.testing.assert_allclose(px[1, 2], (pts[1, 2] - o) / 8.0)
    np.testing.assert_allclose(patch_px_to_l0(px, o, 2.0, 0.25), pts)
    boxes = np.concatenate([pts[..., :1, :], pts[..., 1:2, :]], axis=-1).reshape(3, 4)
    bpx = boxes_l0_to_patch_px(boxes, o, 2.0, 0.25)
    np.testing.assert_allclose(bpx[:, :2], l0_to_patch_px(boxes[:, :2], o, 2.0, 0.25))
    np.testing.assert_allclose(boxes_patch_px_to_l0(bpx, o, 2.0, 0.25), boxes)
    with pytest.raises(ValueError):
        l0_to_patch_px(np.zeros((4, 3)), o, 1.0, 1.0)


def test_concentric_pair_geometry():
    pair = concentric_pair((10_000.0, 6_000.0), 1024, 1.0, 4.0, 0.25)
    assert pair.ratio == 4.0
    hx0, hy0, hx1, hy1 = pair.hr_box_l0_px
    lx0, ly0, lx1, ly1 = pair.lr_box_l0_px
    assert (hx1 - hx0, lx1 - lx0) == (4096.0, 16384.0)
    assert ((hx0 + hx1) / 2, (hy0 + hy1) / 2) == ((lx0 + lx1) / 2, (ly0 + ly1) / 2) == (10_000.0, 6_000.0)
    # the HR patch is the central quarter of the LR patch
    corners_hr = np.array([[0.0, 0.0], [1024.0, 1024.0]])
    np.testing.assert_allclose(pair.points_hr_px_to_lr_px(corners_hr), [[384.0, 384.0], [640.0, 640.0]])
    np.testing.assert_allclose(pair.boxes_l0_to_hr_px(np.array(pair.hr_box_l0_px)), [0, 0, 1024, 1024])
    np.testing.assert_allclose(pair.points_hr_px_to_l0(pair.points_l0_to_hr_px([[1.0, 2.0]])), [[1.0, 2.0]])
    # origins are whole level-0 px even for an off-grid centre; maps use the rounded origins
    odd = concentric_pair((100.3, 200.7), 256, 1.0, 2.0, 0.5)
    assert odd.hr_origin_l0_px == (float(round(100.3 - 256)), float(round(200.7 - 256)))
    np.testing.assert_allclose(odd.points_l0_to_hr_px([odd.hr_origin_l0_px]), [[0.0, 0.0]])


# -- opening ---------------------------------------------------------------------------------


def test_open_reads_mpp_levels_and_id(slide, syn):
    assert slide.slide_id == "case-7"
    assert slide.path == syn.path
    assert slide.dimensions_l0_px == (4096, 3072)
    assert slide.mpp == pytest.approx(MPP, rel=1e-6)
    assert slide.level_count == len(syn.level_dimensions_px) == 4
    assert slide.level_dimensions_px == syn.level_dimensions_px
    info = slide.info()
    assert info == SlideInfo("case-7", str(syn.path), 4096, 3072, pytest.approx(MPP))
    again = pickle.loads(pickle.dumps(info)).open()
    assert again.dimensions_l0_px == (4096, 3072) and again.slide_id == "case-7"
    again.close()


def test_user_mpp_overrides_metadata(syn):
    with open_slide(syn.path, mpp=0.25, slide_id="other") as s:
        assert s.mpp == 0.25 and s.slide_id == "other"
        # 64 px at 0.5 µm/px now means level-0 scale 2: a level-0 feature shrinks by half
        a = s.read_region((0, 0), 64, 0.5)
    with open_slide(syn.path) as s:
        b = s.read_region((0, 0), 128, 0.5)
    assert a.shape == (64, 64, 3)
    small = cv2.resize(b, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - a.astype(int)).mean() < 12


def test_missing_file(tmp_path):
    p = tmp_path / "nope.svs"
    with pytest.raises(SlideError, match="not found") as e:
        open_slide(p)
    assert str(p) in str(e.value)


def test_corrupt_file(tmp_path):
    p = tmp_path / "broken.tif"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(SlideError, match="cannot be read") as e:
        open_slide(p)
    assert str(p) in str(e.value)
    # crosses process boundaries intact
    err = pickle.loads(pickle.dumps(e.value))
    assert isinstance(err, SlideError) and err.path == str(p) and str(err) == str(e.value)


def test_images_without_mpp_need_one(tmp_path):
    img = np.full((300, 400, 3), 200, np.uint8)
    img[100:200, 150:250] = (120, 60, 150)
    png = tmp_path / "plain.png"
    cv2.imwrite(str(png), img[..., ::-1])
    tif = tmp_path / "tiled.tif"
    tifffile.imwrite(tif, img, tile=(256, 256))  # tiled TIFF, no resolution metadata
    for p in (png, tif):
        with pytest.raises(SlideError, match="mpp") as e:
            open_slide(p)
        assert str(p) in str(e.value)
    with open_slide(png, mpp=0.5) as s:
        assert s.mpp == 0.5 and s.dimensions_l0_px == (400, 300)
        patch = s.read_region((100, 50), 100, 1.0)  # level-0 [100, 300) x [50, 250) at half scale
    assert patch.shape == (100, 100, 3)
    m = purple(patch)
    ys, xs = np.nonzero(m)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (25, 75, 25, 75)


# -- reading ---------------------------------------------------------------------------------


def test_read_region_size_and_padding(slide):
    w, h = slide.dimensions_l0_px
    for origin, mpp in [((w + 1, 10), 0.5), ((w + 200, 10), 1.0), ((10, h + 500), 4.0), ((-5000, -5000), 1.0)]:
        a = slide.read_region(origin, 64, mpp)
        assert a.shape == (64, 64, 3) and a.dtype == np.uint8
        assert np.all(a == PAD_VALUE), (origin, mpp)
    # straddling the right edge at 1 µm/px: 32 px inside (64 level-0 px), the rest padded
    a = slide.read_region((w - 64, 100), 64, 1.0)
    assert a.shape == (64, 64, 3)
    assert np.all(a[:, 32:] == PAD_VALUE)
    assert a[:, :31].min(axis=2).mean() > 50  # slide content (glass or tissue), not padding
    # straddling the top-left corner at a resampled scale (3 µm/px: 6 level-0 px per px)
    a = slide.read_region((-60, -60), 40, 3.0)
    assert np.all(a[:10] == PAD_VALUE) and np.all(a[:, :10] == PAD_VALUE)
    assert a[11:, 11:].min(axis=2).mean() > 50


def test_patch_pair_lands_where_geometry_says(slide, syn):
    """Purple objects seen in the HR and LR patches sit where the truth, mapped by the pair, says;
    and the HR patch downscaled by the ratio matches the central 1/ratio of the LR patch."""
    t = syn.truth
    w, h = slide.dimensions_l0_px
    interior = t[t.geometry.apply(lambda g: g.bounds[0] > 600 and g.bounds[1] > 600
                                  and g.bounds[2] < w - 600 and g.bounds[3] < h - 600)]
    cands = interior[interior.class_name != "large"].head(3)
    assert len(cands) == 3
    for g in cands.geometry:
        c = g.centroid
        pair = slide.patch_pair((c.x, c.y), 256, 1.0, 4.0)
        assert slide.read_location_l0_px(pair.hr_origin_l0_px, 1.0) == pair.hr_origin_l0_px
        assert slide.read_location_l0_px(pair.lr_origin_l0_px, 4.0) == pair.lr_origin_l0_px
        hr, lr = slide.read_patch_pair(pair)
        assert hr.shape == lr.shape == (256, 256, 3) and hr.dtype == lr.dtype == np.uint8
        for img, box_px in ((hr, pair.boxes_l0_to_hr_px(np.array(g.bounds))),
                            (lr, pair.boxes_l0_to_lr_px(np.array(g.bounds)))):
            lab, _ = ndimage.label(purple(img))
            ids = np.unique(lab[int(box_px[1]) + 1:int(box_px[3]) - 1, int(box_px[0]) + 1:int(box_px[2]) - 1])
            ids = ids[ids > 0]
            assert len(ids) == 1, "the object should be one purple component"
            ys, xs = np.nonzero(lab == ids[0])
            measured = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
            np.testing.assert_allclose(measured, box_px, atol=1.0)
        # HR downscaled by 4 == central 64 x 64 of LR (objects at the same place)
        hr_small = cv2.resize(hr, (64, 64), interpolation=cv2.INTER_AREA)
        centre = lr[96:160, 96:160]
        a, b = purple(hr_small), purple(centre)
        assert (a & b).sum() / (a | b).sum() > 0.85
        np.testing.assert_allclose(ndimage.center_of_mass(a), ndimage.center_of_mass(b), atol=0.5)


def test_pair_needs_matching_slide_mpp(slide):
    pair = concentric_pair((1000.0, 1000.0), 64, 1.0, 2.0, 0.25)
    with pytest.raises(ValueError, match="mpp"):
        slide.read_patch_pair(pair)


def test_thumbnail(slide, syn):
    th = slide.thumbnail(512)
    assert th.shape == (384, 512, 3) and th.dtype == np.uint8
    # objects show up purple where the truth puts them (scaled by 8)
    big = syn.truth.geometry.area.idxmax()
    c = syn.truth.geometry[big].representative_point()
    assert purple(th[int(c.y / 8), int(c.x / 8)][None, None])[0, 0]
    assert th[0, 0].min() > 240  # glass in the corner


# -- damaged files -----------------------------------------------------------------------------


def tile_span(path, level: int, index: int) -> tuple[int, int]:
    """(offset, byte count) of one tile of one level of a tiled TIFF."""
    with tifffile.TiffFile(path) as t:
        page = t.series[0].levels[level].keyframe
        return int(page.dataoffsets[index]), int(page.databytecounts[index])


def missing_bytes(message: str) -> int:
    return int(re.search(r"at least ([\d,]+) bytes? missing", message).group(1).replace(",", ""))


@pytest.mark.parametrize("keep", [0.5, 0.99, -3])
def test_truncated_tiff_is_refused_at_open(syn, tmp_path, keep):
    """Cut at 50 %, 99 % (where the last level's JPEG tile used to decode to wrong pixels without
    an error) and 3 bytes short (the OME-XML at the end): open names the file, what is cut off
    and how many bytes are missing (exact here: the OME-XML is the last thing written)."""
    data = syn.path.read_bytes()
    n = len(data) + keep if keep < 0 else int(len(data) * keep)
    p = tmp_path / "cut.ome.tif"
    p.write_bytes(data[:n])
    with pytest.raises(SlideError, match="truncated") as e:
        open_slide(p)
    msg = str(e.value)
    assert str(p) in msg and missing_bytes(msg) == len(data) - n
    if keep == 0.99:
        assert f"level {len(syn.level_dimensions_px) - 1} tile data" in msg
    if keep == -3:
        assert "level 0 TIFF tags" in msg


def test_tile_offset_past_the_end_is_refused_at_open(syn, tmp_path):
    """A level-0 tile pointing past the end of the file, through tiatoolbox's TIFF reader
    (OME-TIFF) and through OpenSlide (a generic tiled TIFF named .svs)."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    generic = tmp_path / "generic.svs"
    with tifffile.TiffWriter(generic) as t:
        for k in range(3):
            t.write(img[:: 2**k, :: 2**k], tile=(256, 256), photometric="rgb", compression="jpeg",
                    subfiletype=0 if k == 0 else 1, resolution=(2e4 / 2**k, 2e4 / 2**k), resolutionunit="CENTIMETER")
    with open_slide(generic) as s:
        assert type(s.reader).__name__ == "OpenSlideWSIReader" and s.level_count == 3 and s.mpp == 0.5
    for src in (syn.path, generic):
        data = bytearray(src.read_bytes())
        with tifffile.TiffFile(src) as t:
            tag = t.series[0].levels[0].keyframe.tags["TileOffsets"]
            fmt = t.byteorder + "I"
        offset, count = tile_span(src, 0, 3)
        struct.pack_into(fmt, data, tag.valueoffset + 4 * 3, len(data) + 1000)
        p = tmp_path / ("bad-" + src.name)
        p.write_bytes(bytes(data))
        with pytest.raises(SlideError, match="level 0 tile data") as e:
            open_slide(p)
        assert str(p) in str(e.value) and missing_bytes(str(e.value)) == 1000 + count


@pytest.mark.parametrize("compression, damage", [("jpeg", "zeroed"), ("zlib", "zeroed"), ("zlib", "garbled")])
def test_damaged_tile_raises_when_read_naming_the_region(tmp_path, compression, damage):
    """Nothing is missing, so the slide opens; reading the damaged tile raises a SlideError that
    names the file and the region, and the rest of the slide reads as before. (Garbled bytes in
    a JPEG tile may decode to wrong pixels without an error: JPEG has no checksum.)"""
    syn = make_synthetic_slide(tmp_path / "ok.ome.tif", 1024, 1024, n_objects=3, seed=2, tile_px=256,
                               compression=compression)
    offset, count = tile_span(syn.path, 0, 5)  # row 1, column 1: level-0 px [256, 512) x [256, 512)
    data = bytearray(syn.path.read_bytes())
    if damage == "zeroed":
        data[offset:offset + count] = bytes(count)
    else:
        data[offset + count // 3:offset + count // 3 + 200] = np.random.default_rng(1).bytes(200)
    p = tmp_path / "bad.ome.tif"
    p.write_bytes(bytes(data))
    with open_slide(syn.path) as good, open_slide(p) as bad:
        np.testing.assert_array_equal(bad.read_region((0, 0), 256, 0.5), good.read_region((0, 0), 256, 0.5))
        with pytest.raises(SlideError, match=r"cannot read 256 px at 0.5 µm/px from \(256, 256\)") as e:
            bad.read_region((256, 256), 256, 0.5)
    assert str(p) in str(e.value)


def test_damaged_plain_images_and_empty_files(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for name in ("plain.png", "plain.jpg"):
        whole = tmp_path / name
        cv2.imwrite(str(whole), img)
        open_slide(whole, mpp=0.5).close()
        for keep in (0.5, 0.99):
            p = tmp_path / f"cut-{keep}-{name}"
            p.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * keep)])
            with pytest.raises(SlideError, match="cannot be read" if name.endswith("png") else "truncated JPEG") as e:
                open_slide(p, mpp=0.5)
            assert str(p) in str(e.value)
    for name in ("empty.ome.tif", "empty.svs", "empty.png"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(SlideError, match="empty file") as e:
            open_slide(tmp_path / name, mpp=0.5)
        assert str(tmp_path / name) in str(e.value)
