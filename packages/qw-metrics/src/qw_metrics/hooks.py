"""The hook implementations: :class:`MetricsPlugin`.

The entry point (:mod:`qw_metrics.plugin`) registers one on the process's
default metrics; tests and embedders register their own on a registry of
their own (``pm.register(MetricsPlugin(Metrics(CollectorRegistry())))``).

Per job, the claim and the finish each cost one table lookup and a few
integer updates (see :mod:`qw_metrics.metrics`); everything else (the HTTP
server, the counts sampler) is per process and starts with its first worker.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client.registry import Collector

from qw.client import Client
from qw.model import Enqueued, Job, JobStatus, NewJob, WorkerInfo
from qw.plugin import hookimpl
from qw_metrics.metrics import Metrics, default_metrics
from qw_metrics.sampler import Sampler
from qw_metrics.server import MetricsServer, serve
from qw_metrics.settings import Settings

__all__ = ["MetricsPlugin"]

log = logging.getLogger("qw_metrics")

_SUCCEEDED = JobStatus.SUCCEEDED
_QUEUED = JobStatus.QUEUED
_FAILED = JobStatus.FAILED
_CANCELLED = JobStatus.CANCELLED


class MetricsPlugin:
    """Counts qw's jobs into ``metrics``; serves and samples for this process's workers.

    ``settings`` None reads the environment when the first worker starts
    (:meth:`Settings.from_env`). The HTTP server, once started, serves until
    :meth:`close` or the process ends; the sampler runs while a worker does.
    """

    def __init__(self, metrics: Metrics | None = None, *, settings: Settings | None = None) -> None:
        self.metrics = metrics if metrics is not None else default_metrics()
        self._settings = settings
        self._lock = threading.Lock()
        self._sampler: Sampler | None = None
        self._workers: set[str] = set()
        self._serving_tried = False
        #: The HTTP server the first worker started, if any.
        self.server: MetricsServer | None = None
        # Bound once: these are read for every job.
        self._series = self.metrics.series
        self._run_bounds = self.metrics.run_bounds
        self._wait_bounds = self.metrics.wait_bounds

    # -- producers ---------------------------------------------------------

    @hookimpl
    def qw_jobs_enqueued(self, jobs: Sequence[NewJob], enqueued: Sequence[Enqueued]) -> None:
        series = self._series
        for job, answer in zip(jobs, enqueued, strict=False):
            s = series(job.queue, job.payload)
            if answer.created:
                s.enqueued += 1
            else:
                s.deduplicated += 1

    # -- workers: per process ------------------------------------------------

    @hookimpl
    def qw_worker_started(self, worker: WorkerInfo, client: Client) -> None:
        settings = self._settings if self._settings is not None else Settings.from_env()
        with self._lock:
            self._workers.add(worker.id)
            if settings.port is not None and not self._serving_tried:
                self._serving_tried = True
                self.server = self._serve(settings)
            if settings.counts_s is not None:
                if self._sampler is None:
                    self._sampler = Sampler(settings.counts_s, self.metrics).start()
                self._sampler.add(worker.id, client)

    @hookimpl
    def qw_worker_stopped(self, worker: WorkerInfo) -> None:
        with self._lock:
            self._workers.discard(worker.id)
            sampler = self._sampler
            if sampler is not None and sampler.remove(worker.id) == 0 and not self._workers:
                self._sampler = None
                sampler.stop()

    def _serve(self, settings: Settings) -> MetricsServer | None:
        assert settings.port is not None
        try:
            server = serve(settings.port, settings.addr, registry=self._registry())
        except OSError as exc:
            log.warning(
                "qw_metrics: cannot serve metrics on %s:%d (%s); set QW_METRICS_PORT to a free "
                "port, or to 'off'",
                settings.addr,
                settings.port,
                exc,
            )
            return None
        host, port = server.address
        log.info("qw_metrics: serving metrics on http://%s:%d/metrics", host, port)
        return server

    def _registry(self) -> Collector:
        # What the metrics were registered on (for the default metrics,
        # prometheus_client's REGISTRY, with the process's other metrics).
        return self.metrics.registry if self.metrics.registry is not None else self.metrics

    def close(self) -> None:
        """Stop the HTTP server and the sampler (tests; a worker never needs to)."""
        with self._lock:
            if self.server is not None:
                self.server.close()
                self.server = None
            self._serving_tried = False
            if self._sampler is not None:
                self._sampler.stop()
                self._sampler = None

    # -- workers: per job (the hot path) -------------------------------------

    @hookimpl
    def qw_job_claimed(self, job: Job) -> None:
        s = self._series(job.queue, job.payload)
        s.started += 1
        started = job.started_at
        if started is not None:
            run_at, created = job.run_at, job.created_at
            wait = (started - (run_at if run_at > created else created)).total_seconds()
            if wait < 0.0:
                wait = 0.0
            s.wait[bisect_left(self._wait_bounds, wait)] += 1
            s.wait_sum += wait

    @hookimpl
    def qw_job_finished(self, job: Job, status: JobStatus, duration_s: float) -> None:
        s = self._series(job.queue, job.payload)
        if status is _SUCCEEDED:
            s.succeeded += 1
        elif status is _QUEUED:
            s.retried += 1
        elif status is _FAILED:
            s.failed += 1
        elif status is _CANCELLED:
            s.cancelled += 1
        s.run[bisect_left(self._run_bounds, duration_s)] += 1
        s.run_sum += duration_s

    @hookimpl
    def qw_job_released(self, job: Job) -> None:
        self._series(job.queue, job.payload).released += 1

    @hookimpl
    def qw_lease_lost(self, job: Job) -> None:
        self._series(job.queue, job.payload).lost += 1

    @hookimpl
    def qw_jobs_reclaimed(self, count: int) -> None:
        self.metrics.add_reclaimed(count)
