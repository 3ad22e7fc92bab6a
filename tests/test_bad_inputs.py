"""The bad-input catalogue: careless inputs to `wsisam-engine segment`.

Each case runs the real command (in this process; Ray only where the case needs it) against an
output folder that already holds a finished slide, and asserts what a user would see: the exit
code, a message that names the input and the problem, and every finished output byte unchanged.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

import engine
import wsisam
from conftest import assert_python_prints, make_model, record_case, tree_hashes
from engine.cli import main
from engine.distributed.executor import ExecutionConfig
from engine.scheduler import ScheduleConfig
from engine.support.synthetic import make_synthetic_slide

pytestmark = pytest.mark.timeout(300)


@dataclass
class Env:
    """What a case may use: a good slide, its prompts, a model, and a folder to put bad files in."""

    slide: Path
    prompts: Path
    model: Path
    out: Path
    scratch: Path
    files: dict = field(default_factory=dict)

    def good(self, *extra: str) -> list[str]:
        """A good command line, plus ``extra``."""
        return ["segment", str(self.slide), "--prompts", str(self.prompts), "--output", str(self.out),
                "--checkpoint", str(self.model), "--context-px", "16", "--no-progress", "--num-cpus", "2", *extra]

    def copy_slide(self, name: str) -> Path:
        p = self.scratch / name
        shutil.copyfile(self.slide, p)
        return p


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Env], list[str]]
    exit_code: int
    says: Callable[[Env], list[str]]  # fragments the message must hold (input and problem)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An output folder with one finished slide, made by a real (embedded Ray) run."""
    d = tmp_path_factory.mktemp("catalogue")
    slide = make_synthetic_slide(d / "good.ome.tif", 1400, 1200, mpp=0.5, n_objects=3, seed=3, n_large=0)
    prompts = d / "good.geojson"
    slide.write_truth(prompts)
    model = wsisam.save_wsisam(make_model("vit_test", seed=0), d / "model.safetensors")
    out = d / "finished"
    res = engine.segment_slides(slide.path, prompts=prompts, output_dir=out,
                                model=engine.ModelSpec(checkpoint=str(model)),
                                schedule=ScheduleConfig(patch_px=256, context_px=16),
                                execution=ExecutionConfig(progress=False), num_cpus=2)
    assert [r.status for r in res] == ["done"]
    return slide.path, prompts, model, out


# --- the cases ------------------------------------------------------------------------------

def _slide_named(name: str) -> Callable[[Env], list[str]]:
    def argv(env: Env) -> list[str]:
        p = env.copy_slide(name)
        return ["segment", str(p), "--prompts", str(env.prompts), "--output", str(env.out), "--checkpoint",
                str(env.model), "--no-progress"]
    return argv


def _folder_with(name: str) -> Callable[[Env], list[str]]:
    def argv(env: Env) -> list[str]:
        folder = env.scratch / "cohort"
        folder.mkdir()
        shutil.copyfile(env.slide, folder / "fine.ome.tif")
        shutil.copyfile(env.slide, folder / name)
        return ["segment", str(folder), "--prompts", str(env.prompts), "--output", str(env.out), "--checkpoint",
                str(env.model), "--no-progress"]
    return argv


