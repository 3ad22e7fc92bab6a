"""Segment everything (grid-points: score, stability, NMS) and the per-slide qc.png, in-process
with the bundled demo model on a generated slide with known objects."""
import dataclasses
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
from PIL import Image

from conftest import tree_hashes
from engine.cli import main
from engine.detectors import get_detector
from engine.distributed.model_spec import ModelSpec
from engine.pipeline import OutputConfig, segment_slide
from engine.slide_writer import SlideWriter
from engine.records import ObjectMask, Prompt
from engine.run_settings import differences, plan_rerun, slide_settings
from engine.scheduler import ScheduleConfig
from engine.segmenters import TruthSegmenter
from engine.slides import open_slide
from engine.stitching.grid import LabelGrid
from engine.stitching.nms import CandidateSet, MaskFilter
from engine.stitching.qc_picture import TRUNCATED_RGB, write_slide_qc
from engine.slides.thumbnail import bounded_thumbnail, qc_thumbnail
from engine.support.synthetic import make_synthetic_slide

# Point prompts at the demo model's 1 µm/px (its 256 µm HR field holds a 128 µm extent plus context).
# The filters on their own: with completion on, a cut mask is segmented again (two segmenter outputs
# for one writer input), which test_completion.py covers; the CLI test below runs both together.
SCHEDULE = ScheduleConfig(patch_px=256, context_px=16, points_extent_um=128, complete_cut_objects=False)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    d = tmp_path_factory.mktemp("every")
    return make_synthetic_slide(d / "every.ome.tif", 2400, 2400, mpp=0.5, n_objects=8, seed=5, n_large=0, n_edge=1)


class Recording:
    """The demo model's segmenter, keeping every mask it returns (the candidates, before any filter)."""

    def __init__(self, segmenter):
        self.segmenter, self.name, self.objects = segmenter, segmenter.name, []

    def segment(self, jobs, lr_masks=True):
        objects = self.segmenter.segment(jobs, lr_masks)
        self.objects += [dataclasses.replace(o, extra=dict(o.extra)) for o in objects]
        return objects


