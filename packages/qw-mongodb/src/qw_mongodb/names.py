"""Database and collection names, built only from validated parts.

Each namespace lives in its own database, ``<prefix><namespace>``. MongoDB
limits database names to 63 bytes and forbids ``/\\. "$*<>:|?``; the
namespace pattern already excludes those characters, the prefix is checked
here, and the total length is checked before any name reaches the driver.
"""

from __future__ import annotations

import re

from qw.errors import ConfigurationError, InvalidName
from qw.validation import validate_namespace

__all__ = [
    "COUNTERS",
    "DEFAULT_PREFIX",
    "EVENTS",
    "FAIR",
    "GATES",
    "JOBS",
    "LIMITS",
    "MAX_DATABASE_NAME",
    "META",
    "SCHEDULES",
    "SIGNALS",
    "SWITCHES",
    "WORKERS",
    "WORKFLOWS",
    "database_name",
    "validate_prefix",
]

DEFAULT_PREFIX = "qw_"
MAX_DATABASE_NAME = 63
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_-]{0,32}")

JOBS = "jobs"
EVENTS = "events"
COUNTERS = "counters"
WORKERS = "workers"
SWITCHES = "switches"
META = "meta"
SIGNALS = "signals"
WORKFLOWS = "workflows"
#: Flow control (schema 3): a gate per limit key, the operators' limits, fair
#: ranks (next rank per queue and key, fair clock per queue), schedules.
GATES = "gates"
LIMITS = "limits"
FAIR = "fair_ranks"
SCHEDULES = "schedules"


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can start a database name, else raise ConfigurationError."""
    if not isinstance(prefix, str) or not PREFIX_PATTERN.fullmatch(prefix):
        raise ConfigurationError(
            f"invalid database prefix {prefix!r}: must match {PREFIX_PATTERN.pattern}"
        )
    return prefix


def database_name(namespace: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The database that holds ``namespace``; raises before any I/O when it cannot exist."""
    validate_namespace(namespace)
    validate_prefix(prefix)
    name = prefix + namespace
    if len(name) > MAX_DATABASE_NAME:
        raise InvalidName(
            f"namespace {namespace!r} with database prefix {prefix!r} makes the database name "
            f"{name!r} ({len(name)} characters); MongoDB allows at most {MAX_DATABASE_NAME}"
        )
    return name
