"""Entry point of the ``redis`` backend; imports redis-py only when the hook runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qw.plugin import hookimpl

if TYPE_CHECKING:
    from qw_redis.backend import RedisBackend


@hookimpl
def qw_register_backends() -> list[type[RedisBackend]]:
    from qw_redis.backend import RedisBackend

    return [RedisBackend]
