"""What a call asks of Redis, apart from how it is sent: the sync and async backends share it.

A *plan* is a generator: it yields the operations it needs (a script call,
a plain command) and is sent each one's reply, and its return value is the
call's answer. :class:`~qw_redis.backend.RedisBackend` runs plans with its
blocking client, :class:`~qw_redis.aio.AsyncRedisBackend` with its
``redis.asyncio`` one; the deciding, the retries and the parsing are the
plan's, written once.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Command", "Op", "Plan", "Script"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Script:
    """Call Lua script ``name`` with the queue header ``queues`` and ``args``."""

    name: str
    queues: Sequence[str]
    args: Sequence[object]


@dataclass(frozen=True, slots=True)
class Command:
    """Call client method ``method`` (``"hgetall"``, ...) with ``args``; errors name ``context``."""

    context: str
    method: str
    args: tuple[object, ...]


Op = Script | Command
#: Yields operations, is sent their replies, returns the answer.
Plan = Generator[Op, Any, T]
