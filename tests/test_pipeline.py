"""End to end on generated slides: prompt file -> windows -> masks -> OME-Zarr labels + polygons."""
import gc
import json
import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio.features
import shapely
import shapely.affinity
import shapely.geometry
import torch
import zarr
from affine import Affine

import wsisam
from conftest import count_decoded_prompts, make_model
from engine.completion import LR_MASK_KEY, hr_placement, touches_border
from engine.pipeline import OutputConfig, segment_slide
from engine.slide_writer import SlideWriter
from engine.prompts import read_prompts
from engine.records import ObjectMask, Prompt
from engine.scheduler import ScheduleConfig, Window, schedule_stats, schedule_windows
from engine.segmenters import TruthSegmenter, WindowJob, WsiSamSegmenter
from engine.segmenters.base import crop_to_object
from engine.slides import open_slide
from engine.support.synthetic import make_synthetic_slide

SCHEDULE = ScheduleConfig(patch_px=256, hr_mpp=1.0, lr_mpp=2.0, context_px=16)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("slides")
    s = make_synthetic_slide(d / "case_a.ome.tif", 6000, 5000, mpp=0.5, n_objects=24, seed=3)
    prompts_path = s.write_truth(d / "case_a.geojson")
    return s, prompts_path


def run_truth(synth, out, **kw):
    s, prompts_path = synth
    prompts = read_prompts(prompts_path, slide_id=s.slide_id)[s.slide_id]
    with open_slide(s.path) as slide:
        return segment_slide(slide, prompts, TruthSegmenter(s.truth), out, SCHEDULE, **kw)


@pytest.fixture(scope="module")
def truth_run(synth, tmp_path_factory):
    return run_truth(synth, tmp_path_factory.mktemp("out"))


def label_s0(result):
    root = zarr.open_group(str(result.labels_path), mode="r")
    return root["labels/objects/0"][:]


def test_every_prompt_segmented_once_and_polygons_match_truth(synth, truth_run):
    s, _ = synth
    gdf = truth_run.geodataframe()
    assert truth_run.prompts == len(s.truth) == truth_run.objects == len(gdf)
    assert sorted(gdf.object_id) == list(range(1, len(s.truth) + 1))  # exactly once, ids = prompt_id + 1
    assert gc.isenabled()  # the writer pauses the garbage collector only while it commits
    assert gdf.geometry.is_valid.all() and gdf.crs is None
    truth = s.truth.set_index("object_id").geometry
    ious = []
    for row in gdf.itertuples():
        t = truth.loc[row.object_id]
        ious.append(row.geometry.intersection(t).area / row.geometry.union(t).area)
    # The oracle's masks are the truth rasterised at the window's pixel size (1 µm or coarser for
    # objects bigger than a window), so only pixelisation separates polygon and truth.
    assert min(ious) > 0.85 and np.mean(ious) > 0.93, ious
    holes = {r.object_id: len(r.geometry.interiors) for r in gdf.itertuples()}
    truth_holes = {i: len(g.interiors) for i, g in truth.items()}
    assert holes == truth_holes and sum(holes.values()) >= 3  # lumens are holes
    assert set(gdf.class_name) == set(s.truth.class_name)
    big = gdf[gdf.area_um2 > 1024**2 * 0.5]
    assert len(big) >= 1  # objects larger than one HR window came through a coarser pair


def test_label_image_agrees_with_polygons(synth, truth_run):
    labels = label_s0(truth_run)
    s, _ = synth
    assert labels.shape == (2500, 3000)  # 5000 x 6000 px at 0.5 µm -> 1 µm label pixels
    gdf = truth_run.geodataframe()
    transform = Affine(2.0, 0, 0, 0, 2.0, 0)  # label px -> level-0 px
    for row in gdf.itertuples():
        mine = labels == row.object_id
        drawn = rasterio.features.rasterize([(row.geometry, 1)], out_shape=labels.shape, transform=transform,
                                            dtype="uint8").astype(bool)
        iou = (mine & drawn).sum() / (mine | drawn).sum()
        assert iou >= 0.98, (row.object_id, iou)
    assert set(np.unique(labels)) == {0, *gdf.object_id}


