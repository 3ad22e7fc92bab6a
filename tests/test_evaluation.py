"""Evaluation: metrics with known answers, matching, the prompt protocols, and the experiment end to end."""
import json
import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Point, Polygon, box

import wsisam
from conftest import make_model
from engine.cli import main as cli_main
from engine.evaluation import (BoxNoise, BoxProtocol, DetectorProtocol, Overlaps, PointsProtocol, SlideTarget,
                               evaluate_overlaps, evaluate_source, match_by_overlap, polygon_dice, polygon_iou,
                               polygon_overlaps, prompt_links, resolve_predictions, run_experiment)
from engine.evaluation.truth import read_truth
from engine.prompts import read_prompts
from engine.records import ObjectMask
from engine.scheduler import ScheduleConfig
from engine.segmenters import TruthSegmenter
from engine.io.geoparquet import write_geoparquet
from engine.stitching import LabelImageWriter
from engine.stitching.polygons import objects_to_geodataframe
from engine.support.synthetic import make_synthetic_slide

SCHEDULE = ScheduleConfig(patch_px=256, hr_mpp=1.0, lr_mpp=2.0, context_px=16)


def truth_frame(geoms, classes=None):
    classes = classes or ["a"] * len(geoms)
    return gpd.GeoDataFrame({"object_id": np.arange(1, len(geoms) + 1), "class_name": classes}, geometry=geoms)


def pred_frame(geoms, prompt_ids=None, classes=None):
    n = len(geoms)
    return gpd.GeoDataFrame({"object_id": np.arange(1, n + 1), "prompt_id": prompt_ids or list(range(n)),
                             "class_name": classes or ["a"] * n}, geometry=geoms)


def score(truth, pred, links=None, match="auto"):
    ov = polygon_overlaps(truth, pred)
    ids = dict(zip(pred.object_id.astype(int), pred.prompt_id.astype(int)))
    return evaluate_overlaps(ov, truth, ids, "m", "s", "polygons", links, match)


# ---------------------------------------------------------------- metrics, known answers
def test_dice_and_iou_known_answers():
    sq = box(0, 0, 1, 1)
    assert polygon_dice(sq, box(0, 0, 1, 1)) == 1.0 and polygon_iou(sq, box(0, 0, 1, 1)) == 1.0
    assert polygon_dice(sq, box(2, 0, 3, 1)) == 0.0 and polygon_iou(sq, box(2, 0, 3, 1)) == 0.0
    assert polygon_dice(sq, box(0.5, 0, 1.5, 1)) == pytest.approx(0.5)  # half overlap
    assert polygon_iou(sq, box(0.5, 0, 1.5, 1)) == pytest.approx(1 / 3)
    # holes are not part of the object: a ring against its filled disc
    ring = Polygon(box(0, 0, 4, 4).exterior, [box(1, 1, 3, 3).exterior])
    assert polygon_dice(ring, box(0, 0, 4, 4)) == pytest.approx(2 * 12 / (12 + 16))
    ev = score(truth_frame([box(0, 0, 10, 10), box(20, 0, 30, 10)]),
               pred_frame([box(0, 0, 10, 10), box(25, 0, 35, 10)]))
    assert [o.dice for o in ev.objects] == pytest.approx([1.0, 0.5])
    assert ev.slide.mean_dice == pytest.approx(0.75)


def test_missed_object_scores_zero_and_false_positives_are_counted():
    truth = truth_frame([box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)], ["a", "a", "b"])
    pred = pred_frame([box(0, 0, 10, 10), box(100, 100, 110, 110)])
    ev = score(truth, pred)
    assert [(o.truth_id, o.dice, o.pred_id, o.matched_by) for o in ev.objects] == [
        (1, 1.0, 1, "overlap"), (2, 0.0, -1, "none"), (3, 0.0, -1, "none")]
    s = ev.slide
    assert (s.n_truth, s.n_matched, s.n_missed, s.n_false_positive) == (3, 1, 2, 1)
    assert s.mean_dice == pytest.approx(1 / 3)
    assert s.foreground_dice == pytest.approx(2 * 100 / (300 + 200))


