# mypy: allow-subclassing-any, no-warn-unused-ignores
# Django ships no type information and is absent from the workspace's 3.11
# type-check venv: its imports carry both codes, and an unused one is fine.
"""A Django task as a qw job and back: the payload, priorities, statuses, errors.

The payload is qw's task payload (:func:`qw.payload.task_payload`):
``{"task": MODULE_PATH, "args": [...], "kwargs": {...}}`` with the task's
``module_path`` (``app.tasks.send_email``), so a qw worker sees an ordinary
task call. Django's priorities run high first, qw's low first: a job's
priority is the task's negated.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.tasks import (  # type: ignore[import-not-found,import-untyped]
    Task,
    TaskResult,
    TaskResultStatus,
)
from django.tasks.base import TaskError  # type: ignore[import-not-found,import-untyped]
from django.tasks.exceptions import (  # type: ignore[import-not-found,import-untyped]
    InvalidTask,
    TaskResultDoesNotExist,
)
from django.utils.module_loading import (  # type: ignore[import-not-found,import-untyped]
    import_string,
)

from qw.model import Job, JobStatus, JSONValue
from qw.payload import decode_task_payload

__all__ = [
    "STATUSES",
    "import_task",
    "job_priority",
    "task_errors",
    "task_priority",
    "task_result",
]

STATUSES: dict[JobStatus, Any] = {
    JobStatus.WAITING: TaskResultStatus.READY,
    JobStatus.QUEUED: TaskResultStatus.READY,
    JobStatus.RUNNING: TaskResultStatus.RUNNING,
    JobStatus.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    JobStatus.FAILED: TaskResultStatus.FAILED,
    # Django has no cancelled state: a cancelled task did not succeed.
    JobStatus.CANCELLED: TaskResultStatus.FAILED,
}

# What a job records as its error "type" when no exception of the task's
# made it (a timeout, a payload no worker knows, a cancel): such a TaskError
# names this class, which exists, and its traceback text says what happened.
_QW_FAILURE = "qw.errors.JobFailed"
_QW_CANCELLED = "qw.errors.JobWasCancelled"


def job_priority(priority: int) -> int:
    """The qw priority of a Django task priority (qw runs the lowest first)."""
    return -priority


def task_priority(priority: int) -> int:
    """The Django task priority of a qw job priority."""
    return -priority


def import_task(path: str) -> Any:
    """The Django :class:`~django.tasks.Task` at ``path`` (its ``module_path``).

    Raises InvalidTask when ``path`` does not import or names something else.
    """
    try:
        found = import_string(path)
    except ImportError as exc:
        raise InvalidTask(f"cannot import task {path!r}: {exc}") from exc
    if not isinstance(found, Task):
        raise InvalidTask(f"{path!r} is a {type(found).__name__}, not a django.tasks.Task")
    return found


def _task_of(job: Job, backend_alias: str) -> Any:
    """The task of ``job`` as it was enqueued: path, priority, queue, run_after, backend."""
    call = decode_task_payload(job.payload)
    task = import_task(call.name)
    # run_at is the enqueue time when the job was not deferred.
    run_after: datetime | None = job.run_at if job.run_at > job.created_at else None
    return task.using(
        priority=task_priority(job.priority),
        queue_name=job.queue,
        run_after=run_after,
        backend=backend_alias,
    )


def task_errors(job: Job) -> list[Any]:
    """The job's recorded error as Django TaskErrors (qw keeps the last attempt's only)."""
    error = job.error
    if error is None and job.status is JobStatus.CANCELLED:
        # Cancelled before it ran: no attempt wrote an error, yet it failed.
        error = {"reason": "cancelled before it ran"}
    if error is None:
        return []
    info: dict[str, JSONValue] = error if isinstance(error, dict) else {"message": error}
    kind = info.get("type")
    message = info.get("message") or info.get("reason") or ""
    traceback = info.get("traceback")
    path = kind if isinstance(kind, str) and kind else _QW_FAILURE
    if job.status is JobStatus.CANCELLED:
        path = _QW_CANCELLED
    elif path.startswith("qw.") and not path.startswith("qw.errors."):
        # qw.Timeout, qw.UnknownTask, ...: labels, not importable classes.
        path = _QW_FAILURE
    text = traceback if isinstance(traceback, str) else ""
    if not text or path != kind:
        label = kind or ("cancelled" if job.status is JobStatus.CANCELLED else "error")
        text = f"{text}{label}: {message}\n"
    return [TaskError(exception_class_path=path, traceback=text)]


def task_result(job: Job, backend_alias: str) -> Any:
    """``job`` as the :class:`~django.tasks.TaskResult` backend ``backend_alias`` answers.

    Raises TaskResultDoesNotExist when the job is not a Django task's (its
    payload names no importable task).
    """
    try:
        task = _task_of(job, backend_alias)
        call = decode_task_payload(job.payload)
    except (InvalidTask, ValueError) as exc:
        raise TaskResultDoesNotExist(f"job {job.id} is not a Django task: {exc}") from exc
    result = TaskResult(
        task=task,
        id=job.id,
        status=STATUSES[job.status],
        enqueued_at=job.created_at,
        # qw keeps the latest attempt's start only.
        started_at=job.started_at,
        finished_at=job.finished_at,
        last_attempted_at=job.started_at,
        args=call.args,
        kwargs=call.kwargs,
        backend=backend_alias,
        errors=task_errors(job),
        # One entry per attempt (Django counts attempts so); qw records the
        # latest attempt's worker only, the earlier ones are "".
        worker_ids=[""] * max(job.attempts - 1, 0) + ([job.worker or ""] if job.attempts else []),
    )
    if job.status is JobStatus.SUCCEEDED:
        object.__setattr__(result, "_return_value", job.result)
    return result
