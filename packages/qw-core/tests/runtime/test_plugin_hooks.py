"""The 0.2 plugin hooks on every backend: enqueue headers and answers, lost leases, reclaims."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from conftest import running, terminal, wait_until
from runtime_app import register

import qw
from qw.model import Enqueued, Job, JobStatus, NewJob, WorkerInfo
from qw.payload import job_headers
from qw.plugin import hookimpl
from qw.plugin.manager import QwPluginManager

S = JobStatus


class Headers:
    """Sets headers at enqueue and records every enqueue hook it sees."""

    def __init__(self, **headers: str) -> None:
        self.headers = headers
        self.enqueuing: list[tuple[list[str], str | None]] = []
        self.enqueued: list[tuple[list[str], list[bool], str | None]] = []

    @hookimpl
    def qw_job_enqueuing(
        self, jobs: Sequence[NewJob], workflow: str | None, headers: dict[str, str]
    ) -> None:
        self.enqueuing.append(([j.id for j in jobs], workflow))
        headers.update(self.headers)

    @hookimpl
    def qw_jobs_enqueued(
        self, jobs: Sequence[NewJob], enqueued: Sequence[Enqueued], workflow: str | None
    ) -> None:
        self.enqueued.append(([j.id for j in jobs], [e.created for e in enqueued], workflow))


def _app(url: str, namespace: str, *plugins: object) -> qw.App:
    manager = QwPluginManager()
    for plugin in plugins:
        manager.register(plugin)
    app = qw.App(client=qw.open(url, namespace=namespace, plugins=manager))
    register(app)

    @app.task(name="rt.echo", queue="rt")
    def echo(*args: object, **kwargs: object) -> object:
        # What the task sees: its arguments only, never the headers.
        return {"args": list(args), "kwargs": kwargs}

    return app


@pytest.fixture
def make_app(url: str, namespace: str) -> Iterator[Callable[..., qw.App]]:
    """``_app`` on the test's store; every client it opened is closed after the test."""
    apps: list[qw.App] = []

    def make(*plugins: object) -> qw.App:
        apps.append(_app(url, namespace, *plugins))
        return apps[-1]

    yield make
    for app in apps:
        # The apps were given their clients, so they do not close them.
        app.client.close()


@pytest.fixture
def header_app(make_app: Callable[..., qw.App]) -> tuple[qw.App, Headers]:
    plugin = Headers(traceparent="00-abc-def-01", tenant="t1")
    return make_app(plugin), plugin


def test_headers_travel_with_the_job_and_the_task_never_sees_them(
    header_app: tuple[qw.App, Headers],
) -> None:
    app, plugin = header_app
    answer = app.tasks["rt.echo"].enqueue(1, "two", three=3)
    job = app.client.get(answer.id)
    assert job_headers(job.payload) == {"traceparent": "00-abc-def-01", "tenant": "t1"}
    assert plugin.enqueuing == [([answer.id], None)]
    assert plugin.enqueued == [([answer.id], [True], None)]
    with running(app):
        done = wait_until(lambda: terminal(app, answer.id), 15, "the echo job")
    assert done.status is S.SUCCEEDED
    assert done.result == {"args": [1, "two"], "kwargs": {"three": 3}}


def test_a_payload_that_is_not_a_task_payload_is_left_alone(
    header_app: tuple[qw.App, Headers],
) -> None:
    app, _ = header_app
    raw = app.client.enqueue_one("raw", ["just", "a", "list"])
    assert app.client.get(raw.id).payload == ["just", "a", "list"]
    assert job_headers(["just", "a", "list"]) == {}


def test_a_dedupe_hit_reaches_the_enqueued_hook_as_not_created(
    header_app: tuple[qw.App, Headers],
) -> None:
    app, plugin = header_app
    first = app.tasks["rt.add"].options(dedupe_key="once").enqueue(1, 2)
    again = app.tasks["rt.add"].options(dedupe_key="once").enqueue(1, 2)
    assert again.id == first.id
    assert [created for _, created, _ in plugin.enqueued] == [[True], [False]]


