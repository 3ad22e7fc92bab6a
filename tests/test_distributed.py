"""The main job on a real local Ray: embedded mode, `ray job submit` to a head with logical GPUs,
a model actor killed mid-run, a driver stopped after its first slide."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import shapely
import zarr

import engine
import wsisam
from conftest import listening, make_model, ray_processes, tree_hashes
from engine.distributed.cluster import LOCAL_ONLY_ENV, is_loopback
from engine.distributed.executor import ExecutionConfig
from engine.distributed.manifest import read_manifest
from engine.scheduler import ScheduleConfig
from engine.support.synthetic import make_synthetic_slide

SCHEDULE = ScheduleConfig(patch_px=256, context_px=16)
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort")
    slides = d / "slides"
    slides.mkdir()
    prompts = d / "prompts"
    prompts.mkdir()
    for i in range(3):
        s = make_synthetic_slide(slides / f"case_{i}.ome.tif", 3000, 2400, mpp=0.5, n_objects=8, seed=10 + i,
                                 n_large=0)
        s.write_truth(prompts / f"case_{i}.geojson")
        # Each object's box, and one point prompt in the largest object: the random model's mask for
        # it runs past its windows, so completion segments it again one level coarser (new batches
        # of the slide on Ray; boxes are completed only within their annotator tolerance).
        doc = json.loads((prompts / f"case_{i}.geojson").read_text())
        inside = s.truth.geometry.iloc[int(s.truth.geometry.area.argmax())].representative_point()
        doc["features"].append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [inside.x, inside.y]},
                                "properties": {"objectType": "annotation"}})
        (prompts / f"case_{i}.geojson").write_text(json.dumps(doc))
    model = wsisam.save_wsisam(make_model("vit_test", seed=0), d / "model.safetensors")
    return slides, prompts, model


def segment_cli(cohort, out, *extra):
    slides, prompts, model = cohort
    # Batch composition (windows per batch) is fixed across runs: outputs are bit-identical for a
    # given composition, whatever the number of actors, restarts or reruns.
    return [sys.executable, "-m", "engine.cli", "segment", str(slides), "--prompts", str(prompts), "--output",
            str(out), "--checkpoint", str(model), "--context-px", "16", "--no-progress", "--windows-per-batch", "2",
            *extra]


def outputs(out: Path) -> dict:
    """What a user compares: each slide's label pixels and polygons."""
    got = {}
    for d in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        labels = zarr.open_group(str(d / "labels.ome.zarr"), mode="r")["labels/objects/0"][:]
        import geopandas as gpd

        gdf = gpd.read_parquet(d / "objects.parquet")
        got[d.name] = (labels, gdf)
    return got


def assert_same_outputs(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b) and len(a) == 3
    for k in a:
        np.testing.assert_array_equal(a[k][0], b[k][0])
        ga, gb = a[k][1], b[k][1]
        assert list(ga.object_id) == list(gb.object_id)
        assert shapely.equals_exact(ga.geometry.values, gb.geometry.values, tolerance=0).all()
        np.testing.assert_array_equal(ga.score.values, gb.score.values)


@pytest.fixture(scope="module")
def embedded_run(cohort, tmp_path_factory):
    """(a) the embedded mode: no cluster running, so segment_slides starts and stops its own Ray.
    Two model actors, the second of which would take 10 minutes to load its model: the run does
    not wait for it."""
    import ray

    from engine.distributed.actors import SLOW_START_ENV

    assert not ray.is_initialized()
    slides, prompts, model = cohort
    out = tmp_path_factory.mktemp("embedded")
    os.environ[SLOW_START_ENV] = "600:1"  # the embedded Ray's workers inherit this process's environment
    try:
        results = engine.segment_slides(slides, prompts=prompts, output_dir=out,
                                        model=engine.ModelSpec(checkpoint=str(model)), schedule=SCHEDULE,
                                        execution=ExecutionConfig(actors=2, progress=False, windows_per_batch=2),
                                        num_cpus=2)
    finally:
        del os.environ[SLOW_START_ENV]
    assert not ray.is_initialized()  # the embedded Ray is shut down again
    return out, results


