"""A worker's settings, checked once when it is made."""

from __future__ import annotations

from dataclasses import dataclass

from qw.errors import InvalidInput
from qw.validation import (
    MAX_SECONDS,
    is_int_in,
    is_seconds,
    validate_lease_seconds,
    validate_queues,
)

__all__ = ["PRUNE_AFTER_S", "WorkerConfig"]

#: A registry entry whose worker has not heartbeated for this long (store
#: clock) is stale: its worker was killed without removing it.
PRUNE_AFTER_S = 600.0


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
        grace_s: on stop, how long running jobs may still finish. Then
            cancelled coroutines are released (no attempt counted); sync
            tasks still running are left to their leases (see the guide).
        prune_after_s: registry entries (any worker's) not refreshed for
            this long are removed by this worker's heartbeat loop; at least
            three ``heartbeat_s``.
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
        scheduler: run a scheduler thread for the app's periodic schedules
            (:meth:`qw.App.periodic`); any number of workers may, each tick
            is enqueued once. False leaves them to other workers.
        inline: run sync tasks one at a time in the thread that runs the
            worker (:meth:`~qw.worker.Worker.run`) instead of on
            ``concurrency`` threads, so a debugger or a test sees them
            there; no job is claimed while one runs, and one that ignores
            its timeout holds the worker until it returns. ``async def``
            tasks still run on the event loop thread.
    """

    queues: tuple[str, ...] = ("default",)
    concurrency: int = 10
    lease_s: float = 30.0
    poll_interval: float = 1.0
    heartbeat_s: float = 5.0
    reclaim_s: float = 10.0
    grace_s: float = 30.0
    prune_after_s: float = PRUNE_AFTER_S
    finish_batch: int = 500
    prefetch: int | None = None
    tune_gc: bool = True
    scheduler: bool = True
    inline: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", validate_queues(self.queues))
        if not is_int_in(self.concurrency, 1, 1000):
            raise InvalidInput(f"concurrency must be an int in [1, 1000], not {self.concurrency!r}")
        object.__setattr__(self, "lease_s", validate_lease_seconds(self.lease_s))
        for name in ("poll_interval", "heartbeat_s", "reclaim_s", "prune_after_s"):
            value = getattr(self, name)
            if not (is_seconds(value) and value > 0):
                raise InvalidInput(f"{name} must be seconds in (0, {MAX_SECONDS}], not {value!r}")
        if not is_seconds(self.grace_s):
            raise InvalidInput(
                f"grace_s must be seconds in [0, {MAX_SECONDS}], not {self.grace_s!r}"
            )
        if self.prune_after_s < 3 * self.heartbeat_s:
            # A live worker must get several heartbeats in before it could look stale.
            raise InvalidInput(
                f"prune_after_s must be at least 3 * heartbeat_s ({3 * self.heartbeat_s}), "
                f"not {self.prune_after_s!r}"
            )
        if self.prefetch is not None and not is_int_in(self.prefetch, 0, 1000):
            raise InvalidInput(f"prefetch must be an int in [0, 1000], not {self.prefetch!r}")
        if not is_int_in(self.finish_batch, 1, 10_000):
            raise InvalidInput(
                f"finish_batch must be an int in [1, 10000], not {self.finish_batch!r}"
            )
        if not isinstance(self.tune_gc, bool):
            raise InvalidInput(f"tune_gc must be a bool, not {self.tune_gc!r}")
        if not isinstance(self.scheduler, bool):
            raise InvalidInput(f"scheduler must be a bool, not {self.scheduler!r}")
        if not isinstance(self.inline, bool):
            raise InvalidInput(f"inline must be a bool, not {self.inline!r}")

    @property
    def renew_s(self) -> float:
        """How often held leases are renewed."""
        return self.lease_s / 3