def test_outputs_are_readable_and_documented(truth_run):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(truth_run.labels_path)))())
    label_nodes = [n for n in nodes if "properties" in n.metadata]  # NGFF image-label metadata
    assert len(label_nodes) == 1 and any(isinstance(spec, Label) for spec in label_nodes[0].specs)
    label = label_nodes[0]
    gdf = truth_run.geodataframe()
    level0 = np.asarray(label.data[0])
    assert level0.shape == (2500, 3000)
    assert set(np.unique(level0)) == {0, *gdf.object_id}
    classes = {int(oid): props["class"] for oid, props in label.metadata["properties"].items()}
    assert classes == dict(zip(gdf.object_id, gdf.class_name))
    assert set(label.metadata["color"]) == set(classes)
    fc = json.loads(truth_run.geojson_path.read_text())
    assert fc["type"] == "FeatureCollection" and "crs" not in fc
    f0 = fc["features"][0]
    assert f0["properties"]["objectType"] == "detection" and "name" in f0["properties"]["classification"]
    summary = json.loads((truth_run.labels_path.parent / "summary.json").read_text())
    assert summary["result"]["objects"] == truth_run.objects
    assert "overlap_rule" in summary and "score" in summary


def test_deterministic(synth, truth_run, tmp_path):
    again = run_truth(synth, tmp_path)
    np.testing.assert_array_equal(label_s0(again), label_s0(truth_run))
    a, b = again.geodataframe(), truth_run.geodataframe()
    assert shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=0).all()


def test_scheduler_packs_prompts_and_counts_encoder_passes(synth):
    s, prompts_path = synth
    prompts = read_prompts(prompts_path, slide_id=s.slide_id)[s.slide_id]
    windows = schedule_windows(s.slide_id, prompts, s.mpp, SCHEDULE)
    ids = [i for w in windows for i in w.prompt_ids]
    assert sorted(ids) == sorted(p.prompt_id for p in prompts)  # each prompt in exactly one window
    by_id = {p.prompt_id: p for p in prompts}
    for w in windows:  # every box sits inside its HR patch with the context margin
        x0, y0, x1, y1 = w.pair.hr_box_l0_px
        margin = SCHEDULE.context_px * w.pair.hr_mpp / s.mpp - 1
        for i in w.prompt_ids:
            b = by_id[i].box_l0_px
            assert b[0] >= x0 + margin and b[1] >= y0 + margin and b[2] <= x1 - margin and b[3] <= y1 - margin
    assert windows == schedule_windows(s.slide_id, list(reversed(prompts)), s.mpp, SCHEDULE)


def test_many_small_prompts_share_windows():
    prompts = [Prompt("s", i, box_l0_px=(x, y, x + 20.0, y + 20.0))
               for i, (x, y) in enumerate((x, y) for x in range(0, 2000, 50) for y in range(0, 2000, 50))]
    windows = schedule_windows("s", prompts, 0.5, ScheduleConfig(patch_px=1024))
    stats = schedule_stats(windows)
    assert stats.prompts == 1600 and stats.encoder_passes_per_prompt < 0.05


def test_real_model_end_to_end(synth, tmp_path):
    s, prompts_path = synth
    model = make_model("vit_test", seed=0)
    segmenter = WsiSamSegmenter(wsisam.WsiSamPredictor(model, device="cpu"))
    prompts = read_prompts(prompts_path, slide_id=s.slide_id)[s.slide_id]
    with open_slide(s.path) as slide:
        res = segment_slide(slide, prompts, segmenter, tmp_path, SCHEDULE, OutputConfig(ngff_version="0.4"))
    assert res.objects + res.empty_masks == res.prompts == len(s.truth)
    gdf = res.geodataframe()
    assert len(gdf) <= res.objects and gdf.geometry.is_valid.all()
    assert set(np.unique(label_s0(res))) <= {0, *range(1, len(s.truth) + 1)}
    assert (res.labels_path / ".zattrs").exists()  # NGFF 0.4 on zarr v2, for QuPath


