"""qw-redis: the Redis (and Redis Cluster) backend of qw.

Importing this package does not import redis-py; ``RedisBackend`` is loaded
on first access, so that a missing driver is reported by the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qw_redis.backend import RedisBackend

__all__ = ["RedisBackend"]


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":
        from qw_redis.backend import RedisBackend

        return RedisBackend
    raise AttributeError(f"module 'qw_redis' has no attribute {name!r}")
