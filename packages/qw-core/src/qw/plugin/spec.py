"""The hooks a qw plugin may implement. Every argument is optional to take.

Registration hooks are called by :mod:`qw.registry`; lifecycle hooks are
called by the worker runtime, in the worker's process, from its threads.
A lifecycle hook that raises is logged and does not stop the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from qw.plugin import hookspec

if TYPE_CHECKING:
    from qw.contract import Backend
    from qw.model import Job, JobStatus, JSONValue, WorkerInfo


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
def qw_worker_started(worker: WorkerInfo) -> None:
    """A worker registered itself and is about to claim.

    .. versionadded:: 0.1
    """


@hookspec
def qw_worker_stopped(worker: WorkerInfo) -> None:
    """A worker stopped claiming and released or finished all its jobs.

    .. versionadded:: 0.1
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
    propagates through the wrappers.

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
