"""From what a task did to the terminal write, and the outbox event that goes with it.

Every transition that leaves a job terminal carries exactly one event:
``job.succeeded``, ``job.failed`` or ``job.cancelled``, data
``{"task", "queue", "attempt", "duration_s", ...}``. A failure that will be
retried is not terminal and carries none.
"""

from __future__ import annotations

import traceback

from qw.contract import Abort, Complete, Fail, Release
from qw.model import EventSpec, JSONValue
from qw.worker.context import RunningJob

__all__ = [
    "EVENT_CANCELLED",
    "EVENT_FAILED",
    "EVENT_SUCCEEDED",
    "cancelled",
    "error_info",
    "failed",
    "released",
    "succeeded",
]

EVENT_SUCCEEDED = "job.succeeded"
EVENT_FAILED = "job.failed"
EVENT_CANCELLED = "job.cancelled"

_MESSAGE_CHARS = 2000
_TRACEBACK_CHARS = 4000


def _task_name(rec: RunningJob) -> str | None:
    payload = rec.job.payload
    name = payload.get("task") if isinstance(payload, dict) else None
    return name if isinstance(name, str) else None


def _event(rec: RunningJob, type_: str, **extra: JSONValue) -> EventSpec:
    data: dict[str, JSONValue] = {
        "task": _task_name(rec),
        "queue": rec.job.queue,
        "attempt": rec.job.attempts,
        "duration_s": round(rec.elapsed(), 6),
        **extra,
    }
    return EventSpec(type_, data)


def error_info(exc: BaseException, *, with_traceback: bool = True) -> dict[str, JSONValue]:
    """An exception as JSON: its type, message and (trimmed) traceback."""
    info: dict[str, JSONValue] = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc)[:_MESSAGE_CHARS],
    }
    if with_traceback:
        text = "".join(traceback.format_exception(exc))
        info["traceback"] = text[-_TRACEBACK_CHARS:]
    return info


def succeeded(rec: RunningJob, result: JSONValue) -> Complete:
    return Complete(rec.lease, result, _event(rec, EVENT_SUCCEEDED))


def failed(rec: RunningJob, error: dict[str, JSONValue], *, retryable: bool) -> Fail:
    """A failed attempt: retried after the task's backoff while attempts remain."""
    job = rec.job
    if retryable and job.attempts < job.max_attempts:
        backoff = rec.task.backoff if rec.task is not None else None
        retry_in = backoff.delay(job.attempts) if backoff is not None else 0.0
        return Fail(rec.lease, error, retry_in=retry_in)
    summary = {k: v for k, v in error.items() if k != "traceback"}
    return Fail(rec.lease, error, retry_in=None, event=_event(rec, EVENT_FAILED, error=summary))


def cancelled(rec: RunningJob, reason: str = "cancelled") -> Abort:
    # "reason" as in the store's own cancel event, so consumers read one shape.
    return Abort(rec.lease, {"reason": reason}, _event(rec, EVENT_CANCELLED, reason=reason))


def released(rec: RunningJob) -> Release:
    return Release(rec.lease)
