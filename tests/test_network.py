"""The embedded Ray listens on loopback only: every socket of every process of a real segment run."""
import os
import shutil
import tempfile
import threading

import pytest

import engine
import wsisam
from conftest import listening, make_model, ray_processes
from engine.distributed.cluster import LOCAL_ONLY_ENV, is_loopback
from engine.distributed.executor import ExecutionConfig
from engine.scheduler import ScheduleConfig
from engine.support.synthetic import make_synthetic_slide

pytestmark = pytest.mark.timeout(300)


def test_embedded_run_listens_on_loopback_only(tmp_path, monkeypatch):
    import ray
    from ray._private import ray_constants

    assert not ray.is_initialized()
    slides = tmp_path / "slides"
    slides.mkdir()
    s = make_synthetic_slide(slides / "case.ome.tif", 1200, 1000, mpp=0.5, n_objects=3, seed=3, n_large=0)
    s.write_truth(tmp_path / "case.geojson")
    model = wsisam.save_wsisam(make_model("vit_test", seed=0), tmp_path / "model.safetensors")
    ray_tmp = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: Ray's socket paths live under it
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(LOCAL_ONLY_ENV, raising=False)
    cluster_flag = ray_constants.ENABLE_RAY_CLUSTER

    seen, done = set(), threading.Event()

    def watch():  # while the run goes on: processes come and go (workers, actors)
        while not done.is_set():
            seen.update(listening(ray_processes(os.getpid(), ray_tmp)))
            done.wait(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        results = engine.segment_slides(slides, prompts=tmp_path / "case.geojson", output_dir=tmp_path / "out",
                                        model=engine.ModelSpec(checkpoint=str(model)),
                                        schedule=ScheduleConfig(patch_px=256, context_px=16),
                                        execution=ExecutionConfig(progress=False), num_cpus=2)
    finally:
        done.set()
        watcher.join()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert [r.status for r in results] == ["done"]
    assert LOCAL_ONLY_ENV not in os.environ and ray_constants.ENABLE_RAY_CLUSTER == cluster_flag  # restored
    programs = {p for p, _, _ in seen}
    # the watch saw the run: Ray's servers and its actors' workers
    assert {"gcs_server", "raylet"} <= programs and any(p.startswith("ray::") for p in programs), sorted(seen)
    exposed = sorted(x for x in seen if not is_loopback(x[1]))
    assert not exposed, f"listening off loopback: {exposed}"


@pytest.mark.parametrize("ip, loopback", [("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
                                          ("0.0.0.0", False), ("::", False), ("192.0.2.2", False),
                                          ("::ffff:192.0.2.2", False)])
def test_is_loopback(ip, loopback):
    assert is_loopback(ip) == loopback
