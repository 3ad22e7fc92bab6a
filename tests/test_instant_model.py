"""The bench instrument (engine.bench.instant_model): plausible masks at the real window size,
named as what it is, and out of reach of the product's commands."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from conftest import assert_python_prints
from engine.bench.instant_model import INSTRUMENT_NAME, InstantModelSpec, InstantSegmenter, ellipse_crop
from engine.pipeline import segment_slide
from engine.records import Prompt
from engine.scheduler import ScheduleConfig
from engine.slides import open_slide
from engine.support.synthetic import make_synthetic_slide


def test_ellipse_is_inscribed_in_the_box_and_clipped_to_the_patch():
    row0, col0, mask = ellipse_crop(np.array([100.0, 200.0, 300.0, 260.0]), 1024)
    assert (row0, col0, mask.shape) == (200, 100, (60, 200))
    assert abs(mask.sum() - math.pi * 100 * 30) < 0.02 * mask.sum()
    row0, col0, mask = ellipse_crop(np.array([-50.0, 1000.0, 50.0, 1100.0]), 1024)  # past two sides
    assert row0 == 1000 and col0 == 0 and mask.shape[0] == 24 and mask.shape[1] <= 50
    assert ellipse_crop(np.array([2000.0, 10.0, 2100.0, 20.0]), 1024) is None


def test_instrument_objects_in_the_pipeline_are_the_prompts_ellipses(tmp_path):
    syn = make_synthetic_slide(tmp_path / "s.ome.tif", 4096, 4096, mpp=0.25, n_objects=6, seed=4, tile_px=256)
    boxes = [(400.0, 500.0, 1200.0, 900.0), (2500.0, 2600.0, 2540.0, 2636.0), (3000.0, 300.0, 3900.0, 1500.0)]
    prompts = [Prompt(syn.slide_id, i, box_l0_px=b) for i, b in enumerate(boxes)]
    seg = InstantSegmenter(InstantModelSpec().patch_px())
    with open_slide(syn.path) as slide:
        res = segment_slide(slide, prompts, seg, tmp_path / "out", ScheduleConfig())
    gdf = res.geodataframe().set_index("prompt_id")
    assert res.objects == len(boxes) and seg.cpu_s > 0
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        ellipse_um2 = math.pi * (x1 - x0) / 2 * (y1 - y0) / 2 * 0.25**2
        assert abs(gdf.loc[i, "area_um2"] - ellipse_um2) < 0.1 * ellipse_um2 + 2.0  # 1 µm label pixels at the rim
        gx0, gy0, gx1, gy1 = gdf.loc[i].geometry.bounds
        assert gx0 >= x0 - 4 and gy0 >= y0 - 4 and gx1 <= x1 + 4 and gy1 <= y1 + 4
    summary = json.loads((Path(res.output_dir) / "summary.json").read_text())
    assert summary["segmenter"] == INSTRUMENT_NAME  # outputs say what made them


def test_instrument_spec_has_no_files_and_says_so():
    spec = InstantModelSpec()
    assert spec.validate() is spec and spec.checksums() == {} and spec.patch_px() == 1024
    assert INSTRUMENT_NAME in spec.describe() and spec.segmenter_name() == INSTRUMENT_NAME


def test_the_products_commands_never_import_the_instrument():
    assert_python_prints(
        "import contextlib, io, sys, engine.api, engine.distributed.stream\n"
        "from engine.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['segment', '--help'])  # every command's parser is built\n"
        "print('instrument imported' if 'engine.bench.instant_model' in sys.modules else 'clean')", "clean")
