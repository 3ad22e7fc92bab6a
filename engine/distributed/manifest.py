"""The run manifest: configuration, model checksums, and per slide its status, timings and
which actor (and GPU) ran which windows.

Every run keeps its own record, ``.runs/<run_id>.json``, which no later run overwrites;
``run_manifest.json`` is a copy of the latest run's. Both are rewritten atomically after every
slide, so a run that fails, is interrupted or skips everything never erases an earlier record.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..output_folder import MANIFEST_NAME, RUNS_DIR, write_json_atomic


@dataclass
class SlideEntry:
    slide_id: str
    path: str
    status: str = "pending"  # pending | done | skipped (done by an earlier run) | failed | interrupted
    error: str | None = None
    prompts: int = 0
    prompts_read: int = 0
    objects: int = 0
    windows: int = 0
    windows_computed: int = 0  # windows segmented in this run (0 for skipped slides)
    encoder_passes: int = 0
    prompts_dropped_outside: int = 0
    completed_from_lr: int = 0  # see engine.pipeline.SlideResult
    resegmented: int = 0
    truncated: int = 0
    completed: int = 0
    trimmed: int = 0
    refused: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    batches: list[dict] = field(default_factory=list)  # batch id, windows, actor, pid, gpu ids, seconds


@dataclass
class RunManifest:
    run_id: str
    started: str
    config: dict
    model_sha256: dict[str, str]
    cluster: dict
    status: str = "running"  # running | done | failed (some slides failed) | interrupted | error
    error: str | None = None
    # One entry per model actor: its current process, and the processes it had before restarts.
    actors: list[dict] = field(default_factory=list)
    slides: dict[str, SlideEntry] = field(default_factory=dict)
    finished: str | None = None
    totals: dict = field(default_factory=dict)

    def note_worker(self, worker: dict) -> None:
        """Record the process an actor ran a batch in; a new pid is a restart."""
        i = worker["actor_index"]
        while len(self.actors) <= i:
            self.actors.append({})
        current = self.actors[i]
        if current.get("pid") != worker["pid"]:
            history = current.pop("previous", []) + ([current] if current else [])
            self.actors[i] = {**worker, "restarts": len(history), "previous": history}

    def write(self, output_dir: str | os.PathLike) -> Path:
        data = asdict(self)
        write_json_atomic(output_dir, f"{RUNS_DIR}/{self.run_id}.json", data)
        return write_json_atomic(output_dir, MANIFEST_NAME, data)


def read_manifest(output_dir: str | os.PathLike, run_id: str | None = None) -> dict:
    """The latest run's manifest, or the one of ``run_id``."""
    path = Path(output_dir) / (MANIFEST_NAME if run_id is None else f"{RUNS_DIR}/{run_id}.json")
    return json.loads(path.read_text())