def test_headers_that_push_a_payload_over_the_limit_are_refused_and_nothing_is_written(
    make_app: Callable[..., qw.App],
) -> None:
    probe = make_app()
    limit = probe.client.capabilities.max_payload_bytes
    app = make_app(Headers(big="x" * limit))
    with pytest.raises(qw.InvalidPayload):
        app.tasks["rt.add"].enqueue(1, 2)
    assert app.client.list_jobs() == []


def test_a_non_string_header_is_dropped_with_a_warning(
    make_app: Callable[..., qw.App], caplog: pytest.LogCaptureFixture
) -> None:
    class Bad:
        @hookimpl
        def qw_job_enqueuing(self, headers: dict[str, object]) -> None:
            headers["n"] = 5
            headers["ok"] = "yes"

    app = make_app(Bad())
    answer = app.tasks["rt.add"].enqueue(1, 2)
    assert job_headers(app.client.get(answer.id).payload) == {"ok": "yes"}
    assert "non-string" in caplog.text


def test_workflow_steps_get_the_headers_and_name_their_workflow(
    header_app: tuple[qw.App, Headers],
) -> None:
    app, plugin = header_app
    wf = app.workflow("wf-headers")
    first = wf.add(app.tasks["rt.add"], 1, 2)
    wf.add(app.tasks["rt.echo"], first)
    handle = wf.enqueue()
    steps = app.client.steps("wf-headers")
    assert {s.id for s in steps} == {j.id for j in wf.steps}
    assert all(job_headers(s.payload)["tenant"] == "t1" for s in steps)
    assert plugin.enqueuing[-1] == ([j.id for j in wf.steps], "wf-headers")
    assert plugin.enqueued[-1][1:] == ([True, True], "wf-headers")
    with running(app):
        assert handle.result(timeout=15) == {"args": [3], "kwargs": {}}


def test_the_async_client_calls_the_same_hooks(url: str, namespace: str) -> None:
    plugin = Headers(tenant="async")
    manager = QwPluginManager()
    manager.register(plugin)

    async def main() -> Job:
        async with await qw.open_async(url, namespace=namespace, plugins=manager) as client:
            (answer,) = await client.enqueue([NewJob("rt", {"task": "rt.add", "args": [1, 2]})])
            return await client.get(answer.id)

    job = asyncio.run(main())
    assert job_headers(job.payload) == {"tenant": "async"}
    assert plugin.enqueued == [([job.id], [True], None)]


class Watcher:
    """Records the worker hooks of 0.2."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: list[qw.Client] = []
        self.lost: list[str] = []
        self.reclaimed: list[int] = []

    @hookimpl
    def qw_worker_started(self, worker: WorkerInfo, client: qw.Client) -> None:
        with self.lock:
            self.clients.append(client)

    @hookimpl
    def qw_lease_lost(self, job: Job, worker: WorkerInfo) -> None:
        with self.lock:
            self.lost.append(job.id)

    @hookimpl
    def qw_jobs_reclaimed(self, count: int) -> None:
        with self.lock:
            self.reclaimed.append(count)


def test_lost_leases_and_reclaims_reach_their_hooks(app: qw.App, notes: Path) -> None:
    watcher = Watcher()
    answer = app.tasks["rt.record"].enqueue(str(notes), 0.8)
    with running(app, watcher, lease_s=0.3) as worker:
        # As if the worker froze: its leases expire and its own sweep reclaims them.
        worker.renew_leases = lambda client: None  # type: ignore[method-assign]
        wait_until(lambda: terminal(app, answer.id), 15, "the job to fail its attempts")
        wait_until(lambda: worker.stats.lost == 3, 10, "the three late results to be dropped")
    assert watcher.lost == [answer.id] * 3
    assert sum(watcher.reclaimed) >= 3
    assert all(count > 0 for count in watcher.reclaimed)
    (client,) = watcher.clients
    assert client.namespace == app.client.namespace
