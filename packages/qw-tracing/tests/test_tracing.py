"""Spans from a real worker on real stores, recorded by the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import threading
from importlib.metadata import entry_points
from typing import Any

import pytest
from conftest import FAST, Spans, make_app, running, wait_until
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import qw
import qw_tracing
import qw_tracing.plugin
from qw.model import JobStatus
from qw.payload import job_headers
from qw.plugin.manager import QwPluginManager

tracer = trace.get_tracer("qw-tracing-tests")


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def test_the_entry_point_names_the_plugin_module() -> None:
    (ep,) = [ep for ep in entry_points(group="qw.plugins") if ep.name == "tracing"]
    assert ep.value == "qw_tracing.plugin"
    manager = QwPluginManager()
    assert "tracing" in manager.load_entry_points()
    assert manager.pluggy.get_plugin("tracing") is qw_tracing.plugin


def test_an_attempt_is_a_child_of_its_enqueue_and_links_to_it(
    url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(url, plugins)
    seen: list[tuple[list[Any], dict[str, Any]]] = []

    @app.task(name="tr.greet", queue="tr")
    def greet(*args: Any, **kwargs: Any) -> str:
        seen.append((list(args), dict(kwargs)))
        with tracer.start_as_current_span("inside greet"):
            pass
        return "hi"

    with tracer.start_as_current_span("request") as request:
        handle = greet.enqueue("ada", 1, shout=True)
    with running(app, plugins):
        assert handle.result(timeout=30) == "hi"
        (run,) = spans.wait_attempts(handle.id, 1)
    enqueue, inside = spans.one("qw enqueue tr.greet"), spans.one("inside greet")

    # The task saw exactly its arguments; the trace context went in the job's headers.
    assert seen == [(["ada", 1], {"shout": True})]
    headers = job_headers(app.client.get(handle.id).payload)
    assert "traceparent" in headers

    assert enqueue.kind is SpanKind.PRODUCER
    assert parent_of(enqueue) == request.get_span_context().span_id
    assert attrs(enqueue) == {
        "messaging.system": "qw",
        "messaging.operation.type": "send",
        "messaging.operation.name": "enqueue",
        "messaging.destination.name": "tr",
        "messaging.message.id": handle.id,
        "qw.queue": "tr",
        "qw.task": "tr.greet",
        "qw.job.id": handle.id,
        "qw.job.count": 1,
    }

    assert run.name == "qw run tr.greet"
    assert run.kind is SpanKind.CONSUMER
    assert parent_of(run) == span_id(enqueue)
    assert trace_id(run) == trace_id(enqueue) == request.get_span_context().trace_id
    assert [link.context.span_id for link in run.links] == [span_id(enqueue)]
    assert run.status.status_code is StatusCode.UNSET
    a = attrs(run)
    assert a["qw.outcome"] == "succeeded"
    assert a["qw.queue"] == a["messaging.destination.name"] == "tr"
    assert a["qw.task"] == "tr.greet"
    assert a["qw.job.id"] == a["messaging.message.id"] == handle.id
    assert a["qw.attempt"] == 1
    assert a["qw.namespace"] == app.client.namespace
    assert a["messaging.system"] == "qw"
    assert a["messaging.operation.type"] == "process"
    assert "qw.workflow.id" not in a
    # The task's own span is the attempt's child.
    assert parent_of(inside) == span_id(run)
    assert qw_tracing.plugin.open_attempts() == 0
    app.client.close()


def test_every_attempt_has_a_span_retried_then_succeeded(
    url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(url, plugins)

    @app.task(name="tr.flaky", queue="tr", max_attempts=3, backoff=0.01)
    def flaky() -> int:
        attempt = qw.current_job().attempt
        if attempt < 3:
            raise ConnectionError(f"try {attempt}")
        return attempt

    handle = flaky.enqueue()
    with running(app, plugins):
        assert handle.result(timeout=30) == 3
        runs = spans.wait_attempts(handle.id, 3)
    enqueue = spans.one("qw enqueue tr.flaky")
    assert [attrs(s)["qw.attempt"] for s in runs] == [1, 2, 3]
    assert [attrs(s)["qw.outcome"] for s in runs] == ["retried", "retried", "succeeded"]
    assert [s.status.status_code for s in runs] == [StatusCode.ERROR] * 2 + [StatusCode.UNSET]
    for number, run in enumerate(runs[:2], start=1):
        assert attrs(run)["error.type"] == "builtins.ConnectionError"
        assert run.status.description == f"builtins.ConnectionError: try {number}"
        (event,) = run.events
        assert event.name == "exception"
        assert (event.attributes or {})["exception.message"] == f"try {number}"
    assert runs[2].events == ()
    # Each attempt is a child of the one enqueue, in its trace.
    assert {parent_of(s) for s in runs} == {span_id(enqueue)}
    assert len({span_id(s) for s in runs}) == 3
    app.client.close()


def test_a_failed_attempt_has_status_error(
    url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(url, plugins)

    @app.task(name="tr.broken", queue="tr", max_attempts=1)
    def broken() -> None:
        raise ValueError("no such user")

    handle = broken.enqueue()
    with running(app, plugins):
        wait_until(lambda: handle.status() is JobStatus.FAILED, what="the failure")
        (run,) = spans.wait_attempts(handle.id, 1)
    assert attrs(run)["qw.outcome"] == "failed"
    assert attrs(run)["error.type"] == "builtins.ValueError"
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "builtins.ValueError: no such user"
    assert [e.name for e in run.events] == ["exception"]
    app.client.close()


def test_a_cancelled_attempt_says_so(url: str, plugins: QwPluginManager, spans: Spans) -> None:
    app = make_app(url, plugins)
    started = threading.Event()

    @app.task(name="tr.long", queue="tr")
    def long() -> None:
        started.set()
        job = qw.current_job()
        while True:
            job.raise_if_cancelled()
            threading.Event().wait(0.02)

    handle = long.enqueue()
    with running(app, plugins):
        assert started.wait(15)
        handle.cancel()
        wait_until(lambda: handle.status() is JobStatus.CANCELLED, what="the cancel")
        (run,) = spans.wait_attempts(handle.id, 1)
    assert attrs(run)["qw.outcome"] == "cancelled"
    assert run.status.status_code is StatusCode.UNSET
    app.client.close()


def test_an_async_tasks_own_span_nests_under_its_attempt(
    url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(url, plugins)

    @app.task(name="tr.fetch", queue="tr")
    async def fetch(n: int) -> int:
        with tracer.start_as_current_span("inside fetch"):
            await asyncio.sleep(0.01)
            with tracer.start_as_current_span("deeper"):
                await asyncio.sleep(0)
        return n * 2

    handles = [fetch.enqueue(n) for n in range(3)]
    with running(app, plugins):
        assert [h.result(timeout=30) for h in handles] == [0, 2, 4]
        runs = [spans.wait_attempts(h.id, 1)[0] for h in handles]
    inside, deeper = spans.named("inside fetch"), spans.named("deeper")
    # Three coroutines ran on one loop: each inner span is under its own attempt.
    assert sorted(parent_of(s) or 0 for s in inside) == sorted(span_id(r) for r in runs)
    by_id = {span_id(s): s for s in inside}
    for span in deeper:
        outer = by_id[parent_of(span) or 0]
        assert trace_id(span) == trace_id(outer)
    for run in runs:
        assert attrs(run)["qw.outcome"] == "succeeded"
        assert run.end_time is not None
        assert run.start_time is not None
        own = next(s for s in inside if parent_of(s) == span_id(run))
        assert run.start_time <= (own.start_time or 0) <= (own.end_time or 0) <= run.end_time
    app.client.close()


def test_a_workflows_steps_share_its_span_as_parent(
    url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(url, plugins)

    @app.task(name="tr.wf.one", queue="tr")
    def one(n: int) -> int:
        return n + 1

    @app.task(name="tr.wf.sum", queue="tr")
    def total(parts: list[int]) -> int:
        return sum(parts)

    wf = app.workflow("wf-trace")
    first = wf.add(one, 1)
    parts = wf.map(one, [first, first])
    last = wf.add(total, parts)
    with tracer.start_as_current_span("request") as request:
        handle = wf.enqueue()
    steps = [first.id, *(s.id for s in parts), last.id]
    with running(app, plugins):
        assert handle.result(timeout=30) == 6
        runs = [spans.wait_attempts(step, 1)[0] for step in steps]
    workflow = spans.one("qw workflow wf-trace")
    assert workflow.kind is SpanKind.PRODUCER
    assert parent_of(workflow) == request.get_span_context().span_id
    assert attrs(workflow)["qw.workflow.id"] == "wf-trace"
    assert attrs(workflow)["qw.workflow.steps"] == 4
    assert attrs(workflow)["messaging.batch.message_count"] == 4
    for run in runs:
        assert parent_of(run) == span_id(workflow)
        assert [link.context.span_id for link in run.links] == [span_id(workflow)]
        assert attrs(run)["qw.workflow.id"] == "wf-trace"
        assert attrs(run)["qw.outcome"] == "succeeded"
    # No enqueue span of its own: the workflow is the one producer span.
    assert not [s for s in spans.all() if s.name.startswith("qw enqueue")]
    app.client.close()


def test_a_dynamic_step_nests_under_its_creators_attempt(
    url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(url, plugins)

    @app.task(name="tr.wf.leaf", queue="tr")
    def leaf(n: int) -> int:
        return n

    @app.task(name="tr.wf.spawn", queue="tr")
    def spawn(n: int) -> int:
        more = qw.current_job().extend()
        more.map(leaf, list(range(n)))
        more.enqueue()
        return n

    wf = app.workflow("wf-dynamic")
    creator = wf.add(spawn, 2)
    handle = wf.enqueue()
    with running(app, plugins):
        assert handle.result(timeout=30) == 2
        wait_until(
            lambda: (
                len(spans.named("qw run tr.wf.leaf")) == 2 and len(spans.attempts(creator.id)) == 1
            ),
            what="the added steps' spans",
        )
    (made,) = spans.attempts(creator.id)
    workflow = spans.one("qw workflow wf-dynamic")
    assert parent_of(made) == span_id(workflow)
    added = spans.named("qw run tr.wf.leaf")
    for run in added:
        assert parent_of(run) == span_id(made)
        assert [link.context.span_id for link in run.links] == [span_id(made)]
        assert trace_id(run) == trace_id(workflow)
        assert attrs(run)["qw.workflow.id"] == "wf-dynamic"
    (event,) = made.events
    assert event.name == "qw add steps"
    assert dict(event.attributes or {}) == {"qw.workflow.id": "wf-dynamic", "qw.job.count": 2}
    app.client.close()


def test_an_enqueue_from_a_task_is_a_child_of_its_attempt(
    sqlite_url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(sqlite_url, plugins)

    @app.task(name="tr.after", queue="tr")
    def after() -> str:
        return "done"

    @app.task(name="tr.first", queue="tr")
    def first() -> str:
        return after.enqueue().id

    handle = first.enqueue()
    with running(app, plugins):
        second = handle.result(timeout=30)
        assert isinstance(second, str)
        (run_second,) = spans.wait_attempts(second, 1)
        (run_first,) = spans.wait_attempts(handle.id, 1)
    inner = spans.one("qw enqueue tr.after")
    assert parent_of(inner) == span_id(run_first)
    assert parent_of(run_second) == span_id(inner)
    assert parent_of(spans.one("qw enqueue tr.first")) is None  # no span was current
    assert trace_id(run_second) == trace_id(run_first)
    app.client.close()


def test_a_batch_enqueue_is_one_span_for_many_jobs(
    sqlite_url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(sqlite_url, plugins)
    answers = app.client.enqueue(
        [
            qw.NewJob("tr", {"task": "tr.a", "args": [], "kwargs": {}}),
            qw.NewJob("tr", {"task": "tr.b", "args": [], "kwargs": {}}),
            qw.NewJob("other", {"task": "tr.b", "args": [], "kwargs": {}}),
        ]
    )
    span = spans.one("qw enqueue")
    assert attrs(span)["qw.queues"] == ("other", "tr")
    assert attrs(span)["messaging.batch.message_count"] == attrs(span)["qw.job.count"] == 3
    assert "qw.task" not in attrs(span)
    assert "qw.job.id" not in attrs(span)
    # Every job carries the same context: the batch's span.
    contexts = {job_headers(app.client.get(a.id).payload)["traceparent"] for a in answers}
    assert len(contexts) == 1
    assert f"{span_id(span):016x}" in contexts.pop()
    app.client.close()


def test_an_attempt_that_never_ran_still_has_a_span(
    sqlite_url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(sqlite_url, plugins)
    handle = app.client.enqueue_one("tr", {"task": "tr.nobody", "args": [], "kwargs": {}})
    with running(app, plugins):
        wait_until(lambda: app.client.get(handle.id).status is JobStatus.FAILED, what="fail")
        (run,) = spans.wait_attempts(handle.id, 1)
    assert run.name == "qw run tr.nobody"
    assert attrs(run)["qw.outcome"] == "failed"
    assert attrs(run)["error.type"] == "qw.UnknownTask"
    assert parent_of(run) == span_id(spans.one("qw enqueue tr.nobody"))
    app.client.close()


def test_an_async_task_stopped_at_shutdown_is_released(
    url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(url, plugins)
    started = threading.Event()

    @app.task(name="tr.sleepy", queue="tr")
    async def sleepy() -> None:
        started.set()
        await asyncio.sleep(60)

    handle = sleepy.enqueue()
    with running(app, plugins, grace_s=0.1):
        assert started.wait(15)
    (run,) = spans.wait_attempts(handle.id, 1)
    assert attrs(run)["qw.outcome"] == "released"
    assert attrs(run)["qw.release.reason"] == "shutdown"
    assert run.events == ()  # the runtime's cancel is not the task's exception
    assert app.client.get(handle.id).status is JobStatus.QUEUED
    assert qw_tracing.plugin.open_attempts() == 0
    app.client.close()


def test_a_sync_task_left_running_at_shutdown_is_abandoned(
    url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(url, plugins)
    started, release = threading.Event(), threading.Event()

    @app.task(name="tr.stuck", queue="tr")
    def stuck() -> None:
        started.set()
        release.wait(30)

    handle = stuck.enqueue()
    try:
        with running(app, plugins, grace_s=0.1):
            assert started.wait(15)
        (run,) = spans.attempts(handle.id)
        assert attrs(run)["qw.outcome"] == "abandoned"
        assert qw_tracing.plugin.open_attempts() == 0
    finally:
        release.set()
    app.client.close()


def test_a_lost_lease_ends_the_span_and_the_next_attempt_has_its_own(
    sqlite_url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    app = make_app(sqlite_url, plugins)
    started, release = threading.Event(), threading.Event()

    @app.task(name="tr.slow", queue="tr")
    def slow() -> int:
        attempt = qw.current_job().attempt
        if attempt == 1:
            started.set()
            release.wait(30)
        return attempt

    handle = slow.enqueue()
    path = sqlite_url.removeprefix("sqlite:///")
    try:
        with running(app, plugins):
            assert started.wait(15)
            # What a stalled worker sees: its lease expired and the store
            # requeued the job (the reclaim sweep's own transition).
            import sqlite3

            with sqlite3.connect(path) as db:
                db.execute("UPDATE qw_jobs SET lease_expires_at = 0 WHERE id = ?", (handle.id,))
            wait_until(lambda: len(spans.attempts(handle.id)) >= 1, what="the lost span")
            release.set()
            assert handle.result(timeout=30) == 2
            first, second = spans.wait_attempts(handle.id, 2)
    finally:
        release.set()
    assert attrs(first)["qw.outcome"] == "lost"
    assert attrs(second)["qw.outcome"] == "succeeded"
    assert attrs(second)["qw.attempt"] == 2
    assert parent_of(first) == parent_of(second) == span_id(spans.one("qw enqueue tr.slow"))
    app.client.close()


def test_the_async_client_enqueue_is_traced_too(
    url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    async def main() -> str:
        namespace = f"aio{secrets.token_hex(4)}"
        async with await qw.open_async(url, namespace=namespace, plugins=plugins) as client:
            with tracer.start_as_current_span("async request"):
                answer = await client.enqueue_one("tr", {"task": "tr.x", "args": [], "kwargs": {}})
            job = await client.get(answer.id)
            return job_headers(job.payload)["traceparent"]

    traceparent = asyncio.run(main())
    span = spans.one("qw enqueue tr.x")
    assert parent_of(span) == span_id(spans.one("async request"))
    assert traceparent.split("-")[2] == f"{span_id(span):016x}"


NO_PROVIDER = """
import json, sys, threading
import pytest