def test_sam_mode_runs_sams_own_path(synth, tmp_path):
    """SAM mode writes objects from SAM's decoder on the HR patch: its masks ignore the WSI-only
    weights (fusion, HF token) that change the WSI path's masks on the same prompts."""
    s, prompts_path = synth
    prompts = read_prompts(prompts_path, slide_id=s.slide_id)[s.slide_id][:4]
    model, other = make_model("vit_test", seed=0), make_model("vit_test", seed=0)
    with torch.no_grad():
        for name, p in other.named_parameters():
            if name.split(".", 1)[1].startswith(wsisam.modeling.WSI_PARAM_PREFIXES):
                p.add_(torch.randn_like(p))

    def run(m, mode, out):
        segmenter = WsiSamSegmenter(wsisam.WsiSamPredictor(m, device="cpu"), mode=mode)
        with open_slide(s.path) as slide:
            res = segment_slide(slide, prompts, segmenter, tmp_path / out, SCHEDULE)
        summary = json.loads((res.labels_path.parent / "summary.json").read_text())
        return res, summary["segmenter"], label_s0(res)

    sam, sam_name, sam_labels = run(model, "sam", "sam")
    _, _, sam_labels_other = run(other, "sam", "sam_other")
    _, wsi_name, wsi_labels = run(model, "wsi", "wsi")
    _, _, wsi_labels_other = run(other, "wsi", "wsi_other")
    assert sam.prompts == 4 and sam.objects >= 1 and len(sam.geodataframe()) == sam.objects
    assert sam_name == "wsisam-vit_test-sam" and wsi_name == "wsisam-vit_test-wsi"
    np.testing.assert_array_equal(sam_labels, sam_labels_other)  # WSI-only weights play no part
    assert not np.array_equal(wsi_labels, wsi_labels_other)  # ... while they steer the WSI path
    assert not np.array_equal(sam_labels, wsi_labels)


def test_prompts_outside_the_slide_are_dropped_and_counted(synth, tmp_path):
    s, _ = synth
    prompts = [Prompt(s.slide_id, 0, box_l0_px=tuple(s.truth_boxes()[0])),
               Prompt(s.slide_id, 1, box_l0_px=(7000.0, 100.0, 7100.0, 200.0))]
    with open_slide(s.path) as slide, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = segment_slide(slide, prompts, TruthSegmenter(s.truth), tmp_path, SCHEDULE)
    assert res.prompts_dropped_outside == 1 and res.prompts == 1 and res.objects == 1
    assert any("outside" in str(w.message) for w in caught)


def test_failure_mid_run_leaves_nothing_half_written(synth, tmp_path):
    s, prompts_path = synth
    prompts = read_prompts(prompts_path, slide_id=s.slide_id)[s.slide_id]

    class Boom(TruthSegmenter):
        calls = 0

        def segment(self, jobs, lr_masks=True):
            Boom.calls += 1
            if Boom.calls == 2:
                raise RuntimeError("GPU fell off the bus")
            return super().segment(jobs, lr_masks)

    with open_slide(s.path) as slide, pytest.raises(RuntimeError, match="bus"):
        segment_slide(slide, prompts, Boom(s.truth), tmp_path, SCHEDULE, windows_per_batch=1)
    assert list(tmp_path.iterdir()) == []


def test_output_folder_that_cannot_be_written(synth, tmp_path):
    s, prompts_path = synth
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="file.txt/out cannot be written"):
        run_truth(synth, blocker / "out")


