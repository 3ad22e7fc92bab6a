"""Running a cohort on Ray: model actors, the streaming driver (``stream.py``), the manifest.

- Windows are cut into batches per slide and level (``windows_per_batch``); a batch is the unit
  of reading, of one ``set_patch_pairs`` encoder call and of retry. Batch composition depends
  only on the inputs, never on the number of actors, so outputs are identical with 1 or N actors.
- Model actors restart when their process dies. A batch whose actor died is sent again, alone
  on an idle actor; a batch that killed its actor ``max_batch_kills`` times fails its slide.
- A slide that fails (unreadable, detector or writer error, a batch that raised or kept killing
  its worker) is marked failed with its error and its partial output removed; the other slides
  finish (``fail_fast`` aborts the run instead).
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass

import ray

from ..output_folder import slide_dir
from ..pipeline import OutputConfig
from ..slide_result import SlideResult
from ..records import Prompt
from ..scheduler import ScheduleConfig
from ..slides import SlideInfo
from .actors import ModelActor
from .cluster import ClusterInfo
from .manifest import RunManifest, SlideEntry
from .model_spec import ModelSpec


@dataclass(frozen=True)
class ExecutionConfig:
    actors: int | None = None  # default: one per GPU, else 1
    gpus_per_actor: float = 1.0
    cpus_per_actor: float = 1.0
    windows_per_batch: int = 4
    max_in_flight: int | None = None  # batches being read, segmented or written; default 2 per actor + 1
    progress: bool = True
    fail_fast: bool = False  # abort the run at the first failed slide
    max_batch_kills: int = 3  # a batch that kills its model worker this often fails its slide
    restart_timeout_s: float = 600.0  # a model actor that died must be back within this

    def __post_init__(self) -> None:
        checks = {"actors (--actors)": self.actors is None or self.actors >= 1,
                  "windows_per_batch (--windows-per-batch)": self.windows_per_batch >= 1,
                  "max_in_flight": self.max_in_flight is None or self.max_in_flight >= 1,
                  "max_batch_kills": self.max_batch_kills >= 1,
                  "gpus_per_actor (--gpus-per-actor)": self.gpus_per_actor > 0,
                  "cpus_per_actor (--cpus-per-actor)": self.cpus_per_actor > 0}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"{', '.join(bad)}: must be positive (>= 1 for counts); got {self}")


def _actor_count(cfg: ExecutionConfig, cluster: ClusterInfo) -> int:
    if cfg.actors is not None:
        return cfg.actors
    return max(1, int(cluster.num_gpus / cfg.gpus_per_actor)) if cluster.num_gpus else 1


def torch_threads(cfg: ExecutionConfig, cluster: ClusterInfo, n_actors: int) -> int:
    """CPU threads of each model actor's torch.

    With GPUs: ``cpus_per_actor``. On a CPU-only cluster the model is the work: reading a batch's
    patch pairs and painting its objects take a few per cent of the CPU time the model takes on
    them (``wsisam-engine bench e2e``), so the actors share every CPU but an eighth kept for the
    readers and writers: 2 threads on 2 CPUs, 14 on 16 for one actor.
    """
    if cluster.num_gpus > 0:
        return max(1, int(cfg.cpus_per_actor))
    cpus = int(cluster.num_cpus)
    return max(1, (cpus - cpus // 8) // n_actors)


def launch_model_actors(spec: ModelSpec, cfg: ExecutionConfig, cluster: ClusterInfo) -> tuple[list, list]:
    """Start the model actors; returns them and, for each, a ref that answers with its identity once
    it has loaded its model (or raises why it could not: see ``errors.actor_start_error``)."""
    n = _actor_count(cfg, cluster)
    use_gpu = cluster.num_gpus > 0
    # Model actors together claim at most half the cluster's CPUs: the rest reads patches and
    # writes outputs. Actors that claimed every CPU would starve those tasks (a deadlock).
    cpus = min(cfg.cpus_per_actor, max(0.1, cluster.num_cpus / 2 / n))
    # No Ray-level task retries: the driver retries batches whose actor died (stream.py).
    opts = dict(num_cpus=cpus, num_gpus=cfg.gpus_per_actor if use_gpu else 0,
                max_restarts=-1, max_task_retries=0, max_concurrency=2)
    remote = ray.remote(ModelActor)
    threads = torch_threads(cfg, cluster, n)
    actors = [remote.options(**opts).remote(spec, i, threads) for i in range(n)]
    return actors, [a.identify.remote() for a in actors]


def new_manifest(slides: list[SlideInfo], run_id: str, run_config: dict, model_sha256: dict[str, str],
                 cluster: ClusterInfo | None) -> RunManifest:
    manifest = RunManifest(run_id=run_id, started=_now(), config=run_config, model_sha256=model_sha256,
                           cluster=asdict(cluster) if cluster else {})
    for s in slides:
        manifest.slides[s.slide_id] = SlideEntry(s.slide_id, s.path)
    return manifest


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run_cohort(slides: list[SlideInfo], skipped: set[str], prompts: dict[str, list[Prompt]] | None, detector,
               spec: ModelSpec, output_dir, schedule: ScheduleConfig, output: OutputConfig, cfg: ExecutionConfig,
               cluster: ClusterInfo | None, manifest: RunManifest, settings: dict[str, dict]) -> list[SlideResult]:
    """Segment every slide not in ``skipped``; returns one result per slide, in order."""
    from .stream import CohortStream

    todo = [s for s in slides if s.slide_id not in skipped]
    for sid in skipped:
        manifest.slides[sid].status = "skipped"
    manifest.write(output_dir)
    results: dict[str, SlideResult] = {}
    try:
        if todo:
            actors, ready = launch_model_actors(spec, cfg, cluster)
            # The stream plans and reads the first slides while the actors load, and sends each actor
            # batches as soon as it has loaded its model.
            stream = CohortStream(todo, prompts, detector, actors, ready, output_dir, schedule, output, cfg,
                                  manifest, settings)
            try:
                results = stream.run()
            finally:
                stream.close()
                busy = stream.busy_seconds()
                if busy is not None:
                    manifest.totals["actor_busy_s"] = busy
                for a in actors:
                    ray.kill(a)
        failed = [e for e in manifest.slides.values() if e.status == "failed"]
        manifest.status = "failed" if failed else "done"
    except KeyboardInterrupt:
        manifest.status = "interrupted"
        raise
    except BaseException as exc:
        manifest.status, manifest.error = "error", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        for e in manifest.slides.values():
            if e.status in ("pending", "running"):
                e.status = "interrupted" if manifest.status == "interrupted" else "not run"
        manifest.finished = _now()
        manifest.write(output_dir)
    ordered = []
    for s in slides:
        e = manifest.slides[s.slide_id]
        ordered.append(results.get(s.slide_id) or SlideResult(s.slide_id, str(slide_dir(output_dir, s.slide_id)),
                                                              status=e.status, error=e.error))
    return ordered


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