def _locked(env: Env) -> list[str]:
    fd = os.open(env.out / ".wsisam-engine.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"host": "labhost", "pid": 4242, "run_id": "r-earlier", "started": "then"}).encode())
    env.files["lock_fd"] = fd  # held until the case ends
    return env.good()


def _output_is_a_file(env: Env) -> list[str]:
    f = env.scratch / "not_a_folder"
    f.write_text("x")
    return ["segment", str(env.slide), "--prompts", str(env.prompts), "--output", str(f), "--checkpoint",
            str(env.model), "--no-progress"]


CASES = [
    # slide ids that would name a folder outside the output, or hide it
    Case("id-dot-svs", _slide_named("..svs"), 2, lambda e: ["..svs", "'.'", "rename the file"]),
    Case("id-dot-ome-tif", _slide_named("..ome.tif"), 2, lambda e: ["..ome.tif", "'.'", "rename the file"]),
    Case("id-dotdot", _slide_named("...ome.tif"), 2, lambda e: ["...ome.tif", "'..'", "rename the file"]),
    Case("id-hidden", _slide_named(".case.ome.tif"), 2, lambda e: [".case.ome.tif", "starts with a dot"]),
    Case("id-control-char", _slide_named("case\x07.ome.tif"), 2, lambda e: ["'case\\x07'", "control character"]),
    Case("id-in-folder", _folder_with("..ome.tif"), 2, lambda e: ["..ome.tif", "rename the file"]),
    Case("id-reserved", _slide_named("run_manifest.json.tif"), 2,
         lambda e: ["run_manifest.json.tif", "uses for itself"]),
    Case("id-duplicate", _folder_with("fine.tif"), 2, lambda e: ["share the id", "fine"]),
    # output folders
    Case("output-is-a-file", _output_is_a_file, 2, lambda e: ["not_a_folder", "cannot be written"]),
    Case("output-locked", _locked, 2, lambda e: ["in use by another run", "pid 4242", "labhost", "r-earlier"]),
    Case("rerun-other-pixel-size", lambda e: e.good("--hr-mpp", "0.5", "--lr-mpp", "1.0"), 2,
         lambda e: ["good: ", "schedule.hr_mpp", "--overwrite"]),
    Case("rerun-other-context", lambda e: e.good("--context-px", "8"), 2,
         lambda e: ["good: ", "schedule.context_px", "--overwrite"]),
    Case("rerun-other-packing", lambda e: e.good("--exact-packing"), 2,
         lambda e: ["good: ", "schedule.exact_packing", "--overwrite"]),
    Case("rerun-row-greedy-packing", lambda e: e.good("--packing", "row-greedy"), 2,
         lambda e: ["good: ", 'schedule.packing ("local-search" -> "row-greedy")', "--overwrite"]),
    Case("packing-unknown", lambda e: e.good("--packing", "fast"), 2,
         lambda e: ["--packing", "invalid choice: 'fast'"]),
    Case("rerun-other-output-option", lambda e: e.good("--min-area-um2", "50"), 2,
         lambda e: ["good: ", "output.min_area_um2"]),
    Case("rerun-other-prompts", lambda e: e.good()[:3] + [str(_other_prompts(e))] + e.good()[4:], 2,
         lambda e: ["good: ", "source.prompts_sha256"]),
    # options
    Case("hr-mpp-zero", lambda e: e.good("--hr-mpp", "0"), 2, lambda e: ["hr_mpp", "--hr-mpp", "positive"]),
    Case("hr-mpp-nan", lambda e: e.good("--hr-mpp", "nan"), 2, lambda e: ["--hr-mpp", "positive", "nan"]),
    Case("lr-finer-than-hr", lambda e: e.good("--lr-mpp", "0.5"), 2, lambda e: ["lr_mpp", "hr_mpp"]),
    Case("context-negative", lambda e: e.good("--context-px", "-4"), 2, lambda e: ["context_px", "-4"]),
    Case("context-too-big", lambda e: e.good("--context-px", "200"), 2, lambda e: ["context_px", "no room"]),
    Case("windows-per-batch-zero", lambda e: e.good("--windows-per-batch", "0"), 2,
         lambda e: ["--windows-per-batch", "positive"]),
    Case("actors-zero", lambda e: e.good("--actors", "0"), 2, lambda e: ["--actors", "positive"]),
    Case("min-area-negative", lambda e: e.good("--min-area-um2", "-1"), 2, lambda e: ["--min-area-um2", ">= 0"]),
    Case("ngff-unknown", lambda e: e.good("--ngff", "0.3"), 2, lambda e: ["--ngff", "0.3"]),
    Case("prompts-and-detector", lambda e: e.good("--detector", "tissue"), 2, lambda e: ["--detector", "--prompts"]),
]


def _other_prompts(env: Env) -> Path:
    data = json.loads(env.prompts.read_text())
    feats = data["features"] if isinstance(data, dict) else data
    p = env.scratch / "good.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": feats[:-1]}))
    return p


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, finished, tmp_path, capsys):
    slide, prompts, model, done = finished
    out = tmp_path / "out"
    shutil.copytree(done, out)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = Env(slide, prompts, model, out, scratch)
    before = tree_hashes(out, ignore_run_records=True)
    argv = case.argv(env)
    try:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
    finally:
        if "lock_fd" in env.files:
            os.close(env.files["lock_fd"])
    err = capsys.readouterr().err
    record_case(case.id, code, err)
    assert code == case.exit_code, err
    for fragment in case.says(env):
        assert fragment in err, f"{fragment!r} not in: {err}"
    assert tree_hashes(out, ignore_run_records=True) == before, "finished outputs changed"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["good", "run_manifest.json"]


def test_help_and_argument_errors_import_no_heavy_package():
    """`wsisam-engine --help` and an argument error answer without importing torch, ray or tiatoolbox."""
    code = ("import sys, engine.cli\n"
            "for argv in (['--help'], ['segment', '--help'], ['segment', 'x', '--ngff', '9']):\n"
            "    try: engine.cli.main(argv)\n"
            "    except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'ray', 'tiatoolbox', 'geopandas', 'zarr') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    assert_python_prints(code, "HEAVY []")
