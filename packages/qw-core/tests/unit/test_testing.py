"""qw.testing: eager mode, drain and run_worker run the real worker on a fresh memory store."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import qw
import qw.testing
from qw.backoff import Backoff
from qw.model import JobStatus


def _app(tmp_path: Path) -> qw.App:
    # A URL that must never be opened: every helper binds its own memory store.
    return qw.App(f"sqlite:///{tmp_path / 'never.db'}", namespace="tests")


def _job(app: qw.App, job_id: str) -> qw.Job:
    return app.client.get(job_id)


# -- eager ------------------------------------------------------------------


def test_eager_runs_the_task_before_enqueue_returns_in_the_test_thread(tmp_path: Path) -> None:
    app = _app(tmp_path)
    seen: list[tuple[int, str, int]] = []

    @app.task
    def add(a: int, b: int) -> int:
        job = qw.current_job()
        seen.append((threading.get_ident(), job.id, job.attempt))
        return a + b

    with qw.testing.eager(app) as mode:
        answer = add.enqueue(2, 3)
        job = _job(app, answer.id)
        assert (job.status, job.result) == (JobStatus.SUCCEEDED, 5)
        assert seen == [(threading.get_ident(), answer.id, 1)]
        assert mode.totals.succeeded == 1
        assert mode.client is app.client
    # The app's own store was never opened.
    assert not (tmp_path / "never.db").exists()


def test_eager_retries_at_once_and_fails_as_in_production(tmp_path: Path) -> None:
    app = _app(tmp_path)
    attempts: list[int] = []
    slow = Backoff.fixed(60)

    @app.task(max_attempts=3, backoff=slow)
    def flaky(fail_until: int) -> str:
        attempt = qw.current_job().attempt
        attempts.append(attempt)
        if attempt < fail_until:
            raise RuntimeError(f"attempt {attempt} fails")
        return "ok"

    with qw.testing.eager(app) as mode:
        ok = flaky.enqueue(3)
        assert _job(app, ok.id).result == "ok"
        bad = flaky.enqueue(10)
        job = _job(app, bad.id)
        assert job.status is JobStatus.FAILED
        assert job.attempts == 3
        assert isinstance(job.error, dict)
        assert job.error["message"] == "attempt 3 fails"
        assert attempts == [1, 2, 3, 1, 2, 3]
        assert (mode.totals.succeeded, mode.totals.failed, mode.totals.retried) == (1, 1, 4)
    # The task's own backoff is back once the block ends.
    assert flaky.backoff is slow


def test_eager_can_honour_the_backoff(tmp_path: Path) -> None:
    app = _app(tmp_path)

    @app.task(max_attempts=2, backoff=Backoff.fixed(0.3))
    def once_bad() -> int:
        if qw.current_job().attempt == 1:
            raise RuntimeError("first")
        return 2

    with qw.testing.eager(app, backoff=True):
        started = time.monotonic()
        answer = once_bad.enqueue()
        assert time.monotonic() - started >= 0.3
        assert _job(app, answer.id).result == 2


def test_eager_leaves_delayed_jobs_until_their_time(tmp_path: Path) -> None:
    app = _app(tmp_path)
    ran: list[str] = []

    @app.task
    def note(word: str) -> None:
        ran.append(word)

    with qw.testing.eager(app):
        later = note.options(delay=0.3).enqueue("later")
        note.enqueue("now")
        assert ran == ["now"]
        assert _job(app, later.id).status is JobStatus.QUEUED
        result = qw.testing.drain(app, delayed=True, timeout=5)
        assert ran == ["now", "later"]
        assert result.succeeded == 1


def test_eager_payloads_still_go_through_json(tmp_path: Path) -> None:
    app = _app(tmp_path)

    @app.task
    def echo(value: Any) -> Any:
        return value

    with qw.testing.eager(app):
        for not_json in ({1, 2}, (1, "a"), {1: "int key"}):
            with pytest.raises(qw.InvalidPayload):
                echo.enqueue(not_json)
        assert app.client.counts() == {}
        answer = echo.enqueue({"a": [1, 2.5, None]})
        assert _job(app, answer.id).result == {"a": [1, 2.5, None]}


def test_eager_runs_a_workflow_to_its_result(tmp_path: Path) -> None:
    app = _app(tmp_path)

    @app.task
    def double(x: int) -> int:
        assert qw.current_job().workflow is not None
        return 2 * x

    @app.task
    def total(xs: list[int]) -> int:
        return sum(xs)

    with qw.testing.eager(app):
        wf = app.workflow("sums")
        parts = wf.map(double, [1, 2, 3])
        wf.add(total, parts)
        handle = wf.enqueue()
        assert handle.status().state is qw.WorkflowState.SUCCEEDED
        assert handle.result(timeout=0) == 12


def test_eager_runs_jobs_a_task_enqueues_and_steps_it_adds(tmp_path: Path) -> None:
    app = _app(tmp_path)
    order: list[str] = []

    @app.task
    def child(name: str) -> None:
        order.append(name)

    @app.task
    def parent() -> None:
        order.append("parent")
        child.enqueue("child")
        order.append("parent returns")

    @app.task
    def grow() -> None:
        more = qw.current_job().extend()
        more.add(child, "added step", after=[more.parent])
        more.enqueue()

    with qw.testing.eager(app) as mode:
        parent.enqueue()
        # The child ran after its parent returned: the enqueue inside the
        # task did not start a drain of its own.
        assert order == ["parent", "parent returns", "child"]
        wf = app.workflow()
        wf.add(grow)
        wf.enqueue()
        assert order[-1] == "added step"
        assert mode.totals.succeeded == 4  # parent, child, grow, the added step


def test_eager_runs_async_tasks_and_enqueue_many(tmp_path: Path) -> None:
    app = _app(tmp_path)

    @app.task
    async def slow_square(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * x

    with qw.testing.eager(app):
        answers = app.enqueue_many([slow_square.job(i) for i in range(4)])
        assert [_job(app, a.id).result for a in answers] == [0, 1, 4, 9]


def test_eager_binds_a_fresh_store_each_time_and_restores_the_app(tmp_path: Path) -> None:
    app = qw.App("memory://shared-by-name", namespace="tests")

    @app.task
    def noop() -> None:
        pass

    mine = app.client
    noop.enqueue()  # into the app's own store, not run
    with qw.testing.eager(app):
        assert app.client is not mine
        assert app.client.counts() == {}
        noop.enqueue()
    assert app.client is mine
    assert mine.counts()["default"][JobStatus.QUEUED] == 1
    with qw.testing.eager(app) as second:
        assert second.client.counts() == {}


def test_eager_drain_timeout_is_typed_and_says_what_ran(tmp_path: Path) -> None:
    app = _app(tmp_path)

    @app.task(limit_key="k", rate=(1, 60.0))
    def limited() -> None:
        pass

    with qw.testing.memory_store(app):
        limited.enqueue()
        limited.enqueue()
        started = time.monotonic()
        with pytest.raises(qw.testing.DrainTimeout) as caught:
            qw.testing.drain(app, timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 5
    assert isinstance(caught.value, qw.ResultTimeout)
    assert caught.value.result.succeeded == 1
    assert "1 jobs" in str(caught.value)


# -- drain and run_worker -----------------------------------------------------


def test_drain_runs_what_is_due_on_the_queues_asked_for(tmp_path: Path) -> None:
    app = _app(tmp_path)

    @app.task(queue="mail")
    def mail(n: int) -> int:
        return n

    @app.task(queue="other", max_attempts=1)
    def boom() -> None:
        raise ValueError("no")

    with qw.testing.memory_store(app) as client:
        ids = [mail.enqueue(i).id for i in range(3)]
        bad = boom.enqueue().id
        assert client.get(ids[0]).status is JobStatus.QUEUED  # nothing runs by itself
        result = qw.testing.drain(app, queues=["mail"])
        assert result == qw.testing.DrainResult(claimed=3, succeeded=3)
        assert [client.get(i).result for i in ids] == [0, 1, 2]
        assert client.get(bad).status is JobStatus.QUEUED
        result = qw.testing.drain(app)
        assert (result.failed, result.succeeded) == (1, 0)
        assert client.get(bad).status is JobStatus.FAILED
        assert qw.testing.drain(app) == qw.testing.DrainResult()


def test_run_worker_runs_jobs_on_a_background_thread(tmp_path: Path) -> None:
    app = _app(tmp_path)
    threads: list[int] = []

    @app.task
    def where() -> None:
        threads.append(threading.get_ident())

    with qw.testing.memory_store(app) as client, qw.testing.run_worker(app) as worker:
        job_id = where.enqueue().id
        assert client.wait_finished(job_id, 10).status is JobStatus.SUCCEEDED
        assert worker.stats.succeeded == 1
    assert threads
    assert threads[0] != threading.get_ident()
    assert worker.stop_requested


def test_the_drain_worker_reaches_the_worker_through_public_names_only() -> None:
    import qw.testing._worker as module

    tree = ast.parse(Path(module.__file__).read_text())
    # What DrainWorker keeps itself (``self._x = ...``) is its own, not a reach-in.
    own = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
    }
    private = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.attr not in own
    }
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_")
    }
    assert (private, imported) == (set(), set())
    assert own == {"_delayed", "_retries", "idle"}


def test_a_drain_runs_sync_tasks_in_the_calling_thread(tmp_path: Path) -> None:
    app = _app(tmp_path)
    threads: list[int] = []

    @app.task
    def where() -> None:
        threads.append(threading.get_ident())

    with qw.testing.memory_store(app):
        for _ in range(3):
            where.enqueue()
        assert qw.testing.drain(app).succeeded == 3
    assert threads == [threading.get_ident()] * 3


def test_import_qw_does_not_load_qw_testing() -> None:
    code = "import sys, json, qw; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    loaded = json.loads(out)
    assert "qw" in loaded
    assert [m for m in loaded if m.startswith("qw.testing")] == []


# -- handles and the async producer ------------------------------------------


def test_eager_handles_have_their_result_or_their_error_at_once(tmp_path: Path) -> None:
    app = _app(tmp_path)

    @app.task(max_attempts=2)
    def divide(a: int, b: int) -> float:
        return a / b

    with qw.testing.eager(app):
        assert divide.enqueue(1, 4).result(timeout=0) == 0.25
        failing = divide.enqueue(1, 0)
        with pytest.raises(qw.JobFailed) as caught:
            failing.result(timeout=0)
        assert caught.value.status == "failed"
        assert failing.job().attempts == 2
        [first, second] = app.enqueue_many([divide.job(6, 3), divide.job(9, 3)])
        assert (first.result(timeout=0), second.result(timeout=0)) == (2.0, 3.0)


def test_eager_runs_what_an_async_producer_enqueues_without_blocking_its_loop(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path)
    loop_threads: list[int] = []
    task_threads: list[int] = []

    @app.task
    def square(x: int) -> int:
        task_threads.append(threading.get_ident())
        return x * x

    @app.task
    def total(xs: list[int]) -> int:
        return sum(xs)

    async def produce() -> tuple[object, object]:
        loop_threads.append(threading.get_ident())
        handle = await square.aenqueue(7)
        wf = app.workflow()
        wf.add(total, wf.map(square, [1, 2]))
        flow = await wf.aenqueue()
        return await handle, await flow.result(timeout=0)

    with qw.testing.eager(app) as mode:
        assert asyncio.run(produce()) == (49, 5)
        assert mode.totals.succeeded == 4
    # The drain ran on the async client's thread, never on the event loop's.
    assert loop_threads[0] not in task_threads


def test_the_module_docstring_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import doctest

    monkeypatch.chdir(tmp_path)
    outcome = doctest.testmod(qw.testing)
    assert (outcome.attempted, outcome.failed) == (4, 0)
    assert not (tmp_path / "never-opened.db").exists()
