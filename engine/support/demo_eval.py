"""The demo model: its slides, and how well it segments a fresh one.

:func:`make_demo_slide` writes a synthetic slide of the demo profile (:data:`DEMO_SLIDE`):
4 x 4 mm at 0.5 µm/px with ducts, nests and ``dcis`` objects that need context (see
:mod:`engine.support.synthetic`). :func:`evaluate_demo_model` generates one with a given seed and
measures, per object, the dice of WSI-SAM's HR mask (``WsiSamPredictor.predict``) and of the same
model's SAM path (``predict_sam``) against the truth, on one concentric pair per object (256 px,
HR 1 µm/px, LR 2 µm/px) centred on the object's box centre moved by a seeded jitter of up to a
quarter of the HR field per axis (as in training), prompted with the truth's exact box within
the HR patch. Dice is computed over the HR patch (objects larger than the patch: the part in it).

    python -m engine.support.demo_eval slides DIR --seeds 1 2 3      # slides + QuPath GeoJSON truth
    python -m engine.support.demo_eval evaluate MODEL --seed 1001    # prints the JSON report
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .synthetic import SyntheticSlide, make_synthetic_slide
from .synthetic_scene import CONTEXT_CLASS_NAMES

#: The demo profile (keyword arguments of :func:`engine.support.synthetic.make_synthetic_slide`).
DEMO_SLIDE: dict = dict(width_l0_px=8192, height_l0_px=8192, mpp=0.5, n_objects=36, context_objects=10, n_large=0,
                        tissue_fraction=0.75)
DEMO_MODEL_PATH = Path(__file__).resolve().parents[1] / "data" / "demo_model.safetensors"


def make_demo_slide(path: str | os.PathLike, seed: int, **overrides) -> SyntheticSlide:
    """One demo-profile slide at ``path`` (``.ome.tif``) with its truth."""
    return make_synthetic_slide(path, seed=seed, **{**DEMO_SLIDE, **overrides})


def make_demo_slides(out_dir: str | os.PathLike, seeds: list[int], **overrides) -> list[tuple[Path, Path]]:
    """``demo_<seed>.ome.tif`` and its truth ``demo_<seed>.geojson`` per seed; returns the path pairs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for seed in seeds:
        s = make_demo_slide(out / f"demo_{seed}.ome.tif", seed, **overrides)
        pairs.append((s.path, s.write_truth(out / f"demo_{seed}.geojson")))
    return pairs


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * (pred & truth).sum() / total)


def _summary(dice: np.ndarray, classes: np.ndarray) -> dict:
    ctx = np.isin(classes, CONTEXT_CLASS_NAMES)
    return {
        "mean_dice": float(dice.mean()),
        "context_mean_dice": float(dice[ctx].mean()) if ctx.any() else None,
        "other_mean_dice": float(dice[~ctx].mean()) if (~ctx).any() else None,
        "by_class": {str(c): float(dice[classes == c].mean()) for c in np.unique(classes)},
    }


def evaluate_samples(model, samples, device: str | None = "cpu", batch_pairs: int = 8) -> dict:
    """Dice of WSI-SAM and of the SAM path on a :class:`engine.support.training_data.SampleSet`, with each
    sample's exact truth box in its HR patch."""
    import torch

    import wsisam
    from wsisam.training import mask_boxes

    pred = wsisam.WsiSamPredictor(model, device=device)
    wsi_d, sam_d = [], []
    for start in range(0, len(samples), batch_pairs):
        sl = slice(start, start + batch_pairs)
        hr_m = samples.hr_mask[sl]
        pred.set_patch_pairs(samples.hr[sl], samples.lr[sl], scale_ratio=samples.ratio)
        boxes = mask_boxes(torch.from_numpy(hr_m)).numpy()
        idx = np.arange(len(hr_m))
        wsi = pred.predict(boxes=boxes, pair_index=idx, return_lr=False).hr_masks
        sam_logits, _ = pred.predict_sam(boxes=boxes, pair_index=idx)
        for k in range(len(hr_m)):
            wsi_d.append(_dice(wsi[k], hr_m[k]))
            sam_d.append(_dice(sam_logits[k, 0] > 0, hr_m[k]))
    classes = np.asarray(samples.class_name).astype(str)
    wsi_d, sam_d = np.asarray(wsi_d), np.asarray(sam_d)
    return {"n_objects": int(len(samples)), "n_context": int(np.isin(classes, CONTEXT_CLASS_NAMES).sum()),
            "wsi": _summary(wsi_d, classes), "sam": _summary(sam_d, classes),
            "per_object": [{"object_id": int(o), "class_name": str(c), "wsi_dice": round(float(a), 4),
                            "sam_dice": round(float(b), 4)}
                           for o, c, a, b in zip(samples.object_id, classes, wsi_d, sam_d)]}


def evaluate_demo_model(model_path: str | os.PathLike = DEMO_MODEL_PATH, seed: int = 1001,
                        work_dir: str | os.PathLike | None = None, max_objects: int | None = None,
                        device: str | None = "cpu", jitter_in_box: bool = True, **slide_overrides) -> dict:
    """Generate a demo slide with ``seed`` and measure the model on it (see the module docstring).

    Returns ``{"seed", "model", "n_objects", "n_context", "wsi": {...}, "sam": {...}, "per_object"}``
    where ``wsi``/``sam`` hold ``mean_dice`` (all objects), ``context_mean_dice`` (classes in
    :data:`engine.support.synthetic.CONTEXT_CLASS_NAMES`), ``other_mean_dice`` and ``by_class``.
    ``max_objects`` keeps that many objects, evenly spread over the ids, for quick checks.
    """
    import wsisam

    from ..slides import open_slide
    from .training_data import SampleConfig, extract_samples

    model = wsisam.load_wsisam(model_path)
    cfg = SampleConfig(patch_px=model.config.img_size, samples_per_object=1, seed=seed, jitter_in_box=jitter_in_box)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        s = make_demo_slide(Path(tmp) / f"eval_{seed}.ome.tif", seed, **slide_overrides)
        truth = s.truth.sort_values("object_id")
        if max_objects is not None and max_objects < len(truth):  # spread over the ids (and classes)
            truth = truth.iloc[np.unique(np.linspace(0, len(truth) - 1, max_objects).round().astype(int))]
        with open_slide(s.path) as slide:
            samples = extract_samples(slide, truth, cfg)
    report = evaluate_samples(model, samples, device=device)
    return {"seed": int(seed), "model": str(model_path), **report}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.support.demo_eval")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("slides", help="write demo-profile slides and their truth GeoJSON")
    a.add_argument("out", type=Path)
    a.add_argument("--seeds", type=int, nargs="+", required=True)
    b = sub.add_parser("evaluate", help="dice of WSI-SAM and its SAM path on a fresh demo slide")
    b.add_argument("model", type=Path, nargs="?", default=DEMO_MODEL_PATH)
    b.add_argument("--seed", type=int, default=1001)
    b.add_argument("--max-objects", type=int, default=None)
    b.add_argument("--per-object", action="store_true", help="include per-object dice in the output")
    args = p.parse_args(argv)
    if args.cmd == "slides":
        for slide, truth in make_demo_slides(args.out, args.seeds):
            print(slide, truth)
        return 0
    report = evaluate_demo_model(args.model, args.seed, max_objects=args.max_objects)
    if not args.per_object:
        report.pop("per_object")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