def test_matching_by_prompt_and_by_overlap():
    # Prompt 0 was made from truth 1, but its mask landed on truth 2: by prompt it scores truth 1 (badly)
    # and truth 2 is missed; by overlap it is given to truth 2.
    truth = truth_frame([box(0, 0, 10, 10), box(20, 0, 30, 10)])
    pred = pred_frame([box(9, 0, 29, 10)], prompt_ids=[0])
    by_prompt = score(truth, pred, links={0: 1})
    assert [(o.pred_id, o.matched_by) for o in by_prompt.objects] == [(1, "prompt"), (-1, "none")]
    assert by_prompt.objects[0].dice == pytest.approx(2 * 10 / (100 + 200))
    by_overlap = score(truth, pred, links={0: 1}, match="overlap")
    assert [o.pred_id for o in by_overlap.objects] == [-1, 1]
    assert by_overlap.objects[1].dice == pytest.approx(2 * 90 / (100 + 200))
    with pytest.raises(ValueError, match="truth_id"):
        score(truth, pred, match="prompt")


def test_overlap_matching_is_one_to_one_and_iou_maximal():
    # IoU(t1,p1)=0.6, IoU(t1,p2)=0.5, IoU(t2,p1)=0.5, IoU(t2,p2)=0: greedy would give t1-p1 only (0.6);
    # the assignment t1-p2, t2-p1 has total 1.0.
    ov = Overlaps({1: 1.0, 2: 1.0}, {1: 1.0, 2: 1.0},
                  {(1, 1): 2 * 0.6 / 1.6, (1, 2): 2 * 0.5 / 1.5, (2, 1): 2 * 0.5 / 1.5})
    assert ov.iou(1, 1) == pytest.approx(0.6) and ov.iou(2, 1) == pytest.approx(0.5)
    assert match_by_overlap(ov) == {1: 2, 2: 1}
    # one prediction covering two truth objects is matched to one of them only
    ev = score(truth_frame([box(0, 0, 10, 10), box(10, 0, 14, 10)]), pred_frame([box(0, 0, 14, 10)]))
    assert [o.pred_id for o in ev.objects] == [1, -1] and ev.slide.n_missed == 1


# ---------------------------------------------------------------- label image path
def write_toy_outputs(folder, objs, slide_mpp=0.5, size_l0_px=64):
    """A slide output folder (label image with 16-px chunks, polygons, summary.json) from ObjectMasks."""
    folder.mkdir(parents=True)
    with LabelImageWriter(folder / "labels.ome.zarr", slide_width_l0_px=size_l0_px, slide_height_l0_px=size_l0_px,
                          slide_mpp=slide_mpp, label_mpp=1.0, slide_id="toy", chunk_px=16) as w:
        for o in objs:
            w.add(o)
    write_geoparquet(objects_to_geodataframe(objs, slide_mpp, min_area_um2=0.0), folder / "objects.parquet")
    (folder / "summary.json").write_text(json.dumps({"slide": {"slide_id": "toy", "mpp": slide_mpp}}))


