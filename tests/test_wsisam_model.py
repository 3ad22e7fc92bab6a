"""WSI-SAM behaviour: pairing of prompts, aggregation, LR geometry, training freeze, bad input."""
import numpy as np
import pytest
import torch

import wsisam
from conftest import DEVICE, count_decoded_prompts, make_model, random_pair
from wsisam.geometry import hr_to_lr_mask, hr_to_lr_px, lr_to_hr_px
from wsisam.modeling import EncodedImages
from wsisam.prompts import PromptBatch


@pytest.fixture(scope="module")
def predictor():
    model = make_model("vit_test", seed=11)
    p = wsisam.WsiSamPredictor(model, device=DEVICE)
    hr, lr = random_pair(np.random.default_rng(2), model.config.img_size, n=3)
    p.set_patch_pairs(hr, lr)
    return p


BOXES = np.array([[10.0, 12.0, 80.0, 90.0], [100.0, 40.0, 220.0, 200.0], [0.0, 0.0, 255.0, 255.0],
                  [60.0, 60.0, 61.0, 61.0]])


def test_each_prompt_is_paired_with_itself(predictor):
    """N boxes give N masks, each the same as when predicted alone (the reference makes N x N)."""
    together = predictor.predict(boxes=BOXES, pair_index=[0, 1, 2, 1])
    assert together.hr_logits.shape == (4, 256, 256) and together.lr_logits.shape == (4, 256, 256)
    for i, (box, pair) in enumerate(zip(BOXES, [0, 1, 2, 1])):
        alone = predictor.predict(boxes=box[None], pair_index=[pair])
        np.testing.assert_allclose(together.hr_logits[i], alone.hr_logits[0], atol=1e-5)
        np.testing.assert_allclose(together.lr_logits[i], alone.lr_logits[0], atol=1e-5)
        np.testing.assert_allclose(together.iou[i], alone.iou[0], atol=1e-5)
    assert not np.allclose(together.hr_logits[0], together.hr_logits[1])


def test_chunked_batches_equal_one_batch(predictor):
    one = predictor.predict(boxes=BOXES, pair_index=0)
    predictor.max_prompts_per_batch = 3
    try:
        chunked = predictor.predict(boxes=BOXES, pair_index=0)
    finally:
        predictor.max_prompts_per_batch = 8
    np.testing.assert_allclose(one.hr_logits, chunked.hr_logits, atol=1e-5)


def test_points_and_masks_and_combinations(predictor):
    pts = np.array([[[50.0, 60.0], [10.0, 10.0]], [[150.0, 100.0], [200.0, 20.0]]])
    labels = np.array([[1, 0], [1, 1]])
    masks = np.full((2, 1, 64, 64), -8.0, np.float32)
    masks[:, :, 10:30, 10:30] = 8.0
    out = predictor.predict(points=pts, point_labels=labels, mask_inputs=masks, boxes=BOXES[:2], pair_index=[0, 2])
    assert out.hr_masks.shape == (2, 256, 256) and out.hr_masks.dtype == bool
    assert out.low_res_hr_logits.shape == (2, 64, 64)


def test_sum_is_twice_mean():
    """Aggregation is linear in the tokens: sum = 2 x mean without SAM's logits added."""
    mean = make_model("vit_test", seed=1, token_aggregation="mean", add_sam_logits=False)
    summ = wsisam.build_wsisam("vit_test", token_aggregation="sum", add_sam_logits=False)
    summ.load_state_dict(mean.state_dict())
    hr, lr = random_pair(np.random.default_rng(0), 256)
    outs = []
    for m in (mean, summ):
        p = wsisam.WsiSamPredictor(m, device=DEVICE)
        p.set_patch_pairs(hr, lr)
        outs.append(p.predict(boxes=BOXES[:2]))
    np.testing.assert_allclose(outs[1].hr_logits, 2 * outs[0].hr_logits, atol=1e-5)
    np.testing.assert_allclose(outs[1].lr_logits, 2 * outs[0].lr_logits, atol=1e-5)


def test_sam_logits_option():
    m = make_model("vit_test", seed=1)
    hr, lr = random_pair(np.random.default_rng(0), 256)
    p = wsisam.WsiSamPredictor(m, device=DEVICE)
    p.set_patch_pairs(hr, lr)
    with_sam = p.predict(boxes=BOXES[:1]).hr_logits
    without = p.predict(boxes=BOXES[:1], add_sam_logits=False).hr_logits
    assert not np.allclose(with_sam, without)


