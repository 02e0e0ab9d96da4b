"""From a ``postgresql://`` URL to a libpq conninfo plus qw's own options.

qw's options ride in the URL's query string next to libpq's. They are taken
out before the conninfo reaches psycopg; a query key that is neither a qw
option nor a libpq keyword is refused, so a typo never goes unnoticed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from qw.display import redact_url
from qw.errors import ConfigurationError
from qw.urloptions import boolean, integer, parse_options, seconds, text

__all__ = [
    "DEFAULT_SCHEMA",
    "OPTIONS",
    "SCHEMA_PATTERN",
    "Settings",
    "parse_url",
    "validate_schema",
]

DEFAULT_SCHEMA = "qw"
#: Lower-case, unquoted-identifier-safe, and short enough that derived
#: names (indexes, advisory-lock labels) stay under PostgreSQL's 63 bytes.
SCHEMA_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,39}")
SCHEMES = {"postgresql", "postgres", "pg"}
SCHEMA = text("schema", DEFAULT_SCHEMA)
POOL_MIN = integer("pool_min", 1, 0, 1000)
#: Its default follows pool_min: max(10, pool_min).
POOL_MAX = integer("pool_max", 10, 1, 1000)
POOL_TIMEOUT = seconds("pool_timeout", 30.0, 0.1, 3600)
AUTO_MIGRATE = boolean("auto_migrate", True)
POLL_INTERVAL = seconds("poll_interval", 0.5, 0.01, 60)
OPTIONS = (SCHEMA, POOL_MIN, POOL_MAX, POOL_TIMEOUT, AUTO_MIGRATE, POLL_INTERVAL)


@dataclass(frozen=True, slots=True)
class Settings:
    """What a URL asks for: where to connect, and how qw should behave there."""

    conninfo: str
    schema: str = DEFAULT_SCHEMA
    pool_min: int = 1
    pool_max: int = 10
    pool_timeout: float = 30.0
    auto_migrate: bool = True
    poll_interval: float = 0.5


def validate_schema(name: object) -> str:
    """Return ``name`` if it is an acceptable schema name, else raise ConfigurationError."""
    if not isinstance(name, str) or not SCHEMA_PATTERN.fullmatch(name):
        raise ConfigurationError(
            f"invalid schema name {name!r}: must match {SCHEMA_PATTERN.pattern}"
        )
    return name


def _libpq_keywords() -> frozenset[str]:
    import psycopg

    return frozenset(d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults())


def parse_url(url: str) -> Settings:
    """Split ``url`` into a libpq conninfo and qw's options; refuse what is unknown."""
    if not isinstance(url, str):
        raise ConfigurationError(f"a postgres URL must be a string, not {type(url).__name__}")
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse postgres URL {shown!r}: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigurationError(
            f"postgres URLs start with postgresql://, postgres:// or pg://, not {shown!r}"
        )
    if parts.fragment:
        raise ConfigurationError(f"a postgres URL has no #fragment: {shown!r}")
    known = _libpq_keywords()
    ours = parse_options(
        parts.query, OPTIONS, what="postgres", pass_through=known.__contains__, strict=True
    )
    # quote, not quote_plus: libpq does not read "+" as a space.
    query = urlencode(ours.passed, quote_via=quote)
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, query, ""))
    pool_min = ours[POOL_MIN]
    pool_max = ours[POOL_MAX] if ours.has(POOL_MAX) else max(10, pool_min)
    if pool_max < pool_min:
        raise ConfigurationError(f"pool_max ({pool_max}) is below pool_min ({pool_min})")
    return Settings(
        conninfo=conninfo,
        schema=validate_schema(ours[SCHEMA]),
        pool_min=pool_min,
        pool_max=pool_max,
        pool_timeout=ours[POOL_TIMEOUT],
        auto_migrate=ours[AUTO_MIGRATE],
        poll_interval=ours[POLL_INTERVAL],
    )
