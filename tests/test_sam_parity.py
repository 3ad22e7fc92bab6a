"""Our SAM path equals segment-anything's own SamPredictor with the same weights."""
import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, Sam

import wsisam
from wsisam.modeling.wsisam import vit_encoder_kwargs
from conftest import DEVICE, make_model


def reference_sam(model: wsisam.WsiSam) -> Sam:
    """segment-anything's Sam holding exactly our frozen SAM weights."""
    plain_encoder = ImageEncoderViT(**vit_encoder_kwargs(model.config))
    plain_encoder.load_state_dict(model.image_encoder.state_dict(), strict=True)
    dec = MaskDecoder(transformer_dim=model.config.transformer_dim, transformer=model.mask_decoder_hr.transformer,
                      num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=model.config.iou_head_hidden_dim)
    sam_keys = {k: v for k, v in model.mask_decoder_hr.state_dict().items() if k in dec.state_dict()}
    dec.load_state_dict(sam_keys, strict=True)
    return Sam(plain_encoder, model.prompt_encoder, dec, list(model.config.pixel_mean),
               list(model.config.pixel_std)).eval()


@pytest.fixture(scope="module")
def pair():
    model = make_model("vit_test", seed=3)
    rng = np.random.default_rng(1)
    s = model.config.img_size
    image = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    ours = wsisam.WsiSamPredictor(model, device=DEVICE)
    ours.set_patch_pairs(image, rng.integers(0, 256, (s, s, 3), dtype=np.uint8))
    theirs = SamPredictor(reference_sam(model).to(DEVICE))
    theirs.set_image(image)
    return ours, theirs


def test_image_embedding_matches(pair):
    ours, theirs = pair
    torch.testing.assert_close(ours._hr.embeddings, theirs.features, rtol=0, atol=1e-5)


@pytest.mark.parametrize("multimask", [False, True])
def test_box_prompts_match_sam_predictor(pair, multimask):
    ours, theirs = pair
    box = np.array([30.0, 40.0, 150.0, 200.0])
    masks, iou, _ = theirs.predict(box=box, multimask_output=multimask, return_logits=True)
    logits, our_iou = ours.predict_sam(boxes=box[None], multimask_output=multimask)
    np.testing.assert_allclose(logits[0], masks, atol=1e-5, rtol=0)
    np.testing.assert_allclose(our_iou[0], iou, atol=1e-5, rtol=0)
    assert masks.std() > 0.01  # the comparison is not between two constant images


def test_point_prompts_match_sam_predictor(pair):
    ours, theirs = pair
    pts = np.array([[100.0, 120.0], [20.0, 30.0], [200.0, 60.0]])
    labels = np.array([1, 0, 1])
    masks, iou, _ = theirs.predict(point_coords=pts, point_labels=labels, multimask_output=False, return_logits=True)
    logits, our_iou = ours.predict_sam(points=pts[None], point_labels=labels[None])
    np.testing.assert_allclose(logits[0], masks, atol=1e-5, rtol=0)
    np.testing.assert_allclose(our_iou[0], iou, atol=1e-5, rtol=0)


def test_batched_boxes_match_predict_torch(pair):
    ours, theirs = pair
    boxes = np.array([[10.0, 10.0, 90.0, 80.0], [100.0, 50.0, 250.0, 240.0], [0.0, 0.0, 255.0, 255.0]])
    masks, iou, _ = theirs.predict_torch(None, None, boxes=torch.as_tensor(boxes, dtype=torch.float32),
                                         multimask_output=False, return_logits=True)
    logits, our_iou = ours.predict_sam(boxes=boxes)
    np.testing.assert_allclose(logits, masks.cpu().numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(our_iou, iou.cpu().numpy(), atol=1e-5, rtol=0)


def test_early_feature_is_first_global_block_output():
    model = make_model("vit_test", seed=5)
    enc = model.image_encoder
    first_global = next(i for i, b in enumerate(enc.blocks) if b.window_size == 0)
    captured = {}
    handle = enc.blocks[first_global].register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    x = torch.randn(1, 3, 256, 256, device=DEVICE)
    enc = enc.to(DEVICE)
    with torch.no_grad():
        _, early = enc(x)
    handle.remove()
    assert first_global == 1
    torch.testing.assert_close(early, captured["x"], rtol=0, atol=0)
