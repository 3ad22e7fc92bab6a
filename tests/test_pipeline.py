"""End to end on generated slides: prompt file -> windows -> masks -> OME-Zarr labels + polygons."""
import json
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import shapely
import torch
import zarr
from affine import Affine

import wsisam
from conftest import make_model
from engine.pipeline import OutputConfig, segment_slide
from engine.prompts import read_prompts
from engine.records import Prompt
from engine.scheduler import ScheduleConfig, Window, schedule_stats, schedule_windows
from engine.segmenters import TruthSegmenter, WindowJob, WsiSamSegmenter, prompt_arrays_hr_px
from engine.slides import open_slide
from engine.synthetic import make_synthetic_slide

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

        def segment(self, jobs):
            Boom.calls += 1
            if Boom.calls == 2:
                raise RuntimeError("GPU fell off the bus")
            return super().segment(jobs)

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
    """The segmenter as it was: window-sized masks for all prompts from the plain decoder path.

    Pixels whose plain-path logit is within float rounding of 0 (``tie_logit``) may fall either
    way on the fast path (same maths, another summation order): there it takes the fast path's
    decision and counts the pixels where the two differ in ``ties_flipped``."""

    tie_logit = 1e-5
    ties_flipped = 0

    def _predict(self, items, jobs):
        crops, _ = super()._predict(items, jobs)
        arrays = [prompt_arrays_hr_px([p], jobs[k].window) for k, p in items]
        kw = {key: None if arrays[0][key] is None else np.concatenate([a[key] for a in arrays])
              for key in ("boxes", "points", "point_labels")}
        out = self.predictor.predict(pair_index=np.array([k for k, _ in items]), return_lr=False, reference=True,
                                     **kw)
        fast = np.zeros_like(out.hr_masks)
        for j, c in enumerate(crops):
            if c is not None:
                fast[j, c.row0_px:c.row0_px + c.mask.shape[0], c.col0_px:c.col0_px + c.mask.shape[1]] = c.mask
        tie = np.abs(out.hr_logits) < self.tie_logit
        self.ties_flipped += int((tie & (fast != out.hr_masks)).sum())
        return np.where(tie, fast, out.hr_masks), out.iou


def test_many_prompts_per_window_give_the_same_objects_as_the_plain_path(synth):
    """Cropped masks from the fast decoder path = window-sized masks from the plain path, cropped."""
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
    fast = WsiSamSegmenter(predictor).segment(jobs)
    reference = ReferenceWsiSamSegmenter(predictor)
    plain = reference.segment(jobs)
    assert reference.ties_flipped <= 10  # of 92 x 256 x 256 pixels
    assert len(fast) == len(plain) > 60
    for a, b in zip(fast, plain):
        assert (a.prompt_id, a.origin_l0_px, a.mask.shape) == (b.prompt_id, b.origin_l0_px, b.mask.shape)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.score == pytest.approx(b.score, abs=1e-6) and a.extra == b.extra
