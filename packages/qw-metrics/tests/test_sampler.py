"""The counts sampler: queue depth, oldest job, the registry; started and stopped by workers."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from conftest import Setup, sample, wait_until
from prometheus_client import CollectorRegistry

import qw
from qw.model import JobStatus
from qw_metrics import Metrics, Sampler, Settings, read_snapshot

SAMPLING = Settings(port=None, counts_s=0.1)


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "qw-metrics-sampler"]


def test_worker_samples_depth_age_and_registry(
    url: str, make_setup: Callable[..., Setup], registry: CollectorRegistry, namespace: str
) -> None:
    setup = make_setup(url, SAMPLING)
    ok = setup.app.tasks["mx.ok"]
    # Not due for an hour: they stay queued while the worker runs.
    for i in range(3):
        ok.options(delay=3600).enqueue(i)
    enqueued_at = time.monotonic()
    before = len(_sampler_threads())
    gauge = {"namespace": namespace, "queue": "mx"}
    with setup.worker() as worker:
        assert len(_sampler_threads()) == before + 1
        wait_until(
            lambda: sample(registry, "qw_queue_jobs", status="queued", **gauge) == 3,
            what="the sampled queue depth",
        )
        time.sleep(0.3)
        assert sample(registry, "qw_queue_jobs", status="succeeded", **gauge) == 0
        assert sample(registry, "qw_queue_jobs", status="running", **gauge) == 0
        age = sample(registry, "qw_queue_oldest_job_age_seconds", status="queued", **gauge)
        assert age is not None
        # Sampled within the last 0.1 s period or so, of jobs made before the timer started.
        assert age >= time.monotonic() - enqueued_at - 0.5
        # No running job: no age for that status.
        assert (
            sample(registry, "qw_queue_oldest_job_age_seconds", status="running", **gauge) is None
        )
        me = {"namespace": namespace, "worker": worker.id}
        assert sample(registry, "qw_workers", namespace=namespace) == 1
        assert sample(registry, "qw_worker_up", **me) == 1
        beat = sample(registry, "qw_worker_last_heartbeat_timestamp_seconds", **me)
        assert beat is not None
        assert abs(beat - time.time()) < 30
        stamp = sample(registry, "qw_metrics_sample_timestamp_seconds", namespace=namespace)
        assert stamp is not None
        assert abs(stamp - time.time()) < 30
    # The last worker stopped: the thread ends and its snapshot is withdrawn.
    wait_until(lambda: len(_sampler_threads()) == before, what="the sampler to stop")
    assert sample(registry, "qw_queue_jobs", status="queued", **gauge) is None
    assert sample(registry, "qw_workers", namespace=namespace) is None


def test_one_sampler_thread_for_several_workers(
    sqlite_url: str, make_setup: Callable[..., Setup], registry: CollectorRegistry
) -> None:
    setup = make_setup(sqlite_url, SAMPLING)
    before = len(_sampler_threads())
    with setup.worker(), setup.worker():
        assert len(_sampler_threads()) == before + 1
        wait_until(
            lambda: sample(registry, "qw_workers", namespace=setup.client.namespace) == 2,
            what="both workers in the registry",
        )
    wait_until(lambda: len(_sampler_threads()) == before, what="the sampler to stop")


def test_oldest_is_the_first_created(sqlite_url: str, namespace: str) -> None:
    with qw.open(sqlite_url, namespace=namespace) as client:
        first = client.enqueue_one("q", {"n": 1}, delay=3600)
        time.sleep(0.2)
        second = client.enqueue_one("q", {"n": 2}, delay=3600)
        snap = read_snapshot(client)
        ages = [snap.at - client.get(j.id).created_at.timestamp() for j in (first, second)]
    assert snap.counts["q"]["queued"] == 2
    # The first job's age, not the second's (0.2 s younger).
    assert ages[0] - ages[1] >= 0.2
    assert abs(snap.oldest[("q", "queued")] - ages[0]) < 1e-3
    assert ("q", "succeeded") not in snap.oldest


def test_a_failing_read_is_logged_and_retried(
    sqlite_url: str,
    namespace: str,
    metrics: Metrics,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = qw.open(sqlite_url, namespace=namespace)
    broken.close()  # every read on it fails
    caplog.set_level(logging.WARNING, logger="qw_metrics")
    with Sampler(0.05, metrics) as sampler:
        sampler.add("broken", broken)
        sampler.start()
        wait_until(
            lambda: (
                (sample(registry, "qw_metrics_sample_errors_total", namespace=namespace) or 0) >= 2
            ),
            what="two failed reads",
        )
        assert f"reading namespace {namespace!r} failed" in caplog.text
        # The thread lives on: a working client's namespace is read next period.
        with qw.open(sqlite_url, namespace=namespace) as good:
            good.enqueue_one("q", {"n": 1})
            sampler.remove("broken")
            sampler.add("good", good)
            wait_until(
                lambda: (
                    sample(
                        registry, "qw_queue_jobs", namespace=namespace, queue="q", status="queued"
                    )
                    == 1
                ),
                what="the good client's read",
            )
            sampler.remove("good")


def test_watch_in_a_producer(sqlite_url: str, namespace: str, metrics: Metrics) -> None:
    registry = metrics.registry
    assert isinstance(registry, CollectorRegistry)
    with qw.open(sqlite_url, namespace=namespace) as client:
        client.enqueue([qw.NewJob("q", {"n": i}) for i in range(2)])
        with qw_metrics_watch(client, metrics) as sampler:
            assert sampler.period == 0.1
            wait_until(
                lambda: (
                    sample(
                        registry, "qw_queue_jobs", namespace=namespace, queue="q", status="queued"
                    )
                    == 2
                ),
                what="the watched depth",
            )
    assert (
        sample(registry, "qw_queue_jobs", namespace=namespace, queue="q", status="queued") is None
    )


def qw_metrics_watch(client: qw.Client, metrics: Metrics) -> Sampler:
    import qw_metrics

    return qw_metrics.watch(client, every=0.1, metrics=metrics)


def test_watch_refuses_a_bad_period(sqlite_url: str, namespace: str) -> None:
    import qw_metrics
    from qw.errors import ConfigurationError

    with qw.open(sqlite_url, namespace=namespace) as client:
        for bad in (0, -1.0, float("inf"), "15"):
            with pytest.raises(ConfigurationError, match="sampling period"):
                qw_metrics.watch(client, every=bad)  # type: ignore[arg-type]


def test_running_status_counted(
    sqlite_url: str, make_setup: Callable[..., Setup], registry: CollectorRegistry, namespace: str
) -> None:
    setup = make_setup(sqlite_url, SAMPLING)
    slow = setup.app.tasks["mx.sleep"].enqueue(1.0).id
    gauge = {"namespace": namespace, "queue": "mx", "status": "running"}
    with setup.worker():
        wait_until(lambda: setup.client.get(slow).status is JobStatus.RUNNING, what="running")
        wait_until(lambda: sample(registry, "qw_queue_jobs", **gauge) == 1, what="sampled")
        age = sample(registry, "qw_queue_oldest_job_age_seconds", **gauge)
        assert age is not None
        assert 0 <= age < 30
