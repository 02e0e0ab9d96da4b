"""Real worker processes (``qw worker``): SIGKILL loses nothing, SIGTERM drains.

These run on the backends that several processes can share (sqlite, and
postgres/redis when installed and reachable); memory is one process only.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import Workers, events_by_job, read_lines, wait_until

import qw
from qw.model import JobStatus

S = JobStatus


@pytest.fixture
def app(process_app: qw.App) -> qw.App:
    return process_app


def exit_code(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker {proc.pid} did not exit within {timeout} s")


def test_sigkill_loses_nothing_and_the_job_finishes_once_elsewhere(
    app: qw.App, workers: Workers, notes: Path
) -> None:
    job_id = app.tasks["rt.slow_first"].enqueue(str(notes)).id
    first = workers.spawn("--concurrency", "2")
    wait_until(lambda: read_lines(notes, "started"), 30, "the first attempt to start")
    os.kill(first.pid, signal.SIGKILL)
    assert exit_code(first) == -signal.SIGKILL
    assert app.client.get(job_id).status is S.RUNNING  # until its lease expires

    second = workers.spawn("--concurrency", "2")
    job = wait_until(
        lambda: (j := app.client.get(job_id)).status.is_terminal and j, 30, "the job to finish"
    )
    second.send_signal(signal.SIGTERM)
    assert exit_code(second) == 0, workers.log_of(second)

    assert (job.status, job.attempts, job.result) == (S.SUCCEEDED, 2, "ok")
    started = [line.split() for line in read_lines(notes, "started")]
    finished = [line.split() for line in read_lines(notes, "finished")]
    assert started == [[job_id, "1", str(first.pid)], [job_id, "2", str(second.pid)]]
    assert finished == [[job_id, "2", str(second.pid)]]
    assert [e.type for e in events_by_job(app)[job_id]] == ["job.succeeded"]


def test_sigterm_drains_and_no_job_runs_twice(app: qw.App, workers: Workers, notes: Path) -> None:
    record = app.tasks["rt.record"]
    ids = [a.id for a in app.enqueue_many([record.job(str(notes), 0.6) for _ in range(6)])]
    first = workers.spawn("--concurrency", "2", "--grace", "20")
    wait_until(lambda: len(read_lines(notes, "started")) >= 2, 30, "two jobs to start")
    first.send_signal(signal.SIGTERM)
    assert exit_code(first) == 0, workers.log_of(first)

    # Everything that started finished; nothing else was touched.
    ran = [line.split()[0] for line in read_lines(notes, "finished")]
    assert sorted(ran) == sorted(line.split()[0] for line in read_lines(notes, "started"))
    assert len(ran) >= 2
    for job_id in ids:
        job = app.client.get(job_id)
        if job_id in ran:
            assert (job.status, job.attempts) == (S.SUCCEEDED, 1)
        else:
            assert (job.status, job.attempts) == (S.QUEUED, 0)
    assert app.client.workers() == []

    second = workers.spawn("--concurrency", "3")
    wait_until(lambda: all(app.client.get(i).status is S.SUCCEEDED for i in ids), 30, "the rest")
    second.send_signal(signal.SIGTERM)
    assert exit_code(second) == 0, workers.log_of(second)
    started = [line.split()[0] for line in read_lines(notes, "started")]
    assert sorted(started) == sorted(ids), "every job ran exactly once"
    events = events_by_job(app)
    assert all([e.type for e in events[i]] == ["job.succeeded"] for i in ids)


def test_a_second_signal_stops_at_once_and_leaves_the_job_to_its_lease(
    app: qw.App, workers: Workers, notes: Path
) -> None:
    job_id = app.tasks["rt.record"].enqueue(str(notes), 60.0).id
    proc = workers.spawn("--concurrency", "1", "--grace", "60")
    wait_until(lambda: read_lines(notes, "started"), 30, "the job to start")
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in workers.log_of(proc), 10, "the worker to start stopping")
    proc.send_signal(signal.SIGINT)
    assert exit_code(proc, 15) == 0, workers.log_of(proc)
    # Its sync task was still running: not released, so nobody ran it alongside.
    assert app.client.get(job_id).status is S.RUNNING
    wait_until(lambda: app.client.reclaim_expired(), 5, "the lease to lapse")
    job = app.client.get(job_id)
    assert (job.status, job.attempts) == (S.QUEUED, 1)
    assert read_lines(notes, "finished") == []
