"""Issue 10, in-process: poison jobs, malformed payloads, bad settings, releases, the registry.

Every test runs on every backend (memory, sqlite, postgres, redis).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, read_lines, running, wait_until

import qw
from qw.errors import InvalidInput
from qw.model import Job, JobStatus, WorkerInfo
from qw.plugin import hookimpl
from qw.worker import WorkerConfig

S = JobStatus


def settled(app: qw.App, total: int, timeout: float) -> None:
    """Wait until ``total`` jobs of queue ``rt`` are terminal (one cheap call per poll)."""

    def done() -> bool:
        counts = app.client.counts().get("rt", {})
        return sum(counts.get(s, 0) for s in (S.SUCCEEDED, S.FAILED, S.CANCELLED)) >= total

    wait_until(done, timeout, f"{total} jobs to finish")


def test_a_poison_job_never_costs_another(app: qw.App, notes: Path) -> None:
    t = app.tasks
    good = [t["rt.count"].job(str(notes), i) for i in range(400)]
    poison = [t["rt.surrogate"].job(str(notes)) for _ in range(2)]
    poison += [t["rt.unprintable"].job(str(notes)) for _ in range(2)]
    jobs = good[:100] + poison[:2] + good[100:300] + poison[2:] + good[300:]
    answers = app.enqueue_many(jobs)
    poison_ids = {a.id for a, j in zip(answers, jobs, strict=True) if j in poison}
    good_ids = [a.id for a in answers if a.id not in poison_ids]
    started = time.monotonic()
    with running(app, concurrency=8) as worker:
        settled(app, len(jobs), 30)
    elapsed = time.monotonic() - started
    runs = Counter(line.split()[0] for line in read_lines(notes, "runs"))
    got = {i: app.client.get(i) for i in [*good_ids, *poison_ids]}
    rerun = [i for i in good_ids if runs[i] != 1]
    bad = [i for i in good_ids if got[i].status is not S.SUCCEEDED]
    print(f"poison run: {len(good_ids)} good jobs, {len(rerun)} re-run, {len(bad)} not succeeded, "
          f"{elapsed:.2f} s, stats {worker.stats}")  # fmt: skip
    assert (rerun, bad) == ([], [])
    assert [got[i].result for i in good_ids] == list(range(400))
    kinds = sorted(
        (got[i].status, got[i].attempts, runs[i], got[i].error["type"])  # type: ignore[index,call-overload]
        for i in poison_ids
    )
    assert kinds == [
        (S.FAILED, 1, 1, "qw.InvalidResult"),
        (S.FAILED, 1, 1, "qw.InvalidResult"),
        (S.FAILED, 1, 1, "runtime_app.Unprintable"),
        (S.FAILED, 1, 1, "runtime_app.Unprintable"),
    ]
    message = next(
        got[i].error["message"]  # type: ignore[index,call-overload]
        for i in poison_ids
        if got[i].error["type"] == "runtime_app.Unprintable"  # type: ignore[index,call-overload]
    )
    assert message.startswith("<unprintable Unprintable: __str__ raised RuntimeError(")
    assert worker.stats.lost == 0


def test_poison_coroutines_and_outcome_bugs_settle_their_jobs(app: qw.App) -> None:
    t = app.tasks
    ids = [
        t["rt.asurrogate"].enqueue().id,
        t["rt.aunprintable"].enqueue().id,
        t["rt.hostile"].enqueue().id,
        t["rt.add"].enqueue(1, 2).id,
    ]
    with running(app, concurrency=2):
        settled(app, len(ids), 15)
    jobs = [app.client.get(i) for i in ids]
    assert [(j.status, j.attempts) for j in jobs] == [(S.FAILED, 1)] * 3 + [(S.SUCCEEDED, 1)]
    types = [j.error["type"] for j in jobs[:3]]  # type: ignore[index,call-overload]
    assert types == ["qw.InvalidResult", "runtime_app.Unprintable", "qw.WorkerError"]
    assert "hostile result" in jobs[2].error["message"]  # type: ignore[index,call-overload]


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ({"task": "rt.greet", "args": "bob"}, "'args' must be a JSON array, not a string"),
        ({"task": "rt.greet", "kwargs": ["bob"]}, "'kwargs' must be a JSON object, not an array"),
        ({"name": "rt.greet"}, "needs 'task'"),
    ],
)
def test_a_malformed_task_payload_fails_clearly_and_is_not_retried(
    app: qw.App, payload: dict[str, Any], complaint: str
) -> None:
    job_id = app.client.enqueue_one("rt", payload, max_attempts=3).id
    with running(app, concurrency=1):
        settled(app, 1, 15)
    job = app.client.get(job_id)
    assert (job.status, job.attempts) == (S.FAILED, 1)
    assert job.error["type"] == "qw.InvalidPayload"  # type: ignore[index,call-overload]
    assert complaint in job.error["message"]  # type: ignore[index,call-overload]


@pytest.mark.parametrize(
    "options",
    [
        {"lease_s": 1e12},
        {"lease_s": 86_401},
        {"grace_s": 1e300},
        {"grace_s": float("inf")},
        {"poll_interval": float("nan")},
        {"heartbeat_s": 10**400},
        {"reclaim_s": 400_000_000},
        {"prune_after_s": 0},
        {"prune_after_s": 1.0, "heartbeat_s": 0.5},
        {"finish_batch": "5"},
        {"prefetch": "3"},
        {"concurrency": "2"},
        {"concurrency": 2.0},
        {"tune_gc": "no"},
    ],
)
def test_bad_worker_settings_are_refused_cleanly(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        WorkerConfig(**options)


def test_the_largest_accepted_settings_still_make_a_config() -> None:
    config = WorkerConfig(lease_s=86_400, grace_s=315_576_000, poll_interval=1e-3, prefetch=0)
    assert (config.lease_s, config.renew_s) == (86_400.0, 28_800.0)


class Releases:
    def __init__(self) -> None:
        self.released: list[tuple[str, str]] = []
        self.finished: list[tuple[str, JobStatus]] = []

    @hookimpl
    def qw_job_released(self, job: Job, reason: str) -> None:
        self.released.append((job.id, reason))

    @hookimpl
    def qw_job_finished(self, job: Job, status: JobStatus) -> None:
        self.finished.append((job.id, status))


def test_a_release_is_logged_and_hooked_as_a_release_not_a_retry(
    app: qw.App, notes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qw.events")
    record = app.tasks["rt.record"]
    ids = [a.id for a in app.enqueue_many([record.job(str(notes), 0.5) for _ in range(3)])]
    hooks = Releases()
    with running(app, hooks, concurrency=1, prefetch=2, grace_s=10) as worker:
        assert worker.plugins.pluggy.has_plugin("logging")  # the built-in plugin, as installed
        wait_until(lambda: read_lines(notes, "started"), what="the first job to start")
        worker.stop(timeout=30)
    first = read_lines(notes, "finished")[0].split()[0]
    waited = sorted(set(ids) - {first})
    assert sorted(hooks.released) == [(i, "shutdown") for i in waited]
    assert hooks.finished == [(first, S.SUCCEEDED)]
    lines = [r.getMessage() for r in caplog.records if r.name == "qw.events"]
    assert not [line for line in lines if "will retry" in line]
    released = sorted(line.split()[1] for line in lines if "released (shutdown)" in line)
    assert released == waited


def test_force_stop_returns_promptly_whatever_the_concurrency(app: qw.App, notes: Path) -> None:
    record = app.tasks["rt.record"]
    app.enqueue_many([record.job(str(notes), 3.0) for _ in range(20)])
    with running(app, concurrency=20, grace_s=30) as worker:
        wait_until(lambda: len(read_lines(notes, "started")) == 20, what="20 jobs to start")
        started = time.monotonic()
        worker.stop(force=True, timeout=30)
        took = time.monotonic() - started
    print(f"force stop at concurrency 20 took {took:.3f} s")
    assert took < 1.0
    assert worker.stats.abandoned == 20
    assert read_lines(notes, "finished") == []  # stopped while every task still ran


def _fake(worker_id: str) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id, queues=("rt",), host="elsewhere", pid=1, concurrency=1,
        started_at=datetime.now(UTC),
    )  # fmt: skip


def test_workers_prune_stale_registry_entries_and_keep_live_ones(app: qw.App) -> None:
    client = app.client
    for worker_id in ("stale-1", "stale-2"):
        client.heartbeat(_fake(worker_id))
    prune_after = 3 * FAST["heartbeat_s"]
    time.sleep(prune_after + 0.2)
    client.heartbeat(_fake("live-1"))
    with running(app, prune_after_s=prune_after) as worker:

        def pruned() -> bool:
            client.heartbeat(_fake("live-1"))  # a live worker heartbeats on
            return {w.id for w in client.workers()} == {"live-1", worker.id}

        wait_until(pruned, 10, "the stale entries to be pruned")
        time.sleep(2 * FAST["heartbeat_s"])
        client.heartbeat(_fake("live-1"))
        assert {w.id for w in client.workers()} == {"live-1", worker.id}
    assert [w.id for w in client.workers()] == ["live-1"]
