"""Opening redis-py clients for a :class:`~qw_redis.urls.RedisConfig`, and the durability check."""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from qw_redis.listen import subscriber_options
from qw_redis.urls import RedisConfig

__all__ = ["check_persistence", "open_client", "subscriber_for", "subscriber_url"]

log = logging.getLogger("qw_redis")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def open_client(config: RedisConfig) -> Any:
    """A connected client: ``redis.Redis`` or ``RedisCluster`` (pinged)."""
    if config.cluster:
        cluster = RedisCluster.from_url(config.driver_url, decode_responses=True)
        cluster.ping()
        return cluster
    # No silent retries: a script whose reply was lost may have run, and
    # running it again (an enqueue, a claim) must be the caller's decision.
    client = redis.Redis.from_url(
        config.driver_url, decode_responses=True, retry=Retry(NoBackoff(), 0)
    )
    client.ping()
    return client


def subscriber_url(config: RedisConfig, client: Any, channel: str) -> str:
    """The URL of the node that owns ``channel`` (the server itself, if single).

    ``client`` is the blocking client, whose Cluster slot map names the node.
    """
    url = config.driver_url
    if config.cluster:
        node = client.get_node_from_key(channel)
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{node.host}:{node.port}" if userinfo else f"{node.host}:{node.port}"
        url = urlunsplit(parts._replace(netloc=netloc))
    return url


def subscriber_for(config: RedisConfig, client: Any, channel: str) -> redis.Redis:
    """A fresh client for the node that owns ``channel`` (the server itself, if single)."""
    url = subscriber_url(config, client, channel)
    return redis.Redis.from_url(url, decode_responses=True, **subscriber_options())


def check_persistence(config: RedisConfig, client: Any) -> None:
    """Log one warning per server when acknowledged writes would not survive a restart."""
    with _warned_lock:
        if config.display in _warned:
            return
        _warned.add(config.display)
    try:
        appendonly = client.config_get("appendonly")
        save = client.config_get("save")
    except redis.RedisError as exc:
        # CONFIG is often renamed or disabled on managed servers.
        log.info("qw-redis: cannot read the persistence settings of %s (%s)", config.display, exc)
        return
    aof = str(appendonly.get("appendonly", "")).lower()
    rdb = str(save.get("save", "")).strip()
    if aof == "yes":
        return
    detail = "RDB snapshots only" if rdb else "no persistence at all (no AOF, no RDB)"
    log.warning(
        "qw-redis: %s has %s; acknowledged jobs can be lost when Redis restarts. "
        "Set appendonly yes (appendfsync always or everysec) for durable queues.",
        config.display,
        detail,
    )