def test_lr_context_reaches_the_hr_mask_but_not_sam():
    m = make_model("vit_test", seed=1)
    rng = np.random.default_rng(0)
    hr, lr = random_pair(rng, 256)
    p = wsisam.WsiSamPredictor(m, device=DEVICE)
    p.set_patch_pairs(hr, lr)
    a, sa = p.predict(boxes=BOXES[:1]).hr_logits, p.predict_sam(boxes=BOXES[:1])[0]
    p.set_patch_pairs(hr, 255 - lr)
    b, sb = p.predict(boxes=BOXES[:1]).hr_logits, p.predict_sam(boxes=BOXES[:1])[0]
    assert np.abs(a - b).max() > 1e-3
    np.testing.assert_array_equal(sa, sb)


# --- geometry -----------------------------------------------------------------------------
def render_pair(square_hr_px: tuple[int, int, int, int], img_px: int, ratio: int):
    """A fine-scale canvas with a bright square; HR = central crop, LR = ratio-binned larger crop."""
    canvas_px = img_px * ratio
    canvas = np.zeros((canvas_px, canvas_px))
    off = (canvas_px - img_px) // 2
    x0, y0, x1, y1 = square_hr_px  # inclusive pixel indices in HR
    canvas[off + y0: off + y1 + 1, off + x0: off + x1 + 1] = 1.0
    hr = canvas[off: off + img_px, off: off + img_px]
    lr = canvas.reshape(img_px, ratio, img_px, ratio).mean(axis=(1, 3))
    return hr, lr


def centroid(img):
    ys, xs = np.indices(img.shape)
    return np.array([(xs * img).sum() / img.sum(), (ys * img).sum() / img.sum()])


@pytest.mark.parametrize("img_px,ratio", [(1024, 2), (240, 3)])
def test_lr_mapping_follows_concentric_geometry(img_px, ratio):
    # A square aligned to the LR pixel grid, so the binned LR image is exact.
    a, b, c, d = (int(img_px * f / ratio) for f in (0.3, 0.55, 0.45, 0.7))
    square = (ratio * a, ratio * b, ratio * c - 1, ratio * d - 1)
    hr, lr = render_pair(square, img_px, ratio)
    assert set(np.unique(lr)) == {0.0, 1.0}
    box_lr = hr_to_lr_px(torch.tensor(square, dtype=torch.float64), img_px, ratio).numpy()
    # The box corners name the extreme pixels' centres; the LR square's mass centre must agree.
    np.testing.assert_allclose((box_lr[:2] + box_lr[2:]) / 2, centroid(lr), atol=1e-9)
    # Its extent in LR pixels: (box width in HR pixels + 1) / ratio.
    assert np.isclose(box_lr[2] - box_lr[0] + 1 / ratio, (square[2] - square[0] + 1) / ratio)
    assert np.isclose(lr.sum(), (square[2] - square[0] + 1) * (square[3] - square[1] + 1) / ratio**2)
    np.testing.assert_allclose(lr_to_hr_px(torch.tensor(box_lr), img_px, ratio).numpy(), square)


def test_reference_mapping_for_1024_and_ratio_2():
    """The reference's x/2 + 256 treats coordinates as edges; with SAM's centre convention it is 255.75."""
    x = torch.tensor([0.0, 512.0, 1023.0])
    np.testing.assert_allclose(hr_to_lr_px(x, 1024, 2).numpy(), x.numpy() / 2 + 255.75)


def test_mask_input_mapping_puts_the_mask_in_the_centre():
    low = 64
    m = torch.full((1, 1, low, low), -10.0)
    m[0, 0, 16:32, 40:56] = 10.0
    lr = hr_to_lr_mask(m, ratio=2.0)[0, 0].numpy()
    fg = (lr > 0).astype(float)
    expect = (np.array([48.0, 24.0]) - low / 2) / 2 + low / 2 - 0.5  # HR mass centre (47.5, 23.5)+0.5
    np.testing.assert_allclose(centroid(fg), expect, atol=0.3)
    assert np.isclose(fg.sum(), 16 * 16 / 4, atol=4)
    assert lr.min() == pytest.approx(-10.0)  # outside the HR field: background


