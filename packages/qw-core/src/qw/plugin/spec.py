"""The hooks a qw plugin may implement. Every argument is optional to take.

Registration hooks are called by :mod:`qw.registry`; lifecycle hooks are
called by the worker runtime, in the worker's process, from its threads.
A lifecycle hook that raises is logged and does not stop the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from qw.plugin import hookspec

if TYPE_CHECKING:
    from qw.client import Client
    from qw.contract import Backend
    from qw.model import Enqueued, Job, JobStatus, JSONValue, NewJob, WorkerInfo


@hookspec
def qw_register_backends() -> list[type[Backend]]:  # type: ignore[empty-body]
    """Return the backend classes this plugin provides.

    Each class's ``name`` must equal the ``qw.backends`` entry point that
    loaded the plugin. Import drivers inside this function (or in the
    module it imports), never at the plugin module's top, so that a missing
    driver is reported as this distribution's failure.

    .. versionadded:: 0.1
    """


@hookspec
def qw_job_enqueuing(jobs: Sequence[NewJob], workflow: str | None, headers: dict[str, str]) -> None:
    """``jobs`` are about to be written by one enqueue, workflow creation or step addition.

    Called in the producer's process (any :class:`qw.Client` or
    :class:`qw.AsyncClient`), after the call's arguments were checked.
    ``workflow`` is the workflow's id for :meth:`~qw.Client.create_workflow`
    and :meth:`~qw.Client.add_steps`, else None. A plugin may add string
    entries to ``headers``: every task payload of the call carries them
    (read them back with :func:`qw.payload.job_headers`), and the task's
    own arguments never see them. Trace context travels this way.

    .. versionadded:: 0.2
    """


@hookspec
def qw_jobs_enqueued(
    jobs: Sequence[NewJob], enqueued: Sequence[Enqueued], workflow: str | None
) -> None:
    """The write of ``jobs`` returned; ``enqueued`` holds one answer per job, in order.

    For a workflow, every answer's ``created`` says whether the workflow
    was created. Inside an application's transaction the jobs are written,
    not yet committed.

    .. versionadded:: 0.2
    """


@hookspec
def qw_worker_started(worker: WorkerInfo, client: Client) -> None:
    """A worker registered itself and is about to claim.

    ``client`` is the worker's own client on the store (for reads such as
    :meth:`~qw.Client.counts`; never close it).

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``client``.
    """


@hookspec
def qw_worker_stopped(worker: WorkerInfo, client: Client) -> None:
    """A worker stopped claiming and released or finished all its jobs.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``client``.
    """


@hookspec
def qw_job_claimed(job: Job, worker: WorkerInfo) -> None:
    """``job`` was leased by ``worker`` and is about to run.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def qw_run_job(job: Job, run: Callable[[], JSONValue]) -> JSONValue:
    """Run ``job`` by calling ``run()`` and return its result.

    The runtime's own implementation calls ``run()``. Plugins wrap it with
    ``@hookimpl(wrapper=True)`` (a generator that yields once) to time,
    trace or add context around every job; an exception from the task
    propagates through the wrappers. For an ``async def`` task ``run()``
    returns the coroutine, not its result: a wrapper that must surround the
    task's execution wraps that coroutine in one of its own.

    .. versionadded:: 0.1
    """


@hookspec
def qw_job_finished(
    job: Job,
    status: JobStatus,
    result: JSONValue,
    error: JSONValue,
    duration_s: float,
) -> None:
    """``job``'s attempt ended with ``status`` (``queued`` when it will be retried).

    Not called for a release (see :func:`qw_job_released`).

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       No longer called, with ``queued``, for a job released at shutdown.
    """


@hookspec
def qw_job_released(job: Job, reason: str) -> None:
    """``job`` went back to ``queued`` with its attempt not counted; it will run again.

    ``reason`` is ``"shutdown"``: the worker stopped before the job started,
    or cancelled its coroutine while stopping. ``job`` is as claimed.

    .. versionadded:: 0.2
    """


@hookspec
def qw_lease_lost(job: Job, worker: WorkerInfo) -> None:
    """``worker`` found its lease on ``job`` gone: reclaimed by another worker, or fenced at finish.

    Nothing the worker writes for this attempt counts; the job runs (or
    ran) elsewhere. Neither :func:`qw_job_finished` nor
    :func:`qw_job_released` follows for this attempt.

    .. versionadded:: 0.2
    """


@hookspec
def qw_jobs_reclaimed(count: int, worker: WorkerInfo) -> None:
    """``worker``'s reclaim sweep requeued or failed ``count`` (> 0) jobs whose leases expired.

    .. versionadded:: 0.2
    """
