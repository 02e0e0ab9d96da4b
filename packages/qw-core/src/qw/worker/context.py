"""What a running task can ask about its own job: ``qw.current_job()``."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Protocol

from qw.errors import InvalidWorkflow
from qw.model import Job, JobStatus, JSONValue, Lease
from qw.tasks import Task

if TYPE_CHECKING:
    from qw.workflow import WorkflowBuilder

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

    @property
    def lease(self) -> Lease: ...

    @property
    def parents(self) -> Mapping[str, Job]: ...

    def elapsed(self) -> float: ...


class RunningJob:
    """A running task's read-only view of its job: what :func:`current_job` returns.

    The worker changes the state behind it (a cancel request, a timeout);
    the task only reads it.
    """

    __slots__ = ("_extends", "_state")

    def __init__(self, state: JobState) -> None:
        self._state = state
        # Only the task's own thread calls extend(), so it owns this count.
        self._extends = 0

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

    @property
    def workflow(self) -> str | None:
        """The id of the workflow this job is a step of, or None."""
        return self._state.job.workflow

    @property
    def parents(self) -> Mapping[str, Job]:
        """A step's parents as they were stored when it was claimed, by id."""
        return self._state.parents

    @property
    def parent_results(self) -> dict[str, JSONValue]:
        """The results of the parents that succeeded, by id."""
        return {
            i: job.result
            for i, job in self._state.parents.items()
            if job.status is JobStatus.SUCCEEDED
        }

    @property
    def failed_parents(self) -> tuple[str, ...]:
        """The parents that ended failed or cancelled (a step with ``on_parent_failure="run"``)."""
        return self._state.job.failed_parents

    def extend(self) -> WorkflowBuilder:
        """A builder for steps this running step adds to its own workflow.

        ``enqueue()`` stores them, fenced by this attempt's lease. The ids are
        the same on every attempt, so a retry that adds the same batch again
        writes nothing (``created`` is False). Pass ``builder.parent`` in
        ``after=`` to make a new step wait for this one.
        """
        from qw.workflow import WorkflowBuilder

        state = self._state
        job, task = state.job, state.task
        if job.workflow is None or task is None:
            raise InvalidWorkflow(f"job {job.id} is not a workflow step")
        self._extends += 1
        return WorkflowBuilder(
            task.app,
            job.workflow,
            _adder=(state.lease, job.id),
            _id_seed=f"{job.id}:{self._extends}",
        )

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