def test_embedded_mode(embedded_run):
    out, results = embedded_run
    assert [r.slide_id for r in results] == ["case_0", "case_1", "case_2"]
    assert all(r.status == "done" and r.objects + r.empty_masks == r.prompts == 9 for r in results)  # 8 boxes, 1 point
    m = read_manifest(out)
    # Batches went to the first actor that had loaded the model; the other never finished loading.
    assert len(m["actors"]) == 1 and m["actors"][0]["gpu_ids"] == [] and m["actors"][0]["device"] == "cpu"
    assert {b["actor_index"] for s in m["slides"].values() for b in s["batches"]} == {0}
    assert m["totals"]["actor_busy_s"][1] == 0 < m["totals"]["actor_busy_s"][0]
    assert all(s["status"] == "done" and s["windows_computed"] == s["windows"] for s in m["slides"].values())
    assert m["model_sha256"]["checkpoint"] == wsisam.checkpoint.file_sha256(m["config"]["model"]["checkpoint"])
    gdf = results[0].geodataframe()
    assert len(gdf) >= 1 and gdf.crs is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_head(head: subprocess.Popen, temp_dir: Path) -> None:
    """End this head only (`ray stop` would end every Ray on the machine): terminate its `ray start
    --block` process, which stops its subprocesses; kill by pid whatever of it is left."""
    procs = ray_processes(head.pid, temp_dir)
    head.terminate()
    try:
        head.wait(60)
    except subprocess.TimeoutExpired:
        head.kill()
    _, alive = psutil.wait_procs(procs + ray_processes(head.pid, temp_dir), timeout=30)
    for p in alive:
        p.kill()


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head --num-gpus 2`: logical GPUs on this CPU machine, listening on loopback only."""
    ray_bin = Path(sys.executable).parent / "ray"
    # Ray's local-only mode keeps --node-ip-address=127.0.0.1 (else Ray listens on the host's address)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", **{LOCAL_ONLY_ENV: "0"})
    port, dash, agent, client = free_port(), free_port(), free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's socket paths live under it
    start = [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=2",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
             f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
             "--node-ip-address=127.0.0.1", f"--temp-dir={tmp}", "--object-store-memory=300000000",
             "--disable-usage-stats"]
    log = tmp_path_factory.mktemp("ray_head") / "ray_start.log"
    with open(log, "w") as f:
        head = subprocess.Popen(start, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (tmp / "ray_current_cluster").exists():  # written once the head is up
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        exposed = sorted(x for x in listening(ray_processes(head.pid, tmp)) if not is_loopback(x[1]))
        assert not exposed, f"the head listens off loopback: {exposed}"
        yield {"gcs": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        stop_head(head, tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def test_ray_job_submit_on_two_logical_gpus(cohort, ray_head, embedded_run, tmp_path):
    """(b) a cohort submitted with `ray job submit`: the same outputs as the embedded run (which had
    one actor), and the two model actors each held a different GPU. The GPUs are logical (torch
    sees no CUDA here): --allow-cpu lets the actors run on the CPU, and each says so."""
    out = tmp_path / "submitted"
    ray_bin = Path(sys.executable).parent / "ray"
    cmd = [str(ray_bin), "job", "submit", "--address", ray_head["dashboard"], "--",
           *segment_cli(cohort, out, "--allow-cpu")]
    for _ in range(6):  # a loaded machine: the head's job agent may register after its dashboard
        proc = subprocess.run(cmd, env=ray_head["env"], capture_output=True, text=True, timeout=280, cwd=Path.cwd())
        log = proc.stdout + proc.stderr
        if "No available agent to submit job" not in log:
            break
        time.sleep(5)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in log.lower()
    for i in range(2):
        assert f"model actor {i}: cpu on host {socket.gethostname()} (Ray node " in log
        assert f"warning: model actor {i} on host" in log and "torch sees no CUDA device" in log
    m = read_manifest(out)
    assert not m["cluster"]["embedded"] and m["cluster"]["num_gpus"] == 2
    gpus = [tuple(a["gpu_ids"]) for a in m["actors"]]
    assert len(gpus) == 2 and len(set(gpus)) == 2 and all(len(g) == 1 for g in gpus)
    used = {tuple(b["gpu_ids"]) for s in m["slides"].values() for b in s["batches"]}
    assert used == set(gpus)  # both actors did work
    assert_same_outputs(outputs(out), outputs(embedded_run[0]))


def start_until_first_slide(cohort, out: Path, slow: str = "batches") -> subprocess.Popen:
    """Start a run with an embedded Ray, in its own process group as a shell runs a foreground
    job; return once its first slide is published. Mid-run then: each batch of case_2 takes 6 s
    (``slow="batches"``), or case_2's plan takes 120 s (``slow="plan"``)."""
    from engine.distributed.actors import SLOW_ENV, SLOW_PLAN_ENV

    delay = {SLOW_ENV: "6:case_2"} if slow == "batches" else {SLOW_PLAN_ENV: "120:case_2"}
    env = dict(os.environ, RAY_AUTH_MODE="disabled", **delay)
    proc = subprocess.Popen(segment_cli(cohort, out, "--num-cpus", "2"), env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 200
    while not (out / "case_0" / "summary.json").exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the run ended or stalled before its first slide: {proc.communicate()[0][-3000:]}")
        time.sleep(0.1)
    return proc


def test_killed_model_actor_loses_and_duplicates_nothing(cohort, embedded_run, tmp_path):
    """A model actor's process killed mid-run: the run completes with the clean run's outputs."""
    out = tmp_path / "killed"
    proc = start_until_first_slide(cohort, out)
    try:
        pid = read_manifest(out)["actors"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        log, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-3000:]
    m = read_manifest(out)
    pids = {b["pid"] for s in m["slides"].values() for b in s["batches"]}
    assert pid in pids and len(pids) == 2  # batches ran before and after the restart
    assert_same_outputs(outputs(out), outputs(embedded_run[0]))


def test_interrupted_driver_rerun_skips_finished_slides(cohort, embedded_run, tmp_path):
    """A driver stopped after its first slide: the rerun recomputes no window of that slide."""
    out = tmp_path / "rerun"
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = start_until_first_slide(cohort, out, slow="plan")  # stopped long before case_2 is done
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    first = {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert "case_0" in first and "case_2" not in first  # stopped mid-cohort, finished slides whole
    before = (out / "case_0" / "summary.json").stat().st_mtime_ns
    proc = subprocess.run(segment_cli(cohort, out, "--num-cpus", "2"), env=env, capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = read_manifest(out)
    assert m["slides"]["case_0"]["status"] == "skipped" and m["slides"]["case_0"]["windows_computed"] == 0
    assert (out / "case_0" / "summary.json").stat().st_mtime_ns == before  # untouched
    assert not any(p.name.endswith(".partial") for p in out.iterdir())
    assert_same_outputs(outputs(out), outputs(embedded_run[0]))


# --- faults: a run is either right or loudly failed, and never destructive -------------------

def _slide_dirs(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _no_partials(out: Path) -> bool:
    return not any(p.name.endswith((".partial", ".replaced")) for p in out.iterdir())


def test_batch_that_kills_its_worker_fails_only_its_slide(cohort, embedded_run, tmp_path):
    """Every batch of case_1 kills the model actor's process (as an out-of-memory kill would): after
    3 deaths of the same batch the slide fails with that reason, its partial output is removed, the
    other slides finish with the clean run's outputs, and the run exits 3 with a table of failures."""
    from engine.distributed.actors import FAULT_ENV

    out = tmp_path / "killer"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", **{FAULT_ENV: "case_1"})
    proc = subprocess.run(segment_cli(cohort, out, "--num-cpus", "2"), env=env, capture_output=True, text=True,
                          timeout=280)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 3, log[-3000:]
    assert "1 slide(s) FAILED" in proc.stdout and "case_1" in proc.stdout and "killed its model worker 3 times" in log
    m = read_manifest(out)
    assert m["status"] == "failed"
    assert m["slides"]["case_1"]["status"] == "failed" and "killed its model worker 3 times" in m["slides"]["case_1"]["error"]
    assert [m["slides"][s]["status"] for s in ("case_0", "case_2")] == ["done", "done"]
    assert _slide_dirs(out) == {"case_0", "case_2"} and _no_partials(out)
    clean = outputs(embedded_run[0])
    got = outputs(out)
    for k in ("case_0", "case_2"):
        np.testing.assert_array_equal(got[k][0], clean[k][0])
        assert shapely.equals_exact(got[k][1].geometry.values, clean[k][1].geometry.values, tolerance=0).all()
    # The actor restarted after each death, and the manifest's actor list followed it.
    assert m["actors"][0]["restarts"] >= 3 and len(m["actors"][0]["previous"]) == m["actors"][0]["restarts"]


def test_second_run_on_same_output_is_refused_and_ctrl_c_cleans_up(cohort, embedded_run, tmp_path):
    """While a run holds the output folder a second run fails at once naming the holder; Ctrl-C then
    ends the first run: exit 130, no partial folder, manifest 'interrupted', finished slides kept,
    and none of the run's Ray processes left behind."""
    import psutil

    out = tmp_path / "locked"
    proc = start_until_first_slide(cohort, out, slow="plan")  # still running when the second run starts
    try:
        t0 = time.time()
        second = subprocess.run(segment_cli(cohort, out, "--num-cpus", "2"), capture_output=True, text=True,
                                timeout=120, env=dict(os.environ, RAY_AUTH_MODE="disabled"))
        assert second.returncode == 2, second.stderr[-2000:]
        assert "in use by another run" in second.stderr and f"pid {proc.pid}" in second.stderr
        assert time.time() - t0 < 60  # refused before starting Ray
        ray_procs = [c for c in psutil.Process(proc.pid).children(recursive=True)]
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground process group
        log, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, log[-3000:]
    assert "interrupted" in log
    m = read_manifest(out)
    assert m["status"] == "interrupted"
    assert m["slides"]["case_0"]["status"] == "done"
    assert {m["slides"][s]["status"] for s in ("case_1", "case_2")} <= {"interrupted", "done"}
    assert _no_partials(out)
    deadline = time.time() + 15
    while time.time() < deadline and any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ray_procs):
        time.sleep(0.5)
    left = [p.pid for p in ray_procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"Ray processes left behind: {left}"
    clean = outputs(embedded_run[0])
    for k, (labels, gdf) in outputs(out).items():
        np.testing.assert_array_equal(labels, clean[k][0])


def test_rerun_with_another_mode_is_refused_then_overwrite_redoes_it(cohort, embedded_run, tmp_path):
    """A `--mode sam` rerun over WSI-SAM outputs is refused (exit 2, naming each slide and the
    setting) without touching a byte; `--overwrite` redoes them with the new mode."""
    out = tmp_path / "rerun_mode"
    shutil.copytree(embedded_run[0], out)
    before = tree_hashes(out, ignore_run_records=True)
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.run(segment_cli(cohort, out, "--num-cpus", "2", "--mode", "sam"), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "case_0: model.mode" in proc.stderr and "--overwrite" in proc.stderr
    assert tree_hashes(out, ignore_run_records=True) == before
    # The same settings again: everything skipped untouched, Ray not even started.
    proc = subprocess.run(segment_cli(cohort, out, "--num-cpus", "2"), env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree_hashes(out, ignore_run_records=True) == before
    m = read_manifest(out)
    assert {s["status"] for s in m["slides"].values()} == {"skipped"} and m["cluster"] == {}
    assert len(list((out / ".runs").glob("*.json"))) == 2  # the first run's record is still there
    proc = subprocess.run(segment_cli(cohort, out, "--num-cpus", "2", "--mode", "sam", "--overwrite"), env=env,
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "case_0" / "summary.json").read_text())
    assert summary["settings"]["model"]["mode"] == "sam" and summary["segmenter"] == "wsisam-vit_test-sam"
    assert _no_partials(out) and _slide_dirs(out) == {"case_0", "case_1", "case_2"}


def test_in_process_pipeline_writes_the_same_bytes_as_ray(cohort, embedded_run, tmp_path):
    """The single-process pipeline and the Ray executor are two drivers of the same stages: the
    same slide, prompts, model and batches give byte-identical files (summary.json differs only
    in what names the run: run id, rerun settings, timings, output folder). Masks cut by their
    window are completed alike (LR mask, then coarser pairs: new batches of the same slide on Ray)."""
    import torch

    from engine.api import load_prompts
    from engine.pipeline import segment_slide
    from engine.slide_result import COUNTS
    from engine.slides import open_slide

    slides, prompts, model = cohort
    ray_out, _ = embedded_run
    m = read_manifest(ray_out)
    assert sum(s["completed_from_lr"] for s in m["slides"].values()) > 0
    assert sum(s["resegmented"] for s in m["slides"].values()) > 0  # the Ray path added batches
    segmenter = engine.ModelSpec(checkpoint=str(model)).segmenter("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the model actor on this 2-CPU cluster
    try:
        for path in sorted(slides.iterdir()):
            with open_slide(path) as slide:
                by_slide = load_prompts(prompts, [slide.info()])
                res = segment_slide(slide, by_slide[slide.slide_id], segmenter, tmp_path, SCHEDULE,
                                    windows_per_batch=2)
            e = m["slides"][slide.slide_id]
            assert {k: getattr(res, k) for k in COUNTS} == {k: e[k] for k in COUNTS}
            assert e["windows_computed"] == e["windows"]
    finally:
        torch.set_num_threads(threads)
    for sid in ("case_0", "case_1", "case_2"):
        a, b = ray_out / sid, tmp_path / sid
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        for f in files:
            if f.name != "summary.json":
                assert (a / f).read_bytes() == (b / f).read_bytes(), f"{sid}/{f} differs"
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        assert sa.pop("run_id") and sb.pop("run_id") is None
        assert sa.pop("settings") and sb.pop("settings") is None
        for s in (sa, sb):
            s["result"].pop("timings_s"), s["result"].pop("output_dir")
        assert sa == sb, {k: (sa.get(k), sb.get(k)) for k in sa.keys() | sb.keys() if sa.get(k) != sb.get(k)}


def test_stopping_an_embedded_ray_leaves_none_of_its_processes():
    """``stop_ray`` kills the embedded Ray's autoscaler monitor first (Ray's own shutdown waits a
    second on it), then shuts Ray down: every process the embedded Ray started has ended, and a
    new embedded Ray starts afterwards."""
    import ray

    from engine.distributed.cluster import connect, stop_ray

    assert not ray.is_initialized()
    me = psutil.Process()
    for _ in range(2):
        before = set(me.children(recursive=True))  # other tests' heads may be running
        info = connect(num_cpus=1)
        assert info.embedded and ray.get(ray.put(7)) == 7
        started = [p for p in me.children(recursive=True) if p not in before]
        assert len(started) >= 4  # GCS, raylet, monitor, log monitor, dashboard, workers...
        stop_ray()
        assert not ray.is_initialized()
        _, alive = psutil.wait_procs(started, timeout=15)
        assert alive == [], [p.pid for p in alive]