def test_label_image_agrees_with_polygons(tmp_path):
    # 0.5 µm/px slide, 1 µm label pixels: a label pixel is 2 x 2 level-0 px; 16-px chunks, so objects
    # straddle chunk edges (label px 16 = level-0 px 32).
    disc = np.hypot(*np.mgrid[-6:7, -6:7]) <= 6
    objs = [ObjectMask("toy", 0, np.ones((6, 6), bool), (26.0, 26.0), 1.0, 0.9, "a"),  # l0 [26, 38)^2
            ObjectMask("toy", 1, disc, (70.0, 30.0), 1.0, 0.8, "b"),
            ObjectMask("toy", 2, np.ones((2, 2), bool), (110.0, 110.0), 1.0, 0.7, "a")]  # a false positive
    write_toy_outputs(tmp_path / "toy", objs, size_l0_px=128)
    truth = truth_frame([box(30, 30, 42, 42), Point(82.0, 43.0).buffer(12.0, quad_segs=64), box(0, 100, 10, 110)],
                        ["a", "b", "a"])
    (poly,) = resolve_predictions([tmp_path / "toy"])
    (lab,) = resolve_predictions([tmp_path / "toy"], prefer="labels")
    assert (poly.kind, lab.kind, lab.slide_id, lab.slide_mpp) == ("polygons", "labels", "toy", 0.5)
    a, b = evaluate_source(poly, truth, "m"), evaluate_source(lab, truth, "m")
    # grid-aligned squares: exactly the same answer, 2 * 8*8 / (12*12 + 12*12) in level-0 px^2
    assert a.objects[0].dice == b.objects[0].dice == pytest.approx(2 * 64 / (144 + 144))
    # a disc: pixelisation only (truth rasterised by pixel centre onto the 1 µm grid)
    assert b.objects[1].dice == pytest.approx(a.objects[1].dice, abs=0.01) and a.objects[1].dice > 0.9
    assert b.objects[1].truth_area_um2 == pytest.approx(a.objects[1].truth_area_um2, rel=0.06)
    assert a.objects[2].dice == b.objects[2].dice == 0.0
    assert a.slide.n_false_positive == b.slide.n_false_positive == 1
    assert b.slide.foreground_dice == pytest.approx(a.slide.foreground_dice, abs=0.01)
    assert b.objects[0].truth_area_um2 == pytest.approx(144 * 0.25)


# ---------------------------------------------------------------- protocols
def squares_target(n=200, side=100.0, seed=0):
    rng = np.random.default_rng(seed)
    geoms = [box(x, y, x + w, y + h) for (x, y), (w, h) in
             zip(rng.uniform(1000, 9000, (n, 2)), rng.uniform(side / 2, side * 2, (n, 2)))]
    return SlideTarget("sq", 10_000, 10_000, 0.5, truth_frame(geoms))


def test_box_noise_is_seeded_bounded_and_per_object():
    target = squares_target()
    prompts = BoxProtocol().make_prompts(target, seed=0)
    assert prompts == BoxProtocol().make_prompts(target, seed=0)  # reproducible
    assert [p.box_l0_px for p in prompts] != [p.box_l0_px for p in BoxProtocol().make_prompts(target, seed=1)]
    truth = np.array([g.bounds for g in target.truth.geometry])
    noisy = np.array([p.box_l0_px for p in prompts])
    w, h = truth[:, 2] - truth[:, 0], truth[:, 3] - truth[:, 1]
    shift_x = ((noisy[:, 0] + noisy[:, 2]) - (truth[:, 0] + truth[:, 2])) / 2 / w
    shift_y = ((noisy[:, 1] + noisy[:, 3]) - (truth[:, 1] + truth[:, 3])) / 2 / h
    size_x, size_y = (noisy[:, 2] - noisy[:, 0]) / w - 1, (noisy[:, 3] - noisy[:, 1]) / h - 1
    for v, bound in ((shift_x, 0.1), (shift_y, 0.1), (size_x, 0.2), (size_y, 0.2)):
        assert np.abs(v).max() <= bound + 1e-9  # bounded
        assert np.abs(v).max() > 0.9 * bound and abs(v.mean()) < 0.2 * bound  # uniform over the range, centred
    # each object's box depends on the object only, not on the others or their order
    shuffled = SlideTarget("sq", 10_000, 10_000, 0.5, target.truth.iloc[::-1].iloc[:50])
    again = {prompt_links([p])[p.prompt_id]: p.box_l0_px for p in BoxProtocol().make_prompts(shuffled, 0)}
    assert all(again[t] == prompts[t - 1].box_l0_px for t in again)
    # no noise -> the truth boxes, clipped to the slide
    exact = BoxProtocol(BoxNoise(0.0, 0.0)).make_prompts(target, 0)
    np.testing.assert_allclose([p.box_l0_px for p in exact], truth)


