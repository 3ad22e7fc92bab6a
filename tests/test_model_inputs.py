"""Model options checked on the driver before Ray starts, the backbone inferred from SAM files, the
demo model named, and model actors that refuse a GPU torch cannot see (issue 9, items 2-4)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import engine
import wsisam
from conftest import make_model
from engine.cli import main
from engine.distributed.errors import DeviceError, original_error
from engine.distributed.model_spec import DEMO_MODEL, ModelSpec
from engine.support.synthetic import make_synthetic_slide
from test_checkpoints import sam_layout, sam_style_state
from wsisam.model_files import expected_shapes


class _RunsCode:
    """Pickles as a call to os.mkdir: loading the file without weights_only would run it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def write_model_files(d: Path) -> dict[str, str]:
    """Slide, prompts, a finished output folder and model files good and bad, laid out as SAM's,
    the reference WSI-SAM's and our own files are; names as the bad-input catalogue uses them."""
    d.mkdir(parents=True, exist_ok=True)
    f = {}
    slide = make_synthetic_slide(d / "s1.ome.tif", 600, 500, mpp=0.5, n_objects=2, seed=3, n_large=0)
    f["slide"], f["prompts"] = str(slide.path), str(slide.write_truth(d / "s1.geojson"))
    for name in ("vit_test", "vit_tiny_test"):
        m = make_model(name, seed=1)
        torch.save(sam_style_state(m, with_classifier=name == "vit_tiny_test"), d / f"sam_{name}.pth")
        torch.save({"model": m.mask_decoder_hr.state_dict(), "epoch": 19}, d / f"hr_{name}.pth")
        torch.save({"model": m.mask_decoder_lr.state_dict()}, d / f"lr_{name}.pth")
        f[f"sam_{name}"], f[f"hr_{name}"], f[f"lr_{name}"] = (str(d / f"{k}_{name}.pth") for k in ("sam", "hr", "lr"))
    model = make_model("vit_test", seed=2)
    f["model"] = str(wsisam.save_wsisam(model, d / "model.safetensors"))
    data = Path(f["model"]).read_bytes()
    (d / "model_trunc.safetensors").write_bytes(data[: len(data) // 2])
    save_file({"w": torch.zeros(2)}, str(d / "foreign.safetensors"))
    state = model.mask_decoder_hr.state_dict()
    state["hq_token.weight"] = state.pop("hf_token.weight")
    torch.save({"model": state}, d / "bad_hr.pth")
    torch.save(model.mask_decoder_hr.state_dict(), d / "plain_hr.pth")
    sam = sam_style_state(model)
    sam.pop("image_encoder.neck.0.weight")
    torch.save(sam, d / "sam_odd.pth")
    f["code_marker"] = str(d / "code_ran")
    torch.save({"image_encoder.x": _RunsCode(Path(f["code_marker"]))}, d / "evil.pth")
    for name in ("model_trunc.safetensors", "foreign.safetensors", "bad_hr.pth", "plain_hr.pth", "sam_odd.pth",
                 "evil.pth"):
        f[name.split(".")[0]] = str(d / name)
    out = d / "out"
    (out / "s1").mkdir(parents=True)
    (out / "s1" / "summary.json").write_text('{"slide_id": "s1", "status": "done"}')
    (out / "s1" / "objects.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (out / "run_manifest.json").write_text('{"run_id": "earlier"}')
    f["out"] = str(out)
    return f


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    return write_model_files(tmp_path_factory.mktemp("model_inputs"))


def shaped_sam_file(path: Path, backbone: str) -> Path:
    """A SAM-layout file with the shapes of a full-size backbone, every tensor a stride-0 view of
    one number (a few KB on disk)."""
    state = {k: torch.zeros(()).expand(shape) for k, shape in expected_shapes(wsisam.get_config(backbone)).items()}
    torch.save(sam_layout(state), path)
    return path


# ---------------------------------------------------------------- backbone inference (item 3)

@pytest.mark.parametrize("backbone", list(wsisam.CONFIGS))
def test_backbone_is_inferred_from_the_sam_file(tmp_path, backbone):
    path = shaped_sam_file(tmp_path / "sam.pth", backbone)
    assert path.stat().st_size < 2 * 2**20  # the shapes of vit_h, not its 2.5 GB
    assert wsisam.infer_backbone(path) == backbone


def test_explicit_backbone_that_disagrees_with_the_file_names_both(tmp_path):
    path = shaped_sam_file(tmp_path / "sam_vit_l.pth", "vit_l")
    with pytest.raises(wsisam.CheckpointError, match=r"sam_vit_l.pth holds a 'vit_l' model, but backbone 'vit_b'"):
        ModelSpec(backbone="vit_b", sam_checkpoint=str(path), mode="sam").validate()


def test_spec_without_backbone_builds_the_model_of_its_sam_file(files):
    spec = ModelSpec(sam_checkpoint=files["sam_vit_tiny_test"], hr_decoder_checkpoint=files["hr_vit_tiny_test"],
                     lr_decoder_checkpoint=files["lr_vit_tiny_test"]).validate()
    assert spec.backbone == "vit_tiny_test" and not spec.is_demo and spec.patch_px() == 256
    built = spec.build()
    ref = make_model("vit_tiny_test", seed=1)
    for k in ("image_encoder.neck.0.weight", "mask_decoder_hr.hf_token.weight",
              "mask_decoder_lr.hf_mlp.layers.0.weight"):
        torch.testing.assert_close(built.state_dict()[k], ref.state_dict()[k], rtol=0, atol=0)


def test_cli_names_the_model_in_its_first_line(files, capsys):
    argv = ["segment", "missing.tif", "--prompts", files["prompts"], "--output", files["out"]]
    assert main(argv) == 2  # the slide is missing: the model line comes first all the same
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("wsisam-engine segment: model: the bundled demo model (trained on synthetic slides only, "
                     f"not for tissue): {DEMO_MODEL}")
    assert main([*argv, "--sam-checkpoint", files["sam_vit_test"], "--hr-decoder", files["hr_vit_test"],
                 "--lr-decoder", files["lr_vit_test"]]) == 2
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("wsisam-engine segment: model: vit_test, SAM weights ") and "demo" not in first


def test_api_refuses_a_mismatched_model_before_ray_starts(files):
    import ray

    spec = ModelSpec(backbone="vit_tiny_test", sam_checkpoint=files["sam_vit_test"],
                     hr_decoder_checkpoint=files["hr_vit_test"], lr_decoder_checkpoint=files["lr_vit_test"])
    with pytest.raises(wsisam.CheckpointError, match="sam_vit_test.pth holds a 'vit_test' model"):
        engine.segment_slides(files["slide"], prompts=files["prompts"], output_dir=files["out"], model=spec)
    assert not ray.is_initialized()


def test_random_weights_only_when_asked():
    with pytest.raises(ValueError, match="randomly initialised"):
        ModelSpec(backbone="vit_test")
    spec = ModelSpec(backbone="vit_test", random_weights=True).validate()
    assert "RANDOM" in spec.describe()


# ---------------------------------------------------------------- errors inside Ray workers (items 2, 4)

@pytest.fixture(scope="module")
def local_ray():
    import ray

    assert not ray.is_initialized()
    tmp = tempfile.mkdtemp(prefix="rm", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(address="local", num_cpus=1, include_dashboard=False, object_store_memory=80_000_000,
             _temp_dir=tmp, log_to_driver=False)
    this_module = sys.modules[__name__]  # the workers cannot import tests/: send its classes by value
    ray.cloudpickle.register_pickle_by_value(this_module)
    try:
        yield ray
    finally:
        ray.cloudpickle.unregister_pickle_by_value(this_module)
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


class _RefusesToStart:
    def __init__(self) -> None:
        raise DeviceError("no CUDA here")

    def ping(self) -> int:
        return 1


class _Dies:
    def pid(self) -> int:
        return os.getpid()

    def die(self) -> None:
        os._exit(1)


def _raise_device_error() -> None:
    raise DeviceError("task refuses")


def test_original_error_unwraps_what_ray_raises(local_ray):
    ray = local_ray
    with pytest.raises(Exception) as task:
        ray.get(ray.remote(_raise_device_error).remote())
    assert isinstance(task.value, ray.exceptions.RayTaskError)
    cause = original_error(task.value)
    assert type(cause) is DeviceError and str(cause) == "task refuses"

    actor = ray.remote(_RefusesToStart).options(max_restarts=-1, max_task_retries=-1).remote()
    with pytest.raises(ray.exceptions.ActorDiedError) as died:
        ray.get(actor.ping.remote(), timeout=120)
    assert died.value.actor_init_failed and not isinstance(died.value, ValueError)
    cause = original_error(died.value)
    assert type(cause) is DeviceError and str(cause) == "no CUDA here"

    dies = ray.remote(_Dies).remote()
    ray.get(dies.pid.remote())
    with pytest.raises(ray.exceptions.ActorDiedError) as killed:
        ray.get(dies.die.remote(), timeout=120)
    assert original_error(killed.value) is None  # a dead process: Ray holds no original error

    plain = KeyError("x")
    assert original_error(plain) is plain


@pytest.mark.timeout(300)
def test_actor_given_a_gpu_torch_cannot_see_fails_with_exit_2(files, tmp_path):
    """An embedded Ray that declares a (logical) GPU on this CPU-only machine: the model actor gets
    GPU 0 but torch sees no CUDA, so the run stops with the actor's own message."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the actor would use it")
    ray_tmp = tempfile.mkdtemp(prefix="rg", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=ray_tmp)
    cmd = [sys.executable, "-m", "engine.cli", "segment", files["slide"], "--prompts", files["prompts"], "--output",
           str(tmp_path / "out"), "--num-cpus", "2", "--num-gpus", "1", "--no-progress"]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("wsisam-engine segment: error: ")]
    assert len(err) == 1, proc.stderr[-3000:]
    for fragment in (f"model actor 0 on host {socket.gethostname()} (Ray node ", "Ray gave it GPU(s) 0",
                     "torch.cuda.is_available()=False", "torch.cuda.device_count()=0",
                     f"torch.version.cuda={torch.version.cuda}", "CUDA_VISIBLE_DEVICES='0'", "--allow-cpu"):
        assert fragment in err[0]
    assert "Traceback" not in proc.stderr.split("wsisam-engine segment: error: ")[-1]