class ReferenceWsiSamSegmenter(WsiSamSegmenter):
    """The segmenter as it was: window-sized masks for all prompts from the plain decoder path, and
    for the masks that reach their HR border (``engine.completion``'s rule on the placed object) the
    prompt's LR mask from a second, plain decoder pass (``predict(..., return_lr=True)``).

    Pixels whose plain-path logit is within float rounding of 0 (``tie_logit``) may fall either
    way on the fast path (same maths, another summation order): there it takes the fast path's
    decision and counts the pixels where the two differ in ``ties_flipped``."""

    tie_logit = 1e-5
    ties_flipped = 0

    def _predict(self, items, jobs, lr_masks):
        crops, _, lr = super()._predict(items, jobs, lr_masks)
        kw, pair_index = self._prompt_kwargs(items, jobs)
        out = self.predictor.predict(pair_index=pair_index, return_lr=False, reference=True, **kw)
        crops = self._untie(out.hr_logits, crops)
        for c, stability in zip(crops, wsisam.stability_scores(torch.from_numpy(out.hr_logits)).numpy()):
            if c is not None:
                c.stability = float(stability)
        objs = [c and crop_to_object(c.mask, c.row0_px, c.col0_px, prompt, jobs[k].window, 0.0)
                for (k, prompt), c in zip(items, crops)]
        cut = [j for j, ((k, _), o) in enumerate(zip(items, objs)) if lr_masks and o is not None
               and touches_border(*hr_placement(o, jobs[k].window.pair), o.mask.shape, self.patch_px)]
        if not cut:
            return crops, out.iou, {}
        kw, pair_index = self._prompt_kwargs([items[j] for j in cut], jobs)  # the second pass
        two_pass = self.predictor.predict(pair_index=pair_index, return_lr=True, **kw)
        return crops, out.iou, dict(zip(cut, self._untie(two_pass.lr_logits, [lr.get(j) for j in cut])))

    def _untie(self, logits, fast_crops):
        """(n, S, S) plain-path logits -> masks cropped, where ties take the fast crops' decision."""
        fast = np.zeros(logits.shape, bool)
        for j, c in enumerate(fast_crops):
            if c is not None:
                fast[j, c.row0_px:c.row0_px + c.mask.shape[0], c.col0_px:c.col0_px + c.mask.shape[1]] = c.mask
        tie = np.abs(logits) < self.tie_logit
        self.ties_flipped += int((tie & (fast != (logits > 0))).sum())
        return wsisam.predictor.foreground_crops(torch.from_numpy(np.where(tie, fast, logits > 0)))


def test_many_prompts_per_window_give_the_same_objects_as_the_plain_path(synth):
    """Cropped masks from the fast decoder path = window-sized masks from the plain path, cropped;
    the LR masks for completion come from the same single decoder pass and equal the plain path's
    second pass."""
    s, _ = synth
    rng = np.random.default_rng(5)
    jobs = []
    with open_slide(s.path) as slide:
        for w, centre in enumerate([(3000.0, 2500.0), (1500.0, 1200.0)]):
            pair = slide.patch_pair(centre, 256, 1.0, 2.0)
            hr, lr = slide.read_patch_pair(pair)
            xy = rng.uniform(-220, 180, (40, 2)) + centre
            size = rng.uniform(4, 90, (40, 2))
            prompts = [Prompt(s.slide_id, 100 * w + i, box_l0_px=(x, y, x + a, y + b))
                       for i, ((x, y), (a, b)) in enumerate(zip(xy, size))]
            prompts += [Prompt(s.slide_id, 100 * w + 50 + i, points_l0_px=((x, y), (x + 30, y - 20)), point_labels=(1, 0))
                        for i, (x, y) in enumerate(xy[:6])]
            jobs.append(WindowJob(Window(s.slide_id, w, 0, pair, tuple(p.prompt_id for p in prompts)), hr, lr,
                                  prompts))
    predictor = wsisam.WsiSamPredictor(make_model("vit_test", seed=2), device="cpu")
    with count_decoded_prompts(predictor.model) as decoded:
        fast = WsiSamSegmenter(predictor).segment(jobs)
    assert decoded == {"hr": 92, "lr": 92}  # each prompt decoded once, its LR mask included
    reference = ReferenceWsiSamSegmenter(predictor)
    plain = reference.segment(jobs)
    assert reference.ties_flipped <= 10  # of 92 x 256 x 256 pixels, HR and LR
    assert len(fast) == len(plain) > 60
    assert sum(LR_MASK_KEY in a.extra for a in fast) > 10  # random weights: noise masks that reach the border
    for a, b in zip(fast, plain):
        assert (a.prompt_id, a.origin_l0_px, a.mask.shape) == (b.prompt_id, b.origin_l0_px, b.mask.shape)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert (LR_MASK_KEY in a.extra) == (LR_MASK_KEY in b.extra)  # masks at the HR border
        lr_a, lr_b = a.extra.pop(LR_MASK_KEY, None), b.extra.pop(LR_MASK_KEY, None)
        assert (lr_a is None) == (lr_b is None)
        assert lr_a is None or (lr_a.row0_px, lr_a.col0_px) == (lr_b.row0_px, lr_b.col0_px)
        assert lr_a is None or np.array_equal(lr_a.mask, lr_b.mask)
        assert a.score == pytest.approx(b.score, abs=1e-6) and a.extra.keys() == b.extra.keys()
        assert a.extra.pop("stability") == pytest.approx(b.extra.pop("stability"), abs=1e-3) and a.extra == b.extra