@pytest.fixture(scope="module")
def everything(slide, tmp_path_factory):
    det = get_detector("grid-points", points_spacing_um=60)
    segmenter = Recording(ModelSpec.demo().segmenter("cpu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model: one thread is as fast, and far faster on a busy machine
    try:
        with open_slide(slide.path) as s:
            prompts = det.detect(s)
            res = segment_slide(s, prompts, segmenter, tmp_path_factory.mktemp("out"), SCHEDULE,
                                OutputConfig(mask_filter=det.mask_filter))
    finally:
        torch.set_num_threads(threads)
    return res, segmenter.objects, prompts


def raw_masks_on(grid: LabelGrid, objects: list[ObjectMask]) -> dict[int, np.ndarray]:
    """Each object's raw mask (before the overlap rule) on the whole label grid."""
    out = {}
    for o in objects:
        full = np.zeros(grid.shape_px, bool)
        win = grid.object_window(o)
        full[win.slices()] = grid.sample(o, win)
        out[o.object_id] = full
    return out


def test_grid_points_keep_one_object_per_truth_object(slide, everything):
    res, candidates, prompts = everything
    gdf = res.geodataframe()
    summary = json.loads((res.labels_path.parent / "summary.json").read_text())
    counts = summary["mask_filter"]
    # every filter ran, and the counts add up
    assert counts["candidates"] == res.objects == len(candidates) and len(prompts) > 3 * len(slide.truth)
    assert counts["removed_by_score"] > 0 and counts["removed_by_stability"] > 0 and counts["removed_by_nms"] > 0
    assert counts["removed_as_covered"] > 0
    assert counts["kept"] == len(gdf) == counts["candidates"] - sum(v for k, v in counts.items()
                                                                      if k.startswith("removed_"))
    assert summary["output"]["mask_filter"] == {"score_threshold": 0.7, "stability_threshold": 0.8, "nms_iou": 0.5,
                                                "max_covered_fraction": 0.5}
    # no two output objects are the same object: raw masks (before the overlap rule) overlap by IoU <= 0.5
    kept = [o for o in candidates if o.object_id in set(gdf.object_id)]
    grid = LabelGrid(slide.width_l0_px, slide.height_l0_px, slide.mpp, SCHEDULE.hr_mpp)
    masks = raw_masks_on(grid, kept)
    ious = [(a, b, (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()) for a, b in
            itertools.combinations(sorted(masks), 2)]
    assert max((i for _, _, i in ious), default=0) <= 0.5, [x for x in ious if x[2] > 0.5]
    assert max((i for _, _, i in ious), default=0) == pytest.approx(counts["max_iou_kept"], abs=1e-6)
    assert summary["vectors"]["objects_without_pixels"] == 0
    # recall of truth objects and precision of outputs, matched at IoU >= 0.5
    iou = np.array([[g.intersection(t).area / g.union(t).area for t in slide.truth.geometry] for g in gdf.geometry])
    recall, precision = (iou.max(axis=0) >= 0.5).mean(), (iou.max(axis=1) >= 0.5).mean()
    print(f"grid-points: {len(gdf)} objects for {len(slide.truth)} truth objects; recall {recall:.2f}, "
          f"precision {precision:.2f}; {counts}")
    assert recall >= 0.75 and precision >= 0.75


def test_qc_png_shows_outlines_and_prompts(slide, everything):
    res, _, prompts = everything
    folder = res.labels_path.parent
    assert (folder / "prompts.geojson").exists()
    qc = np.asarray(Image.open(folder / "qc.png").convert("RGB"))
    with open_slide(slide.path) as s:
        thumb = bounded_thumbnail(s, max(qc.shape))
    assert qc.shape == thumb.shape and qc.shape[0] == 2400 * 0.5 / 2  # 2 µm per picture pixel
    drawn = np.any(qc != thumb, axis=2)
    scale = qc.shape[1] / slide.width_l0_px
    # every kept object's outline and every prompt point is drawn where it lies
    for geom in res.geodataframe().geometry:
        x, y = np.asarray(geom.exterior.coords if geom.geom_type == "Polygon" else geom.geoms[0].exterior.coords).T
        r, c = (np.clip((v * scale).astype(int), 0, n - 1) for v, n in ((y, qc.shape[0]), (x, qc.shape[1])))
        assert drawn[r, c].mean() > 0.9
    points = np.array([p.points_l0_px[0] for p in prompts]) * scale
    assert np.mean(np.all(qc[points[:, 1].astype(int), points[:, 0].astype(int)] == (255, 230, 0), axis=1)) > 0.8


def test_truncated_objects_are_dashed_red_and_no_qc_writes_none(slide, tmp_path):
    lowest = int(np.argmax(slide.truth.geometry.bounds.miny))  # away from the legend (top left)
    gdf = slide.truth.assign(truncated=np.arange(len(slide.truth)) == lowest, class_name="duct")
    with open_slide(slide.path) as s:
        qc = np.asarray(Image.open(write_slide_qc(qc_thumbnail(s), s.dimensions_l0_px[0], gdf, [], tmp_path / "qc.png")).convert("RGB"))
        red = np.all(qc == TRUNCATED_RGB, axis=2)
        red[:60, :250] = False  # the legend's swatch
        x0, y0, x1, y1 = (int(v * qc.shape[1] / slide.width_l0_px) for v in slide.truth.geometry.iloc[lowest].bounds)
        assert red[y0 - 2:y1 + 3, x0 - 2:x1 + 3].sum() == red.sum() > 10  # only around that object
        solid = np.asarray(Image.open(write_slide_qc(qc_thumbnail(s), s.dimensions_l0_px[0], gdf.assign(truncated=False), [],
                                                  tmp_path / "solid.png")))
        box = np.s_[y0 - 2:y1 + 3, x0 - 2:x1 + 3]
        assert red[box].sum() < 0.8 * np.any(solid[box] != bounded_thumbnail(s, 600)[box], axis=2).sum()  # dashed
        prompts = [Prompt(s.slide_id, 0, box_l0_px=tuple(slide.truth_boxes()[1]))]
        res = segment_slide(s, prompts, TruthSegmenter(slide.truth), tmp_path / "out", SCHEDULE, OutputConfig(qc=False))
    assert res.objects == 1 and not (res.labels_path.parent / "qc.png").exists()


def test_qc_is_not_a_rerun_setting(slide):
    with open_slide(slide.path) as s:
        info = s.info()
    on, off = (slide_settings(info, {}, {}, dataclasses.asdict(OutputConfig(qc=qc)), {}) for qc in (True, False))
    assert differences(on, off) == []
    other = slide_settings(info, {}, {}, dataclasses.asdict(OutputConfig(mask_filter=MaskFilter(nms_iou=0.7))), {})
    assert [d.split(" ")[0] for d in differences(on, other)] == ["output.mask_filter"]


def test_rerun_on_a_folder_from_before_exact_packing_skips_its_slide(slide, tmp_path):
    """A slide finished by a version without ``exact_packing`` (nor ``packing``) was packed by the
    row greedy: a rerun with ``--packing row-greedy`` skips it; one with --exact-packing is refused
    by name (the default packing: ``test_scheduler_packing.py``)."""
    with open_slide(slide.path) as s:
        info = s.info()
    greedy = {exact: ScheduleConfig(exact_packing=exact, packing="row-greedy") for exact in (False, True)}
    new = {exact: slide_settings(info, {}, dataclasses.asdict(cfg), dataclasses.asdict(OutputConfig()), {})
           for exact, cfg in greedy.items()}
    old = json.loads(json.dumps(new[False]))
    del old["schedule"]["exact_packing"], old["schedule"]["packing"]
    folder = tmp_path / info.slide_id
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"settings": old}))
    assert plan_rerun(tmp_path, {info.slide_id: new[False]}).skipped == [info.slide_id]
    with pytest.raises(ValueError, match="schedule.exact_packing"):
        plan_rerun(tmp_path, {info.slide_id: new[True]})


