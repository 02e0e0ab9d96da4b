"""redis-py exceptions become qw errors here, and only here."""

from __future__ import annotations

from contextlib import AbstractContextManager

from redis import exceptions as rx

from qw.errors import BackendError, BackendUnavailable
from qw.translate import ErrorTable, map_exceptions, to

__all__ = ["ERRORS", "translated"]

#: Redis has no unique constraints: a repeated id is found by the Lua scripts.
ERRORS: ErrorTable = {
    (
        rx.ConnectionError,
        rx.TimeoutError,
        rx.AuthenticationError,
        rx.ClusterDownError,
        rx.ClusterError,
        rx.TryAgainError,
        rx.MasterDownError,
        rx.ReadOnlyError,
    ): to(BackendUnavailable, "redis unavailable during {context}: {text}"),
    rx.RedisClusterException: to(
        BackendUnavailable, "redis cluster unavailable during {context}: {text}"
    ),
    rx.RedisError: to(BackendError, "redis failed during {context}: {text}"),
    OSError: to(BackendUnavailable, "redis unreachable during {context}: {text}"),
}


def translated(what: str) -> AbstractContextManager[None]:
    """Run a block that talks to Redis; re-raise driver errors as qw errors."""
    return map_exceptions(ERRORS, what)
