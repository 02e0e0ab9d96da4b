"""The ``tracing`` plugin: OpenTelemetry spans for enqueues, workflows and job attempts.

Producer side (:func:`qw_job_enqueuing`, in any client's process): one
PRODUCER span per enqueue call, ``qw enqueue <task>``, or per workflow,
``qw workflow <id>``. Its context goes into the call's job headers
(``opentelemetry.propagate.inject``), which the client stores in each task
payload beside, never inside, the task's arguments.

Worker side (:func:`qw_run_job`): one CONSUMER span per attempt,
``qw run <task>``, whose parent is the context the job carries and which
links to it too (the messaging conventions' creation-context link). It is
the current span while the task runs, so the task's own spans are its
children. It ends when the attempt's outcome is known: at
:func:`qw_job_finished`, :func:`qw_job_released`, :func:`qw_lease_lost`, or
(a sync task left running at shutdown) :func:`qw_worker_stopped`, with
``qw.outcome`` set.

No SDK is set up here: spans go to whatever tracer provider the application
configured, and with none every call is the API's no-op.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from inspect import iscoroutine
from typing import TYPE_CHECKING, TypeVar, cast

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from qw.model import Job, JobStatus, JSONValue, NewJob, WorkerInfo
from qw.payload import job_headers, task_name_of
from qw.plugin import hookimpl
from qw_tracing import TRACER_NAME, __version__

if TYPE_CHECKING:
    from qw.client import Client

__all__ = [
    "OUTCOMES",
    "open_attempts",
    "qw_job_enqueuing",
    "qw_job_finished",
    "qw_job_released",
    "qw_lease_lost",
    "qw_run_job",
    "qw_worker_started",
    "qw_worker_stopped",
]

T = TypeVar("T")

#: Every value of ``qw.outcome`` on an attempt span.
OUTCOMES = frozenset(
    {"succeeded", "failed", "retried", "cancelled", "released", "lost", "abandoned"}
)

# A ProxyTracer until the application sets a provider, then that provider's
# tracer: fetched once, never re-fetched per job.
_tracer = trace.get_tracer(TRACER_NAME, __version__)

# Attempt spans started and not yet ended, by (job id, attempt): the outcome
# arrives in another hook, often on another thread (the finisher's). The
# attempt number is in the key because a job reclaimed from a stalled worker
# in this process can run again in another one while its first span is open.
_open: dict[tuple[str, int], _Attempt] = {}
_lock = threading.Lock()
# Worker id -> the namespace its client is on (qw.namespace on its spans).
_namespaces: dict[str, str] = {}

_NO_OP_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_provider_set = False

_FINISHED_OUTCOMES = {
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.QUEUED: "retried",
    JobStatus.CANCELLED: "cancelled",
}


@dataclass(frozen=True, slots=True)
class _Attempt:
    span: Span
    worker: str | None


def _live() -> bool:
    """Whether the application set a tracer provider that may record (an SDK's)."""
    global _provider_set
    if _provider_set:
        return True
    # The API's own providers: none set (the proxy), or the explicit no-op
    # one. About 1 µs while none is set (the API reads the environment).
    if isinstance(trace.get_tracer_provider(), _NO_OP_PROVIDERS):
        return False
    # A provider is set once per process, for good.
    _provider_set = True
    return True


def open_attempts() -> int:
    """How many attempt spans are started and not yet ended (for tests and diagnostics)."""
    with _lock:
        return len(_open)


# -- producer ---------------------------------------------------------------


@hookimpl
def qw_job_enqueuing(jobs: Sequence[NewJob], workflow: str | None, headers: dict[str, str]) -> None:
    """Start and end the call's PRODUCER span; put its context into ``headers``."""
    if workflow is not None and _adding_to(workflow):
        # add_steps from a running step: the current span is that step's
        # attempt (or one of the task's own spans under it), and the new
        # steps' attempts nest under it directly.
        current = trace.get_current_span()
        if current.is_recording():
            current.add_event(
                "qw add steps",
                {"qw.workflow.id": workflow, "qw.job.count": len(jobs)},
            )
        propagate.inject(headers)
        return
    if not _live():
        # No SDK: no span to start; a trace that is current (a remote parent,
        # baggage) is still passed on.
        propagate.inject(headers)
        return
    if workflow is None:
        name, attributes = _enqueue_span(jobs)
    else:
        name, attributes = _workflow_span(jobs, workflow)
    span = _tracer.start_span(name, kind=SpanKind.PRODUCER, attributes=attributes)
    # Ended at once: it marks the moment of the enqueue. Its jobs may run in
    # hours, on other machines, or never, and a span is exported only once it
    # ends; the attempts link to it (and are its children) whenever they run.
    try:
        propagate.inject(headers, context=trace.set_span_in_context(span))
    finally:
        span.end()


def _adding_to(workflow: str) -> bool:
    """Whether this enqueue is a running step of ``workflow`` adding steps to it."""
    # Imported here: a producer that never runs a worker needn't import the runtime.
    from qw.worker.context import current_job

    try:
        return current_job().workflow == workflow
    except LookupError:
        return False


def _enqueue_span(jobs: Sequence[NewJob]) -> tuple[str, dict[str, AttributeValue]]:
    queues = _distinct(job.queue for job in jobs)
    tasks = _distinct(task_name_of(job.payload) for job in jobs)
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "qw",
        "messaging.operation.type": "send",
        "messaging.operation.name": "enqueue",
        "qw.job.count": len(jobs),
    }
    _queue_attributes(attributes, queues)
    task = tasks[0] if len(tasks) == 1 else None
    if task is not None:
        attributes["qw.task"] = task
    if len(jobs) == 1:
        attributes["messaging.message.id"] = attributes["qw.job.id"] = jobs[0].id
    else:
        # The conventions set the batch count only for a batch.
        attributes["messaging.batch.message_count"] = len(jobs)
    what = task or (queues[0] if len(queues) == 1 else None)
    return ("qw enqueue" if what is None else f"qw enqueue {what}"), attributes


