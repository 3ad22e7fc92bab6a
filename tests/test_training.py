"""Training: losses, prompt sampling, samples from annotated slides, the two stages, checkpoints
and resume, the CLI, and the committed demo model."""
from __future__ import annotations

import hashlib
import json

import geopandas as gpd
import numpy as np
import pytest
import torch

import wsisam
from engine.slides import open_slide
from engine.support.synthetic import make_synthetic_slide
from engine.support.training_data import (PatchPairDataset, SampleConfig, SampleSet, extract_samples, load_samples,
                                  read_annotations, split_by_object)
from wsisam.training import (PromptSamplingConfig, TrainConfig, Trainer, dice_loss, mask_boxes, noisy_boxes,
                             sample_prompts, wsi_loss)

S = 256  # test-size model patch side


def _hash(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def sam_state(model: wsisam.WsiSam) -> dict[str, torch.Tensor]:
    wsi = {id(p) for p in model.wsi_parameters()}
    return {n: p for n, p in model.named_parameters() if id(p) not in wsi} | dict(model.named_buffers())


def wsi_state(model: wsisam.WsiSam) -> dict[str, torch.Tensor]:
    wsi = {id(p) for p in model.wsi_parameters()}
    return {n: p for n, p in model.named_parameters() if id(p) in wsi}


def ellipse_masks(n: int, rng: np.random.Generator, side: int = S) -> torch.Tensor:
    yy, xx = np.mgrid[:side, :side]
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(40, side - 40, 2)
        a, b = rng.uniform(8, 60, 2)
        out.append(((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1)
    return torch.from_numpy(np.stack(out))


# --- losses and prompts ----------------------------------------------------------------------


def test_losses():
    t = ellipse_masks(3, np.random.default_rng(0)).float()
    good = (t * 2 - 1)[:, None] * 20
    assert dice_loss(good, t).max() < 1e-3
    assert (dice_loss(-good, t) > 0.95).all()
    low = torch.nn.functional.avg_pool2d(good, 4)  # low-res logits are upsampled to the target
    assert dice_loss(low, t).max() < 0.05
    terms = wsi_loss(good, t, -good, t, lambda_hr=0.25)
    assert terms.total.item() == pytest.approx(0.25 * terms.hr + 0.75 * terms.lr, rel=1e-5)
    assert terms.lr > terms.hr


def test_prompt_sampling_boxes_in_patch_points_in_mask():
    rng = np.random.default_rng(1)
    hr = ellipse_masks(64, rng)
    lr = ellipse_masks(64, rng)
    g = torch.Generator().manual_seed(0)
    exact = mask_boxes(hr)
    boxes = noisy_boxes(hr, g, 0.2)
    assert (boxes >= 0).all() and (boxes <= S - 1).all() and (boxes[:, 2:] >= boxes[:, :2]).all()
    wh = exact[:, 2:] - exact[:, :2] + 1
    centre_shift = ((boxes[:, 2:] + boxes[:, :2]) - (exact[:, 2:] + exact[:, :2])).abs() / 2
    assert (centre_shift <= 0.1 * wh + 1e-4).all()  # centre: up to ±10 % of the size
    assert (boxes[:, 2:] - boxes[:, :2] + 1 <= 1.2 * wh + 1e-4).all()  # size: up to +20 %
    assert not torch.equal(boxes, exact)
    cfg = PromptSamplingConfig(num_points=10)
    groups = sample_prompts(hr.float(), lr.float(), S, 2.0, 64, g, cfg)
    rows = torch.cat([gr.index for gr in groups])
    assert sorted(rows.tolist()) == list(range(64))  # every sample exactly one prompt
    assert {gr.kind for gr in groups} == {"box", "points", "mask"}
    for gr in groups:
        if gr.kind == "box":
            assert (gr.hr.boxes >= 0).all() and (gr.hr.boxes <= S - 1).all()
            torch.testing.assert_close(gr.lr.boxes, gr.hr.boxes / 2 + 63.75)  # the model's own HR->LR map
        elif gr.kind == "points":
            assert gr.hr.points.shape == (len(gr.index), 10, 2) and (gr.hr.point_labels == 1).all()
            for pts, m in ((gr.hr.points, hr[gr.index]), (gr.lr.points, lr[gr.index])):
                x, y = pts[..., 0].long(), pts[..., 1].long()
                assert m[torch.arange(len(m))[:, None], y, x].all()  # every point inside its mask
        else:
            assert gr.hr.mask_inputs.shape == (len(gr.index), 1, 64, 64)
            coarse = gr.hr.mask_inputs[:, 0] > 0
            truth = torch.nn.functional.adaptive_avg_pool2d(hr[gr.index].float()[:, None], 64)[:, 0] > 0.5
            iou = (coarse & truth).sum() / (coarse | truth).sum()
            assert 0.4 < iou < 0.99  # near the truth, but not the truth


# --- samples from slides ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small slide with ducts, nests and 2 context objects, its truth file and samples."""
    d = tmp_path_factory.mktemp("train")
    s = make_synthetic_slide(d / "tiny.ome.tif", 3072, 3072, mpp=0.5, n_objects=10, n_large=0, context_objects=2,
                             seed=5)
    truth_path = s.write_truth(d / "tiny.geojson")
    cfg = SampleConfig(patch_px=S, samples_per_object=3, jitter_in_box=True, seed=0)
    samples = load_samples(s.path, truth_path, cfg, cache_dir=d / "cache")
    return s, truth_path, cfg, samples, d


def test_annotations_read_from_geojson_and_geoparquet(tiny, tmp_path):
    s, truth_path, *_ = tiny
    a = read_annotations(truth_path)
    assert a.object_id.tolist() == s.truth.object_id.tolist()
    assert a.class_name.tolist() == s.truth.class_name.tolist()
    assert all(g.hausdorff_distance(t) < 0.01 for g, t in zip(a.geometry, s.truth.geometry))
    s.truth.to_parquet(tmp_path / "truth.parquet")
    b = read_annotations(tmp_path / "truth.parquet")
    assert b.class_name.tolist() == s.truth.class_name.tolist() and len(b) == len(s.truth)


def test_samples_hold_each_object_and_its_masks(tiny):
    s, truth_path, cfg, samples, d = tiny
    assert len(samples) == 3 * len(s.truth)
    assert samples.hr.shape == (len(samples), S, S, 3) and samples.hr_mask.dtype == bool
    truth = s.truth.set_index("object_id")
    for i in range(len(samples)):
        g = truth.geometry.loc[samples.object_id[i]]
        hr_area_um2 = samples.hr_mask[i].sum() * cfg.hr_mpp**2
        cx, cy = samples.centre_l0_px[i]
        half = S / 2 * cfg.hr_mpp / s.mpp
        from shapely.geometry import box

        inside = g.intersection(box(cx - half, cy - half, cx + half, cy + half)).area * s.mpp**2
        assert hr_area_um2 == pytest.approx(inside, rel=0.1, abs=60)
        assert samples.lr_mask[i].sum() * cfg.lr_mpp**2 == pytest.approx(
            g.intersection(box(cx - 2 * half, cy - 2 * half, cx + 2 * half, cy + 2 * half)).area * s.mpp**2,
            rel=0.1, abs=200)
        # the object's pixels are where the picture says (ducts' lumens are holes: near-white)
        if samples.class_name[i] != "dcis":
            rgb = samples.hr[i][samples.hr_mask[i]].astype(float).mean(0)
            assert rgb[0] < 180
    # windows are jittered: not all centred on the objects' box centres
    centres = np.array([truth.geometry.loc[o].bounds for o in samples.object_id])
    offsets = samples.centre_l0_px - (centres[:, :2] + centres[:, 2:]) / 2
    assert np.abs(offsets).max() > 20
    # the cache gives the same arrays back
    again = load_samples(s.path, truth_path, cfg, cache_dir=d / "cache")
    assert len(list((d / "cache").glob("*.npz"))) == 1
    assert np.array_equal(again.hr, samples.hr) and np.array_equal(again.lr_mask, samples.lr_mask)
    tr, va = split_by_object(samples, 0.2, seed=0)
    assert set(samples.object_id[tr]).isdisjoint(samples.object_id[va]) and len(tr) + len(va) == len(samples)


def test_augmentation_keeps_pairs_concentric(tiny):
    *_, samples, _ = tiny
    ds = PatchPairDataset(samples, augment=True, color_jitter=0.2, seed=3)
    changed = 0
    for i in range(len(samples)):
        it = ds[i]
        hr_m, lr_m = it["hr_mask"].float(), it["lr_mask"].float()
        # the HR mask, halved, is the LR mask's centre: HR and LR were flipped/rotated together
        half = torch.nn.functional.avg_pool2d(hr_m[None, None], 2)[0, 0]
        centre = lr_m[S // 4:3 * S // 4, S // 4:3 * S // 4]
        assert (half.round() != centre).float().mean() < 0.03
        changed += not torch.equal(it["hr_mask"], torch.from_numpy(samples.hr_mask[i]))
    assert changed > len(samples) // 3
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["hr"], PatchPairDataset(samples, seed=3)[0]["hr"])
    plain = PatchPairDataset(samples, augment=False)[0]
    assert torch.equal(plain["hr"], torch.from_numpy(samples.hr[0]))


# --- the trainer -----------------------------------------------------------------------------


def _sets(samples: SampleSet):
    tr, va = split_by_object(samples, 0.25, seed=0)
    return PatchPairDataset(samples.select(tr), seed=0), PatchPairDataset(samples.select(va), augment=False)


def _model(seed: int = 0) -> wsisam.WsiSam:
    torch.manual_seed(seed)
    return wsisam.build_wsisam("vit_test")


def test_stage_sam_loss_falls_and_dice_rises(tiny):
    *_, samples, _ = tiny
    train, val = _sets(samples)
    model = _model()
    wsi_before = _hash(wsi_state(model))
    trainer = Trainer(model, TrainConfig(stage="sam", epochs=6, batch_size=4, seed=0, progress=False, verbose=False,
                                         lr_schedule="cosine", warmup_steps=5), train, val)
    before = trainer.validate()["dice"]
    records = trainer.fit()
    assert records[-1].loss < 0.7 * records[0].loss
    assert records[-1].val_dice > before + 0.2 and records[-1].val_dice > 0.6, (before, records)
    assert _hash(wsi_state(model)) == wsi_before  # stage sam leaves the WSI parameters alone
    for k, v in model.mask_decoder_hr.sam_state_dict().items():  # both decoders carry the same SAM
        assert torch.equal(v, model.mask_decoder_lr.state_dict()[k]), k


def test_stage_wsi_trains_only_wsi_parameters(tiny):
    *_, samples, _ = tiny
    train, val = _sets(samples)
    model = _model(1)
    sam_before = _hash(sam_state(model))
    wsi_before = _hash(wsi_state(model))
    trainer = Trainer(model, TrainConfig(stage="wsi", epochs=2, batch_size=4, seed=0, progress=False, verbose=False),
                      train, val)
    before = trainer.validate()
    records = trainer.fit()
    assert _hash(sam_state(model)) == sam_before  # SAM's weights (and buffers) did not move
    assert _hash(wsi_state(model)) != wsi_before
    assert records[-1].loss_lr is not None and records[-1].loss < records[0].loss * 1.05
    assert records[-1].val_dice_sam == pytest.approx(before["dice_sam"], abs=1e-6)


def test_resume_continues_from_the_saved_epoch(tiny, tmp_path):
    *_, samples, _ = tiny
    small = samples.select(np.arange(12))
    train, val = PatchPairDataset(small, seed=0), PatchPairDataset(small.select(np.arange(4)), augment=False)
    cfg = dict(stage="wsi", batch_size=4, seed=3, progress=False, verbose=False)
    straight = Trainer(_model(2), TrainConfig(epochs=2, **cfg), train, val, out_dir=tmp_path / "a")
    straight.fit()
    first = Trainer(_model(2), TrainConfig(epochs=1, **cfg), train, val, out_dir=tmp_path / "b")
    first.fit()
    state = json.loads((tmp_path / "b" / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and (tmp_path / "b" / state["optimizer"]).is_file()
    resumed = Trainer(_model(99), TrainConfig(epochs=2, **cfg), train, val, out_dir=tmp_path / "b")
    records = resumed.fit(resume=True)
    assert [r.epoch for r in records] == [1, 2]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # exactly where the uninterrupted run is
    lines = (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    loaded = wsisam.load_wsisam(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(loaded.state_dict()[k], b[k]) for k in b)


def test_fp16_weights_load_as_fp32(tmp_path):
    model = _model(4).eval()
    path = wsisam.save_wsisam(_model(4).half(), tmp_path / "half.safetensors")
    loaded = wsisam.load_wsisam(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v.half().float(), rtol=0, atol=0)


def test_train_command_writes_model_and_log(tiny, tmp_path):
    from engine.cli import main

    s, truth_path, *_ = tiny
    out = tmp_path / "run"
    rc = main(["train", "--slides", str(s.path), "--annotations", str(truth_path), "--backbone", "vit_test",
               "--stage", "both", "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.2", "--seed", "0",
               "--out", str(out), "--no-progress", "--fp16-weights"])
    assert rc == 0
    model = wsisam.load_wsisam(out / "model.safetensors")
    assert model.config.name == "vit_test"
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [("sam", 1), ("wsi", 1)]
    assert all(r["val_dice"] is not None and r["loss"] > 0 for r in log)
    assert (out / "stage_wsi" / "trainer_state.json").is_file()


# --- the committed demo model ----------------------------------------------------------------


def test_demo_model_segments_a_fresh_slide():
    from engine.support.demo_eval import DEMO_MODEL_PATH, evaluate_demo_model

    assert DEMO_MODEL_PATH.stat().st_size < 5 * 2**20  # "a few MB at most"
    report = evaluate_demo_model(DEMO_MODEL_PATH, seed=2024, max_objects=12)
    assert report["n_objects"] == 12 and report["n_context"] >= 2
    assert report["wsi"]["mean_dice"] >= 0.8, report
