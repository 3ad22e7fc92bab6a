"""What decides a slide's outputs, recorded in its ``summary.json`` and compared on a rerun.

A rerun skips a finished slide only when the settings it was made with equal this run's; a
slide made another way (another model file, mode, pixel sizes, schedule, output options, prompts
or detector) is refused by name, with the settings that differ, unless ``overwrite`` is given.
Settings that change only speed (actors, batch size, progress bars) are not part of it, nor is
``qc`` (whether ``qc.png`` is drawn): the picture only shows the outputs, so a rerun with or without
``--no-qc`` skips finished slides as they are (with or without their ``qc.png``).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .output_folder import SUMMARY_NAME, slide_dir
from .records import Prompt
from .slides import SlideInfo

#: Bumped when the meaning of the recorded settings changes.
SETTINGS_VERSION = 1
#: Output options that change no output but an audit picture: not compared on reruns.
NOT_COMPARED_OUTPUT = ("qc",)


class RerunConflictError(ValueError):
    """Finished slides in the output folder were made with other settings than this run's."""


def prompts_sha256(prompts: Iterable[Prompt]) -> str:
    """Checksum of a slide's prompts (ids, boxes, points, labels, classes, names) in file order."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps(asdict(p), sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def slide_settings(info: SlideInfo, model: Mapping, schedule: Mapping, output: Mapping, source: Mapping) -> dict:
    """The settings of one slide's outputs, as plain JSON data.

    ``model``: weights checksums and inference options; ``source``: ``{"prompts_sha256": ...}``
    or ``{"detector": name, "options": {...}}``.
    """
    return {"version": SETTINGS_VERSION,
            "slide": {"width_l0_px": info.width_l0_px, "height_l0_px": info.height_l0_px, "mpp": info.mpp},
            "model": dict(model), "schedule": dict(schedule),
            "output": {k: v for k, v in output.items() if k not in NOT_COMPARED_OUTPUT}, "source": dict(source)}


#: Settings added after output folders may have been written, with the value an older version
#: behaved as: a record without one had that value (a rerun with it skips the slide).
#: ``schedule.packing``: older versions packed by the row greedy alone, so a folder they made is
#: refused by a rerun with today's default ("settings differ: schedule.packing") and skipped by one
#: with ``--packing row-greedy``.
ADDED_SETTINGS: dict[tuple[str, str], object] = {("schedule", "exact_packing"): False,
                                                 ("schedule", "packing"): "row-greedy"}


def with_added_settings(old: Mapping) -> dict:
    """``old`` (a recorded settings dict) with each setting of :data:`ADDED_SETTINGS` it lacks."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in old.items()}
    for (section, key), value in ADDED_SETTINGS.items():
        if isinstance(out.get(section), dict):
            out[section].setdefault(key, value)
    return out


def differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ (``model.sha256.checkpoint``, ``schedule.hr_mpp``)."""
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, name + ".")
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{name} ({_short(a)} -> {_short(b)})")
    return out


def _short(v) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 24 else text[:12] + "..." + text[-8:]


@dataclass(frozen=True)
class RerunPlan:
    todo: list[str]  # slide ids to segment (new, or redone with overwrite)
    skipped: list[str]  # finished with the same settings
    redone: list[str]  # finished with other settings, redone because of overwrite


def plan_rerun(output_dir: str | Path, settings: Mapping[str, dict], overwrite: bool = False) -> RerunPlan:
    """Which slides to segment, given each slide's settings for this run.

    Raises :class:`RerunConflictError` naming every finished slide whose recorded settings differ
    (or were not recorded) unless ``overwrite``.
    """
    todo, skipped, redone, conflicts = [], [], [], []
    for slide_id, new in settings.items():
        summary = slide_dir(output_dir, slide_id) / SUMMARY_NAME
        if not summary.is_file():
            todo.append(slide_id)
            continue
        try:
            old = json.loads(summary.read_text()).get("settings")
        except (OSError, ValueError):
            old = None
        diff = ["settings not recorded (made by an older version, or the file is damaged)"] if not old \
            else differences(with_added_settings(old), new)
        if not diff:
            skipped.append(slide_id)
        elif overwrite:
            todo.append(slide_id)
            redone.append(slide_id)
        else:
            conflicts.append(f"  {slide_id}: " + "; ".join(diff))
    if conflicts:
        raise RerunConflictError(
            f"{len(conflicts)} finished slide(s) in {output_dir} were made with other settings than this run's; "
            f"use --overwrite (overwrite=True) to redo them, or another --output:\n" + "\n".join(conflicts))
    return RerunPlan(todo, skipped, redone)
