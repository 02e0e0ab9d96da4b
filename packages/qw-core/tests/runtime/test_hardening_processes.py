"""Issue 10, real worker processes: no job runs twice at once across a shutdown; bad settings.

On the backends several processes share (sqlite, postgres, redis).
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Workers, events_by_job, read_lines, wait_until
from test_processes import app, exit_code

import qw
from qw.model import JobStatus

__all__ = ["app"]  # a fixture, imported for pytest (``workers`` is conftest's)

S = JobStatus


def runs(notes: Path, exited: dict[str, float]) -> dict[str, list[tuple[float, float]]]:
    """Each job's runs as (start, end) wall-clock times; a run cut short by its
    process's exit ends when that process was seen gone (``exited`` by pid)."""
    ends = {tuple(f[:3]): float(f[3]) for f in map(str.split, read_lines(notes, "finished"))}
    by_job: dict[str, list[tuple[float, float]]] = {}
    for job_id, attempt, pid, start in map(str.split, read_lines(notes, "started")):
        end = ends.get((job_id, attempt, pid), exited.get(pid, float("inf")))
        by_job.setdefault(job_id, []).append((float(start), end))
    return by_job


def overlapping(by_job: dict[str, list[tuple[float, float]]]) -> list[str]:
    found = []
    for job_id, spans in by_job.items():
        spans = sorted(spans)
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
            found.append(job_id)
    return found


def _run_and_stop(
    app: qw.App, workers: Workers, notes: Path, n: int, first: float, *, second_signal: bool
) -> tuple[subprocess.Popen[bytes], float]:
    timed = app.tasks["rt.timed"]
    ids = [a.id for a in app.enqueue_many([timed.job(str(notes), first, 0.05) for _ in range(n)])]
    grace = "60" if second_signal else "0.2"
    one = workers.spawn("--concurrency", str(n), "--grace", grace)
    wait_until(lambda: len(read_lines(notes, "started")) == n, 30, f"{n} jobs to start")
    two = workers.spawn("--concurrency", str(n))
    wait_until(lambda: len(app.client.workers()) == 2, 30, "the second worker to register")
    one.send_signal(signal.SIGTERM)
    if second_signal:
        wait_until(lambda: "stopping" in workers.log_of(one), 10, "the worker to start stopping")
        one.send_signal(signal.SIGINT)
    signalled = time.monotonic()
    assert exit_code(one, 30) == 0, workers.log_of(one)
    took = time.monotonic() - signalled
    exited = {str(one.pid): time.time()}
    wait_until(lambda: all(app.client.get(i).status is S.SUCCEEDED for i in ids), 30, "re-runs")
    two.send_signal(signal.SIGTERM)
    assert exit_code(two) == 0, workers.log_of(two)

    by_job = runs(notes, exited)
    assert overlapping(by_job) == []
    assert sorted(by_job) == sorted(ids)
    # Each job ran once in each worker: cut short in the first, then a new attempt.
    assert all(len(spans) == 2 for spans in by_job.values())
    for job_id in ids:
        job = app.client.get(job_id)
        assert (job.status, job.attempts, job.result) == (S.SUCCEEDED, 2, str(two.pid))
    events = events_by_job(app)
    assert all([e.type for e in events[i]] == ["job.succeeded"] for i in ids)
    # Nothing the first worker ran finished: it exited while they still ran.
    assert {line.split()[2] for line in read_lines(notes, "finished")} == {str(two.pid)}
    return one, took


def test_sigterm_after_a_short_grace_never_runs_a_job_twice_at_once(
    app: qw.App, workers: Workers, notes: Path
) -> None:
    one, took = _run_and_stop(app, workers, notes, 10, 2.0, second_signal=False)
    print(f"SIGTERM --grace 0.2, 10 jobs: exit {took:.2f} s after the signal, 0 overlaps")
    assert "left 10 running sync jobs to their leases" in workers.log_of(one)


def test_a_second_signal_exits_at_once_at_concurrency_50_and_runs_nothing_twice(
    app: qw.App, workers: Workers, notes: Path
) -> None:
    one, took = _run_and_stop(app, workers, notes, 50, 60.0, second_signal=True)
    print(f"second signal, 50 jobs: exit {took:.2f} s after the signal, 0 overlaps")
    assert took < 1.0, workers.log_of(one)


@pytest.mark.parametrize("option", [["--lease", "1e12"], ["--grace", "1e300"]])
def test_a_worker_refuses_bad_settings_at_start_up(
    workers: Workers, app: qw.App, option: list[str]
) -> None:
    proc = workers.spawn(*option)
    assert exit_code(proc, 20) == 2, workers.log_of(proc)
    assert app.client.workers() == []