def test_prompt_batch_lr_mapping_round_trip():
    b = PromptBatch(boxes=torch.tensor([[0.0, 0.0, 255.0, 255.0]]))
    lr = b.to_lr(256, 2.0)
    np.testing.assert_allclose(lr.boxes.numpy(), [[63.75, 63.75, 191.25, 191.25]])


# --- training --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vit_test", "vit_tiny_test"])
def test_frozen_training_moves_only_wsi_parameters(name):
    model = make_model(name, seed=3).freeze_sam().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wsi_names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert wsi_names and all(n.split(".")[1].startswith(wsisam.modeling.WSI_PARAM_PREFIXES) for n in wsi_names)
    assert sum(p.numel() for p in model.wsi_parameters()) == 2 * sum(
        p.numel() for p in model.mask_decoder_hr.wsi_parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    rng = np.random.default_rng(0)
    hr_img, lr_img = (torch.from_numpy(a) for a in random_pair(rng, 256, n=2))
    hr, lr = model.encode(hr_img), model.encode(lr_img)
    hr_f, lr_f = model.image_features(hr, lr)
    prompts = PromptBatch(boxes=torch.tensor([[20.0, 20.0, 120.0, 140.0], [50.0, 10.0, 200.0, 90.0]]))
    out = model.forward_wsi(hr, hr_f, lr, lr_f, prompts, prompts.to_lr(256, 2.0), add_sam_logits=False)
    target = torch.zeros_like(out.hr_logits)
    target[..., 10:30, 10:30] = 1
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.hr_logits, target) + \
        torch.nn.functional.binary_cross_entropy_with_logits(out.lr_logits, target)
    loss.backward()
    for n, p in model.named_parameters():
        if n in wsi_names:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= wsi_names  # SAM's weights and BN statistics bit-identical


# --- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(), "no prompts"),
    (dict(boxes=np.zeros((0, 4))), "no prompts"),
    (dict(boxes=[[10, 10, 300, 50]]), "outside the 256 x 256 patch"),
    (dict(boxes=[[-1, 10, 30, 50]]), "outside"),
    (dict(boxes=[[10, np.nan, 30, 50]]), "NaN"),
    (dict(boxes=[[30, 10, 10, 50]]), "x1 >= x0"),
    (dict(boxes=[[1, 2, 3]]), r"shape \(N, 4\)"),
    (dict(points=[[[10.0, 20.0]]]), "point_labels"),
    (dict(points=[[[10.0, 256.0]]], point_labels=[[1]]), "outside"),
    (dict(points=[[[10.0, np.inf]]], point_labels=[[1]]), "NaN or infinite"),
    (dict(points=[[[10.0, 20.0]]], point_labels=[[2]]), "1 \\(positive\\) or 0"),
    (dict(points=[[[10.0, 20.0]]], point_labels=[[1, 1]]), "does not match"),
    (dict(boxes=[[1, 2, 3, 4]], points=[[[1.0, 1.0]], [[2.0, 2.0]]], point_labels=[[1], [1]]), "disagree"),
    (dict(mask_inputs=np.zeros((1, 1, 32, 32))), r"\(N, 1, 64, 64\)"),
    (dict(boxes=[[1, 2, 3, 4]], pair_index=[5]), "pair_index out of range"),
])
def test_bad_prompts_raise_value_error(predictor, kwargs, match):
    kwargs.setdefault("pair_index", None if "pair_index" in kwargs else 0)
    with pytest.raises(ValueError, match=match):
        predictor.predict(**kwargs)


def test_pair_index_required_with_several_pairs(predictor):
    with pytest.raises(ValueError, match="give pair_index"):
        predictor.predict(boxes=[[1, 2, 3, 4]])


@pytest.mark.parametrize("hr,lr,match", [
    (np.zeros((128, 128, 3), np.uint8), np.zeros((128, 128, 3), np.uint8), r"\(B, 256, 256, 3\)"),
    (np.zeros((256, 256), np.uint8), np.zeros((256, 256), np.uint8), "shape"),
    (np.zeros((256, 256, 3), np.float32), np.zeros((256, 256, 3), np.float32), "uint8"),
    (np.zeros((2, 256, 256, 3), np.uint8), np.zeros((1, 256, 256, 3), np.uint8), "2 images but lr_images has 1"),
])
def test_bad_images_raise_value_error(hr, lr, match):
    p = wsisam.WsiSamPredictor(make_model("vit_test"), device=DEVICE)
    with pytest.raises(ValueError, match=match):
        p.set_patch_pairs(hr, lr)


