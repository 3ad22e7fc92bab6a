"""Dice and IoU per truth object, and per-slide summaries.

Definitions (areas A = truth, B = prediction, exact polygon areas or label-pixel counts):

- ``dice = 2 |A ∩ B| / (|A| + |B|)``, ``iou = |A ∩ B| / |A ∪ B|``; a missed truth object scores 0
  for both (as does an empty pair);
- per slide: means over its truth objects, counts of matched / missed truth objects and of
  false-positive predictions, and ``foreground_dice``: the union of all predictions against the
  union of all truth objects (class-agnostic, penalises false positives).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import geopandas as gpd
import numpy as np
import shapely

from .matching import match_by_overlap, match_by_prompt
from .overlap import Overlaps, label_overlaps, polygon_overlaps
from .predictions import PredictionSource, mpp_from_polygons, read_label_image, read_polygons

MatchRule = Literal["auto", "prompt", "overlap"]


def dice_from_areas(inter: float, a: float, b: float) -> float:
    """``2 i / (a + b)``; 0 when both areas are 0."""
    return 2.0 * inter / (a + b) if a + b > 0 else 0.0


def iou_from_areas(inter: float, a: float, b: float) -> float:
    """``i / (a + b - i)``; 0 when the union is empty."""
    u = a + b - inter
    return inter / u if u > 0 else 0.0


def polygon_dice(a: shapely.Geometry, b: shapely.Geometry) -> float:
    """Exact dice of two (multi)polygons."""
    return dice_from_areas(a.intersection(b).area, a.area, b.area)


def polygon_iou(a: shapely.Geometry, b: shapely.Geometry) -> float:
    """Exact IoU of two (multi)polygons."""
    return iou_from_areas(a.intersection(b).area, a.area, b.area)


@dataclass
class ObjectScore:
    """One truth object's score. ``pred_id`` is -1 (and ``matched_by`` "none") when missed."""

    method: str
    slide_id: str
    truth_id: int
    class_name: str
    pred_id: int
    matched_by: str  # "prompt", "overlap" or "none"
    dice: float
    iou: float
    truth_area_um2: float  # NaN when the slide's mpp is unknown
    pred_area_um2: float


@dataclass
class SlideScore:
    """One slide's summary for one method (means over its truth objects)."""

    method: str
    slide_id: str
    source: str  # "polygons" or "labels"
    matched_by: str
    n_truth: int
    n_pred: int
    n_matched: int
    n_missed: int
    n_false_positive: int
    mean_dice: float
    mean_iou: float
    foreground_dice: float


@dataclass
class SlideEvaluation:
    objects: list[ObjectScore]
    slide: SlideScore


def score_objects(ov: Overlaps, matches: Mapping[int, int | None], truth_classes: Mapping[int, str], method: str,
                  slide_id: str, how: str, slide_mpp: float | None) -> list[ObjectScore]:
    """Dice and IoU of each truth object against its matched prediction (0 when missed)."""
    um2 = (slide_mpp or math.nan) ** 2
    out = []
    for t in sorted(ov.truth_area_l0_px2):
        a = ov.truth_area_l0_px2[t]
        p = matches.get(t)
        if p is None:
            out.append(ObjectScore(method, slide_id, t, truth_classes[t], -1, "none", 0.0, 0.0, a * um2, 0.0))
            continue
        b = ov.pred_area_l0_px2[p]
        i = ov.inter_l0_px2.get((t, p), 0.0)
        out.append(ObjectScore(method, slide_id, t, truth_classes[t], int(p), how, dice_from_areas(i, a, b),
                               iou_from_areas(i, a, b), a * um2, b * um2))
    return out


def evaluate_overlaps(ov: Overlaps, truth: gpd.GeoDataFrame, pred_prompt_ids: Mapping[int, int], method: str,
                      slide_id: str, source: str, links: Mapping[int, int] | None = None,
                      match: MatchRule = "auto", slide_mpp: float | None = None) -> SlideEvaluation:
    """Match (by prompt when ``links`` are given and ``match`` is "auto"/"prompt") and score."""
    use_prompt = match == "prompt" or (match == "auto" and bool(links))
    if match == "prompt" and not links:
        raise ValueError(f"slide {slide_id!r}: matching by prompt needs prompts linked to truth objects "
                         "(prompt names 'truth_id=<id>')")
    matches = match_by_prompt(ov, pred_prompt_ids, links or {}) if use_prompt else match_by_overlap(ov)
    how = "prompt" if use_prompt else "overlap"
    classes = dict(zip(truth["object_id"].astype(int), truth["class_name"].astype(str)))
    objects = score_objects(ov, matches, classes, method, slide_id, how, slide_mpp)
    matched = {p for p in matches.values() if p is not None}
    dice = [o.dice for o in objects]
    slide = SlideScore(
        method, slide_id, source, how, n_truth=len(objects), n_pred=len(ov.pred_area_l0_px2),
        n_matched=len(matched), n_missed=sum(o.pred_id < 0 for o in objects),
        n_false_positive=len(set(ov.pred_area_l0_px2) - matched),
        mean_dice=float(np.mean(dice)) if dice else math.nan,
        mean_iou=float(np.mean([o.iou for o in objects])) if objects else math.nan,
        foreground_dice=dice_from_areas(ov.foreground_inter_l0_px2, ov.foreground_truth_l0_px2,
                                        ov.foreground_pred_l0_px2),
    )
    return SlideEvaluation(objects, slide)


def evaluate_source(src: PredictionSource, truth: gpd.GeoDataFrame, method: str,
                    links: Mapping[int, int] | None = None, match: MatchRule = "auto") -> SlideEvaluation:
    """Read one slide's predictions (polygons or label image) and score them against ``truth``."""
    if src.kind == "polygons":
        pred = read_polygons(src.path)
        ov = polygon_overlaps(truth, pred)
        prompt_ids = dict(zip(pred["object_id"].astype(int), pred["prompt_id"].astype(int)))
        mpp = src.slide_mpp if src.slide_mpp is not None else mpp_from_polygons(pred)
    else:
        if src.slide_mpp is None:
            raise ValueError(f"{src.path}: the slide's mpp is unknown (no summary.json next to it); give it "
                             "(--slide-mpp) to put the label grid on level-0 px")
        img = read_label_image(src.path)
        ov = label_overlaps(truth, img.array, img.label_mpp / src.slide_mpp)
        # Label value = object_id = prompt_id + 1 unless the image-label properties say otherwise.
        prompt_ids = {v: img.prompt_ids.get(v, v - 1) for v in ov.pred_area_l0_px2}
        mpp = src.slide_mpp
    return evaluate_overlaps(ov, truth, prompt_ids, method, src.slide_id, src.kind, links, match, mpp)