import qw
from opentelemetry import trace
from opentelemetry.trace import ProxyTracerProvider
import qw_tracing.plugin

app = qw.App(sys.argv[1], "noprovider")
seen = []

@app.task(name="np.add", queue="np")
def add(a, b):
    with trace.get_tracer("user").start_as_current_span("user span"):
        seen.append([a, b])
    return a + b

@app.task(name="np.trace", queue="np")
def current_trace():
    return format(trace.get_current_span().get_span_context().trace_id, "032x")

handle = add.enqueue(2, 3)
# As from a traced producer: the worker, with no SDK, still carries its trace on.
carried = app.client.enqueue_one("np", {
    "task": "np.trace", "args": [], "kwargs": {},
    "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
})
worker = app.worker(["np"], poll_interval=0.05)
assert "tracing" in [name for name, _ in worker.plugins.pluggy.list_name_plugin()]
worker.start()
result = handle.result(timeout=30)
carried_trace = qw.JobHandle(carried.id, True, owner=app.client).result(timeout=30)
worker.stop(timeout=30)
print(json.dumps({
    "result": result,
    "seen": seen,
    "payload": app.client.get(handle.id).payload,
    "proxy": isinstance(trace.get_tracer_provider(), ProxyTracerProvider),
    "open": qw_tracing.plugin.open_attempts(),
    "carried": carried_trace,
}))
"""


def test_without_a_tracer_provider_nothing_breaks_and_nothing_is_added(
    sqlite_url: str,
) -> None:
    # A process of its own: this one's global provider is set for the session.
    out = subprocess.run(
        [sys.executable, "-c", NO_PROVIDER, sqlite_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout.splitlines()[-1])
    assert report == {
        "result": 5,
        "seen": [[2, 3]],
        # No span to propagate: the payload is exactly what the task was given.
        "payload": {"task": "np.add", "args": [2, 3], "kwargs": {}},
        "proxy": True,
        "open": 0,
        "carried": "0af7651916cd43dd8448eb211c80319c",
    }


def test_the_version_is_the_distributions() -> None:
    from importlib.metadata import version

    assert qw_tracing.__version__ == version("qw-tracing")


def test_a_job_without_trace_context_is_a_root_span_whatever_is_current(
    sqlite_url: str, plugins: QwPluginManager, spans: Spans
) -> None:
    # Enqueued by a client with no tracing plugin: the job carries no headers.
    app = qw.App(client=qw.open(sqlite_url, namespace="plain", plugins=QwPluginManager()))

    @app.task(name="tr.plain", queue="tr")
    def plain() -> str:
        return "ok"

    handle = plain.enqueue()
    assert job_headers(app.client.get(handle.id).payload) == {}
    # Inline: the task runs in the thread that called run(), where a span is current.
    worker = app.worker(["tr"], plugins=plugins, load_plugins=False, **{**FAST, "inline": True})

    def work() -> None:
        with tracer.start_as_current_span("ambient"):
            worker.run(handle_signals=False)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert handle.result(timeout=30) == "ok"
        (run,) = spans.wait_attempts(handle.id, 1)
    finally:
        worker.stop(timeout=30)
        thread.join(30)
    assert run.parent is None
    assert run.links == ()
    assert attrs(run)["qw.outcome"] == "succeeded"
    app.client.close()


def test_a_sync_task_past_its_timeout_ends_its_span_as_retried_at_once(
    sqlite_url: str, plugins: QwPluginManager, spans: Spans, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(sqlite_url, plugins)
    late = threading.Event()

    @app.task(name="tr.late", queue="tr", timeout=0.2, max_attempts=2, backoff=0.01)
    def slow() -> str:
        if qw.current_job().attempt == 1:
            late.wait(30)
            # Raised after the span ended: nothing is recorded on it, nothing logged.
            raise RuntimeError("too late to matter")
        return "second"

    handle = slow.enqueue()
    try:
        with running(app, plugins):
            (first,) = spans.wait_attempts(handle.id, 1)
            assert attrs(first)["qw.outcome"] == "retried"
            assert attrs(first)["error.type"] == "qw.Timeout"
            late.set()
            assert handle.result(timeout=30) == "second"
            _, second = spans.wait_attempts(handle.id, 2)
    finally:
        late.set()
    assert first.events == ()
    assert attrs(second)["qw.outcome"] == "succeeded"
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]
    app.client.close()