def test_predict_before_set_pairs():
    p = wsisam.WsiSamPredictor(make_model("vit_test"), device=DEVICE)
    with pytest.raises(ValueError, match="set_patch_pairs"):
        p.predict(boxes=[[1, 2, 3, 4]])


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown WSI-SAM backbone 'vit_x'.*vit_tiny"):
        wsisam.build_wsisam("vit_x")


def test_bf16_autocast_runs_and_agrees():
    m = make_model("vit_test", seed=1)
    hr, lr = random_pair(np.random.default_rng(0), 256)
    outs = []
    for dtype in (None, torch.bfloat16):
        p = wsisam.WsiSamPredictor(m, device=DEVICE, amp_dtype=dtype)
        p.set_patch_pairs(hr, lr)
        outs.append(p.predict(boxes=BOXES[:2]).hr_logits)
    assert np.corrcoef(outs[0].ravel(), outs[1].ravel())[0, 1] > 0.95


def test_registry_builds_every_backbone_shape():
    for name in ("vit_test", "vit_tiny_test"):
        m = wsisam.wsisam_model_registry[name]()
        assert isinstance(m, wsisam.WsiSam) and not m.training
    cfg = wsisam.get_config("vit_h")
    assert cfg.encoder.early_dim == 1280 and cfg.embedding_px == 64 and cfg.low_res_px == 256


@pytest.mark.parametrize("name,expected", [("vit_tiny", 448_512), ("vit_b", 1_071_104)])
def test_new_parameter_counts_match_the_paper_design(name, expected):
    m = wsisam.build_wsisam(name)
    assert sum(p.numel() for p in m.mask_decoder_hr.wsi_parameters()) == expected


def test_skipping_lr_masks_keeps_hr_masks(predictor):
    full = predictor.predict(boxes=BOXES, pair_index=[0, 1, 2, 1])
    hr_only = predictor.predict(boxes=BOXES, pair_index=[0, 1, 2, 1], return_lr=False)
    assert hr_only.lr_logits is None and hr_only.lr_masks is None
    np.testing.assert_allclose(full.hr_logits, hr_only.hr_logits, atol=1e-6)


# --- the fast HR-only decoder path equals the plain one --------------------------------------
@pytest.fixture(scope="module", params=["vit_test", "vit_tiny_test"])
def encoded(request):
    model = make_model(request.param, seed=4)
    hr_img, lr_img = (torch.from_numpy(a) for a in random_pair(np.random.default_rng(0), 256, n=3))
    with torch.inference_mode():
        hr, lr = model.encode(hr_img), model.encode(lr_img)
        return model, hr, lr, *model.image_features(hr, lr)


