"""Bad-input catalogue, slides and prompt files: ``wsisam-engine segment`` refuses each case
with exit code 2 and a message naming the input and the problem, before Ray starts, and leaves
a finished output folder untouched.

``CASES``: ``(case_id, build, exit_code, fragments)``; ``build(d)`` writes the case's inputs
into ``d`` (which holds ``good.ome.tif``, ``good.geojson`` and the finished output ``out/``)
and returns the argv for :func:`engine.cli.main`.
"""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from conftest import record_case, tree_hashes
from engine.cli import main
from engine.support.synthetic import make_synthetic_slide


def segment(d: Path, *slides: str, prompts: str = "good.geojson", extra: tuple[str, ...] = ()) -> list[str]:
    return ["segment", *(str(d / s) for s in slides), "--prompts", str(d / prompts),
            "--output", str(d / "out"), "--no-progress", *extra]


def write(d: Path, name: str, data: bytes | str) -> Path:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def cut_slide(keep: float | int):
    """A copy of the good slide cut to a fraction of its size, or ``keep`` bytes short if < 0."""
    def build(d: Path) -> list[str]:
        data = (d / "good.ome.tif").read_bytes()
        write(d, "cut.ome.tif", data[: len(data) + keep if keep < 0 else int(len(data) * keep)])
        return segment(d, "cut.ome.tif")
    return build


def tile_offset_past_end(d: Path) -> list[str]:
    data = bytearray((d / "good.ome.tif").read_bytes())
    with tifffile.TiffFile(d / "good.ome.tif") as t:
        tag = t.series[0].levels[0].keyframe.tags["TileOffsets"]
        struct.pack_into(t.byteorder + "I", data, tag.valueoffset, len(data) + 10)
    write(d, "moved.ome.tif", bytes(data))
    return segment(d, "moved.ome.tif")


def png(d: Path) -> list[str]:
    cv2.imwrite(str(d / "plain.png"), np.full((300, 400, 3), 200, np.uint8))
    return segment(d, "plain.png")


def non_square(d: Path) -> list[str]:
    tifffile.imwrite(d / "tall.tif", np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb",
                     resolution=(20000, 10000), resolutionunit="CENTIMETER")  # 0.5 x 1.0 µm pixels
    return segment(d, "tall.tif")


def same_id(d: Path) -> list[str]:
    (d / "cohort").mkdir()
    shutil.copy(d / "good.ome.tif", d / "cohort" / "a.ome.tif")
    shutil.copy(d / "good.ome.tif", d / "cohort" / "a.tif")
    return segment(d, "cohort")


def no_slides(d: Path) -> list[str]:
    write(d, "empty-folder/notes.txt", "no slides here\n")
    return segment(d, "empty-folder")


def rect(x0, y0, x1, y1) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def features(*geometries, **props) -> str:
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": g, "properties": dict(props)} for g in geometries]})


def prompt_file(name: str, data: bytes | str | None, *slides: str):
    """Run the good slide (or ``slides``) with the prompt file ``name`` holding ``data``."""
    def build(d: Path) -> list[str]:
        if data is not None:
            write(d, name, data)
        return segment(d, *(slides or ("good.ome.tif",)), prompts=name)
    return build


def parquet_without_geometry(d: Path) -> list[str]:
    import pandas as pd

    pd.DataFrame({"centre": ["a", "b"], "size": [1, 2]}).to_parquet(d / "table.parquet")
    return segment(d, "good.ome.tif", prompts="table.parquet")


def folder_missing_a_file(d: Path) -> list[str]:
    write(d, "prompts/other.geojson", features(rect(10, 10, 50, 50)))
    return segment(d, "good.ome.tif", prompts="prompts")


def two_slides_cohort_unknown(d: Path) -> list[str]:
    shutil.copy(d / "good.ome.tif", d / "second.ome.tif")
    write(d, "cohort.csv", "slide_id,x0,y0,x1,y1\ngood,10,10,50,50\nsecond,10,10,50,50\nthird,1,1,9,9\n")
    return segment(d, "good.ome.tif", "second.ome.tif", prompts="cohort.csv")


