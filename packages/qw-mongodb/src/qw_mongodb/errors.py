"""pymongo's exceptions, translated into qw's error hierarchy at the backend's edge."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pymongo.errors import (
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from qw.errors import BackendError, BackendUnavailable, QwError

__all__ = ["translate", "translated"]

P = ParamSpec("P")
R = TypeVar("R")

# Authentication failed / unauthorized: the store cannot be used as configured.
_ACCESS_CODES = frozenset({13, 18})


def translate(exc: PyMongoError) -> QwError:
    """The qw error for a driver error (the driver error stays as ``__cause__``)."""
    if isinstance(exc, ConnectionFailure):
        return BackendUnavailable(f"MongoDB unreachable: {exc}")
    if isinstance(exc, WriteConcernError):
        return BackendUnavailable(f"MongoDB did not confirm the write concern: {exc}")
    if isinstance(exc, OperationFailure) and exc.code in _ACCESS_CODES:
        return BackendUnavailable(f"MongoDB refused access: {exc}")
    return BackendError(f"MongoDB error: {exc}")


def translated(fn: Callable[P, R]) -> Callable[P, R]:
    """Let no pymongo exception escape ``fn``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except PyMongoError as exc:
            raise translate(exc) from exc

    return wrapper
