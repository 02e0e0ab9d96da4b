"""One claimed job inside a worker: its state, and every change to it.

A :class:`JobSlot` is shared by the worker's threads (the claimer, a pool
thread or the event loop, the finisher, the heartbeat). Every field that
changes after the claim is changed here, by a method that holds the lock
the worker gave the slot (the re-entrant lock under its single condition,
so the worker may hold it across several slots). Reading one field needs no lock.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from qw.model import Job, JSONValue, Lease
from qw.tasks import Task
from qw.worker.context import RunningJob

if TYPE_CHECKING:
    import asyncio

__all__ = ["JobSlot"]


class JobSlot:
    """A claimed job, from its claim until its task returned and its outcome is written.

    ``settled`` turns True once, when the one outcome the job gets is
    decided (the task's, a timeout, a release at stop), or when nothing will
    be written (lease lost, abandoned at stop); later outcomes are ignored.
    """

    __slots__ = (
        "_abandoned",
        "_begun",
        "_cancel_requested",
        "_committed",
        "_completed_in_transaction",
        "_deadline",
        "_lease",
        "_lock",
        "_returned",
        "_settled",
        "_started",
        "_stop_reason",
        "_timed_out",
        "args",
        "async_task",
        "completed_result",
        "job",
        "kwargs",
        "parents",
        "task",
        "view",
    )

    def __init__(
        self,
        job: Job,
        lease: Lease,
        task: Task[Any, Any] | None,
        args: list[JSONValue],
        kwargs: dict[str, JSONValue],
        *,
        lock: AbstractContextManager[object],
    ) -> None:
        self.job = job
        self.task = task
        self.args = args
        self.kwargs = kwargs
        # A workflow step's parents as stored when it was claimed (set by dispatch).
        self.parents: dict[str, Job] = {}
        self._lock = lock
        self._lease = lease
        # Claimed now; started (and given a deadline) by begin() when a slot runs it.
        self._started = time.monotonic()
        self._deadline: float | None = None
        self._begun = False
        self._cancel_requested = False
        self._timed_out = False
        self._settled = False
        # Both must happen before the worker forgets the job: the task
        # returned (its thread or coroutine is idle) and the outcome committed.
        self._returned = False
        self._committed = False
        # Still running when the worker stopped: nothing is written for it.
        self._abandoned = False
        self._stop_reason: str | None = None
        # The task finished the job itself, in its own transaction (RunningJob.complete).
        self._completed_in_transaction = False
        #: The result it finished the job with, for the hooks once that is known to have held.
        self.completed_result: JSONValue = None
        #: The coroutine's task: set and read on the event loop thread only.
        self.async_task: asyncio.Task[None] | None = None
        #: What the task sees through ``qw.current_job()``.
        self.view = RunningJob(self)

    def __repr__(self) -> str:
        return f"<JobSlot {self.job.id} attempt={self.job.attempts}>"

    # -- reading -------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def lease(self) -> Lease:
        """The latest lease: the claim's, then each renewal's."""
        return self._lease

    @property
    def deadline(self) -> float | None:
        """When the running attempt times out (``time.monotonic()``), if it can."""
        return self._deadline

    @property
    def begun(self) -> bool:
        return self._begun

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    @property
    def timed_out(self) -> bool:
        return self._timed_out

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def returned(self) -> bool:
        return self._returned

    @property
    def committed(self) -> bool:
        return self._committed

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    @property
    def stop_reason(self) -> str | None:
        """Why the worker stopped it: ``cancel``, ``shutdown`` or ``lost``; None if it did not."""
        return self._stop_reason

    @property
    def completed_in_transaction(self) -> bool:
        """Whether the task finished the job itself, in the application's transaction."""
        return self._completed_in_transaction

    @property
    def is_async(self) -> bool:
        return self.task is not None and self.task.is_async

    def elapsed(self) -> float:
        """Seconds since the attempt started (since the claim until then)."""
        return time.monotonic() - self._started

    # -- changing ------------------------------------------------------------

    def begin(self) -> bool:
        """Start the attempt now (its timeout counts from here), unless already settled."""
        with self._lock:
            if self._settled:
                return False
            self._begun = True
            self._started = time.monotonic()
            timeout = self.task.timeout if self.task is not None else None
            if timeout is not None:
                self._deadline = self._started + timeout
            return True

    def settle(self, *, timed_out: bool = False) -> bool:
        """Take the right to decide the outcome; False if it was taken already.

        ``timed_out`` marks the outcome as the timeout's, in the same step,
        so that the task's own late outcome is ignored.
        """
        with self._lock:
            if self._settled:
                return False
            self._settled = True
            if timed_out:
                self._timed_out = True
            return True

    def release_unstarted(self) -> bool:
        """Settle a job that has not begun, to be released at stop; False if it began or settled."""
        with self._lock:
            if self._settled or self._begun:
                return False
            self._settled = True
            self._stop_reason = "shutdown"
            return True

    def abandon(self) -> bool:
        """Settle a job still running at the end of the grace period: nothing will be written."""
        with self._lock:
            if self._settled:
                return False
            self._settled = self._abandoned = True
            if self._stop_reason is None:
                self._stop_reason = "shutdown"
            return True

    def stop(self, reason: str) -> None:
        """Record why the worker stops the job (the first reason wins)."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason

    def renewed(self, lease: Lease) -> bool:
        """Take a renewal's lease; True if it newly brings an operator's cancel request."""
        with self._lock:
            self._lease = lease
            if lease.cancel_requested and not self._cancel_requested:
                self._cancel_requested = True
                return True
            return False

    def mark_completed_in_transaction(self, result: JSONValue) -> None:
        """The task's ``complete(connection=)`` returned: the worker must not finish the job."""
        with self._lock:
            self._completed_in_transaction = True
            self.completed_result = result

    def mark_returned(self) -> bool:
        """The task's code is done with the job; True if that makes the slot finished."""
        with self._lock:
            if self._returned:
                return False
            self._returned = True
            return self._committed

    def mark_committed(self) -> bool:
        """The outcome is written (or given up); True if that makes the slot finished."""
        with self._lock:
            if self._committed:
                return False
            self._committed = True
            return self._returned
