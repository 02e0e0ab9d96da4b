"""What a running task can ask about its own job: ``qw.current_job()``."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from qw.model import Job, JSONValue, Lease

if TYPE_CHECKING:
    import asyncio

    from qw.app import Task

__all__ = ["JobCancelled", "RunningJob", "current_job"]


class JobCancelled(Exception):
    """Raise from a task to stop it because its job was cancelled.

    :meth:`RunningJob.raise_if_cancelled` raises it once an operator
    cancelled the running job; the worker then finishes the job as
    ``cancelled``.
    """


class RunningJob:
    """One claimed job inside a worker; also the task's view of its job.

    The public read-only part (``job``, ``attempt``, ``cancel_requested``,
    ``timed_out``) is what :func:`current_job` returns; the rest is the
    runtime's bookkeeping, changed only under the runtime's lock.
    """

    __slots__ = (
        "_cancel_requested",
        "_timed_out",
        "abandoned",
        "args",
        "async_task",
        "begun",
        "committed",
        "deadline",
        "job",
        "kwargs",
        "lease",
        "lost",
        "pending",
        "returned",
        "settled",
        "started",
        "stop_reason",
        "task",
    )

    def __init__(
        self,
        job: Job,
        lease: Lease,
        task: Task[Any, Any] | None,
        args: list[JSONValue],
        kwargs: dict[str, JSONValue],
    ) -> None:
        self.job = job
        self.lease = lease
        self.task = task
        self.args = args
        self.kwargs = kwargs
        # Claimed now; started (and given a deadline) by begin() when a slot runs it.
        self.started = time.monotonic()
        self.deadline: float | None = None
        self.begun = False
        self._cancel_requested = False
        self._timed_out = False
        # Two things must happen before the slot is free again: the task
        # returned (its thread or coroutine is idle) and the outcome committed.
        self.pending = 2
        self.settled = False
        self.returned = False
        self.committed = False
        self.lost = False
        # Still running when the worker stopped: nothing is written for it.
        self.abandoned = False
        self.stop_reason: str | None = None
        self.async_task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self.job.attempts

    @property
    def cancel_requested(self) -> bool:
        """Whether an operator asked to cancel this job while it runs."""
        return self._cancel_requested

    @property
    def timed_out(self) -> bool:
        """Whether the job ran past its timeout and was already failed or retried."""
        return self._timed_out

    def begin(self) -> None:
        """Mark the attempt started now; its timeout counts from here."""
        self.begun = True
        self.started = time.monotonic()
        timeout = self.task.timeout if self.task is not None else None
        if timeout is not None:
            self.deadline = self.started + timeout

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled or timed out."""
        if self._cancel_requested or self._timed_out:
            raise JobCancelled(self.job.id)

    def elapsed(self) -> float:
        """Seconds since the worker started this attempt."""
        return time.monotonic() - self.started

    def __repr__(self) -> str:
        return f"<RunningJob {self.job.id} attempt={self.job.attempts}>"


_current: ContextVar[RunningJob | None] = ContextVar("qw_current_job", default=None)


def current_job() -> RunningJob:
    """The job the calling task runs for; :class:`LookupError` outside a task."""
    running = _current.get()
    if running is None:
        raise LookupError("qw.current_job() is only available inside a running task")
    return running
