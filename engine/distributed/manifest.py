"""The run manifest: configuration, model checksums, and per slide its status, timings and
which actor (and GPU) ran which windows. Rewritten atomically after every slide."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_NAME = "run_manifest.json"


@dataclass
class SlideEntry:
    slide_id: str
    path: str
    status: str = "pending"  # pending | done | skipped (done by an earlier run) | failed
    error: str | None = None
    prompts: int = 0
    objects: int = 0
    windows: int = 0
    windows_computed: int = 0  # windows segmented in this run (0 for skipped slides)
    encoder_passes: int = 0
    prompts_dropped_outside: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    batches: list[dict] = field(default_factory=list)  # batch id, windows, actor, pid, gpu ids, seconds


@dataclass
class RunManifest:
    run_id: str
    started: str
    config: dict
    model_sha256: dict[str, str]
    cluster: dict
    actors: list[dict] = field(default_factory=list)
    slides: dict[str, SlideEntry] = field(default_factory=dict)
    finished: str | None = None
    totals: dict = field(default_factory=dict)

    def write(self, output_dir: str | os.PathLike) -> Path:
        path = Path(output_dir) / MANIFEST_NAME
        fd, tmp = tempfile.mkstemp(dir=output_dir, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=2, default=str)
        os.replace(tmp, path)
        return path


def read_manifest(output_dir: str | os.PathLike) -> dict:
    return json.loads((Path(output_dir) / MANIFEST_NAME).read_text())
