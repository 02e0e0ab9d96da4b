"""redis-py exceptions become qw errors here, and only here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis import exceptions as rx

from qw.errors import BackendError, BackendUnavailable, QwError

__all__ = ["translated"]

_UNAVAILABLE = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.AuthenticationError,
    rx.ClusterDownError,
    rx.ClusterError,
    rx.TryAgainError,
    rx.MasterDownError,
    rx.ReadOnlyError,
)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run a block that talks to Redis; re-raise driver errors as qw errors."""
    try:
        yield
    except QwError:
        raise
    except _UNAVAILABLE as exc:
        raise BackendUnavailable(f"redis unavailable during {what}: {exc}") from exc
    except rx.RedisClusterException as exc:
        raise BackendUnavailable(f"redis cluster unavailable during {what}: {exc}") from exc
    except rx.RedisError as exc:
        raise BackendError(f"redis failed during {what}: {exc}") from exc
    except OSError as exc:
        raise BackendUnavailable(f"redis unreachable during {what}: {exc}") from exc