def test_points_lie_inside_polygons_and_are_nested():
    ring = Polygon(Point(500, 500).buffer(100).exterior, [Point(500, 500).buffer(60).exterior])
    thin = box(1000, 1000, 1400, 1003)
    target = SlideTarget("p", 2000, 2000, 0.5, truth_frame([ring, thin, box(1500, 100, 1600, 400)]))
    by_k = {k: PointsProtocol(k).make_prompts(target, seed=3) for k in (3, 5, 10)}
    for k, prompts in by_k.items():
        assert len(prompts) == 3
        for p, geom in zip(prompts, target.truth.geometry):
            pts = np.array(p.points_l0_px)
            assert pts.shape == (k, 2) and p.point_labels == (1,) * k and p.box_l0_px is None
            assert shapely.contains_xy(geom, pts[:, 0], pts[:, 1]).all()  # inside, never in the lumen
            assert len(np.unique(pts, axis=0)) == k
    for i in range(3):  # 3 points are the first of 5, which are the first of 10
        assert by_k[5][i].points_l0_px[:3] == by_k[3][i].points_l0_px
        assert by_k[10][i].points_l0_px[:5] == by_k[5][i].points_l0_px
    assert by_k[5] == PointsProtocol(5).make_prompts(target, seed=3)
    assert by_k[5] != PointsProtocol(5).make_prompts(target, seed=4)
    # uniform: over many points in a square, the mean is its centre
    sq = SlideTarget("u", 2000, 2000, 0.5, truth_frame([box(0, 0, 100, 100)]))
    pts = np.array(PointsProtocol(2000).make_prompts(sq, 0)[0].points_l0_px)
    assert np.abs(pts.mean(axis=0) - 50).max() < 3 and pts.min() >= 0 and pts.max() <= 100


def test_prompt_files_link_prompts_to_truth(tmp_path):
    target = squares_target(n=20)
    path = PointsProtocol(3).write(target, 0, tmp_path)
    prompts = read_prompts(path, slide_id="sq")["sq"]
    assert prompt_links(prompts) == {i: i + 1 for i in range(20)}
    assert prompts == PointsProtocol(3).make_prompts(target, 0)  # the file reads back to the same prompts
    props = [f["properties"] for f in json.loads(path.read_text())["features"]]
    assert [p["truth_id"] for p in props] == list(range(1, 21))


def test_detector_boxes_come_from_a_noisy_coarse_mask():
    truth = truth_frame([Point(x, y).buffer(r) for x, y, r in
                         ((300, 300, 80), (900, 300, 120), (500, 900, 60), (1500, 1500, 200))], ["a", "b", "a", "b"])
    target = SlideTarget("d", 2000, 2000, 0.5, truth)
    proto = DetectorProtocol(coarse_mpp=8.0, boundary_noise_um=8.0)
    mask, classes = proto.coarse_mask(target, seed=0)
    assert mask.shape == (125, 125) and classes == {1: "a", 2: "b"}
    prompts = proto.make_prompts(target, seed=0)
    assert prompts == proto.make_prompts(target, seed=0) and not prompt_links(prompts)
    assert len(prompts) == 4
    for p in prompts:  # each box hugs one object, up to the coarse pixels and the boundary noise (16 l0 px)
        (t,) = [g for g in truth.geometry if g.intersects(box(*p.box_l0_px))]
        assert np.abs(np.subtract(p.box_l0_px, t.bounds)).max() <= 16 + 16 + 1e-6
    noisier = DetectorProtocol(boundary_noise_um=8.0).coarse_mask(target, seed=1)[0]
    assert not np.array_equal(mask, noisier)


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_slides")
    out = []
    for name, (w, h), seed in (("ev_a", (4000, 3000), 5), ("ev_b", (3000, 2400), 7)):
        s = make_synthetic_slide(d / f"{name}.ome.tif", w, h, mpp=0.5, n_objects=8, seed=seed)
        s.write_truth(d / f"{name}.geojson")
        out.append(s)
    return d, out


def oracle():
    return {"oracle": lambda slide_id, truth: TruthSegmenter(truth)}


