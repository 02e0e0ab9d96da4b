"""``sqlite:///path.db?option=value``: from a URL to validated options.

Paths follow SQLAlchemy's convention: three slashes then a path relative to
the working directory (``sqlite:///jobs.db``), four for an absolute one
(``sqlite:////var/lib/app/jobs.db``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from qw.display import redact_url
from qw.errors import ConfigurationError

__all__ = ["DEFAULT_POLL_INTERVAL", "SYNCHRONOUS_MODES", "SqliteOptions", "parse_url"]

#: ``PRAGMA synchronous`` settings accepted; OFF is refused (not durable).
SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA")
#: Seconds between ``PRAGMA data_version`` checks while waiting: the check
#: reads one counter from shared memory (microseconds), so a short interval
#: buys cross-process wake-ups in a few milliseconds for almost no CPU.
DEFAULT_POLL_INTERVAL = 0.005

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
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key in options:
            raise ConfigurationError(f"sqlite option {key!r} is given twice in {shown!r}")
        options[key] = value
    unknown = sorted(set(options) - {"busy_timeout", "poll_interval", "synchronous", "shared"})
    if unknown:
        raise ConfigurationError(
            f"unknown sqlite option(s) {', '.join(unknown)} in {shown!r}; "
            "known: busy_timeout (ms), poll_interval (s), synchronous (NORMAL|FULL|EXTRA), "
            "shared (true|false)"
        )
    return SqliteOptions(
        path=path,
        busy_timeout_ms=_int_option(options, "busy_timeout", 5000),
        poll_interval=_float_option(options, "poll_interval", DEFAULT_POLL_INTERVAL),
        synchronous=options.get("synchronous", "FULL").upper(),
        shared=_bool_option(options, "shared"),
    )


def _bool_option(options: dict[str, str], key: str) -> bool:
    raw = options.get(key, "false").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"sqlite option {key} must be true or false, not {raw!r}")


def _int_option(options: dict[str, str], key: str, default: int) -> int:
    if key not in options:
        return default
    try:
        return int(options[key])
    except ValueError:
        raise ConfigurationError(
            f"sqlite option {key} must be an integer, not {options[key]!r}"
        ) from None


def _float_option(options: dict[str, str], key: str, default: float) -> float:
    if key not in options:
        return default
    try:
        return float(options[key])
    except ValueError:
        raise ConfigurationError(
            f"sqlite option {key} must be a number, not {options[key]!r}"
        ) from None
