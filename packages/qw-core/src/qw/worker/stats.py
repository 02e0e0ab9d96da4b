"""A worker's counters, written by several of its threads under one lock."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Counter", "WorkerStats"]

Counter = Literal[
    "claimed",
    "succeeded",
    "retried",
    "failed",
    "cancelled",
    "released",
    "abandoned",
    "timed_out",
    "lost",
]


@dataclass(slots=True)
class WorkerStats:
    """What a worker did.

    Several threads count (the claimer ``claimed`` and ``abandoned``, the
    finisher the outcomes, the finisher and the heartbeat both ``lost``), so
    every change goes through :meth:`add`, under the stats' own lock. Read
    the fields freely: each is one int.
    """

    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    released: int = 0
    #: Jobs still running at the end of the grace period, left to their leases.
    abandoned: int = 0
    timed_out: int = 0
    lost: int = 0
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def add(self, counter: Counter, n: int = 1) -> None:
        """Add ``n`` to ``counter``: ``+=`` on an attribute is not atomic across threads."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + n)