def _workflow_span(steps: Sequence[NewJob], workflow: str) -> tuple[str, dict[str, AttributeValue]]:
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "qw",
        "messaging.operation.type": "send",
        "messaging.operation.name": "create_workflow",
        "messaging.batch.message_count": len(steps),
        "qw.workflow.id": workflow,
        "qw.workflow.steps": len(steps),
        "qw.job.count": len(steps),
    }
    _queue_attributes(attributes, _distinct(step.queue for step in steps))
    return f"qw workflow {workflow}", attributes


def _queue_attributes(attributes: dict[str, AttributeValue], queues: list[str]) -> None:
    if len(queues) == 1:
        attributes["messaging.destination.name"] = attributes["qw.queue"] = queues[0]
    elif queues:
        attributes["qw.queues"] = queues


def _distinct(values: Iterable[str | None]) -> list[str]:
    return sorted({v for v in values if v is not None})


# -- worker -------------------------------------------------------------------


@hookimpl
def qw_worker_started(worker: WorkerInfo, client: Client) -> None:
    with _lock:
        _namespaces[worker.id] = client.namespace


@hookimpl
def qw_worker_stopped(worker: WorkerInfo) -> None:
    """End the spans of sync tasks the worker left running (to their leases) as ``abandoned``."""
    with _lock:
        _namespaces.pop(worker.id, None)
        left = [key for key, attempt in _open.items() if attempt.worker == worker.id]
        attempts = [_open.pop(key) for key in left]
    for attempt in attempts:
        _end(attempt.span, "abandoned")


@hookimpl(wrapper=True)
def qw_run_job(job: Job) -> Generator[None, JSONValue, JSONValue]:
    """Run the job under its attempt span; the span ends with the attempt's outcome."""
    headers = job_headers(job.payload)
    if not headers and not _live():
        # No SDK, and no trace to continue: nothing to record or propagate.
        return (yield)
    span = _start(job, headers)
    if span.is_recording():
        with _lock:
            _open[(job.id, job.attempts)] = _Attempt(span, job.worker)
    # Current even when not recording (no SDK here, or sampled out): the
    # task's outgoing calls then carry the producer's trace on.
    token = context.attach(trace.set_span_in_context(span))
    try:
        result = yield
    except BaseException as exc:
        _record(span, exc)
        raise
    finally:
        context.detach(token)
    made: object = result
    if iscoroutine(made):
        # An async task: run() made the coroutine, the event loop runs it later.
        return cast("JSONValue", _traced(made, span))
    return result


