"""Bad-input catalogue, segment everything (grid-points options) and QC/schedule flags: each refused
before Ray starts, with exit 2, a message naming the option and the problem, and a finished output
folder left untouched.

CASES: (case_id, argv suffix after ``segment SLIDE --output OUT``, expected exit code, message fragments).
"""
from __future__ import annotations

import pytest

from conftest import record_case, tree_hashes
from engine.cli import main
from engine.support.synthetic import make_synthetic_slide


def _grid(options: str) -> list[str]:
    return ["--detector", "grid-points", "--detector-options", options]


CASES = [
    ("grid-score-threshold-above-1", _grid('{"score_threshold": 1.5}'), 2,
     ["detector 'grid-points'", "score_threshold must be a number from 0 to 1", "1.5"]),
    ("grid-stability-threshold-not-a-number", _grid('{"stability_threshold": "high"}'), 2,
     ["detector 'grid-points'", "stability_threshold must be a number from 0 to 1", "'high'"]),
    ("grid-nms-iou-negative", _grid('{"nms_iou": -0.1}'), 2,
     ["detector 'grid-points'", "nms_iou must be a number from 0 to 1", "-0.1"]),
    ("grid-covered-fraction-null", _grid('{"max_covered_fraction": null}'), 2,
     ["detector 'grid-points'", "max_covered_fraction must be a number from 0 to 1", "None"]),
    ("grid-spacing-zero", _grid('{"points_spacing_um": 0}'), 2,
     ["detector 'grid-points'", "points_spacing_um must be a positive number of µm", "got 0"]),
    ("grid-spacing-nan", _grid('{"points_spacing_um": NaN}'), 2,
     ["detector 'grid-points'", "points_spacing_um", "got nan"]),
    ("grid-option-of-sam", _grid('{"points_per_side": 32}'), 2,
     ["detector 'grid-points' has no option 'points_per_side'", "points_spacing_um", "nms_iou"]),
    ("points-extent-negative", ["--detector", "grid-points", "--points-extent-um", "-5"], 2,
     ["points_extent_um (--points-extent-um) must be a positive number", "-5"]),
    ("no-qc-with-a-value", ["--detector", "grid-points", "--no-qc=yes"], 2,
     ["--no-qc", "ignored explicit argument 'yes'"]),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_everything")
    slide = make_synthetic_slide(d / "s1.ome.tif", 600, 500, mpp=0.5, n_objects=2, seed=3, n_large=0)
    done = d / "out" / "done"  # a finished slide of an earlier run
    done.mkdir(parents=True)
    (done / "summary.json").write_text('{"settings": {}}')
    (done / "qc.png").write_bytes(b"png")
    return {"slide": str(slide.path), "out": d / "out"}


@pytest.mark.parametrize("case_id, argv, code, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_everything_input(files, capsys, case_id, argv, code, fragments):
    import ray

    out = files["out"]
    before = tree_hashes(out)
    try:
        got = main(["segment", files["slide"], "--output", str(out), "--no-progress", *argv])
    except SystemExit as exc:  # argparse refuses malformed flags itself
        got = exc.code
    err = capsys.readouterr().err
    record_case(case_id, got, err)
    assert got == code, err
    line = [x for x in err.splitlines() if "error: " in x]
    assert len(line) == 1, err
    for fragment in fragments:
        assert fragment in line[0], (fragment, line[0])
    assert not ray.is_initialized()  # refused before Ray started
    assert tree_hashes(out) == before
