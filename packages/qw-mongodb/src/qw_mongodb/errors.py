"""pymongo's exceptions, translated into qw's error hierarchy at the backend's edge."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from qw.errors import BackendError, BackendUnavailable, DuplicateJob, QwError
from qw.translate import DEDUPE_RACE, ErrorTable, by_constraint, map_exceptions, to
from qw_mongodb.names import JOBS

__all__ = ["ERRORS", "UNIQUE_INDEXES", "translated"]

P = ParamSpec("P")
R = TypeVar("R")

# Authentication failed / unauthorized: the store cannot be used as configured.
_ACCESS_CODES = frozenset({13, 18})
#: The server's E11000 message names the collection and the index.
_E11000 = re.compile(r"collection: [^ .]+\.(?P<collection>\S+) index: (?P<index>\S+)")

#: ``collection.index`` of the unique indexes whose violation has a meaning.
UNIQUE_INDEXES: dict[str, type[QwError]] = {
    f"{JOBS}._id_": DuplicateJob,
    # enqueue() retries a key taken under it; reaching here means it could not.
    f"{JOBS}.dedupe_live": DEDUPE_RACE,
}


def _index(exc: BaseException) -> str | None:
    found = _E11000.search(str(exc))
    return f"{found['collection']}.{found['index']}" if found else None


def _refused_access(exc: BaseException, context: str) -> QwError | None:
    if isinstance(exc, OperationFailure) and exc.code in _ACCESS_CODES:
        return BackendUnavailable(f"MongoDB refused access: {exc}")
    return None


ERRORS: ErrorTable = {
    ConnectionFailure: to(BackendUnavailable, "MongoDB unreachable: {text}"),
    WriteConcernError: to(BackendUnavailable, "MongoDB did not confirm the write concern: {text}"),
    DuplicateKeyError: by_constraint(_index, UNIQUE_INDEXES),
    OperationFailure: _refused_access,
    PyMongoError: to(BackendError, "MongoDB error: {text}"),
}


def translated(fn: Callable[P, R]) -> Callable[P, R]:
    """Let no pymongo exception escape ``fn``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with map_exceptions(ERRORS):
            return fn(*args, **kwargs)

    return wrapper