def test_tiled_thumbnail_matches_the_pyramid_read(slide):
    with open_slide(slide.path) as s:
        direct = bounded_thumbnail(s, 300).astype(int)
        tiled = bounded_thumbnail(s, 300, max_read_px=64 * 64).astype(int)  # as for a slide with no pyramid
    assert direct.shape == tiled.shape == (300, 300, 3)
    assert np.abs(direct - tiled).mean() < 6


def _square(prompt_id: int, x: int, y: int, side: int, score: float, mpp: float = 1.0, stability=0.9) -> ObjectMask:
    return ObjectMask("s", prompt_id, np.ones((side, side), bool), (float(x), float(y)), mpp, score,
                      extra={"stability": stability})


def test_nms_keeps_the_best_of_each_duplicate_group_whatever_the_order():
    grid = LabelGrid(4000, 4000, slide_mpp=0.5, label_mpp=1.0)
    objects = [
        _square(0, 100, 100, 100, 0.90), _square(1, 110, 100, 100, 0.95),  # IoU 0.82: 1 wins
        _square(2, 100, 104, 50, 0.99, mpp=2.0),  # the same square from a coarser level, best score
        _square(3, 1000, 1000, 60, 0.8), _square(4, 1000, 1000, 60, 0.8),  # tie: the lower prompt id wins
        _square(5, 1000, 1120, 60, 0.85),  # touching 3 without overlap: kept
        _square(6, 2000, 2000, 60, 0.5), _square(7, 2200, 2000, 60, 0.9, stability=0.3),  # low score, unstable
        _square(8, 2400, 2000, 60, 0.9, stability=None),  # no stability reported: passes that filter
        _square(9, 3000, 3000, 100, 0.95), _square(10, 3040, 3040, 30, 0.7),  # 10 lies inside 9: covered
        _square(11, 3160, 3000, 100, 0.9),  # a fifth of it under 9 (IoU 1/9): kept
    ]
    kept = []
    for seed in range(3):
        order = list(objects)
        random.Random(seed).shuffle(order)
        cs = CandidateSet(grid, MaskFilter())
        for o in order:
            if cs.passes(o):
                cs.add(dataclasses.replace(o))
        kept.append([(o.prompt_id, o.origin_l0_px, o.mask.tobytes()) for o in cs.select()])
        assert cs.counts == {"candidates": 12, "removed_by_score": 1, "removed_by_stability": 1, "removed_small": 0,
                             "removed_by_nms": 3, "removed_as_covered": 1, "kept": 6, "stability_unknown": 1}
        assert cs.max_iou_kept == pytest.approx(1 / 9)
    assert kept[0] == kept[1] == kept[2]
    assert [k[0] for k in kept[0]] == [2, 9, 8, 11, 5, 3]  # score order, ties by prompt id


