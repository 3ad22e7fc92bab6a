import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import contextlib
import functools
import socket

import numpy as np
import psutil
import pytest
import torch

import wsisam

#: Where model tests run: "cpu" here; deploy/gpu_check.sh sets WSISAM_TEST_DEVICE=cuda on a GPU machine.
DEVICE = os.environ.get("WSISAM_TEST_DEVICE", "cpu")
if DEVICE.startswith("cuda"):
    torch.backends.cudnn.allow_tf32 = False  # the parity checks compare fp32 to 1e-5
    torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def assert_python_prints(code: str, *expected: str, timeout: float = 120) -> None:
    """Run ``code`` in a fresh interpreter (this one's) and check that its output holds each of
    ``expected`` (for what a new process imports: modules already loaded here do not count)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    for line in expected:
        assert line in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def make_model(name: str = "vit_test", seed: int = 0, **overrides) -> wsisam.WsiSam:
    """A model with seeded random weights, all of them non-trivial (BN statistics included)."""
    torch.manual_seed(seed)
    model = wsisam.build_wsisam(name, **overrides)
    with torch.no_grad():
        for name_, p in model.named_parameters():
            if "hf_token" in name_ or "embedding_" in name_ or "compress_vit_feat" in name_ or "hf_mlp" in name_:
                p.add_(torch.randn_like(p) * 0.02)
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
    return model.eval()


def random_pair(rng, size: int, n: int = 1):
    hr = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    lr = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return hr, lr


def ray_processes(root_pid: int, temp_dir) -> list[psutil.Process]:
    """``root_pid``, its descendants (for a Ray started there: GCS, raylet, agents, workers) and any
    process whose command line names the Ray temp dir ``temp_dir`` (in case one was reparented)."""
    procs = {}
    try:
        root = psutil.Process(root_pid)
        procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        pass
    for p in psutil.process_iter(["cmdline"]):
        if p.pid != os.getpid() and any(str(temp_dir) in a for a in p.info["cmdline"] or []):
            procs[p.pid] = p
    return list(procs.values())


def program(cmdline: list[str]) -> str:
    """``raylet``, ``gcs_server``, ``ray::ModelActor``, ``monitor.py``, ``dashboard.py``..."""
    scripts = [a for a in cmdline[1:3] if a.endswith(".py")] if "python" in cmdline[0] else []
    return os.path.basename((scripts or cmdline)[0])


def listening(procs: list[psutil.Process]) -> set[tuple[str, str, int]]:
    """(program, ip, port) of each listening TCP socket and bound UDP socket of ``procs``."""
    found = set()
    for p in procs:
        try:
            name = program(p.cmdline() or [p.name()])
            conns = p.net_connections(kind="inet")
        except psutil.Error:  # exited meanwhile
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and c.laddr):
                found.add((name, c.laddr.ip, c.laddr.port))
    return found


def record_case(case_id: str, code: int, err: str) -> None:
    """With CATALOGUE_TABLE=FILE, append a bad-input case's exit code and message (for the
    catalogue table in notes); otherwise nothing."""
    path = os.environ.get("CATALOGUE_TABLE")
    if path:
        import json as _json

        lines = [x for x in err.splitlines() if x.strip()]
        message = next((x for x in lines if "error" in x), lines[-1] if lines else "")
        with open(path, "a") as f:
            f.write(_json.dumps({"case": case_id, "exit": code, "message": message}) + "\n")


#: What a run may add to an output folder without touching a finished slide: its records and lock.
RUN_RECORDS = (".runs", "run_manifest.json", ".wsisam-engine.lock")


def tree_hashes(root, *, ignore_run_records: bool = False) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest), optionally leaving out the
    run records and lock, which a refused rerun may write."""
    import hashlib
    from pathlib import Path

    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()
            and not (ignore_run_records and set(p.relative_to(root).parts) & set(RUN_RECORDS))}


@contextlib.contextmanager
def count_decoded_prompts(model: wsisam.WsiSam):
    """Counts the prompts that go through each decoder's two-way transformer inside the block,
    as ``{"hr": n, "lr": n}`` (a forward hook on its last layer, which every decoder path runs
    once per prompt decoded)."""
    seen = {"hr": 0, "lr": 0}

    def hook(name, module, args, kwargs, out):
        seen[name] += out[0].shape[0]

    handles = [dec.transformer.layers[-1].register_forward_hook(functools.partial(hook, name), with_kwargs=True)
               for name, dec in (("hr", model.mask_decoder_hr), ("lr", model.mask_decoder_lr))]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()
