"""A task's progress reports (``current_job().progress``), seen through the API, events and CLI.

On memory and sqlite: both run in the test's process, so the task can be
held on an Event while the test looks at the running job.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import events_by_job, running, store_url, terminal, wait_until

import qw
from qw.cli import main
from qw.model import PROGRESS_EVENT, JobStatus

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


@pytest.fixture
def app(url: str, namespace: str) -> Iterator[qw.App]:
    application = qw.App(url, namespace)
    yield application
    application.close()


def cli(url: str, namespace: str, *args: str) -> str:
    result = CliRunner().invoke(
        main, list(args), env={"QW_URL": url, "QW_NAMESPACE": namespace}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_progress_is_visible_while_running_in_the_api_the_events_and_qw_jobs_show(
    app: qw.App, url: str, namespace: str
) -> None:
    reported, release = threading.Event(), threading.Event()

    @app.task(name="pr.resize", queue="rt")
    def resize() -> str:
        qw.current_job().progress(0.4, "resizing")
        reported.set()
        assert release.wait(20)
        return "done"

    job_id = resize.enqueue().id
    with running(app):
        assert reported.wait(15), "the task never reported"
        job = app.client.get(job_id)
        assert job.status is JobStatus.RUNNING
        assert job.progress is not None
        assert (job.progress.fraction, job.progress.message) == (0.4, "resizing")
        # On the store's clock, taken when the report was written.
        assert abs((job.progress.at - app.client.now()).total_seconds()) < 5

        shown = cli(url, namespace, "jobs", "show", job_id)
        line = next(x for x in shown.splitlines() if x.startswith("progress "))
        assert line.split(None, 1)[1].startswith("40% resizing (at ")
        as_json = json.loads(cli(url, namespace, "jobs", "show", job_id, "--json"))
        assert as_json["progress"]["fraction"] == 0.4
        assert as_json["progress"]["message"] == "resizing"

        listed = cli(url, namespace, "jobs", "list")
        header, row = listed.splitlines()[:2]
        assert header.split()[-1] == "PROGRESS"
        assert row.endswith("40% resizing")
        assert "1 of 1 jobs reported progress (1 running)" in listed

        release.set()
        done = wait_until(lambda: terminal(app, job_id), what="the job to finish")
    assert done.status is JobStatus.SUCCEEDED
    # Kept after the end: a finished job shows how far it got.
    assert done.progress is not None
    assert done.progress.message == "resizing"
    progress_events = [e for e in events_by_job(app)[job_id] if e.type == PROGRESS_EVENT]
    assert [e.data for e in progress_events] == [{"fraction": 0.4, "message": "resizing"}]


def test_a_job_without_progress_shows_a_dash_and_no_column(
    app: qw.App, url: str, namespace: str
) -> None:
    job_id = app.client.enqueue_one("rt", {"x": 1}).id
    shown = cli(url, namespace, "jobs", "show", job_id)
    assert "progress " in shown
    assert next(x for x in shown.splitlines() if x.startswith("progress ")).split() == [
        "progress",
        "-",
    ]
    listed = cli(url, namespace, "jobs", "list")
    assert "PROGRESS" not in listed
    assert "reported progress" not in listed


def test_a_hostile_progress_message_is_escaped_in_the_cli(
    app: qw.App, url: str, namespace: str
) -> None:
    hostile = "\x1b[2J\x1b]0;owned\x07\u202efake\nline"

    @app.task(name="pr.hostile", queue="rt")
    def report() -> None:
        qw.current_job().progress(message=hostile)

    job_id = report.enqueue().id
    with running(app):
        wait_until(lambda: terminal(app, job_id), what="the job to finish")
    for output in (
        cli(url, namespace, "jobs", "show", job_id),
        cli(url, namespace, "jobs", "list"),
        cli(url, namespace, "jobs", "show", job_id, "--json"),
    ):
        assert "\x1b" not in output
        assert "\u202e" not in output
        assert "\x07" not in output
    shown = cli(url, namespace, "jobs", "show", job_id)
    assert "\\x1b[2J\\x1b]0;owned\\x07\\u202efake\\nline (at " in shown


def test_an_async_task_reports_progress_without_blocking_its_loop(app: qw.App) -> None:
    @app.task(name="pr.async", queue="rt")
    async def step() -> int:
        await qw.current_job().aprogress(1, "all done")
        return 1

    job_id = step.enqueue().id
    with running(app):
        done = wait_until(lambda: terminal(app, job_id), what="the job to finish")
    assert done.status is JobStatus.SUCCEEDED
    assert done.progress is not None
    assert (done.progress.fraction, done.progress.message) == (1.0, "all done")


def test_progress_after_the_attempt_lost_its_job_raises_lease_lost(app: qw.App) -> None:
    outcome: list[str] = []

    @app.task(name="pr.late", queue="rt", timeout=0.2, max_attempts=1)
    def late() -> None:
        job_id = qw.current_job().id
        # The worker fails the attempt at its timeout; this thread runs on.
        wait_until(lambda: terminal(app, job_id), what="the timeout to fail the job")
        try:
            qw.current_job().progress(0.9, "too late")
        except qw.LeaseLost:
            outcome.append("lost")

    job_id = late.enqueue().id
    with running(app):
        wait_until(lambda: outcome, what="the late report")
    job = app.client.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.progress is None, "a report from a lost attempt was stored"
    assert outcome == ["lost"]


def test_bad_progress_is_refused_in_the_task_before_any_write(app: qw.App) -> None:
    errors: list[str] = []

    @app.task(name="pr.bad", queue="rt")
    def bad() -> None:
        for fraction, message in ((1.5, None), (None, None), (0.5, "x" * 501)):
            try:
                qw.current_job().progress(fraction, message)
            except qw.InvalidInput as exc:
                errors.append(type(exc).__name__)

    job_id = bad.enqueue().id
    with running(app):
        done = wait_until(lambda: terminal(app, job_id), what="the job to finish")
    assert done.status is JobStatus.SUCCEEDED
    assert errors == ["InvalidInput"] * 3
    assert done.progress is None
    assert all(e.type != PROGRESS_EVENT for e in events_by_job(app).get(job_id, []))