# -- one truth per pixel: polygons are traced from the label image after the overlap rule ---------


def label_px_counts(labels: np.ndarray) -> dict[int, int]:
    ids, counts = np.unique(labels, return_counts=True)
    return {int(i): int(n) for i, n in zip(ids, counts) if i != 0}


def assert_one_truth(result, label_mpp: float, slide_mpp: float) -> tuple[float, float]:
    """No two polygons overlap; each polygon's area is its label pixels x pixel area (<= 1%).

    Returns (total pairwise overlap in level-0 px², worst relative area difference)."""
    gdf = result.geodataframe()
    assert gdf.geometry.is_valid.all()
    left, right = gdf.sindex.query(gdf.geometry, predicate="intersects")
    pairs = left < right
    overlap = float(sum(gdf.geometry.iloc[i].intersection(gdf.geometry.iloc[j]).area
                        for i, j in zip(left[pairs], right[pairs])))
    assert overlap == 0.0
    counts = label_px_counts(label_s0(result))
    assert set(counts) == set(gdf.object_id)  # every object with pixels has a polygon, and only those
    worst = 0.0
    for row in gdf.itertuples():
        want = counts[row.object_id] * label_mpp**2
        assert row.area_um2 == pytest.approx(row.geometry.area * slide_mpp**2)
        worst = max(worst, abs(row.area_um2 - want) / want)
    assert worst <= 0.01
    return overlap, worst


@pytest.fixture(scope="module")
def overlap_run(synth, tmp_path_factory):
    """The synthetic truth plus a copy of each object shifted by a third of its width: the copies
    (higher prompt ids, same score 1.0) lose the shared pixels to the originals."""
    s, _ = synth
    t = s.truth.sort_values("object_id").reset_index(drop=True)
    shift = (t.geometry.bounds.maxx - t.geometry.bounds.minx) / 3
    copies = t.copy()
    copies["geometry"] = [shapely.affinity.translate(g, dx) for g, dx in zip(t.geometry, shift)]
    truth = gpd.GeoDataFrame(pd.concat([t, copies], ignore_index=True), geometry="geometry", crs=None)
    prompts = [Prompt(s.slide_id, i, box_l0_px=tuple(map(float, g.bounds)), class_name=c)
               for i, (g, c) in enumerate(zip(truth.geometry, truth.class_name))]
    with open_slide(s.path) as slide:
        res = segment_slide(slide, prompts, TruthSegmenter(truth), tmp_path_factory.mktemp("overlap"), SCHEDULE)
    return res, truth


def test_polygons_do_not_overlap_and_match_label_pixels(synth, overlap_run, truth_run):
    res, truth = overlap_run
    overlap, worst = assert_one_truth(res, SCHEDULE.hr_mpp, synth[0].mpp)
    print(f"overlapping truth: pairwise overlap {overlap} px², worst area difference {worst:.2e}")
    assert_one_truth(truth_run, SCHEDULE.hr_mpp, synth[0].mpp)
    gdf = res.geodataframe().set_index("prompt_id")
    n = len(truth) // 2
    originals, copies = gdf.loc[gdf.index < n], gdf.loc[gdf.index >= n]
    assert copies.lost_to_neighbour.all()  # each copy overlaps its original, which wins the tie (lower id)
    assert (copies.area_raw_um2 > copies.area_um2 * 1.05).all()
    lost = originals[originals.lost_to_neighbour]
    assert (originals.area_raw_um2[~originals.lost_to_neighbour] == originals.area_um2[~originals.lost_to_neighbour]).all()
    assert (lost.area_raw_um2 > lost.area_um2).all()
    # raw area is the object's own (pixelised) mask, final area what the overlap rule left it
    truth_area_um2 = truth.geometry.area * synth[0].mpp**2
    rel = (copies.area_raw_um2 - truth_area_um2.loc[copies.index].values).abs() / copies.area_raw_um2
    assert rel.max() < 0.1, rel
    summary = json.loads((res.labels_path.parent / "summary.json").read_text())
    assert summary["vectors"]["polygons"] == len(gdf)
    assert summary["vectors"]["objects_lost_to_neighbour"] == int(gdf.lost_to_neighbour.sum())


