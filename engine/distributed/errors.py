"""Errors raised inside Ray workers, and recovering them on the driver.

What Ray 2.59 hands the driver (measured, tests/test_model_inputs.py):

- a task that raised ``E``: ``RayTaskError(E)``, a class deriving from both ``RayTaskError`` and
  ``type(E)``, whose ``.cause`` is the original ``E``;
- a call on an actor whose ``__init__`` raised ``E``: ``ActorDiedError`` (``actor_init_failed``
  True) that keeps the original only in ``.args[0]``, a plain ``RayTaskError`` whose ``.cause``
  is ``E`` (``ActorDiedError`` itself stores just the message; it is not restarted even with
  ``max_restarts=-1``);
- a call on an actor whose process died: ``ActorDiedError`` with empty ``.args`` (no original).
"""
from __future__ import annotations

from ray.exceptions import RayActorError, RayTaskError


class DeviceError(ValueError):
    """A worker cannot use the device it was given (e.g. Ray gave it a GPU that torch cannot see)."""


def original_error(exc: BaseException) -> BaseException | None:
    """The exception user code raised inside a Ray task or actor, unwrapped from Ray's errors;
    ``exc`` itself when it is not a Ray wrapper; None when Ray holds no original (a dead process)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, RayTaskError):
            cause = exc.cause
        elif isinstance(exc, RayActorError):
            cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        else:
            return exc
        if cause is None:
            return None
        exc = cause
    return None


class ActorStartError(ValueError):
    """A model actor could not start (its message is the original error's); the CLI exits 2."""


def actor_start_error(exc: BaseException) -> BaseException:
    """What to raise when a model actor failed to load its model: the user's own error (a
    checkpoint that does not fit, a missing file: the CLI exits 2 with it), else
    :class:`ActorStartError` with the original error's text."""
    err = original_error(exc) or exc
    if isinstance(err, (ValueError, FileNotFoundError, PermissionError)):
        return err
    return ActorStartError(f"a model actor could not start: {type(err).__name__}: {err}")
