"""Tables and plot laid out like the paper's Table 1: a row per method, a column per class, plus avg.

Files written by :func:`write_report` into ``out_dir``:

- ``table_dice.csv`` / ``table_dice.md`` / ``table_dice.png``: dice in percent, per class the mean
  over that class's truth objects on all slides (missed objects count 0); ``avg`` is the mean of
  the class columns (as the paper's avg over IDC / ILC / DUC);
- ``table_iou.csv`` / ``table_iou.md``: the same for IoU;
- ``objects.csv``: one row per (method, truth object), see :class:`~.metrics.ObjectScore`;
- ``slides.csv``: one row per (method, slide), see :class:`~.metrics.SlideScore`;
- ``evaluation.json``: the definitions, the tables and the run's description.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from .metrics import SlideEvaluation

AVG_COLUMN = "avg"
DEFINITIONS = {
    "dice": "2|A∩B|/(|A|+|B|) per truth object A and its matched prediction B; a missed object scores 0",
    "iou": "|A∩B|/|A∪B| per truth object; a missed object scores 0",
    "class column": "mean over the truth objects of that class on all slides, in percent",
    "avg": "mean of the class columns",
    "foreground_dice": "per slide: union of all predictions against union of all truth objects (class-agnostic)",
    "matching": "by prompt when prompts name their truth object (Prompt.name 'truth_id=<id>'), "
                "else IoU-maximal one-to-one assignment (Hungarian)",
    "areas": "exact polygon areas (shapely) for GeoParquet; pixel counts on the label grid, truth rasterised "
             "by pixel centre, for label images",
}


@dataclass
class Evaluation:
    """All scores of an evaluation: ``objects`` and ``slides`` tables, and the method order."""

    objects: pd.DataFrame
    slides: pd.DataFrame
    methods: list[str]

    def table(self, metric: str = "dice") -> pd.DataFrame:
        return class_table(self.objects, metric, self.methods)


@dataclass(frozen=True)
class ReportFiles:
    table_dice_csv: Path
    table_dice_md: Path
    table_dice_png: Path
    table_iou_csv: Path
    table_iou_md: Path
    objects_csv: Path
    slides_csv: Path
    evaluation_json: Path


def collect(evaluations: Iterable[SlideEvaluation], methods: Sequence[str] | None = None) -> Evaluation:
    """Gather slide evaluations; ``methods`` fixes the row order (default: first seen)."""
    evaluations = list(evaluations)
    objects = pd.DataFrame([asdict(o) for e in evaluations for o in e.objects])
    slides = pd.DataFrame([asdict(e.slide) for e in evaluations])
    seen = list(dict.fromkeys(e.slide.method for e in evaluations))
    order = list(methods) if methods is not None else seen
    missing = set(seen) - set(order)
    if missing:
        raise ValueError(f"methods {sorted(missing)} are not in the row order {order}")
    return Evaluation(objects, slides, [m for m in order if m in seen])


def class_table(objects: pd.DataFrame, metric: str = "dice", methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows: methods; columns: classes (sorted) then ``avg``; values: mean ``metric`` in percent."""
    if objects.empty:
        return pd.DataFrame(columns=[AVG_COLUMN])
    t = objects.pivot_table(index="method", columns="class_name", values=metric, aggfunc="mean") * 100.0
    t = t.reindex(columns=sorted(t.columns))
    t[AVG_COLUMN] = t.mean(axis=1)
    if methods is not None:
        t = t.reindex([m for m in methods if m in t.index])
    t.index.name = "method"
    t.columns.name = None
    return t


def markdown_table(table: pd.DataFrame, caption: str = "", digits: int = 2) -> str:
    """A GitHub Markdown table (values with ``digits`` decimals), with an optional caption line."""
    cols = [str(c) for c in table.columns]
    lines = [f"| method | {' | '.join(cols)} |", "| --- |" + " --- |" * len(cols)]
    for method, row in table.iterrows():
        cells = ["" if (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}" for v in row]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    text = "\n".join(lines) + "\n"
    return f"{caption}\n\n{text}" if caption else text


def plot_table(table: pd.DataFrame, path: str | Path, ylabel: str = "Dice (%)", title: str = "") -> Path:
    """Grouped bars: one group per class (and avg), one bar per method. PNG via matplotlib's Agg."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    cols = list(table.columns)
    n = max(len(table.index), 1)
    width = 0.8 / n
    x = np.arange(len(cols))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(cols) + 2.0), 3.6), dpi=120)
    try:
        for k, (method, row) in enumerate(table.iterrows()):
            vals = row.to_numpy(dtype=float)
            bars = ax.bar(x - 0.4 + width * (k + 0.5), vals, width, label=str(method))
            ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=7, padding=1)
        ax.set_xticks(x, [str(c) for c in cols])
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 118)
        if title:
            ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8, loc="upper center", ncol=min(n, 4), frameon=False)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _nan_to_none(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def write_report(ev: Evaluation, out_dir: str | Path, description: dict | None = None, title: str = "") -> ReportFiles:
    """Write the tables, per-object and per-slide CSVs, the plot and ``evaluation.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(*(out / n for n in ("table_dice.csv", "table_dice.md", "table_dice.png", "table_iou.csv",
                                            "table_iou.md", "objects.csv", "slides.csv", "evaluation.json")))
    dice, iou = ev.table("dice"), ev.table("iou")
    n = len(ev.objects[ev.objects.method == ev.methods[0]]) if ev.methods else 0
    n_slides = ev.slides.slide_id.nunique() if not ev.slides.empty else 0
    what = f"{n} objects on {n_slides} slide(s)" + (f"; {title}" if title else "")
    dice.to_csv(files.table_dice_csv, float_format="%.4f")
    iou.to_csv(files.table_iou_csv, float_format="%.4f")
    files.table_dice_md.write_text(markdown_table(
        dice, f"Dice (%) per class, mean over ground-truth objects (missed = 0); avg = mean of the classes. {what}."))
    files.table_iou_md.write_text(markdown_table(
        iou, f"IoU (%) per class, mean over ground-truth objects (missed = 0); avg = mean of the classes. {what}."))
    plot_table(dice, files.table_dice_png, "Dice (%)", what)
    ev.objects.to_csv(files.objects_csv, index=False, float_format="%.6f")
    ev.slides.to_csv(files.slides_csv, index=False, float_format="%.6f")
    doc = {
        "description": description or {},
        "definitions": DEFINITIONS,
        "methods": ev.methods,
        "table_dice_percent": {m: row.to_dict() for m, row in dice.iterrows()},
        "table_iou_percent": {m: row.to_dict() for m, row in iou.iterrows()},
        "slides": ev.slides.to_dict(orient="records"),
    }
    files.evaluation_json.write_text(json.dumps(_nan_to_none(doc), indent=2, default=str))
    return files
