"""Flow control decided once: which due jobs a claim may take under their keys' limits.

Every backend that declares ``limits`` applies these rules; none re-decides
them. A backend gathers, atomically with respect to other claims, the due
queued jobs in claim order, the running count and recent starts of their
keys, and the operators' limits; :func:`plan_claim` says which to take. A
store that cannot run Python inside its write (a Lua script) implements the
same rule, and the kit's model checks it against its own reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from qw.model import KeyState, Limit

__all__ = [
    "Candidate",
    "effective_limit",
    "fair_rank",
    "in_window",
    "key_state",
    "plan_claim",
    "rate_window_start",
]


class Candidate(NamedTuple):
    """A due, queued job as :func:`plan_claim` sees it, in claim order."""

    limit_key: str | None
    limit: Limit | None


def effective_limit(
    key: str | None, own: Limit | None, overrides: Mapping[str, Limit]
) -> Limit | None:
    """The limit a job is held to: the operators' for its key, else its own."""
    if key is None:
        return None
    return overrides.get(key, own)


def rate_window_start(now: datetime, per: float) -> datetime:
    """The earliest start time still inside a ``per``-second window ending now (exclusive)."""
    return now - timedelta(seconds=per)


def in_window(starts: Iterable[datetime], now: datetime, per: float) -> int:
    """How many of ``starts`` lie inside the window: later than ``now - per``."""
    since = rate_window_start(now, per)
    return sum(1 for t in starts if t > since)


def plan_claim(
    candidates: Sequence[Candidate],
    *,
    running: Mapping[str, int],
    starts: Mapping[str, Sequence[datetime]],
    overrides: Mapping[str, Limit],
    now: datetime,
    limit: int,
) -> list[int]:
    """Indices of the candidates to claim, at most ``limit``, in claim order.

    ``running`` counts each key's ``running`` jobs; ``starts`` holds each
    key's claim times (any older than a window are ignored). A candidate is
    taken unless its key's effective limit is reached, counting what this
    claim already took: ``running`` at ``concurrency``, or starts in
    ``(now - per, now]`` at ``rate``. A candidate held back never stops the
    ones after it.
    """
    taken: list[int] = []
    extra: dict[str, int] = {}
    for index, cand in enumerate(candidates):
        if len(taken) >= limit:
            break
        key = cand.limit_key
        lim = effective_limit(key, cand.limit, overrides)
        if key is not None and lim is not None:
            more = extra.get(key, 0)
            if lim.concurrency is not None and running.get(key, 0) + more >= lim.concurrency:
                continue
            if (
                lim.rate is not None
                and lim.per is not None
                and in_window(starts.get(key, ()), now, lim.per) + more >= lim.rate
            ):
                continue
        if key is not None:
            extra[key] = extra.get(key, 0) + 1
        taken.append(index)
    return taken


def fair_rank(next_rank: int, clock: int) -> int:
    """A new fair job's rank: its key's next rank, or the queue's fair clock if later.

    A key idle for a while so starts where the queue's service is now,
    rather than ahead of every busy key (start-time fair queuing).
    """
    return max(next_rank, clock)


def key_state(
    key: str,
    *,
    queued: int,
    running: int,
    own: Limit | None,
    overrides: Mapping[str, Limit],
    starts: Sequence[datetime],
    now: datetime,
) -> KeyState:
    """A key's :class:`~qw.model.KeyState` from its counts, as every backend reports it."""
    lim = effective_limit(key, own, overrides)
    started = 0
    if lim is not None and lim.rate is not None and lim.per is not None:
        started = in_window(starts, now, lim.per)
    return KeyState(key, queued, running, lim, key in overrides, started)
