"""The layout of a run's output folder, and the guards on it.

    <output>/<slide_id>/            one finished slide (summary.json last, published by a rename)
    <output>/.<slide_id>.partial/   a slide being written (removed when it fails)
    <output>/run_manifest.json      the latest run's manifest
    <output>/.runs/<run_id>.json    every run's own manifest (never overwritten)
    <output>/.wsisam-engine.lock    held by the run writing the folder

Every path the engine creates, renames or deletes under the output folder goes through
:func:`inside`, which resolves it and refuses anything that is not strictly inside the folder
(defence in depth behind the slide id check in :func:`engine.slides.check_slide_id`).
"""
from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

from .io import atomic

MANIFEST_NAME = "run_manifest.json"
RUNS_DIR = ".runs"
LOCK_NAME = ".wsisam-engine.lock"
SUMMARY_NAME = "summary.json"
#: Names a slide id may not take: they are the folder's own files.
RESERVED_NAMES = frozenset({MANIFEST_NAME, RUNS_DIR, LOCK_NAME})


class UnsafePathError(ValueError):
    """A path the engine was about to write or delete lies outside the output folder."""


def inside(root: str | os.PathLike, *parts: str) -> Path:
    """``root/parts...`` checked to lie strictly inside ``root`` (never ``root`` itself).

    Each part is one plain name (no separator, not ``.``/``..``); folders on the way are
    resolved (symbolic links followed), the last name is kept as it is, so a link there is
    replaced or removed itself, never what it points to.
    """
    base = Path(root).resolve()
    if not parts:
        raise UnsafePathError(f"refusing the output folder {base} itself as a path to write or delete")
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\0" in part or (os.sep != "/" and os.sep in part):
            raise UnsafePathError(f"refusing the path component {part!r} under output folder {base}")
    path = base.joinpath(*parts[:-1]).resolve() / parts[-1]
    if base not in path.parents:
        raise UnsafePathError(f"refusing {path}: it is not inside the output folder {base}")
    return path


def slide_dir(root: str | os.PathLike, slide_id: str) -> Path:
    """Where a finished slide's outputs live."""
    return inside(root, slide_id)


def partial_dir(root: str | os.PathLike, slide_id: str) -> Path:
    """Where a slide's outputs are written before they are published."""
    return inside(root, f".{slide_id}.partial")


def remove_tree(root: str | os.PathLike, name: str) -> None:
    """Delete ``root/name`` (a folder, file or link) after checking it lies inside ``root``."""
    path = inside(root, name)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def slide_id_of_folder(folder: str | os.PathLike) -> str:
    """The slide a slide folder belongs to: ``<slide_id>`` or ``.<slide_id>.partial``."""
    name = Path(folder).name
    if name.startswith(".") and name.endswith(".partial"):
        return name[1:-len(".partial")]
    return name


def write_json_atomic(root: str | os.PathLike, relative: str, data: dict) -> Path:
    """Write ``data`` as JSON to ``root/relative`` (checked by :func:`inside`), atomically."""
    path = inside(root, *Path(relative).parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_json(path, data, indent=2, default=str)


class OutputLockedError(ValueError):
    """Another run holds the output folder."""


class RunLock:
    """An exclusive lock on an output folder for the duration of a run.

    ``flock`` on ``<output>/.wsisam-engine.lock``: the kernel releases it when the holding process
    dies, however it dies (on NFS, Linux maps it to a POSIX lock through the NFS lock manager).
    The holder (host, pid, run id, start time) is written into the file for the refusal message.
    """

    def __init__(self, root: str | os.PathLike, run_id: str) -> None:
        self.path = inside(root, LOCK_NAME)
        self.run_id = run_id
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise OutputLockedError(f"output folder {self.path.parent} is in use by another run "
                                    f"({_holder(self.path)}); wait for it to end or use another --output") from None
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "run_id": self.run_id,
                  "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        h = {}
    if not h:
        return "holder unknown"
    return f"host {h.get('host')}, pid {h.get('pid')}, run {h.get('run_id')}, started {h.get('started')}"
