"""``sqlite:///path.db?option=value``: from a URL to validated options.

Paths follow SQLAlchemy's convention: three slashes then a path relative to
the working directory (``sqlite:///jobs.db``), four for an absolute one
(``sqlite:////var/lib/app/jobs.db``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from qw.display import redact_url
from qw.errors import ConfigurationError
from qw.urloptions import boolean, choice, integer, parse_options, seconds

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "OPTIONS",
    "SYNCHRONOUS_MODES",
    "SqliteOptions",
    "parse_url",
]

#: ``PRAGMA synchronous`` settings accepted; OFF is refused (not durable).
SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA")
#: Seconds between ``PRAGMA data_version`` checks while waiting: the check
#: reads one counter from shared memory (microseconds), so a short interval
#: buys cross-process wake-ups in a few milliseconds for almost no CPU.
DEFAULT_POLL_INTERVAL = 0.005

# Ranges are SqliteOptions' to check: it is also built without a URL.
BUSY_TIMEOUT = integer("busy_timeout", 5000)
POLL_INTERVAL = seconds("poll_interval", DEFAULT_POLL_INTERVAL)
SYNCHRONOUS = choice("synchronous", "FULL", SYNCHRONOUS_MODES, ignore_case=True)
SHARED = boolean("shared")
OPTIONS = (BUSY_TIMEOUT, POLL_INTERVAL, SYNCHRONOUS, SHARED)

_MEMORY_HINT = (
    "an in-memory SQLite database is private to one connection, so it cannot hold a "
    "queue shared by threads or processes; use memory:// for an in-process store"
)


@dataclass(frozen=True, slots=True)
class SqliteOptions:
    """Where the database file is and how connections to it are set up.

    Attributes:
        path: the database file (relative paths are to the working directory).
        busy_timeout_ms: how long a statement waits for another connection's
            lock before the operation fails with BackendUnavailable.
        poll_interval: seconds between checks for other processes' commits
            in ``wait``.
        synchronous: ``PRAGMA synchronous``; FULL survives power loss,
            NORMAL may lose the last commits on power loss (not on a crash
            of the process).
        shared: the file may hold other applications' tables. Without it
            such a file is refused; with it qw adds its tables but leaves
            the journal mode alone, and the file must already be in WAL.
    """

    path: str
    busy_timeout_ms: int = 5000
    poll_interval: float = DEFAULT_POLL_INTERVAL
    synchronous: str = "FULL"
    shared: bool = False

    def __post_init__(self) -> None:
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise ConfigurationError(f"sqlite path {self.path!r}: {_MEMORY_HINT}")
        if "\x00" in self.path:
            raise ConfigurationError(f"sqlite path {self.path!r} holds a NUL character")
        if not 0 <= self.busy_timeout_ms <= 3_600_000:
            raise ConfigurationError(
                f"busy_timeout must be milliseconds in [0, 3600000], not {self.busy_timeout_ms}"
            )
        if not (math.isfinite(self.poll_interval) and 0.001 <= self.poll_interval <= 60):
            raise ConfigurationError(
                f"poll_interval must be seconds in [0.001, 60], not {self.poll_interval}"
            )
        if self.synchronous not in SYNCHRONOUS_MODES:
            raise ConfigurationError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, "
                f"not {self.synchronous!r}"
            )


def parse_url(url: str) -> SqliteOptions:
    """The options a ``sqlite://`` URL names; anything unknown raises ConfigurationError."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse sqlite URL {shown!r}: {exc}") from None
    if parts.scheme != "sqlite":
        raise ConfigurationError(f"not a sqlite URL: {shown!r}")
    if parts.netloc:
        raise ConfigurationError(
            f"sqlite URLs have no host: write sqlite:///relative.db or "
            f"sqlite:////absolute/path.db, not {shown!r}"
        )
    if parts.fragment:
        raise ConfigurationError(f"sqlite URLs take no #fragment: {shown!r}")
    # The slash after "sqlite://" separates the (empty) host from the path.
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if path in ("", ":memory:"):
        raise ConfigurationError(f"{shown!r}: {_MEMORY_HINT}")
    options = parse_options(parts.query, OPTIONS, what="sqlite")
    return SqliteOptions(
        path=path,
        busy_timeout_ms=options[BUSY_TIMEOUT],
        poll_interval=options[POLL_INTERVAL],
        synchronous=options[SYNCHRONOUS],
        shared=options[SHARED],
    )
