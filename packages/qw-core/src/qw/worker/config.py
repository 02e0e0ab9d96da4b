"""A worker's settings, checked once when it is made."""

from __future__ import annotations

from dataclasses import dataclass

from qw.errors import InvalidInput
from qw.validation import validate_queues

__all__ = ["WorkerConfig"]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker claims, runs, renews and stops.

    Attributes:
        queues: the queues to claim from.
        concurrency: sync tasks running at once (on that many threads), and
            coroutines running at once (on one event loop thread).
        lease_s: lease length; the worker renews every ``lease_s / 3``. A
            worker that dies loses its jobs to others after at most this long.
        poll_interval: the longest the worker sleeps on the backend's
            wake-up before claiming again (delayed and retried jobs become
            due without a signal).
        heartbeat_s: how often the worker refreshes its registry entry.
        reclaim_s: how often the worker requeues jobs whose leases expired.
        grace_s: on stop, how long running jobs may still finish before
            they are released (no attempt counted).
        finish_batch: the most outcomes written in one ``finish`` call.
        prefetch: jobs claimed ahead of free slots, so that a slot that
            frees starts its next job at once instead of waiting for a
            claim round trip (0: none). None adapts it: at least
            ``concurrency``, more while jobs are short, so that about 50 ms
            of work waits ahead of the slots (at most 1000 jobs).
            Their leases are renewed; their timeouts start when they do.
        tune_gc: while the worker runs, freeze the objects alive at its
            start out of cyclic garbage collection and collect the youngest
            generation every 10,000 allocations instead of 700 (a fifth of
            a short job's Python time went to collections); undone when the
            last worker of the process stops. See :mod:`qw.worker.gctuning`.
    """

    queues: tuple[str, ...] = ("default",)
    concurrency: int = 10
    lease_s: float = 30.0
    poll_interval: float = 1.0
    heartbeat_s: float = 5.0
    reclaim_s: float = 10.0
    grace_s: float = 30.0
    finish_batch: int = 500
    prefetch: int | None = None
    tune_gc: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", validate_queues(self.queues))
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int):
            raise InvalidInput(f"concurrency must be an int, not {self.concurrency!r}")
        if not 1 <= self.concurrency <= 1000:
            raise InvalidInput(f"concurrency must be in [1, 1000], not {self.concurrency}")
        for name in ("lease_s", "poll_interval", "heartbeat_s", "reclaim_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidInput(f"{name} must be seconds > 0, not {value!r}")
        if isinstance(self.grace_s, bool) or not self.grace_s >= 0:
            raise InvalidInput(f"grace_s must be seconds >= 0, not {self.grace_s!r}")
        if self.prefetch is not None and (
            isinstance(self.prefetch, bool)
            or not isinstance(self.prefetch, int)
            or not 0 <= self.prefetch <= 1000
        ):
            raise InvalidInput(f"prefetch must be an int in [0, 1000], not {self.prefetch!r}")
        if not 1 <= self.finish_batch <= 10_000:
            raise InvalidInput(f"finish_batch must be in [1, 10000], not {self.finish_batch!r}")

    @property
    def capacity(self) -> int:
        """Jobs a worker holds to run at first: its slots plus the prefetched ones."""
        return self.concurrency + (self.concurrency if self.prefetch is None else self.prefetch)

    @property
    def renew_s(self) -> float:
        """How often held leases are renewed."""
        return self.lease_s / 3
