"""What a running task can ask about its own job: ``qw.current_job()``."""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any, Protocol

from qw.model import Job
from qw.tasks import Task

__all__ = ["JobCancelled", "JobState", "RunningJob", "current_job", "reset_current", "set_current"]


class JobCancelled(Exception):
    """Raise from a task to stop it because its job was cancelled.

    :meth:`RunningJob.raise_if_cancelled` raises it once an operator
    cancelled the running job; the worker then finishes the job as
    ``cancelled``.
    """


class JobState(Protocol):
    """What the view reads: the worker's record of the job (``qw.worker.slot.JobSlot``)."""

    @property
    def job(self) -> Job: ...

    @property
    def task(self) -> Task[Any, Any] | None: ...

    @property
    def cancel_requested(self) -> bool: ...

    @property
    def timed_out(self) -> bool: ...

    def elapsed(self) -> float: ...


class RunningJob:
    """A running task's read-only view of its job: what :func:`current_job` returns.

    The worker changes the state behind it (a cancel request, a timeout);
    the task only reads it.
    """

    __slots__ = ("_state",)

    def __init__(self, state: JobState) -> None:
        self._state = state

    @property
    def job(self) -> Job:
        """The job as claimed (a :class:`qw.Job`)."""
        return self._state.job

    @property
    def id(self) -> str:
        return self._state.job.id

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self._state.job.attempts

    @property
    def task(self) -> Task[Any, Any] | None:
        """The task running it."""
        return self._state.task

    @property
    def cancel_requested(self) -> bool:
        """Whether an operator asked to cancel this job while it runs."""
        return self._state.cancel_requested

    @property
    def timed_out(self) -> bool:
        """Whether the job ran past its timeout and was already failed or retried."""
        return self._state.timed_out

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled or timed out."""
        state = self._state
        if state.cancel_requested or state.timed_out:
            raise JobCancelled(state.job.id)

    def elapsed(self) -> float:
        """Seconds since the worker started this attempt."""
        return self._state.elapsed()

    def __repr__(self) -> str:
        job = self._state.job
        return f"<RunningJob {job.id} attempt={job.attempts}>"


_current: ContextVar[RunningJob | None] = ContextVar("qw_current_job", default=None)


def current_job() -> RunningJob:
    """The job the calling task runs for; :class:`LookupError` outside a task."""
    running = _current.get()
    if running is None:
        raise LookupError("qw.current_job() is only available inside a running task")
    return running


def set_current(running: RunningJob) -> Token[RunningJob | None]:
    """Make ``running`` what :func:`current_job` returns in this context (the executors)."""
    return _current.set(running)


def reset_current(token: Token[RunningJob | None]) -> None:
    _current.reset(token)
