"""Waiting for a job's end with a real worker; a task finishing its job in its own transaction."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import running, store_url, terminal, wait_until

import qw
from qw.model import JobStatus


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


@pytest.fixture
def app(url: str, namespace: str) -> Iterator[qw.App]:
    application = qw.App(url, namespace)
    yield application
    application.close()


def test_wait_finished_returns_as_the_worker_finishes_the_job(app: qw.App) -> None:
    release = threading.Event()

    @app.task(name="rs.slow", queue="rt")
    def slow() -> int:
        assert release.wait(20)
        return 7

    job_id = slow.enqueue().id
    with running(app):
        assert app.client.wait_finished(job_id, 0.2).status is JobStatus.RUNNING or (
            app.client.get(job_id).status is JobStatus.QUEUED
        )
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        job = app.client.wait_finished(job_id, 30)
        waited = time.monotonic() - started
    assert (job.status, job.result) == (JobStatus.SUCCEEDED, 7)
    # Released at 0.3 s: woken (or polled) at once, not at the 30 s timeout.
    assert waited < 3, f"wait_finished took {waited:.2f} s"


def test_wait_finished_of_an_unknown_job_is_job_not_found(app: qw.App) -> None:
    with pytest.raises(qw.JobNotFound):
        app.client.wait_finished("no-such-job", 0.1)


# -- complete(connection=): SQLite, the transactional store here ----------------


@pytest.fixture
def sqlite_app(tmp_path: Path, namespace: str) -> Iterator[tuple[qw.App, Path]]:
    path = tmp_path / "app.db"
    # The application's own table beside qw's, in one file, as an app would have it.
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE side (job TEXT, attempt INTEGER)")
    application = qw.App(f"sqlite:///{path}?shared=true", namespace)
    yield application, path
    application.close()


def _side_rows(path: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT job, attempt FROM side ORDER BY attempt").fetchall()
    finally:
        conn.close()


def test_a_task_completes_its_job_in_its_own_committed_transaction(
    sqlite_app: tuple[qw.App, Path],
) -> None:
    app, path = sqlite_app

    @app.task(name="rs.tx", queue="rt")
    def write() -> str:
        job = qw.current_job()
        conn = sqlite3.connect(path)
        try:
            with conn:  # commits at the end of the block
                conn.execute("INSERT INTO side VALUES (?, ?)", (job.id, job.attempt))
                job.complete({"rows": 1}, connection=conn)
        finally:
            conn.close()
        return "ignored: the job was completed above"

    job_id = write.enqueue().id
    with running(app) as worker:
        done = wait_until(lambda: terminal(app, job_id), what="the job to finish")
        wait_until(lambda: worker.stats.succeeded, what="the worker to count it")
    assert (done.status, done.result, done.attempts) == (JobStatus.SUCCEEDED, {"rows": 1}, 1)
    assert _side_rows(path) == [(job_id, 1)]
    # The worker's fenced check after the task wrote nothing and lost nothing.
    assert (worker.stats.succeeded, worker.stats.retried, worker.stats.lost) == (1, 0, 0)


def test_a_rolled_back_completion_is_retried_and_its_side_effect_happens_once(
    sqlite_app: tuple[qw.App, Path],
) -> None:
    app, path = sqlite_app

    @app.task(name="rs.tx_rollback", queue="rt", max_attempts=3)
    def write() -> None:
        job = qw.current_job()
        conn = sqlite3.connect(path)
        try:
            conn.execute("INSERT INTO side VALUES (?, ?)", (job.id, job.attempt))
            job.complete({"attempt": job.attempt}, connection=conn)
            if job.attempt == 1:
                conn.rollback()  # the first attempt's transaction does not commit
            else:
                conn.commit()
        finally:
            conn.close()

    job_id = write.enqueue().id
    with running(app):
        done = wait_until(lambda: terminal(app, job_id), what="the job to finish")
    assert (done.status, done.result, done.attempts) == (JobStatus.SUCCEEDED, {"attempt": 2}, 2)
    # The first attempt's completion and row went together; the retry's committed.
    assert _side_rows(path) == [(job_id, 2)]
    assert isinstance(done.error, dict)
    assert done.error["type"] == "CompletionNotCommitted"


def test_a_task_raising_after_its_completion_rolls_back_and_is_retried(
    sqlite_app: tuple[qw.App, Path],
) -> None:
    app, path = sqlite_app

    @app.task(name="rs.tx_raise", queue="rt", max_attempts=2)
    def write() -> None:
        job = qw.current_job()
        conn = sqlite3.connect(path)
        try:
            with conn:  # rolls back when the block raises
                conn.execute("INSERT INTO side VALUES (?, ?)", (job.id, job.attempt))
                job.complete(None, connection=conn)
                if job.attempt == 1:
                    raise RuntimeError("after the completion, before the commit")
        finally:
            conn.close()

    job_id = write.enqueue().id
    with running(app):
        done = wait_until(lambda: terminal(app, job_id), what="the job to finish")
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2)
    assert _side_rows(path) == [(job_id, 2)]
    assert isinstance(done.error, dict)
    assert done.error["type"] == "builtins.RuntimeError"


def test_a_stale_completion_rolls_the_applications_writes_back(
    sqlite_app: tuple[qw.App, Path],
) -> None:
    app, path = sqlite_app
    seen: list[str] = []

    @app.task(name="rs.tx_stale", queue="rt", timeout=0.2, max_attempts=1)
    def write() -> None:
        job = qw.current_job()
        # The timeout fails the attempt; this thread runs on with a stale lease.
        wait_until(lambda: terminal(app, job.id), what="the timeout to fail the job")
        conn = sqlite3.connect(path)
        try:
            with conn:
                conn.execute("INSERT INTO side VALUES (?, ?)", (job.id, job.attempt))
                job.complete("late", connection=conn)
        except qw.LeaseLost:
            seen.append("lost")
        finally:
            conn.close()

    job_id = write.enqueue().id
    with running(app):
        wait_until(lambda: seen, what="the stale completion")
    job = app.client.get(job_id)
    assert (job.status, job.result) == (JobStatus.FAILED, None)
    assert _side_rows(path) == []