async def _traced(coro: Awaitable[T], span: Span) -> T:
    """Await ``coro`` with ``span`` current (its own task's context: nothing leaks out)."""
    import asyncio

    token = context.attach(trace.set_span_in_context(span))
    try:
        return await coro
    except asyncio.CancelledError:
        # The runtime's own cancel (cancel, shutdown, lost lease, timeout):
        # the outcome hook says which; it is not the task's exception.
        raise
    except BaseException as exc:
        _record(span, exc)
        raise
    finally:
        context.detach(token)


def _start(job: Job, headers: Mapping[str, str], *, start_time: int | None = None) -> Span:
    # From an empty context, never the current one: without headers the
    # attempt is a root span, whatever the worker's thread has current.
    parent = propagate.extract(headers, context=Context()) if headers else Context()
    link = trace.get_current_span(parent).get_span_context()
    task = task_name_of(job.payload)
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "qw",
        "messaging.operation.type": "process",
        "messaging.operation.name": "run",
        "messaging.destination.name": job.queue,
        "messaging.message.id": job.id,
        "qw.queue": job.queue,
        "qw.job.id": job.id,
        "qw.attempt": job.attempts,
        "qw.max_attempts": job.max_attempts,
    }
    if task is not None:
        attributes["qw.task"] = task
    if job.workflow is not None:
        attributes["qw.workflow.id"] = job.workflow
    if job.worker is not None:
        attributes["qw.worker.id"] = job.worker
        namespace = _namespaces.get(job.worker)
        if namespace is not None:
            attributes["qw.namespace"] = namespace
    return _tracer.start_span(
        f"qw run {task or job.queue}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=[Link(link)] if link.is_valid else None,
        start_time=start_time,
        # Recorded by the wrapper (not by the SDK, which would also set the
        # status): the outcome, known later, decides the status.
        record_exception=False,
        set_status_on_exception=False,
    )


def _record(span: Span, exc: BaseException) -> None:
    # A sync task that ran past its timeout raises after its span ended.
    if span.is_recording():
        span.record_exception(exc)


@hookimpl
def qw_job_finished(job: Job, status: JobStatus, error: JSONValue, duration_s: float) -> None:
    outcome = _FINISHED_OUTCOMES.get(status)
    if outcome is None:
        return
    span = _take(job)
    if span is None:
        # A succeeded attempt ran its task, so its span was not recorded (no
        # SDK, or sampled out): nothing to add. Any other may have ended
        # without running its task (an unknown task, a bad payload, parents
        # unread, cancelled while it waited): its span starts when the
        # attempt did, and ends now.
        if outcome == "succeeded" or not _live():
            return
        started = time.time_ns() - int(duration_s * 1e9)
        span = _start(job, job_headers(job.payload), start_time=started)
    _end(span, outcome, error)


@hookimpl
def qw_job_released(job: Job, reason: str) -> None:
    span = _take(job)
    if span is not None:
        span.set_attribute("qw.release.reason", reason)
        _end(span, "released")


@hookimpl
def qw_lease_lost(job: Job) -> None:
    span = _take(job)
    if span is not None:
        _end(span, "lost")


def _take(job: Job) -> Span | None:
    if not _open:  # nothing recorded (no SDK): skip the lock
        return None
    with _lock:
        attempt = _open.pop((job.id, job.attempts), None)
    return None if attempt is None else attempt.span


def _end(span: Span, outcome: str, error: JSONValue = None) -> None:
    if not span.is_recording():
        return
    span.set_attribute("qw.outcome", outcome)
    if outcome in ("failed", "retried"):
        kind, message = _error_parts(error)
        if kind is not None:
            span.set_attribute("error.type", kind)
        span.set_status(Status(StatusCode.ERROR, message))
    span.end()


def _error_parts(error: JSONValue) -> tuple[str | None, str | None]:
    """The error's type and ``type: message`` text, as the worker stored them."""
    if not isinstance(error, Mapping):
        return None, None if error is None else str(error)
    kind, message = error.get("type"), error.get("message")
    kind = kind if isinstance(kind, str) else None
    text = f"{kind}: {message}" if kind and message else (kind or None)
    return kind, text