@pytest.mark.parametrize("n", [1, 8, 32])
@pytest.mark.parametrize("kind", ["boxes", "points", "boxes+masks"])
def test_fast_hr_path_equals_reference(encoded, kind, n):
    model, hr, lr, hr_f, lr_f = encoded
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 200, (n, 2))
    masks = torch.as_tensor(rng.normal(0, 4, (n, 1, 64, 64)), dtype=torch.float32) if "masks" in kind else None
    if kind == "points":
        prompts = PromptBatch(points=torch.as_tensor(np.stack([xy, xy + 30], 1), dtype=torch.float32),
                              point_labels=torch.tensor([[1, 0]] * n))
    else:
        prompts = PromptBatch(boxes=torch.as_tensor(np.hstack([xy, xy + rng.uniform(2, 55, (n, 2))]),
                                                    dtype=torch.float32), mask_inputs=masks)
    for idx in (torch.zeros(n, dtype=torch.long), torch.as_tensor(rng.integers(0, 3, n))):
        with torch.inference_mode():
            ref = model.forward_wsi(EncodedImages(hr.embeddings[idx], None), hr_f[idx],
                                    EncodedImages(lr.embeddings[idx], None), lr_f[idx], prompts, prompts.to_lr(256, 2.0))
            fast, iou = model.forward_hr(hr, hr_f, lr, lr_f, idx, prompts, prompts.to_lr(256, 2.0))
            out = model.forward_fast(hr, hr_f, lr, idx, prompts, prompts.to_lr(256, 2.0))
            some = torch.arange(0, n, 2)  # the LR masks of some prompts, from the same pass
            lr_logits = model.fast_lr_logits(out, lr_f, idx, some)
        torch.testing.assert_close(fast, ref.hr_logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(iou, ref.iou, rtol=0, atol=1e-5)
        assert torch.equal(out.hr_logits, fast) and torch.equal(out.iou, iou)
        torch.testing.assert_close(lr_logits, ref.lr_logits[some], rtol=0, atol=1e-5)
        assert ref.hr_logits.std() > 0.01


def test_predictor_fast_path_and_crops_equal_reference(predictor):
    pairs = [0, 1, 2, 1]
    ref = predictor.predict(boxes=BOXES, pair_index=pairs, return_lr=False, reference=True)
    fast = predictor.predict(boxes=BOXES, pair_index=pairs, return_lr=False)
    np.testing.assert_allclose(fast.hr_logits, ref.hr_logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.iou, ref.iou, rtol=0, atol=1e-5)
    crops, iou, lr = predictor.predict_mask_crops(boxes=BOXES, pair_index=pairs)
    np.testing.assert_allclose(iou, ref.iou, rtol=0, atol=1e-5)
    assert lr == {}  # none asked for
    for crop, mask, logits in zip(crops, ref.hr_masks, ref.hr_logits):
        assert_crop_is_mask(crop, mask, logits)


def assert_crop_is_mask(crop, mask, logits):
    """A mask crop (or None) is the (S, S) mask cropped to its foreground, but where the plain
    path's logits are within float rounding of 0 (the fast path sums in another order)."""
    whole = np.zeros_like(mask)
    if crop is not None:
        h, w = crop.mask.shape
        assert crop.mask[0].any() and crop.mask[-1].any() and crop.mask[:, 0].any() and crop.mask[:, -1].any()
        whole[crop.row0_px:crop.row0_px + h, crop.col0_px:crop.col0_px + w] = crop.mask
    sure = np.abs(logits) > 1e-5
    np.testing.assert_array_equal(whole[sure], mask[sure])


def test_lr_masks_from_the_same_pass_equal_the_plain_paths(predictor):
    """``lr_where`` picks prompts by their HR crop; their LR masks come from the HR masks' decoder
    pass and equal ``predict``'s ``lr_masks`` (the plain path that decodes both); the HR masks do
    not change; each prompt goes through the decoders once."""
    boxes, pairs = np.vstack([BOXES, np.clip(BOXES + [30, 0, 30, 0], 0, 255)]), [0, 1, 2, 1, 2, 0, 1, 0]
    chosen = lambda crop: crop.mask.sum() > 38_000  # noqa: E731  (the larger half of these random masks)
    with count_decoded_prompts(predictor.model) as decoded:
        crops, iou, lr = predictor.predict_mask_crops(boxes=boxes, pair_index=pairs, lr_where=chosen)
    assert decoded == {"hr": len(boxes), "lr": len(boxes)}
    hr_only, hr_only_iou, _ = predictor.predict_mask_crops(boxes=boxes, pair_index=pairs)
    np.testing.assert_array_equal(iou, hr_only_iou)
    for a, b in zip(crops, hr_only):
        assert (a is None) == (b is None) and (a is None or (a.row0_px, a.col0_px) == (b.row0_px, b.col0_px)
                                              and np.array_equal(a.mask, b.mask) and a.stability == b.stability)
    want = [k for k, c in enumerate(crops) if c is not None and chosen(c)]
    assert sorted(lr) == want and 0 < len(want) < len(boxes)
    ref = predictor.predict(boxes=boxes, pair_index=pairs, return_lr=True)
    for k, crop in lr.items():
        assert_crop_is_mask(crop, ref.lr_masks[k], ref.lr_logits[k])
    assert sum(ref.lr_masks[want].any((1, 2))) == sum(c is not None for c in lr.values()) > 0



def test_encoder_batch_by_device_and_image_size():
    """On a CPU 1024 px images are encoded one at a time (faster there); 256 px ones and any image
    on a GPU in fours; an explicit size is kept."""
    small = wsisam.WsiSamPredictor(make_model("vit_test"), device="cpu")
    large = wsisam.WsiSamPredictor(wsisam.build_wsisam("vit_tiny"), device="cpu")
    assert (small.encoder_batch_size, large.encoder_batch_size) == (4, 1)
    assert wsisam.WsiSamPredictor(make_model("vit_test"), device="cpu", encoder_batch_size=2).encoder_batch_size == 2
