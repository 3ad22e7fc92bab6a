"""Evaluation: dice / IoU of predictions against ground-truth polygons, the paper's prompt
protocols, and the zero-shot WSI-SAM vs SAM experiment (Table 1 layout).

- :mod:`.truth`: reading truth polygons (QuPath GeoJSON, GeoParquet);
- :mod:`.predictions`: our GeoParquet polygons or OME-Zarr label image;
- :mod:`.overlap`, :mod:`.matching`, :mod:`.metrics`: areas, matching (by prompt or by overlap), scores;
- :mod:`.report`: tables (CSV, Markdown), plot (PNG);
- :mod:`.protocols`: noisy boxes, K points, detector boxes; prompt files;
- :mod:`.experiment`, :mod:`.evaluate`: what the ``experiment`` and ``evaluate`` commands run.
"""
from .evaluate import evaluate_predictions
from .experiment import ExperimentResult, ModelFiles, model_methods, run_experiment
from .matching import match_by_overlap, match_by_prompt, parse_truth_link, prompt_links, truth_link_name
from .metrics import (ObjectScore, SlideEvaluation, SlideScore, dice_from_areas, evaluate_overlaps, evaluate_source,
                      iou_from_areas, polygon_dice, polygon_iou)
from .overlap import Overlaps, label_overlaps, polygon_overlaps
from .predictions import PredictionSource, read_label_image, read_polygons, resolve_predictions
from .protocols import (PROTOCOL_NAMES, BoxNoise, BoxProtocol, DetectorProtocol, PointsProtocol, Protocol, SlideTarget,
                        get_protocol, object_rng, sample_points_in_polygon)
from .report import Evaluation, class_table, collect, markdown_table, plot_table, write_report
from .truth import find_truth_file, read_truth

__all__ = [
    "evaluate_predictions", "ExperimentResult", "ModelFiles", "model_methods", "run_experiment",
    "match_by_overlap", "match_by_prompt", "parse_truth_link", "prompt_links", "truth_link_name",
    "ObjectScore", "SlideEvaluation", "SlideScore", "dice_from_areas", "evaluate_overlaps", "evaluate_source",
    "iou_from_areas", "polygon_dice", "polygon_iou", "Overlaps", "label_overlaps", "polygon_overlaps",
    "PredictionSource", "read_label_image", "read_polygons", "resolve_predictions", "PROTOCOL_NAMES", "BoxNoise",
    "BoxProtocol", "DetectorProtocol", "PointsProtocol", "Protocol", "SlideTarget", "get_protocol", "object_rng",
    "sample_points_in_polygon", "Evaluation", "class_table", "collect", "markdown_table", "plot_table",
    "write_report", "find_truth_file", "read_truth",
]
