"""deploy/: the cluster-launcher config, the KubeRay RayJob, the runtime env, the Dockerfile and
the GPU check script, checked offline with Ray's own schema and parsers where Ray has them."""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _segment_parser() -> argparse.ArgumentParser:
    """``wsisam-engine segment``'s own parser, as the CLI builds it."""
    from engine.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["segment"]


def _segment_argv(command: str) -> list[str]:
    """The arguments after the program of a ``wsisam-engine segment`` or
    ``python -m engine.cli segment`` command line."""
    words = shlex.split(command)
    if words[:2] == ["wsisam-engine", "segment"]:
        return words[1:]
    m = [i for i in range(len(words) - 2) if words[i:i + 3] == ["-m", "engine.cli", "segment"]]
    assert m and re.fullmatch(r"(\S*/)?python(3(\.\d+)?)?", words[m[0] - 1]), command
    return words[m[0] + 2:]


def _check_segment_command(command: str) -> argparse.Namespace:
    argv = _segment_argv(command)
    try:
        return _segment_parser().parse_args(argv[1:])
    except SystemExit:  # argparse exits on an option or value segment does not accept
        pytest.fail(f"wsisam-engine segment rejects: {command}")


def _ray_start_params(commands: list[str]) -> list[dict]:
    """The options of each ``ray start`` in ``commands``, parsed by Ray's own ``ray start``."""
    from ray.scripts.scripts import start

    found = []
    for command in commands:
        for part in command.split(";"):
            words = shlex.split(part)
            if words[:2] == ["ray", "start"]:
                found.append(start.make_context("start", words[2:]).params)
    return found


# ---------------------------------------------------------------- cluster launcher

