"""What a running task can ask about its own job: ``qw.current_job()``."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Protocol, cast

from qw.errors import InvalidWorkflow
from qw.model import Job, JobStatus, JSONValue, Lease
from qw.tasks import Task

if TYPE_CHECKING:
    from qw.client import Client
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

    @property
    def completed_in_transaction(self) -> bool: ...

    def mark_completed_in_transaction(self, result: JSONValue) -> None: ...


class RunningJob:
    """A running task's view of its job: what :func:`current_job` returns.

    The worker changes the state behind it (a cancel request, a timeout);
    the task reads it, and writes to the store only through this attempt's
    lease: :meth:`progress`, :meth:`complete`, :meth:`extend`.
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

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Report how far the task has got: a ``fraction`` in [0, 1] and/or a short ``message``.

        Stored on the job (``Job.progress``, shown by ``qw jobs show``) with a
        ``job.progress`` outbox event, fenced by this attempt's lease (see
        :meth:`qw.Client.set_progress`). Raises :class:`qw.LeaseLost` once the
        attempt no longer holds the job (reclaimed, timed out and retried,
        finished): the task should stop, as nothing it writes will count.
        Raises :class:`qw.Unsupported` on a store without capability ``progress``.
        It is a store round trip: an async task may ``await`` :meth:`aprogress`.
        """
        with self._client() as client:
            client.set_progress(self._state.lease, fraction, message)

    async def aprogress(self, fraction: float | None = None, message: str | None = None) -> None:
        """:meth:`progress` from a coroutine, on a thread so that the event loop runs on."""
        import asyncio

        await asyncio.to_thread(self.progress, fraction, message)

    def complete(self, result: JSONValue = None, *, connection: object) -> None:
        """Finish the job as ``succeeded`` inside the application's open transaction.

        The task writes its own rows and its job's end in one transaction on
        ``connection`` (the store's driver connection, or an SQLAlchemy or
        Django connection on it: :mod:`qw.transaction`; capability
        ``transactional``), so its side effect happens exactly once. The
        finish is fenced: a stale lease raises :class:`qw.LeaseLost` inside
        the transaction, which should then roll the application's writes back.

        The task must commit (or roll back) before it returns; what it
        returns is then ignored. The worker does not finish the job again:
        it writes a fenced failure (``CompletionNotCommitted``) with the same
        lease, which changes nothing when the transaction committed and
        retries the job (as a failed attempt) when it rolled back. A task
        that raises after this call is failed the same fenced way.
        """
        from qw.worker.outcomes import EVENT_SUCCEEDED, event_spec

        state = self._state
        with self._client() as client:
            client.complete(
                state.lease,
                result,
                event=event_spec(state, EVENT_SUCCEEDED),
                connection=connection,
            )
        state.mark_completed_in_transaction(result)

    def _client(self) -> contextlib.AbstractContextManager[Client]:
        """The app's client in a context; a new one, closed after, if it is not thread-safe."""
        task = self._state.task
        if task is None:
            raise LookupError(f"job {self.id} has no task")
        client = task.app.client
        opener = getattr(task.app, "open_client", None)
        if client.capabilities.thread_safe or opener is None:
            return contextlib.nullcontext(client)
        # The task's thread may not share the worker's client.
        return cast("Client", opener())

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