def test_prompts_geojson_lists_every_prompt_with_its_id(synth, overlap_run):
    res, truth = overlap_run
    fc = json.loads(res.prompts_path.read_text())
    feats = fc["features"]
    assert "crs" not in fc and len(feats) == len(truth) == res.prompts
    assert [f["properties"]["prompt_id"] for f in feats] == list(range(len(truth)))
    gdf = res.geodataframe()
    boxes = {f["properties"]["prompt_id"]: shapely.geometry.shape(f["geometry"]).bounds for f in feats}
    assert set(gdf.prompt_id) <= set(boxes)  # objects refer to their prompt by prompt_id
    w, h = synth[0].width_l0_px, synth[0].height_l0_px
    clipped = np.clip(np.array([g.bounds for g in truth.geometry]), 0, [w, h, w, h])  # the plan clips to the slide
    np.testing.assert_allclose([boxes[pid] for pid in range(len(truth))], clipped, atol=1e-6)
    assert {f["properties"]["classification"]["name"] for f in feats} == set(truth.class_name)
    again = read_prompts(res.prompts_path, slide_id=synth[0].slide_id)[synth[0].slide_id]
    np.testing.assert_allclose([p.box_l0_px for p in again], clipped, atol=1e-6)


def test_constructed_overlap_raw_area_and_lost_flag(synth, tmp_path):
    """Hand-made records across a label chunk corner (label px 1024 = level-0 px 2048): a disc A
    (score 0.9), a square B it overlaps (0.5), a square C inside A (0.1, loses everything) and
    an isolated D at a coarser mask pixel size."""
    s, _ = synth
    yy, xx = np.mgrid[:100, :100]
    disc = (yy - 49.5) ** 2 + (xx - 49.5) ** 2 < 40**2
    square = np.ones((60, 60), bool)
    records = [  # (prompt_id, mask, origin_l0_px, mask_mpp, score)
        (0, disc, (1948.0, 1948.0), 1.0, 0.9),
        (1, square, (2048.0, 2048.0), 1.0, 0.5),
        (2, np.ones((10, 10), bool), (2038.0, 2038.0), 1.0, 0.1),
        (3, np.ones((30, 30), bool), (400.0, 400.0), 2.0, 0.3),
    ]
    prompts = [Prompt(s.slide_id, pid, box_l0_px=(x, y, x + 10, y + 10), class_name="cell")
               for pid, _, (x, y), _, _ in records]
    with open_slide(s.path) as slide:
        writer = SlideWriter(slide.info(), tmp_path, 1.0, OutputConfig())
        for pid, mask, origin, mpp, score in records:
            writer.add(ObjectMask(s.slide_id, pid, mask.copy(), origin, mpp, score, "cell"))
        folder = writer.commit({}, prompts)
    gdf = gpd.read_parquet(folder / "objects.parquet").set_index("prompt_id")
    assert list(gdf.index) == [0, 1, 3]  # C has no pixel left, so no polygon
    taken = int((disc[50:, 50:] & square[:50, :50]).sum())  # B's pixels inside A (label px = 1 µm²)
    assert taken > 0
    assert gdf.loc[0, ["area_raw_um2", "area_um2", "lost_to_neighbour"]].tolist() == [disc.sum()] * 2 + [False]
    assert gdf.loc[1, ["area_raw_um2", "area_um2", "lost_to_neighbour"]].tolist() == [3600, 3600 - taken, True]
    assert gdf.loc[3, ["area_raw_um2", "area_um2", "lost_to_neighbour"]].tolist() == [3600, 3600, False]
    assert gdf.geometry.loc[0].intersection(gdf.geometry.loc[1]).area == 0
    assert len(gdf.geometry.loc[0].interiors) == 0  # C took none of A's pixels
    vectors = json.loads((folder / "summary.json").read_text())["vectors"]
    assert vectors["objects_without_pixels"] == 1 and vectors["polygons"] == 3