def test_writer_paints_only_the_kept_masks(slide, tmp_path):
    objects = [_square(0, 100, 100, 100, 0.9), _square(1, 104, 100, 100, 0.95), _square(2, 600, 600, 40, 0.8)]
    with open_slide(slide.path) as s:
        writer = SlideWriter(s.info(), tmp_path, 1.0, OutputConfig(mask_filter=MaskFilter(), qc=False))
        for o in objects:
            writer.add(dataclasses.replace(o, slide_id=s.slide_id))
        summary = {}
        writer.commit(summary, [])
    gdf = gpd.read_parquet(tmp_path / slide.slide_id / "objects.parquet")
    assert list(gdf.prompt_id) == [1, 2] and summary["mask_filter"]["removed_by_nms"] == 1
    assert shapely.equals(gdf.geometry.iloc[0], shapely.box(104, 100, 304, 300))  # 100 px at 1 µm = 200 l0 px


def test_stability_is_the_share_of_the_mask_left_when_the_threshold_moves():
    import wsisam

    logits = torch.tensor([[[-3.0, -0.5, 0.5, 2.0], [2.0, 2.0, 2.0, 2.0]], [[-5.0] * 4] * 2])
    # first: 5 pixels above +1 of the 7 above -1; second: empty mask, stable by convention
    assert wsisam.stability_scores(logits).tolist() == pytest.approx([5 / 7, 1.0])


@pytest.mark.timeout(300)
def test_segment_cli_on_ray_segments_everything_once_and_draws_qc(tmp_path, capsys):
    """The CLI end to end on an embedded Ray: grid-points, filters, NMS at the writer actor's commit,
    qc.png and prompts.geojson; a rerun with --no-qc skips the finished slide (qc is no setting)."""
    slide = make_synthetic_slide(tmp_path / "small.ome.tif", 1600, 1600, mpp=0.5, n_objects=4, seed=5, n_large=0,
                                 n_edge=0)
    ray_tmp = tempfile.mkdtemp(prefix="re", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = dict(os.environ, RAY_TMPDIR=ray_tmp)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "engine.cli", "segment", str(slide.path), "--output", str(out), "--detector",
           "grid-points", "--detector-options", '{"points_spacing_um": 60}', "--points-extent-um", "128",
           "--context-px", "16", "--num-cpus", "2", "--no-progress"]
    try:
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert f"{slide.slide_id}  done" in first.stdout  # the summary table, printed before the quick exit
        folder = out / slide.slide_id
        summary = json.loads((folder / "summary.json").read_text())
        counts, gdf = summary["mask_filter"], gpd.read_parquet(folder / "objects.parquet")
        assert counts["removed_by_score"] > 0 and counts["removed_by_stability"] > 0 and counts["removed_by_nms"] > 0
        assert counts["max_iou_kept"] <= 0.5 and counts["kept"] == len(gdf) == summary["vectors"]["polygons"]
        assert summary["vectors"]["objects_without_pixels"] == 0
        iou = np.array([[g.intersection(t).area / g.union(t).area for t in slide.truth.geometry] for g in gdf.geometry])
        assert (iou.max(axis=1) >= 0.5).sum() >= 2  # objects found where they are
        assert (folder / "prompts.geojson").exists()
        assert Image.open(folder / "qc.png").size == (400, 400)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    before = tree_hashes(folder)
    assert main(cmd[3:] + ["--no-qc"]) == 0  # all skipped: no Ray starts, so in this process
    assert " skipped " in capsys.readouterr().out and tree_hashes(folder) == before