NAN = float("nan")
LINE = {"type": "LineString", "coordinates": [[0, 0], [5, 5]]}
CASES = [
    # slides
    ("slide-truncated-50pct", cut_slide(0.5), 2, ["cut.ome.tif", "truncated", "bytes missing"]),
    ("slide-truncated-99pct", cut_slide(0.99), 2, ["cut.ome.tif", "truncated", "tile data"]),
    ("slide-3-bytes-short", cut_slide(-3), 2, ["cut.ome.tif", "truncated", "at least 3 bytes missing"]),
    ("slide-tile-offset-past-end", tile_offset_past_end, 2, ["moved.ome.tif", "truncated", "level 0 tile data"]),
    ("slide-empty-file", lambda d: (write(d, "empty.ome.tif", b""), segment(d, "empty.ome.tif"))[1], 2,
     ["empty.ome.tif", "empty file"]),
    ("slide-text-renamed-svs", lambda d: (write(d, "notes.svs", "meeting notes\n"), segment(d, "notes.svs"))[1], 2,
     ["notes.svs", "cannot be read"]),
    ("slide-png-without-slide-mpp", png, 2, ["plain.png", "no pixel size", "--slide-mpp"]),
    ("slide-mpp-zero", lambda d: segment(d, "good.ome.tif", extra=("--slide-mpp", "0")), 2,
     ["good.ome.tif", "--slide-mpp", "positive", "0.0"]),
    ("slide-mpp-negative", lambda d: segment(d, "good.ome.tif", extra=("--slide-mpp", "-1")), 2,
     ["good.ome.tif", "--slide-mpp", "positive", "-1.0"]),
    ("slide-mpp-nan", lambda d: segment(d, "good.ome.tif", extra=("--slide-mpp", "nan")), 2,
     ["good.ome.tif", "--slide-mpp", "positive", "nan"]),
    ("slide-path-missing", lambda d: segment(d, "absent.svs"), 2, ["absent.svs", "not found"]),
    ("slide-folder-without-slides", no_slides, 2, ["empty-folder", "no slides found"]),
    ("slide-same-id-twice", same_id, 2, ["share the id", "'a'"]),
    ("slide-non-square-pixels", non_square, 2, ["tall.tif", "non-square pixels"]),
    # prompt files
    ("prompt-nan-in-polygon", prompt_file("nan.geojson", features(
        {"type": "Polygon", "coordinates": [[[10, 10], [NAN, 10], [50, 50], [10, 50], [10, 10]]]})), 2,
     ["nan.geojson", "feature 0", "non-finite coordinate"]),
    ("prompt-inf-point", prompt_file("inf.geojson", features({"type": "Point", "coordinates": [float("inf"), 5]})),
     2, ["inf.geojson", "feature 0", "non-finite coordinate"]),
    ("prompt-zero-area-box", prompt_file("flat.geojson", features(rect(10, 10, 10, 50))), 2,
     ["flat.geojson", "feature 0", "zero-area box"]),
    ("prompt-unknown-slide-id-one-slide", prompt_file(
        "cohort.csv", "slide_id,x0,y0,x1,y1\ngood,10,10,50,50\nmystery,10,10,50,50\n"), 2,
     ["cohort.csv", "unknown slide id", "mystery"]),
    ("prompt-unknown-slide-id-two-slides", two_slides_cohort_unknown, 2, ["cohort.csv", "unknown slide id", "third"]),
    ("prompt-malformed-json", prompt_file("broken.geojson", '{"type": "FeatureCollection", "features": ['), 2,
     ["broken.geojson", "not valid JSON"]),
    ("prompt-json-not-geojson", prompt_file("config.json", json.dumps({"model": "vit_b"})), 2,
     ["config.json", "not GeoJSON", "without a 'type'"]),
    ("prompt-linestring", prompt_file("line.geojson", features(LINE)), 2,
     ["line.geojson", "feature 0", "unsupported geometry type 'LineString'"]),
    ("prompt-csv-missing-column", prompt_file("boxes.csv", "x0,y0,x1\n1,2,3\n"), 2,
     ["boxes.csv", "missing required columns", "y1"]),
    ("prompt-csv-text-in-number", prompt_file("boxes.csv", "x0,y0,x1,y1\n1,2,ten,40\n"), 2,
     ["boxes.csv", "line 2", "'x1' is not a number", "ten"]),
    ("prompt-csv-extra-cells", prompt_file("boxes.csv", "x0,y0,x1,y1\n1,2,30,40,5\n"), 2,
     ["boxes.csv", "line 2", "more cells than header columns"]),
    ("prompt-only-negative-points", prompt_file("neg.csv", "x,y,label\n10,10,0\n"), 2,
     ["neg.csv", "line 2", "only negative points"]),
    ("prompt-parquet-without-geometry", parquet_without_geometry, 2,
     ["table.parquet", "missing required columns", "centre, size"]),
    ("prompt-parquet-not-parquet", prompt_file("p.parquet", "x0,y0,x1,y1\n1,2,3,4\n"), 2,
     ["p.parquet", "not a readable Parquet file"]),
    ("prompt-unknown-file-type", prompt_file("p.txt", "10 10 50 50\n"), 2, ["p.txt", "unknown prompt file type"]),
    ("prompt-file-missing", prompt_file("absent.geojson", None), 2, ["absent.geojson", "file not found"]),
    ("prompt-folder-missing-slide-file", folder_missing_a_file, 2, ["prompts", "no prompt file", "'good'"]),
]


@pytest.fixture(scope="module")
def stock(tmp_path_factory) -> Path:
    """A good slide and prompt file, and a finished output folder (a stand-in: its files only
    have to stay as they are)."""
    d = tmp_path_factory.mktemp("stock")
    make_synthetic_slide(d / "good.ome.tif", 1024, 768, n_objects=4, seed=5, tile_px=256)
    write(d, "good.geojson", features(rect(100, 100, 300, 260)))
    write(d, "out/done/summary.json", json.dumps({"slide_id": "done", "objects": 3}))
    write(d, "out/done/objects.geojson", features(rect(1, 1, 5, 5)))
    write(d, "out/run_manifest.json", json.dumps({"slides": {"done": {"status": "done"}}}))
    return d


@pytest.mark.parametrize("case_id, build, exit_code, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_id, build, exit_code, fragments, stock, tmp_path, capsys, monkeypatch):
    import ray

    def no_ray(*args, **kwargs):  # a tripwire: every case must be refused before Ray starts
        raise AssertionError(f"{case_id}: Ray was started")

    monkeypatch.setattr(ray, "init", no_ray)
    shutil.copytree(stock, tmp_path, dirs_exist_ok=True)
    argv = build(tmp_path)
    before = tree_hashes(tmp_path / "out")
    code = main(argv)
    err = capsys.readouterr().err
    record_case(case_id, code, err)
    assert code == exit_code, err
    assert err.startswith("wsisam-engine segment: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert tree_hashes(tmp_path / "out") == before
