"""From what a task did to the terminal write, and the outbox event that goes with it.

Every transition that leaves a job terminal carries exactly one event:
``job.succeeded``, ``job.failed`` or ``job.cancelled``, data
``{"task", "queue", "attempt", "duration_s", ...}``. A failure that will be
retried is not terminal and carries none.
"""

from __future__ import annotations

import traceback

from qw.contract import Abort, Complete, Fail, Outcome, Release
from qw.errors import InvalidInput
from qw.model import EventSpec, JSONValue
from qw.payload import task_name_of
from qw.validation import encode_json
from qw.worker.context import JobState
from qw.worker.slot import JobSlot

__all__ = [
    "EVENT_CANCELLED",
    "EVENT_FAILED",
    "EVENT_SUCCEEDED",
    "cancelled",
    "error_info",
    "event_spec",
    "failed",
    "released",
    "result_outcome",
    "storable_text",
    "succeeded",
    "uncommitted",
    "worker_error",
]

EVENT_SUCCEEDED = "job.succeeded"
EVENT_FAILED = "job.failed"
EVENT_CANCELLED = "job.cancelled"

_MESSAGE_CHARS = 2000
_TRACEBACK_CHARS = 4000


def event_spec(rec: JobState, type_: str, **extra: JSONValue) -> EventSpec:
    """The outbox event of ``rec``'s attempt ending as ``type_``."""
    data: dict[str, JSONValue] = {
        "task": task_name_of(rec.job.payload),
        "queue": rec.job.queue,
        "attempt": rec.job.attempts,
        "duration_s": round(rec.elapsed(), 6),
        **extra,
    }
    return EventSpec(type_, data)


def storable_text(text: str) -> str:
    """``text`` with what UTF-8 cannot carry (lone surrogates) backslash-escaped."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as inner:  # an exception's own __str__ may be broken
        return f"<unprintable {type(exc).__qualname__}: __str__ raised {_safe_repr(inner)}>"


def _safe_repr(exc: BaseException) -> str:
    try:
        return repr(exc)[:200]
    except Exception:
        return type(exc).__qualname__


def error_info(exc: BaseException, *, with_traceback: bool = True) -> dict[str, JSONValue]:
    """An exception as JSON: its type, message and (trimmed) traceback. Never raises.

    The text is always storable: a broken ``__str__`` gives a placeholder,
    and lone surrogates are escaped.
    """
    kind = type(exc)
    info: dict[str, JSONValue] = {
        "type": storable_text(f"{kind.__module__}.{kind.__qualname__}"),
        "message": storable_text(_message(exc)[:_MESSAGE_CHARS]),
    }
    if with_traceback:
        try:
            text = "".join(traceback.format_exception(exc))
        except Exception:  # formatting calls __str__ too, and may recurse deeply
            text = "<traceback unavailable>"
        info["traceback"] = storable_text(text[-_TRACEBACK_CHARS:])
    return info


def worker_error(rec: JobSlot, exc: BaseException) -> Fail:
    """A failed attempt for a bug outside the task (a hook, the runtime): not retried."""
    info = error_info(exc)
    info["message"] = f"the worker failed around this job: {info['type']}: {info['message']}"
    info["type"] = "qw.WorkerError"
    return failed(rec, info, retryable=False)


def result_outcome(rec: JobSlot, result: object, limit: int) -> Outcome:
    """``succeeded``, or a non-retryable ``qw.InvalidResult`` if the store cannot take ``result``.

    Checked here, in the thread that ran the task, so that one bad result
    never reaches (and fails) a batch of other jobs' writes.
    """
    if result is None or type(result) is bool or type(result) is int:
        return Complete(rec.lease, result, event_spec(rec, EVENT_SUCCEEDED))
    try:
        encode_json(result, what="the task's return value", limit=limit)  # type: ignore[arg-type]
    except InvalidInput as exc:
        error: dict[str, JSONValue] = {
            "type": "qw.InvalidResult",
            "message": storable_text(f"the task's return value cannot be stored: {exc}"[:2000]),
        }
        return failed(rec, error, retryable=False)
    return Complete(rec.lease, result, event_spec(rec, EVENT_SUCCEEDED))  # type: ignore[arg-type]


def succeeded(rec: JobSlot, result: JSONValue) -> Complete:
    return Complete(rec.lease, result, event_spec(rec, EVENT_SUCCEEDED))


def failed(rec: JobSlot, error: dict[str, JSONValue], *, retryable: bool) -> Fail:
    """A failed attempt: retried after the task's backoff while attempts remain."""
    job = rec.job
    if retryable and job.attempts < job.max_attempts:
        backoff = rec.task.backoff if rec.task is not None else None
        retry_in = backoff.delay(job.attempts) if backoff is not None else 0.0
        return Fail(rec.lease, error, retry_in=retry_in)
    summary = {k: v for k, v in error.items() if k != "traceback"}
    return Fail(rec.lease, error, retry_in=None, event=event_spec(rec, EVENT_FAILED, error=summary))


def uncommitted(rec: JobSlot) -> Fail:
    """The fenced check after a task finished its job in its own transaction.

    With the task's lease, so it changes nothing if the task's transaction
    committed (the job has ended); if it rolled back, the attempt failed and
    is retried while attempts remain.
    """
    error: dict[str, JSONValue] = {
        "type": "CompletionNotCommitted",
        "message": "the task completed its job in a transaction that did not commit",
    }
    return failed(rec, error, retryable=True)


def cancelled(rec: JobSlot, reason: str = "cancelled") -> Abort:
    # "reason" as in the store's own cancel event, so consumers read one shape.
    return Abort(rec.lease, {"reason": reason}, event_spec(rec, EVENT_CANCELLED, reason=reason))


def released(rec: JobSlot) -> Release:
    return Release(rec.lease)
