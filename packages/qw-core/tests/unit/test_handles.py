"""Job handles on memory and sqlite, with a real worker thread: results, errors, timeouts."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import qw
from qw.model import JobStatus, WorkflowState

FAST: dict[str, Any] = {"poll_interval": 0.05, "lease_s": 2.0, "heartbeat_s": 0.5, "reclaim_s": 0.3}


def make_app(url: str, namespace: str) -> qw.App:
    app = qw.App(url, namespace)

    @app.task(queue="h", name="h.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(queue="h", name="h.boom", max_attempts=1)
    def boom() -> None:
        raise ValueError("nope")

    @app.task(queue="h", name="h.slow")
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "slept"

    return app


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://handles-{time.monotonic_ns()}"
    return f"sqlite:///{tmp_path / 'handles.db'}"


@pytest.fixture
def app(url: str) -> Iterator[qw.App]:
    application = make_app(url, "handles")
    yield application
    application.close()


@contextmanager
def running(app: qw.App) -> Iterator[qw.Worker]:
    worker = app.worker(["h"], concurrency=2, **FAST)
    thread = worker.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=30)
        thread.join(30)
        assert not thread.is_alive(), "worker did not stop"


def test_a_handle_is_the_old_answer_and_gives_the_result(app: qw.App) -> None:
    handle = app.tasks["h.add"].enqueue(2, 3)
    assert isinstance(handle, qw.Enqueued)
    assert isinstance(handle, qw.JobHandle)
    assert handle == qw.Enqueued(handle.id, True)
    assert qw.Enqueued(handle.id, True) == handle
    assert hash(handle) == hash(qw.Enqueued(handle.id, True))
    assert handle != qw.Enqueued(handle.id, False)
    assert handle.status() is JobStatus.QUEUED
    with running(app):
        assert handle.result(timeout=30) == 5
    job = handle.wait()
    assert job.status is JobStatus.SUCCEEDED
    assert job == handle.job()


def test_a_failed_job_raises_job_failed_with_its_error(app: qw.App) -> None:
    handle = app.tasks["h.boom"].enqueue()
    with running(app), pytest.raises(qw.JobFailed) as failed:
        handle.result(timeout=30)
    assert not isinstance(failed.value, qw.JobWasCancelled)
    assert failed.value.job_id == handle.id
    assert failed.value.status == "failed"
    assert "nope" in str(failed.value.error)


def test_a_cancelled_job_raises_job_was_cancelled(app: qw.App) -> None:
    handle = app.tasks["h.add"].enqueue(1, 1)
    assert handle.cancel() is JobStatus.CANCELLED
    with pytest.raises(qw.JobWasCancelled) as cancelled:
        handle.result(timeout=5)
    assert cancelled.value.status == "cancelled"


def test_a_job_not_ended_in_time_raises_result_timeout(app: qw.App) -> None:
    handle = app.tasks["h.add"].enqueue(1, 2)
    started = time.monotonic()
    with pytest.raises(qw.ResultTimeout):
        handle.result(timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 5
    assert handle.status() is JobStatus.QUEUED  # the work goes on
    with pytest.raises(qw.InvalidInput):
        handle.wait(timeout=-1)


def test_wait_without_timeout_waits_past_one_slice(
    app: qw.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slices of 0.1 s: a job taking 0.5 s is several wait_finished calls.
    monkeypatch.setattr("qw.handles.RESULT_WAIT_SLICE_S", 0.1)
    handle = app.tasks["h.slow"].enqueue(0.5)
    with running(app):
        assert handle.result() == "slept"


def test_options_and_enqueue_many_give_handles(app: qw.App) -> None:
    add = app.tasks["h.add"]
    first = add.options(dedupe_key="k").enqueue(1, 1)
    again = add.options(dedupe_key="k").enqueue(2, 2)
    assert isinstance(first, qw.JobHandle)
    assert again.created is False
    assert again.id == first.id
    many = app.enqueue_many([add.job(i, i) for i in range(3)])
    assert all(isinstance(h, qw.JobHandle) for h in many)
    with running(app):
        assert [h.result(timeout=30) for h in many] == [0, 2, 4]
        assert app.job_handle(first.id).result(timeout=30) == 2


def test_a_workflow_handle_waits_on_its_steps(app: qw.App) -> None:
    wf = app.workflow()
    a = wf.add(app.tasks["h.add"], 1, 2)
    wf.add(app.tasks["h.add"], a, 10)
    handle = wf.enqueue()
    with pytest.raises(qw.ResultTimeout):
        handle.wait(timeout=0.2)
    with running(app):
        assert handle.result(timeout=30) == 13
    assert handle.status().state is WorkflowState.SUCCEEDED


def test_connection_is_refused_by_a_store_without_transactions(url: str, app: qw.App) -> None:
    if app.client.capabilities.transactional:
        pytest.skip(f"{url.split(':')[0]} declares transactional: see the next test")
    with pytest.raises(qw.Unsupported):
        app.tasks["h.add"].options(connection=object()).enqueue(1, 2)
    assert app.client.list_jobs() == []


def test_connection_writes_the_job_in_the_applications_transaction(tmp_path: Path) -> None:
    path = tmp_path / "tx.db"
    app = make_app(f"sqlite:///{path}", "tx")
    try:
        add = app.tasks["h.add"]
        add.enqueue(0, 0)  # creates the schema
        conn = sqlite3.connect(path)
        try:
            kept = add.options(connection=conn).enqueue(1, 2)
            assert app.client.find(kept.id) is None  # not committed yet
            conn.commit()
            assert app.client.get(kept.id).status is JobStatus.QUEUED
            dropped = app.enqueue_many([add.job(3, 4)], connection=conn)
            conn.rollback()
            assert app.client.find(dropped[0].id) is None
            with pytest.raises(qw.InvalidInput):
                asyncio_run_aenqueue(add, conn)
        finally:
            conn.close()
    finally:
        app.close()


def asyncio_run_aenqueue(task: qw.Task[..., object], conn: object) -> object:
    import asyncio

    return asyncio.run(task.options(connection=conn).aenqueue(1, 1))
