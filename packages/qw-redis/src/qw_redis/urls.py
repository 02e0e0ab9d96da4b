"""Reading a qw Redis URL: scheme, cluster or not, qw's own options, redis-py's options."""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from qw.display import redact_url
from qw.errors import ConfigurationError
from qw.urloptions import Option, integer, parse_options

__all__ = ["MAX_SHARDS", "QW_OPTIONS", "REDIS_OPTIONS", "SHARDS", "RedisConfig", "parse_url"]

#: Query options passed through to redis-py (its own URL options).
REDIS_OPTIONS = frozenset(
    {
        "db",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "retry_on_timeout",
        "max_connections",
        "health_check_interval",
        "client_name",
        "protocol",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_min_version",
    }
)
_SCHEMES = {
    "redis": ("redis", False),
    "rediss": ("rediss", False),
    "redis+cluster": ("redis", True),
    "rediss+cluster": ("rediss", True),
}


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """What a URL asks for, with the URL redis-py will be given."""

    cluster: bool
    driver_url: str
    poll_interval: float
    display: str
    #: How many shards (hash tags) new queues are spread over; 1 is one slot
    #: (see :mod:`qw_redis.sharded`). A namespace already sharded keeps its own
    #: count when this is lower.
    shards: int = 1


def parse_url(url: str) -> RedisConfig:
    """Parse ``redis://``, ``rediss://``, ``redis+cluster://`` or ``rediss+cluster://``.

    Unknown query options raise :class:`~qw.errors.ConfigurationError`.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {shown!r}: {exc}") from None
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        # Not urllib's message: it quotes the "port", which is part of the
        # password when an unescaped "/" cut the userinfo short.
        raise ConfigurationError(
            f"invalid Redis URL {shown!r}: the port is not a number in 0-65535"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"Redis URLs start redis://, rediss://, redis+cluster:// or rediss+cluster://, "
            f"not {parts.scheme}://"
        )
    driver_scheme, cluster = _SCHEMES[scheme]
    if not parts.hostname:
        raise ConfigurationError(f"Redis URL {shown!r} names no host")
    parsed = parse_options(
        parts.query,
        (POLL_INTERVAL, SHARDS),
        what="Redis",
        pass_through=REDIS_OPTIONS.__contains__,
        repeat_pass_through=False,
    )
    options = dict(parsed.passed)
    poll_interval = parsed[POLL_INTERVAL]
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigurationError(f"the Redis database is a number, not {path!r}")
    if cluster and ((path and path != "0") or options.get("db", "0") != "0"):
        raise ConfigurationError("Redis Cluster has only database 0")
    driver = urlunsplit((driver_scheme, parts.netloc, parts.path, urlencode(options), ""))
    return RedisConfig(
        cluster=cluster,
        driver_url=driver,
        poll_interval=poll_interval,
        display=shown,
        shards=parsed[SHARDS],
    )


def _positive(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be positive seconds")
    return value


#: Any positive number of seconds (not a range: the hub's poll is the only user).
POLL_INTERVAL = Option("poll_interval", 0.5, _positive, "seconds > 0")
#: The most shards a namespace can have: event cursors keep the shard in
#: their low six bits (see :mod:`qw_redis.sharded`).
MAX_SHARDS = 64
#: Spread new queues over this many hash tags (so a Cluster's masters).
SHARDS = integer("shards", 1, 1, MAX_SHARDS)
#: Options qw reads itself and strips before the URL reaches redis-py.
QW_OPTIONS = frozenset({POLL_INTERVAL.name, SHARDS.name})