def test_experiment_with_oracle_scores_dice_near_one(slides, tmp_path):
    d, ss = slides
    res = run_experiment([s.path for s in ss], [d], "boxes", oracle(), tmp_path, seed=0, schedule=SCHEDULE)
    slides_df = res.evaluation.slides
    assert list(slides_df.slide_id) == ["ev_a", "ev_b"] and (slides_df.matched_by == "prompt").all()
    assert (slides_df.n_missed == 0).all() and (slides_df.n_false_positive == 0).all()
    table = pd.read_csv(res.report.table_dice_csv, index_col="method")
    classes = sorted(set(ss[0].truth.class_name) | set(ss[1].truth.class_name))
    assert list(table.columns) == classes + ["avg"] and list(table.index) == ["oracle"]
    assert (table.loc["oracle"] > 95).all()  # the oracle's masks are the truth at 1 µm pixels
    objects = pd.read_csv(res.report.objects_csv)
    assert len(objects) == len(ss[0].truth) + len(ss[1].truth) and objects.dice.min() > 0.85
    # same seed, same prompts; the prompt files name their truth objects
    again = BoxProtocol().make_prompts(SlideTarget("ev_a", 4000, 3000, 0.5, read_truth(d / "ev_a.geojson")), 0)
    assert read_prompts(res.prompt_files["ev_a"], slide_id="ev_a")["ev_a"] == again
    # the label images of the same run score like the polygons
    ev = evaluate_source(resolve_predictions([res.runs["oracle"]["ev_a"].labels_path])[0], ss[0].truth, "m")
    assert ev.slide.mean_dice == pytest.approx(slides_df.mean_dice[0], abs=0.02)


def test_experiment_detector_protocol_matches_by_overlap(slides, tmp_path):
    d, ss = slides
    res = run_experiment([ss[0].path], [d / "ev_a.geojson"], "detector", oracle(), tmp_path, schedule=SCHEDULE)
    s = res.evaluation.slides.iloc[0]
    assert s.matched_by == "overlap" and s.n_matched >= s.n_truth - 1 and s.mean_dice > 0.85
    assert (tmp_path / "prompts" / "ev_a.coarse_mask.png").is_file()


def test_experiment_cli_with_random_model_compares_wsisam_and_sam(slides, tmp_path):
    d, ss = slides
    ckpt = wsisam.save_wsisam(make_model("vit_test", seed=0), tmp_path / "model.safetensors")
    out = tmp_path / "exp"
    rc = cli_main(["experiment", "--slides", str(ss[0].path), "--truth", str(d / "ev_a.geojson"),
                   "--protocol", "points3", "--checkpoint", str(ckpt), "--out", str(out), "--seed", "0",
                   "--device", "cpu", "--context-px", "16"])
    assert rc == 0
    table = pd.read_csv(out / "table_dice.csv", index_col="method")
    assert list(table.index) == ["SAM", "WSI-SAM"]
    assert list(table.columns) == sorted(set(ss[0].truth.class_name)) + ["avg"]
    assert ((table >= 0) & (table <= 100)).all().all()
    assert table["avg"].tolist() == pytest.approx(table.drop(columns="avg").mean(axis=1).tolist(), abs=1e-3)
    md = (out / "table_dice.md").read_text()
    assert "| SAM |" in md and "| WSI-SAM |" in md and "| method |" in md
    png = (out / "table_dice.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (out / "runs" / "wsi-sam" / "ev_a" / "objects.parquet").is_file()
    assert (out / "runs" / "sam" / "ev_a" / "labels.ome.zarr").is_dir()
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["protocol"]["name"] == "points3" and protocol["seed"] == 0
    # evaluate on the run's outputs gives back the experiment's table
    rc = cli_main(["evaluate", "--pred", str(out / "runs" / "sam"), "--method-name", "SAM",
                   "--pred", str(out / "runs" / "wsi-sam"), "--method-name", "WSI-SAM", "--truth", str(d),
                   "--prompts", str(out / "prompts"), "--out", str(tmp_path / "ev")])
    assert rc == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ev" / "table_dice.csv", index_col="method"), table)
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["slides"][0]["matched_by"] == "prompt"
