"""A handle on one enqueued job: what ``task.enqueue(...)`` returns.

>>> import qw
>>> app = qw.App("memory://", namespace="handle-docs")
>>> @app.task
... def add(a: int, b: int) -> int:
...     return a + b
>>> handle = add.enqueue(2, 3)
>>> handle.created, handle.status().value
(True, 'queued')

A :class:`JobHandle` is a :class:`~qw.model.Enqueued` (``.id``, ``.created``)
that can also read its job, wait for it and return its result; it equals the
``Enqueued`` with the same id and ``created``, so code written against the
old answer keeps working. Waiting goes through
:meth:`qw.Client.wait_finished`: woken by the store where it can, else a
bounded poll.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from qw import calls
from qw.errors import JobFailed, JobWasCancelled, ResultTimeout, WorkflowFailed
from qw.model import Enqueued, Job, JobStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from qw.client import Client
    from qw.model import JSONValue, Progress, Workflow

__all__ = [
    "RESULT_WAIT_SLICE_S",
    "UNFINISHED",
    "ClientOwner",
    "JobHandle",
    "job_result",
    "workflow_failure",
]

#: The longest one ``wait_finished`` call of a handle's wait: a wait with
#: no timeout is many such calls, each within the client's bounds.
RESULT_WAIT_SLICE_S = 30.0


class ClientOwner(Protocol):
    """Anything with a sync ``client``: a :class:`qw.App` is one."""

    @property
    def client(self) -> Client: ...


def job_result(job: Job) -> JSONValue:
    """The result of an ended job; raise what its end says.

    :class:`~qw.errors.JobFailed` for ``failed``,
    :class:`~qw.errors.JobWasCancelled` for ``cancelled``,
    :class:`~qw.errors.ResultTimeout` when it has not ended.
    """
    if job.status is JobStatus.SUCCEEDED:
        return job.result
    if job.status is JobStatus.FAILED:
        raise JobFailed(job.id, job.status.value, job.error)
    if job.status is JobStatus.CANCELLED:
        raise JobWasCancelled(job.id, job.status.value, job.error)
    raise ResultTimeout(f"job {job.id!r} is still {job.status.value}")


def workflow_failure(workflow: Workflow, steps: Sequence[Job]) -> WorkflowFailed:
    """The error of a workflow that ended other than succeeded, naming its failed steps."""
    errors: dict[str, object] = {
        job.id: job.error for job in steps if job.status in (JobStatus.FAILED, JobStatus.CANCELLED)
    }
    return WorkflowFailed(workflow.id, workflow.state.value, errors)


#: The statuses of a workflow step that has not ended, the likeliest to end
#: first first: a workflow handle waits on one such step at a time.
UNFINISHED = (JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.WAITING)


def check_wait_timeout(timeout: float | None) -> float | None:
    """A handle's ``timeout``: None (for ever) or seconds, as the client checks them."""
    return None if timeout is None else calls.check_timeout(timeout)


@dataclass(frozen=True, slots=True, eq=False)
class JobHandle(Enqueued):
    """An enqueued job: its answer (``id``, ``created``), and its state and result.

    ``created`` is False when a live job already held the dedupe key: the
    handle is then on that job. ``owner`` is the :class:`qw.Client` or the
    app (anything with a ``client``) it reads through.
    """

    owner: Client | ClientOwner = field(kw_only=True, repr=False)

    def __eq__(self, other: object) -> bool:
        # Equal to the plain answer it extends: old code compares answers.
        if isinstance(other, Enqueued):
            return (self.id, self.created) == (other.id, other.created)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.id, self.created))

    @property
    def client(self) -> Client:
        from qw.client import Client

        owner = self.owner
        return owner if isinstance(owner, Client) else owner.client

    def job(self) -> Job:
        """The job as it is now."""
        return self.client.get(self.id)

    def status(self) -> JobStatus:
        """The job's status now."""
        return self.job().status

    def progress(self) -> Progress | None:
        """The job's last reported progress, or None."""
        return self.job().progress

    def cancel(self) -> JobStatus:
        """Cancel the job (a running one is flagged); its status after the call."""
        return self.client.cancel(self.id)

    def wait(self, timeout: float | None = None) -> Job:
        """The job once it has ended; :class:`~qw.errors.ResultTimeout` after ``timeout`` s.

        ``timeout=None`` waits for as long as it takes.
        """
        seconds = check_wait_timeout(timeout)
        client = self.client
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            left = RESULT_WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            job = client.wait_finished(self.id, max(0.0, min(left, RESULT_WAIT_SLICE_S)))
            if job.status.is_terminal:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"job {self.id!r} still {job.status.value} after {timeout} s")

    def result(self, timeout: float | None = None) -> JSONValue:
        """The job's result once it succeeded.

        Raises :class:`~qw.errors.JobFailed` if it failed (its ``error`` is
        the job's), :class:`~qw.errors.JobWasCancelled` if it was cancelled,
        :class:`~qw.errors.ResultTimeout` if it has not ended after
        ``timeout`` seconds (the job goes on).
        """
        return job_result(self.wait(timeout))
