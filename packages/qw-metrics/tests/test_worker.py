"""A real worker on each store counts what happened to its jobs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import Setup, sample, wait_until
from prometheus_client import CollectorRegistry

import qw
from qw.model import JobStatus


def _terminal(client: qw.Client, job_id: str) -> bool:
    return client.get(job_id).status.is_terminal


def test_outcomes_per_queue_and_task(
    setup: Setup, registry: CollectorRegistry, tmp_path: Path
) -> None:
    tasks = setup.app.tasks
    ids = [tasks["mx.ok"].enqueue(i).id for i in range(4)]
    first = tasks["mx.ok"].options(dedupe_key="once").enqueue(9)
    again = tasks["mx.ok"].options(dedupe_key="once").enqueue(9)
    assert first.created
    assert not again.created
    ids += [
        first.id,
        tasks["mx.boom"].enqueue().id,
        tasks["mx.aok"].enqueue(7).id,
        tasks["mx.flaky"].enqueue(str(tmp_path / "marker")).id,
    ]
    with setup.worker():
        slow = tasks["mx.cooperative"].enqueue().id
        wait_until(lambda: setup.client.get(slow).status is JobStatus.RUNNING, what="running")
        setup.client.cancel(slow)
        wait_until(lambda: all(_terminal(setup.client, j) for j in [*ids, slow]), what="every job")
    assert setup.client.get(slow).status is JobStatus.CANCELLED

    def value(name: str, task: str, **labels: str) -> float | None:
        return sample(registry, name, queue="mx", task=task, **labels)

    assert value("qw_jobs_enqueued_total", "mx.ok") == 5
    assert value("qw_jobs_deduplicated_total", "mx.ok") == 1
    assert value("qw_jobs_enqueued_total", "mx.boom") == 1
    assert value("qw_jobs_started_total", "mx.ok") == 5
    assert value("qw_jobs_started_total", "mx.flaky") == 2
    finished = "qw_jobs_finished_total"
    assert value(finished, "mx.ok", outcome="succeeded") == 5
    assert value(finished, "mx.ok", outcome="failed") == 0
    assert value(finished, "mx.boom", outcome="failed") == 1
    assert value(finished, "mx.flaky", outcome="retried") == 1
    assert value(finished, "mx.flaky", outcome="succeeded") == 1
    assert value(finished, "mx.cooperative", outcome="cancelled") == 1
    # An async task goes through the same hooks.
    assert value("qw_jobs_started_total", "mx.aok") == 1
    assert value(finished, "mx.aok", outcome="succeeded") == 1
    assert value("qw_job_wait_seconds_count", "mx.aok") == 1
    # One run and one wait observation per attempt.
    assert value("qw_job_run_seconds_count", "mx.ok") == 5
    assert value("qw_job_run_seconds_count", "mx.flaky") == 2
    assert value("qw_job_wait_seconds_count", "mx.ok") == 5
    assert value("qw_job_run_seconds_bucket", "mx.ok", le="+Inf") == 5
    # The cancelled task ran until it noticed, at least one 20 ms sleep.
    run_sum = value("qw_job_run_seconds_sum", "mx.cooperative")
    assert run_sum is not None
    assert run_sum >= 0.02
    assert value("qw_leases_lost_total", "mx.ok") == 0


def test_a_lost_lease_and_the_reclaim(setup: Setup, registry: CollectorRegistry) -> None:
    answer = setup.app.tasks["mx.sleep"].enqueue(0.8)
    with setup.worker(lease_s=0.3) as worker:
        # As if the worker froze: its leases expire and its own sweep reclaims them.
        worker.renew_leases = lambda client: None  # type: ignore[method-assign]
        wait_until(lambda: _terminal(setup.client, answer.id), 15, "the job to fail")
        wait_until(lambda: worker.stats.lost == 2, 10, "the two late results to be dropped")
    assert setup.client.get(answer.id).status is JobStatus.FAILED
    labels = {"queue": "mx", "task": "mx.sleep"}
    assert sample(registry, "qw_leases_lost_total", **labels) == 2
    assert sample(registry, "qw_jobs_started_total", **labels) == 2
    # A lost attempt has no outcome of this worker's.
    for outcome in ("succeeded", "failed", "retried"):
        assert sample(registry, "qw_jobs_finished_total", outcome=outcome, **labels) == 0
    reclaimed = sample(registry, "qw_jobs_reclaimed_total")
    assert reclaimed is not None
    assert reclaimed >= 2


def test_prefetched_jobs_released_at_shutdown(setup: Setup, registry: CollectorRegistry) -> None:
    tasks = setup.app.tasks
    slow = tasks["mx.sleep"].enqueue(0.5).id
    for i in range(4):
        tasks["mx.ok"].enqueue(i)
    with setup.worker(concurrency=1, prefetch=4):
        wait_until(lambda: setup.client.get(slow).status is JobStatus.RUNNING, what="running")
    labels = {"queue": "mx", "task": "mx.ok"}
    # Claimed with the slow job, never begun: given back, attempt not counted.
    assert sample(registry, "qw_jobs_started_total", **labels) == 4
    assert sample(registry, "qw_jobs_finished_total", outcome="released", **labels) == 4
    assert sample(registry, "qw_jobs_finished_total", outcome="succeeded", **labels) == 0
    assert sample(registry, "qw_job_run_seconds_count", **labels) == 0
    assert setup.client.counts()["mx"][JobStatus.QUEUED] == 4


def test_wait_time_runs_from_due(
    sqlite_url: str, make_setup: Callable[..., Setup], registry: CollectorRegistry
) -> None:
    setup = make_setup(sqlite_url)
    waited = setup.app.tasks["mx.ok"].enqueue(1).id
    # Due 0.4 s from now: its wait starts then, not at the enqueue.
    delayed = setup.app.tasks["mx.sleep"].options(delay=0.4).enqueue(0).id
    wait_until(lambda: setup.client.now() >= setup.client.get(delayed).run_at, what="due")
    with setup.worker():
        wait_until(lambda: _terminal(setup.client, waited), what="the first job")
        wait_until(lambda: _terminal(setup.client, delayed), what="the delayed job")

    def wait_sum(task: str) -> float:
        assert sample(registry, "qw_job_wait_seconds_count", queue="mx", task=task) == 1
        value = sample(registry, "qw_job_wait_seconds_sum", queue="mx", task=task)
        assert value is not None
        return value

    # Both waited for the worker to start; the first also for the 0.4 s.
    first, second = wait_sum("mx.ok"), wait_sum("mx.sleep")
    assert first >= 0.4
    assert 0.3 <= first - second <= 0.5
