"""From a ``postgresql://`` URL to a libpq conninfo plus qw's own options.

qw's options ride in the URL's query string next to libpq's. They are taken
out before the conninfo reaches psycopg; a query key that is neither a qw
option nor a libpq keyword is refused, so a typo never goes unnoticed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from qw.display import redact_url
from qw.errors import ConfigurationError

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_PATTERN", "Settings", "parse_url", "validate_schema"]

DEFAULT_SCHEMA = "qw"
#: Lower-case, unquoted-identifier-safe, and short enough that derived
#: names (indexes, advisory-lock labels) stay under PostgreSQL's 63 bytes.
SCHEMA_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,39}")
SCHEMES = {"postgresql", "postgres", "pg"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


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


def _int(key: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{key} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{key} must be in [{low}, {high}], not {value}")
    return value


def _seconds(key: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{key} must be a number of seconds, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{key} must be in [{low}, {high}] seconds, not {raw!r}")
    return value


def _bool(key: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigurationError(f"{key} must be true or false, not {raw!r}")


def parse_url(url: str) -> Settings:
    """Split ``url`` into a libpq conninfo and qw's options; refuse what is unknown."""
    if not isinstance(url, str):
        raise ConfigurationError(f"a postgres URL must be a string, not {type(url).__name__}")
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse postgres URL {shown!r}: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigurationError(
            f"postgres URLs start with postgresql://, postgres:// or pg://, not {shown!r}"
        )
    if parts.fragment:
        raise ConfigurationError(f"a postgres URL has no #fragment: {shown!r}")
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    known = _libpq_keywords()
    for key, value in pairs:
        if key in _QW_OPTIONS:
            if key in ours:
                raise ConfigurationError(f"option {key!r} is given twice in {shown!r}")
            ours[key] = value
        elif key in known:
            theirs.append((key, value))
        else:
            raise ConfigurationError(
                f"unknown option {key!r} in postgres URL; qw options are "
                f"{', '.join(sorted(_QW_OPTIONS))}, other keys must be libpq parameters"
            )
    # quote, not quote_plus: libpq does not read "+" as a space.
    query = urlencode(theirs, quote_via=quote)
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, query, ""))
    pool_min = _int("pool_min", ours.get("pool_min", "1"), 0, 1000)
    pool_max = _int("pool_max", ours.get("pool_max", str(max(10, pool_min))), 1, 1000)
    if pool_max < pool_min:
        raise ConfigurationError(f"pool_max ({pool_max}) is below pool_min ({pool_min})")
    return Settings(
        conninfo=conninfo,
        schema=validate_schema(ours.get("schema", DEFAULT_SCHEMA)),
        pool_min=pool_min,
        pool_max=pool_max,
        pool_timeout=_seconds("pool_timeout", ours.get("pool_timeout", "30"), 0.1, 3600),
        auto_migrate=_bool("auto_migrate", ours.get("auto_migrate", "true")),
        poll_interval=_seconds("poll_interval", ours.get("poll_interval", "0.5"), 0.01, 60),
    )


_QW_OPTIONS = frozenset(
    {"schema", "pool_min", "pool_max", "pool_timeout", "auto_migrate", "poll_interval"}
)
