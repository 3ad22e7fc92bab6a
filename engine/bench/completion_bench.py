"""Suite ``completion``: per-object dice with window-border completion against without (``--no-completion``).

Generated slides (0.5 µm/px, ducts and nests of many sizes, one per seed of ``--completion-seeds``),
prompted by the evaluation's noisy boxes (``boxes``) and by 3 points per object (``points3``), plus
the cut-object layout of the tests (4 x 4 mm, a large object over 1 mm and four ``dcis`` ducts
larger than a 256 µm window, one representative point each, 128 µm assumed extent). Each set runs
the in-process pipeline twice with the bundled demo model (completion off, then on); a prediction
is scored against the truth object its prompt was made from (dice of the written polygons, after
the overlap rule). Rows: mean dice both ways, the share of objects that change, how many are more
than 1 point worse, the worst change, and ``summary.json``'s counts (completed, trimmed, refused).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..records import Prompt
from .common import SLIDE_MPP, BenchOptions, SuiteResult, Timer, cached_slide, fmt, headline

CUT_LAYOUT = dict(n_objects=8, n_large=1, context_objects=4, n_edge=1, tissue_fraction=0.9)
WORSE_PT = 1.0  # an object "worse" loses more than this many dice points


def run(opts: BenchOptions) -> SuiteResult:
    from ..evaluation.protocols import SlideTarget, get_protocol
    from ..evaluation.truth import read_truth

    rows = []
    with Timer() as total, tempfile.TemporaryDirectory(dir=opts.work_dir) as tmp:
        for seed in opts.completion_seeds:
            c = cached_slide(opts.cache_dir, "completion", opts.completion_side_px, seed, require_truth=True,
                             n_objects=opts.completion_objects, n_large=0, tissue_fraction=0.75)
            truth = read_truth(c.truth_path)
            target = SlideTarget(c.slide_id, c.side_px, c.side_px, SLIDE_MPP, truth)
            for name in ("boxes", "points3"):
                prompts = get_protocol(name).make_prompts(target, seed)
                rows.append(_compare(f"seed {seed}, {name}", c, truth, prompts, Path(tmp) / f"{seed}_{name}", {}))
        c = cached_slide(opts.cache_dir, "cut_objects", 4096, 7, require_truth=True, **CUT_LAYOUT)
        truth = read_truth(c.truth_path).sort_values("object_id")
        points = [Prompt(c.slide_id, i, points_l0_px=((g.representative_point().x, g.representative_point().y),),
                         point_labels=(1,), name=f"truth_id={t}") for i, (t, g) in enumerate(zip(truth.object_id,
                                                                                                   truth.geometry))]
        rows.append(_compare("cut-object layout, points", c, truth, points, Path(tmp) / "cut",
                             dict(context_px=16, points_extent_um=128.0)))
    header = ["slide, prompts", "objects", "dice without", "dice with", "changed", f"> {WORSE_PT:g} pt worse",
              "worst change (pt)", "completed", "trimmed", "refused"]
    table = [[r["set"], str(r["objects"]), fmt(r["dice_without"]), fmt(r["dice_with"]), f"{100 * r['changed']:.0f}%",
              str(r["worse"]), fmt(r["worst_pt"]), str(r["completed"]), str(r["trimmed"]), str(r["refused"])]
             for r in rows]
    heads = []
    for kind in ("boxes", "points3"):
        sel = [r for r in rows if r["set"].endswith(kind)]
        d0 = np.mean([r["dice_without"] for r in sel])
        d1 = np.mean([r["dice_with"] for r in sel])
        heads.append(headline(f"mean dice with completion - without ({kind})", d1 - d0, "pt", ">= 0", d1 >= d0 - 1e-9))
        worse = sum(r["worse"] for r in sel)
        heads.append(headline(f"objects > {WORSE_PT:g} pt worse with completion ({kind})", worse, "", "0", worse == 0))
    cut = rows[-1]
    heads.append(headline("dice gain on the cut-object layout", cut["dice_with"] - cut["dice_without"], "pt", "> 0",
                          cut["dice_with"] > cut["dice_without"]))
    notes = [f"{len(opts.completion_seeds)} slide(s) of {opts.completion_side_px} px square, {opts.completion_objects} "
             "ducts and nests each; the bundled demo model on this machine's CPU or GPU."]
    return SuiteResult("completion", "Completion: per-object dice with and without", header, table, rows, heads, notes,
                       config={"seeds": list(opts.completion_seeds)}, seconds=total.s)


def _compare(name: str, c, truth, prompts: list[Prompt], out: Path, sched: dict) -> dict:
    """Both runs of one prompt set; dice per prompt (the truth object it names)."""
    import wsisam

    from ..evaluation.matching import parse_truth_link
    from ..pipeline import segment_slide
    from ..scheduler import ScheduleConfig
    from ..segmenters import WsiSamSegmenter
    from ..slides import open_slide
    from ..support.demo_eval import DEMO_MODEL_PATH

    seg = WsiSamSegmenter(wsisam.WsiSamPredictor(wsisam.load_wsisam(DEMO_MODEL_PATH), device=None))
    geoms = dict(zip(truth.object_id, truth.geometry))
    dice, summary = {}, {}
    base = ScheduleConfig(patch_px=seg.patch_px, **sched)
    for on in (False, True):
        with open_slide(c.path) as slide:
            res = segment_slide(slide, prompts, seg, out / str(on), replace(base, complete_cut_objects=on))
        gdf = res.geodataframe().set_index("prompt_id")
        d = []
        for p in prompts:
            t = geoms[parse_truth_link(p.name)]
            g = gdf.loc[p.prompt_id].geometry if p.prompt_id in gdf.index else None
            d.append(0.0 if g is None else 2 * g.intersection(t).area / (g.area + t.area))
        dice[on] = 100 * np.array(d)
        summary = json.loads((res.labels_path.parent / "summary.json").read_text())["result"]
    diff = dice[True] - dice[False]
    return {"set": name, "objects": len(prompts), "dice_without": float(dice[False].mean()),
            "dice_with": float(dice[True].mean()), "changed": float(np.mean(np.abs(diff) > 1e-6)),
            "worse": int((diff < -WORSE_PT).sum()), "worst_pt": float(diff.min()),
            "completed": summary["completed"], "trimmed": summary["trimmed"], "refused": summary["refused"]}
