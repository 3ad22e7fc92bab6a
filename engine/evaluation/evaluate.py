"""Evaluate existing predictions: :func:`evaluate_predictions` (what ``wsisam-engine evaluate`` runs)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..prompts import read_prompts
from .matching import prompt_links
from .metrics import MatchRule, evaluate_source
from .predictions import PredictionSource
from .report import Evaluation, collect
from .truth import find_truth_file, read_truth

PROMPT_SUFFIXES = (".geojson", ".json", ".csv", ".parquet", ".geoparquet")


def _prompt_file(source: Path, slide_id: str) -> Path | None:
    if source.is_file():
        return source
    for ext in PROMPT_SUFFIXES:
        if (source / f"{slide_id}{ext}").is_file():
            return source / f"{slide_id}{ext}"
    return None


def evaluate_predictions(predictions: Mapping[str, Sequence[PredictionSource]], truth: str | os.PathLike,
                         prompts: str | os.PathLike | None = None, match: MatchRule = "auto") -> Evaluation:
    """Score each method's per-slide predictions against the truth.

    Args:
        predictions: method (table row) -> its slides' prediction sources.
        truth: a truth file (only when every method has one slide) or a folder of ``<slide_id>.geojson``.
        prompts: the prompt file (one slide) or folder (``<slide_id>.geojson``) the predictions were made
            from; prompts named ``truth_id=<id>`` let predictions be matched by prompt.
        match: "auto" (by prompt where linked prompts exist, else by overlap), "prompt" or "overlap".
    """
    truth_path = Path(truth)
    if not truth_path.exists():
        raise FileNotFoundError(f"truth {truth_path} not found")
    cache: dict[str, tuple] = {}
    evaluations = []
    for method, sources in predictions.items():
        if truth_path.is_file() and len(sources) > 1:
            raise ValueError(f"{len(sources)} slides for {method!r} but one truth file: give a truth folder "
                             "with <slide_id>.geojson")
        for src in sources:
            if src.slide_id not in cache:
                gdf = read_truth(find_truth_file(truth_path, src.slide_id))
                links = None
                if prompts is not None:
                    pf = _prompt_file(Path(prompts), src.slide_id)
                    if pf is None:
                        raise FileNotFoundError(f"no prompt file for slide {src.slide_id!r} in {prompts}")
                    links = prompt_links(read_prompts(pf, slide_id=src.slide_id).get(src.slide_id, []))
                cache[src.slide_id] = (gdf, links)
            gdf, links = cache[src.slide_id]
            evaluations.append(evaluate_source(src, gdf, method, links, match))
    return collect(evaluations, list(predictions))
