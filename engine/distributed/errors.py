"""The user's error behind Ray's wrappers."""
from __future__ import annotations


def original_error(exc: BaseException) -> BaseException:
    """The innermost error that is not one of Ray's wrappers (``exc`` itself if none)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)
        if isinstance(inner, BaseException):
            exc = inner
            continue
        break
    return exc
