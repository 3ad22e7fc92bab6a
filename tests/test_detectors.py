"""Detectors: tissue boxes, mask components -> boxes, grid points on tissue, registry/plugins."""
from __future__ import annotations

import textwrap

import cv2
import numpy as np
import pytest
import tifffile

from engine.detectors import (
    GridPointsDetector,
    MaskToBoxesDetector,
    TissueDetector,
    available_detectors,
    get_detector,
)
from engine.records import Prompt


class ArraySlide:
    """A whole slide held as one numpy RGB image (level 0), satisfying the detector slide protocol."""

    def __init__(self, image: np.ndarray, mpp: float, slide_id: str = "slide-1") -> None:
        self.image = image
        self.mpp = mpp
        self.slide_id = slide_id

    @property
    def dimensions_l0_px(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]

    def thumbnail(self, max_px: int) -> np.ndarray:
        h, w = self.image.shape[:2]
        s = min(1.0, max_px / max(h, w))
        return cv2.resize(self.image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)

    def read_region(self, origin_l0_px, size_px, mpp):
        f = mpp / self.mpp
        x0, y0 = (int(round(v)) for v in origin_l0_px)
        n = int(round(size_px * f))
        pad = np.full((n, n, 3), 240, np.uint8)
        crop = self.image[max(y0, 0): y0 + n, max(x0, 0): x0 + n]
        pad[max(-y0, 0): max(-y0, 0) + crop.shape[0], max(-x0, 0): max(-x0, 0) + crop.shape[1]] = crop
        return cv2.resize(pad, (size_px, size_px), interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------------------------
# A synthetic slide: near-white glass with two pieces of real H&E texture and a speck of dust

SLIDE_MPP = 2.0
PIECE_A = (300, 300, 1300, 1100)  # ellipse inscribed in this box (x0, y0, x1, y1), level-0 px
PIECE_B = (1800, 1000, 2700, 1800)  # rectangle


@pytest.fixture(scope="module")
def tissue_slide():
    from tiatoolbox.data import stain_norm_target

    rng = np.random.default_rng(0)
    h, w = 2000, 3000
    img = rng.integers(232, 248, (h, w, 3), dtype=np.uint8)
    he = stain_norm_target()
    texture = np.tile(he, (2, 3, 1))[:h, :w]
    gt = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = PIECE_A
    cv2.ellipse(gt, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, 1, -1)
    x0, y0, x1, y1 = PIECE_B
    gt[y0:y1, x0:x1] = 1
    img[gt > 0] = texture[gt > 0]
    img[1500:1510, 500:510] = (90, 60, 110)  # dust: 20 x 20 µm, below any tissue minimum
    return ArraySlide(img, SLIDE_MPP, "he-slide"), gt.astype(bool)


def test_tissue_detector_boxes(tissue_slide):
    slide, _ = tissue_slide
    prompts = TissueDetector(min_area_um2=50_000, thumbnail_max_px=1024).detect(slide)
    assert len(prompts) == 2
    assert [p.prompt_id for p in prompts] == [0, 1]
    assert all(p.slide_id == "he-slide" and p.class_name == "tissue" and not p.points_l0_px for p in prompts)
    # within 30 level-0 px (60 µm: thumbnail pixels plus the masker's dilation) of the truth
    for p, truth in zip(prompts, (PIECE_A, PIECE_B)):
        np.testing.assert_allclose(p.box_l0_px, truth, atol=30)
    # the 20 x 20 µm dust speck is tissue to Otsu; only the area minimum removed it
    otsu = TissueDetector(min_area_um2=100, thumbnail_max_px=1024, method="otsu").detect(slide)
    dust = [p.box_l0_px for p in otsu if np.allclose(p.box_l0_px, (500, 1500, 510, 1510), atol=6)]
    assert len(dust) == 1


def test_tissue_detector_blank_slide():
    blank = ArraySlide(np.full((400, 600, 3), 241, np.uint8), 1.0, "blank")
    assert TissueDetector().detect(blank) == []
    assert GridPointsDetector(points_spacing_um=50).detect(blank) == []


def test_grid_points_on_tissue(tissue_slide):
    slide, gt = tissue_slide
    spacing_um = 100.0
    step = spacing_um / SLIDE_MPP  # 50 level-0 px
    prompts = GridPointsDetector(points_spacing_um=spacing_um, thumbnail_max_px=1024).detect(slide)
    pts = np.array([p.points_l0_px[0] for p in prompts])
    assert all(p.point_labels == (1,) and p.box_l0_px is None for p in prompts)
    assert [p.prompt_id for p in prompts] == list(range(len(prompts)))
    # on the grid (i + 0.5) * step, row by row
    np.testing.assert_allclose((pts - step / 2) / step, np.round((pts - step / 2) / step), atol=1e-9)
    assert np.all(np.diff(pts[:, 1]) >= 0)
    # every point is on (or within 2 thumbnail px of) tissue; the dust gets none
    near = cv2.dilate(gt.astype(np.uint8), np.ones((13, 13), np.uint8)) > 0
    assert near[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
    assert not np.any((np.abs(pts[:, 0] - 505) < 30) & (np.abs(pts[:, 1] - 1505) < 30))
    # and most grid nodes that lie on tissue get a point (Otsu leaves out some pale H&E regions
    # that touch the edge; enclosed ones are filled)
    gx, gy = np.meshgrid(np.arange(step / 2, 3000, step), np.arange(step / 2, 2000, step))
    on_tissue = gt[gy.astype(int), gx.astype(int)].sum()
    assert 0.85 * on_tissue <= len(prompts) <= 1.05 * on_tissue
    # the whole slide when asked
    everywhere = GridPointsDetector(points_spacing_um=spacing_um, tissue_only=False).detect(slide)
    assert len(everywhere) == gx.size == 60 * 40
    with pytest.raises(ValueError, match="max_points"):
        GridPointsDetector(points_spacing_um=2.0, max_points=1000).detect(slide)


# --------------------------------------------------------------------------------------------
# Coarse mask (nnU-Net-like output) -> boxes

MASK_MPP, MASK_SLIDE_MPP = 8.0, 0.5  # 16 level-0 px per mask px


@pytest.fixture
def three_blobs():
    """A 100 x 80 label image at 8 µm/px with three objects, and their level-0 boxes."""
    lab = np.zeros((80, 100), np.uint8)
    lab[10:20, 5:25] = 1  # rectangle rows 10..19, cols 5..24
    cv2.circle(lab, (60, 40), 8, 1, -1)  # disc: cols 52..68, rows 32..48
    lab[65:78, 80:99] = 2  # class 2
    f = MASK_MPP / MASK_SLIDE_MPP
    boxes = [
        (5 * f, 10 * f, 25 * f, 20 * f),
        (52 * f, 32 * f, 69 * f, 49 * f),
        (80 * f, 65 * f, 99 * f, 78 * f),
    ]
    return lab, boxes


def blank_slide(slide_id="s1"):
    return ArraySlide(np.zeros((80 * 16, 100 * 16, 3), np.uint8), MASK_SLIDE_MPP, slide_id)


def test_mask_to_boxes_files(tmp_path, three_blobs):
    lab, boxes = three_blobs
    cv2.imwrite(str(tmp_path / "s1.png"), lab * 100)  # values 100 and 200 in the PNG
    tifffile.imwrite(tmp_path / "s1.tif", lab)
    np.save(tmp_path / "s1.npy", lab)
    slide = blank_slide()
    for name, classes in (("s1.png", {100: "tumor", 200: "stroma"}), ("s1.tif", {1: "tumor", 2: "stroma"}),
                          ("{slide_id}.npy", {1: "tumor", 2: "stroma"})):
        prompts = MaskToBoxesDetector(tmp_path / name, mask_mpp=MASK_MPP, class_names=classes).detect(slide)
        assert [p.box_l0_px for p in prompts] == boxes, name
        assert [p.class_name for p in prompts] == ["tumor", "tumor", "stroma"]
        assert [p.prompt_id for p in prompts] == [0, 1, 2]
    # scale given as a downsample instead of an mpp; no mapping -> class is the label value
    prompts = MaskToBoxesDetector(lab, l0_px_per_mask_px=16).detect(slide)
    assert [p.box_l0_px for p in prompts] == boxes and [p.class_name for p in prompts] == ["1", "1", "2"]
    # a mapping selects classes
    only2 = MaskToBoxesDetector(lab, mask_mpp=MASK_MPP, class_names={2: "stroma"}).detect(slide)
    assert [p.box_l0_px for p in only2] == boxes[2:]
    # min area: the disc (~200 mask px = 12,800 µm²) survives 10,000 µm², the rectangle (200 px) too
    big = MaskToBoxesDetector(lab, mask_mpp=MASK_MPP, min_area_um2=13_000).detect(slide)
    assert [p.box_l0_px for p in big] == [boxes[2]]  # 13 x 19 px = 247 px = 15,808 µm²


def test_mask_to_boxes_instances_origin_and_scale_check(three_blobs):
    lab, boxes = three_blobs
    inst = lab.astype(np.int32)
    inst[inst == 2] = 7
    inst[30:50, 50:70][inst[30:50, 50:70] == 1] = 3
    prompts = MaskToBoxesDetector(inst, mask_mpp=MASK_MPP, instances=True).detect(blank_slide())
    assert [(p.box_l0_px, p.class_name) for p in prompts] == [(boxes[0], "1"), (boxes[1], "3"), (boxes[2], "7")]
    # a mask of a region: offset by its origin, boxes clipped to the slide
    shifted = MaskToBoxesDetector(lab, mask_mpp=MASK_MPP, origin_l0_px=(100, 50)).detect(blank_slide())
    assert shifted[0].box_l0_px == (boxes[0][0] + 100, boxes[0][1] + 50, boxes[0][2] + 100, boxes[0][3] + 50)
    assert shifted[2].box_l0_px == (boxes[2][0] + 100, boxes[2][1] + 50, 1600, 1280)
    # a wrong mpp (mask said to be 4 µm/px) is warned about
    with pytest.warns(UserWarning, match="check mask_mpp"):
        MaskToBoxesDetector(lab, mask_mpp=4.0).detect(blank_slide())
    with pytest.raises(ValueError, match="exactly one"):
        MaskToBoxesDetector(lab)
    with pytest.raises(ValueError, match="single-channel"):
        MaskToBoxesDetector(np.random.default_rng(0).integers(0, 3, (8, 8, 3)), mask_mpp=1.0)


# --------------------------------------------------------------------------------------------
# Registry and plugins


def test_registry_builtins_and_unknown_name():
    det = get_detector("grid-points", points_spacing_um=64)
    assert isinstance(det, GridPointsDetector) and det.points_spacing_um == 64
    assert isinstance(get_detector("tissue"), TissueDetector)
    assert available_detectors()[:3] == ["tissue", "mask-to-boxes", "grid-points"]
    with pytest.raises(ValueError, match=r"unknown detector 'nnunet'; known detectors: tissue, mask-to-boxes, "
                                         r"grid-points"):
        get_detector("nnunet")


def test_plugin_discovered_through_entry_points(tmp_path, monkeypatch):
    (tmp_path / "wsisam_centre_plugin.py").write_text(textwrap.dedent("""
        from engine.records import Prompt

        class CentreBox:
            def __init__(self, half_size_l0_px=10):
                self.half = half_size_l0_px

            def detect(self, slide):
                w, h = slide.dimensions_l0_px
                return [Prompt(slide.slide_id, 0, box_l0_px=(w / 2 - self.half, h / 2 - self.half,
                                                             w / 2 + self.half, h / 2 + self.half))]

        class NotADetector:
            pass
    """))
    dist = tmp_path / "wsisam_centre_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wsisam-centre-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[wsisam_engine.detectors]\n"
        "centre-box = wsisam_centre_plugin:CentreBox\n"
        "broken = wsisam_centre_plugin:NotADetector\n"
    )
    with pytest.raises(ValueError, match="unknown detector 'centre-box'"):
        get_detector("centre-box")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"centre-box", "broken"} <= set(available_detectors())
    det = get_detector("centre-box", half_size_l0_px=5)
    with pytest.raises(ValueError, match="detector 'centre-box' has no option 'half'; its options: half_size_l0_px"):
        get_detector("centre-box", half=5)
    slide = ArraySlide(np.zeros((40, 60, 3), np.uint8), 1.0, "p")
    assert det.detect(slide) == [Prompt("p", 0, box_l0_px=(25.0, 15.0, 35.0, 25.0))]
    with pytest.raises(ValueError, match="'broken'.*no detect"):
        get_detector("broken")
    with pytest.raises(ValueError, match="known detectors: .*broken, centre-box"):
        get_detector("nope")