@pytest.fixture(scope="module")
def ray_schema():
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(path.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    return schema


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((DEPLOY / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema(ray_schema, cluster):
    jsonschema.validate(cluster, ray_schema)


def test_cluster_yaml_passes_ray_up_config_checks(cluster):
    # What `ray up` runs before touching the cloud: defaults merged, then schema and consistency.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    # our setup commands replaced the provider defaults (which pip-install; the cluster is offline)
    assert not any("pip install" in c for c in prepared["head_setup_commands"] + prepared["worker_setup_commands"])


def test_rays_schema_is_not_vacuous(ray_schema, cluster):
    bad = copy.deepcopy(cluster)
    bad["available_node_types"]["gpu.a10g"]["resources"]["GPU"] = 0.5  # resources are integers
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, ray_schema)
    bad = copy.deepcopy(cluster)
    bad["head_nodes"] = {}  # no such field
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, ray_schema)


def test_cluster_layout_and_safety(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = [t for name, t in types.items() if name != cluster["head_node_type"]]
    assert gpu_types and all(t["resources"]["GPU"] >= 1 for t in gpu_types)
    assert sum(t.get("min_workers", 0) for t in types.values()) <= cluster["max_workers"]
    assert cluster["docker"]["image"]
    words = shlex.split(" ".join(cluster["docker"]["run_options"]))
    values = [(w, v) for w, v in zip(words, words[1:]) if w in ("-v", "--volume", "-e", "--env")]
    env = dict(v.split("=", 1) for w, v in values if w in ("-e", "--env"))
    mounts = {v.split(":")[1]: v.split(":")[2:] for w, v in values if w in ("-v", "--volume")}
    assert {p: mounts[p] for p in ("/data/slides", "/data/prompts", "/models", "/data/out")} == {
        "/data/slides": ["ro"], "/data/prompts": ["ro"], "/models": ["ro"], "/data/out": []}
    assert env["RAY_AUTH_MODE"] == "token" and env["HF_HUB_OFFLINE"] == "1" and env["RAY_AUTH_TOKEN_PATH"]
    (head_start,) = _ray_start_params(cluster["head_start_ray_commands"])
    assert head_start["head"] and head_start["dashboard_host"] == "127.0.0.1"
    workers = _ray_start_params(cluster["worker_start_ray_commands"])
    assert workers and all(not w["head"] and w["address"] for w in workers)
    assert cluster["provider"]["use_internal_ips"] is True


# ---------------------------------------------------------------- KubeRay RayJob

@pytest.fixture(scope="module")
def rayjob_docs():
    return [d for d in yaml.safe_load_all((DEPLOY / "rayjob.yaml").read_text()) if d]


@pytest.fixture(scope="module")
def rayjob(rayjob_docs):
    jobs = [d for d in rayjob_docs if d.get("kind") == "RayJob"]
    assert len(jobs) == 1
    return jobs[0]


def _containers(group: dict) -> list[dict]:
    containers = group["template"]["spec"]["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers)
    return containers


def test_rayjob_required_fields(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", rayjob["metadata"]["name"])
    spec = rayjob["spec"]
    assert isinstance(spec["entrypoint"], str) and spec["entrypoint"].strip()
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay wants strings
    _containers(head)
    workers = cluster["workerGroupSpecs"]
    assert workers
    for group in workers:
        assert group["groupName"] and isinstance(group["replicas"], int)
        assert group.get("minReplicas", 0) <= group["replicas"] <= group.get("maxReplicas", group["replicas"])
        assert isinstance(group["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        _containers(group)


def test_rayjob_workers_request_gpus_and_one_actor_per_gpu(rayjob):
    spec = rayjob["spec"]
    total_gpus = 0
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        gpus = sum(int(c["resources"]["limits"]["nvidia.com/gpu"]) for c in _containers(group))
        assert gpus >= 1
        total_gpus += gpus * group["replicas"]
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert all("nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}) for c in _containers(head))
    argv = _segment_argv(spec["entrypoint"])
    actors = int(argv[argv.index("--actors") + 1])
    gpus_per_actor = float(argv[argv.index("--gpus-per-actor") + 1])
    assert actors * gpus_per_actor == total_gpus


def test_rayjob_entrypoint_runs_segment(rayjob):
    entrypoint = rayjob["spec"]["entrypoint"]
    assert re.match(r"\s*(wsisam-engine segment|(\S*/)?python3?(\.\d+)? -m engine\.cli segment)\s", entrypoint)
    args = _check_segment_command(entrypoint)  # segment's parser accepts every option used
    assert args.address == "auto" and args.checkpoint and str(args.output)


def test_rayjob_volumes_and_runtime_env(rayjob):
    from ray.runtime_env import RuntimeEnv

    spec = rayjob["spec"]
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    RuntimeEnv(**env)
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert not {"pip", "uv", "conda"} & set(env)
    groups = [spec["rayClusterSpec"]["headGroupSpec"], *spec["rayClusterSpec"]["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert len(claims) >= 3
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            for path in ("/data/slides", "/data/prompts", "/models"):
                assert mounts[path]["readOnly"] is True and mounts[path]["name"] in claims
            assert not mounts["/data/out"].get("readOnly", False)
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_rayjob_network_policy(rayjob_docs, rayjob):
    policies = [d for d in rayjob_docs if d.get("kind") == "NetworkPolicy"]
    assert policies
    assert {p["metadata"]["namespace"] for p in policies} == {rayjob["metadata"]["namespace"]}
    assert rayjob["spec"]["rayClusterSpec"]["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"


# ---------------------------------------------------------------- runtime env

def test_runtime_env_is_accepted_by_ray(tmp_path):
    from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args
    from ray.runtime_env import RuntimeEnv

    # exactly what `ray job submit --working-dir . --runtime-env deploy/runtime_env.yaml` builds
    env = parse_runtime_env_args(runtime_env=str(DEPLOY / "runtime_env.yaml"), working_dir=str(ROOT))
    parsed = RuntimeEnv(**env).to_dict()
    assert parsed["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert int(parsed["env_vars"]["OMP_NUM_THREADS"]) >= 1
    assert not {"pip", "uv", "conda", "container", "image_uri"} & set(parsed)


def test_runtime_env_excludes_venv_outputs_and_weights(tmp_path):
    # Ray's own packaging of a working_dir, on a small stand-in checkout.
    from ray._private.runtime_env.packaging import _zip_files

    env = yaml.safe_load((DEPLOY / "runtime_env.yaml").read_text())
    files = ["engine/cli.py", "wsisam/__init__.py", "deploy/runtime_env.yaml", "pyproject.toml",
             ".venv/lib/python3.11/site-packages/torch/__init__.py", "outputs/slide1/labels.zarr/zarr.json",
             "out/x.geojson", "runs/r1/manifest.json", "engine/__pycache__/cli.cpython-311.pyc",
             "wsisam.safetensors", "models/mobile_sam.pt", "models/hr.pth", "slides/a.svs", ".git/HEAD",
             "engine/data/demo_model.safetensors", "engine/data/other.safetensors", "runs/engine/data/x.safetensors"]
    for f in files:
        (tmp_path / "repo" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "repo" / f).write_text("x")
    _zip_files(str(tmp_path / "repo"), env["excludes"], str(tmp_path / "pkg.zip"), include_gitignore=True)
    names = set(zipfile.ZipFile(tmp_path / "pkg.zip").namelist())
    assert {"engine/cli.py", "wsisam/__init__.py", "deploy/runtime_env.yaml", "pyproject.toml",
            "engine/data/demo_model.safetensors"} <= names  # the default model of `segment` goes along
    assert not [n for n in names if n.split("/")[0] in {".venv", "outputs", "out", "runs", ".git", "slides"}
                or "__pycache__" in n or n.endswith((".safetensors", ".pt", ".pth"))
                and n != "engine/data/demo_model.safetensors"]


def test_packaged_checkout_carries_the_demo_model(tmp_path):
    """Ray's own packaging of this checkout with deploy/runtime_env.yaml: the bundled demo model (the
    default model of `segment`) is in the package a `ray job submit --working-dir .` uploads."""
    from ray._private.runtime_env.packaging import _zip_files

    env = yaml.safe_load((DEPLOY / "runtime_env.yaml").read_text())
    _zip_files(str(ROOT), env["excludes"], str(tmp_path / "pkg.zip"), include_gitignore=True)
    names = zipfile.ZipFile(tmp_path / "pkg.zip").namelist()
    assert "engine/data/demo_model.safetensors" in names and "engine/cli.py" in names
    assert not [n for n in names if n.startswith((".venv/", ".git/"))]


# ---------------------------------------------------------------- Dockerfile

def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    logical, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    out = []
    for line in logical:
        word, _, rest = line.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _shell_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ``;``, ``&&``, ``||``, ``|``), as words."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    commands = [[]]
    for word in lex:
        if word in {";", "&&", "||", "|"}:
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def test_dockerfile_parses_sensibly():
    import ray

    instructions = _dockerfile_instructions()
    known = {"FROM", "ARG", "RUN", "COPY", "ADD", "ENV", "USER", "WORKDIR", "ENTRYPOINT", "CMD", "LABEL",
             "EXPOSE", "HEALTHCHECK", "SHELL", "VOLUME", "STOPSIGNAL", "ONBUILD"}
    assert all(word in known for word, _ in instructions), instructions
    words = [w for w, _ in instructions]
    assert words[0] in {"FROM", "ARG"} and "FROM" in words
    assert all(w == "ARG" for w in words[:words.index("FROM")])
    args = dict(re.match(r"(\w+)=?(.*)", rest).groups() for w, rest in instructions if w == "ARG")
    base = next(rest for w, rest in instructions if w == "FROM")
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), base).split()[0]
    # Python 3.11 image, Ray equal to the one the project pins (and this venv runs)
    assert re.search(r"py311", base), base
    assert f"ray:{ray.__version__}-" in base, base
    runs = [rest for w, rest in instructions if w == "RUN"]
    # the image's Python check passes on 3.11 and fails on any other version
    (check,) = [ws[ws.index("-c") + 1] for ws in map(shlex.split, runs) if ws[:2] == ["python", "-c"]]
    probe = "import sys; sys.version_info = ({}); exec(sys.argv[1])"
    for version, rc in (("3, 11, 9", 0), ("3, 12, 0", 1), ("3, 10, 14", 1)):
        done = subprocess.run([sys.executable, "-c", probe.format(version), check], capture_output=True)
        assert done.returncode == rc, (version, done.stderr)
    # the project installed with pip from the copied sources, pyproject included
    copies = [shlex.split(rest) for w, rest in instructions if w == "COPY"]
    copied = {Path(src).name: dst for *flags_srcs, dst in copies for src in flags_srcs if not src.startswith("--")}
    assert {"pyproject.toml", "wsisam", "engine"} <= set(copied)
    installs = [ws for r in runs for ws in _shell_commands(r) if ws[:4] == ["python", "-m", "pip", "install"]]
    assert any(copied["pyproject.toml"].rstrip("/") in ws for ws in installs), installs
    envs = {}
    for w, rest in instructions:
        if w == "ENV":
            envs.update(kv.split("=", 1) for kv in shlex.split(rest))
    assert envs["HF_HUB_OFFLINE"] == "1"
    users = [rest for w, rest in instructions if w == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert "CMD" in words or "ENTRYPOINT" in words


# ---------------------------------------------------------------- GPU check and README

RECORDER = """#!{python}
import json, os, sys
if not sys.stdin.isatty():
    sys.stdin.read()
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps({{"name": os.path.basename(sys.argv[0]), "argv": sys.argv[1:],
                         "device": os.environ.get("WSISAM_TEST_DEVICE"),
                         "offline": os.environ.get("HF_HUB_OFFLINE")}}) + "\\n")
if os.path.basename(sys.argv[0]) == "timeout":
    args = sys.argv[1:]
    while args[0].startswith("--"):
        args = args[1:]
    os.execvp(args[1], args[1:])
"""


def test_gpu_check_script_runs_its_steps(tmp_path):
    """deploy/gpu_check.sh run with stand-ins for python, nvidia-smi and timeout that record how
    they are called: each step bounded, the tests and the benchmark asked for exist."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "nvidia-smi", "timeout"):
        (bin_dir / name).write_text(RECORDER.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "calls.jsonl"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(bin_dir / "python"), "OUT": str(tmp_path / "out"),
           "RECORD": str(record)}
    done = subprocess.run(["bash", str(DEPLOY / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    limits = [int(c["argv"][c["argv"].index("--kill-after=10") + 1]) for c in calls if c["name"] == "timeout"]
    assert len(limits) == 6 and sum(limits) + 10 * len(limits) <= 10 * 60  # within the 10 minutes it promises
    runs = [c for c in calls if c["name"] == "python"]
    assert all(c["device"] == "cuda" and c["offline"] == "1" for c in runs)
    pytest_argv = next(c["argv"] for c in runs if c["argv"][:2] == ["-m", "pytest"])
    test_files = [a for a in pytest_argv if a.startswith("tests/")]
    assert {"tests/test_sam_parity.py", "tests/test_wsisam_model.py"} <= set(test_files)
    assert all((ROOT / f).is_file() for f in test_files)
    from engine.cli import build_parser

    # the real CLI accepts the benchmarks' options
    bench, e2e, capacity = (build_parser().parse_args(c["argv"][2:]) for c in runs
                            if c["argv"][:2] == ["-m", "engine.cli"])
    assert bench.command == "bench" and bench.suite == "model" and bench.device == "cuda" and bench.bf16
    assert e2e.command == "bench" and e2e.suite == "e2e" and e2e.md
    assert capacity.command == "bench" and capacity.suite == "capacity" and capacity.quick
    assert Path(bench.json).parent == Path(e2e.json).parent == Path(capacity.json).parent == tmp_path / "out"
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert [line.split()[0] for line in summary] == ["nvidia-smi", "torch-cuda", "pytest-gpu", "bench-model",
                                                     "bench-e2e", "bench-capacity"]


def _readme_segment_options() -> set[str]:
    """Every ``--option`` the deploy README shows in inline code that starts with an option."""
    text = re.sub(r"```.*?```", "", (DEPLOY / "README.md").read_text(), flags=re.S)
    spans = re.findall(r"`([^`]+)`", text)
    return {w.split("=")[0] for span in spans if span.startswith("--") for w in span.split() if w.startswith("--")}


def test_readme_submit_commands_are_accepted():
    from ray.dashboard.modules.job.cli import submit

    text = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    submits = [ws for b in blocks for line in b.splitlines() for ws in _shell_commands(line.split("#")[0])
               if ws[:3] == ["ray", "job", "submit"]]
    assert submits
    for words in submits:
        params = submit.make_context("submit", words[3:]).params  # Ray's own `ray job submit` parser
        assert Path(ROOT / params["working_dir"]).resolve() == ROOT
        assert (ROOT / params["runtime_env"]).is_file()
        args = _check_segment_command(shlex.join(params["entrypoint"]))
        assert args.output and args.slides


def test_readme_options_exist():
    """Each option the deploy README names is one of `wsisam-engine segment`'s, `ray job submit`'s
    or `ray start`'s."""
    from ray.dashboard.modules.job.cli import submit
    from ray.scripts.scripts import start

    known = {o for a in _segment_parser()._actions for o in a.option_strings}
    known |= {o for cmd in (submit, start) for p in cmd.params for o in p.opts}
    named = _readme_segment_options()
    assert {"--actors", "--gpus-per-actor", "--mode", "--ngff", "--sam-checkpoint", "--hr-decoder"} <= named
    assert named <= known, named - known


def test_readme_sections_named_elsewhere_exist():
    headings = set(re.findall(r"^#+ (.+)$", (DEPLOY / "README.md").read_text(), re.M))
    cited = set()
    for f in DEPLOY.iterdir():
        cited |= set(re.findall(r'README\.md, "([^"]+)"', f.read_text()))
    assert cited and cited <= headings, cited - headings
