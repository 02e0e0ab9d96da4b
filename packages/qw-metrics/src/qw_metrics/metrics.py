"""The numbers qw_metrics keeps, and the Prometheus collector that exports them.

The per-job counters and histograms sit on the hot path of a worker (a
no-op drain runs 10-30k jobs/s), so they are not prometheus_client's own
``Counter`` and ``Histogram``, which take a lock per increment: each thread
that reports (a worker's claim loop, its finisher, a producer's threads)
gets a table of its own, and only that thread writes it, so an increment
is a plain attribute update. A scrape sums the tables under one lock, which
writers take only to add a series. Tables of threads that ended are folded
into one, so a process that starts many threads keeps a bounded amount.

Sampled state (queue depth, oldest job, the worker registry) arrives as
:class:`Snapshot` objects from :mod:`qw_metrics.sampler` and is exported as
the last snapshot per namespace says.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, cast

from prometheus_client import utils as _utils
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from qw.errors import ConfigurationError
from qw.model import JSONValue

__all__ = [
    "MAX_SERIES",
    "NO_TASK",
    "OTHER",
    "RUN_BUCKETS",
    "WAIT_BUCKETS",
    "Metrics",
    "Series",
    "Snapshot",
    "default_metrics",
]

#: Histogram bucket bounds (seconds) for run time: from a no-op to an hour.
RUN_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
#: Histogram bucket bounds (seconds) for wait time (due to started).
WAIT_BUCKETS: Final = RUN_BUCKETS
#: The ``task`` label of a job whose payload names no task (``qw.Client.enqueue`` of raw JSON).
NO_TASK: Final = "-"
#: The ``queue`` and ``task`` labels of every pair past :data:`MAX_SERIES`.
OTHER: Final = "~other"
#: The most distinct (queue, task) label pairs exported; later pairs count under ``~other``.
#: Task names come from payloads, which any producer writes: this bounds what one can add.
MAX_SERIES: Final = 1000


class Series:
    """The per-job numbers of one (queue, task) pair, as one thread counted them.

    Written by its own thread only (see the module's docstring); ``run`` and
    ``wait`` hold one count per histogram bucket, the last one for ``+Inf``.
    """

    __slots__ = (
        "cancelled",
        "deduplicated",
        "enqueued",
        "failed",
        "lost",
        "queue",
        "released",
        "retried",
        "run",
        "run_sum",
        "started",
        "succeeded",
        "task",
        "wait",
        "wait_sum",
    )

    def __init__(self, queue: str, task: str, run_buckets: int, wait_buckets: int) -> None:
        self.queue = queue
        self.task = task
        self.enqueued = 0
        self.deduplicated = 0
        self.started = 0
        self.succeeded = 0
        self.failed = 0
        self.cancelled = 0
        self.retried = 0
        self.released = 0
        self.lost = 0
        self.run = [0] * (run_buckets + 1)
        self.run_sum = 0.0
        self.wait = [0] * (wait_buckets + 1)
        self.wait_sum = 0.0

    def add(self, other: Series) -> None:
        """Add ``other``'s counts (a read of another thread's: each value is some recent one)."""
        self.enqueued += other.enqueued
        self.deduplicated += other.deduplicated
        self.started += other.started
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.retried += other.retried
        self.released += other.released
        self.lost += other.lost
        self.run = [a + b for a, b in zip(self.run, other.run, strict=True)]
        self.run_sum += other.run_sum
        self.wait = [a + b for a, b in zip(self.wait, other.wait, strict=True)]
        self.wait_sum += other.wait_sum


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One read of a namespace's state (:func:`qw_metrics.sampler.read_snapshot`).

    ``at`` is the store's clock at the read (Unix seconds); ``oldest`` maps
    (queue, status) to the age in seconds of the oldest job there; ``workers``
    holds (worker id, last heartbeat as Unix seconds or None, up).
    """

    namespace: str
    at: float
    counts: dict[str, dict[str, int]]
    oldest: dict[tuple[str, str], float] = field(default_factory=dict)
    workers: tuple[tuple[str, float | None, bool], ...] = ()


class _Table:
    """One thread's series: queue → task name as in the payload (None: none) → Series."""

    __slots__ = ("series", "thread")

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.series: dict[str, dict[str | None, Series]] = {}


class Metrics(Collector):
    """qw's metrics, registered as one collector on ``registry``.

    ``registry=None`` registers nothing (call :meth:`collect` yourself). The
    plugin counts into :func:`default_metrics`, on prometheus_client's
    default ``REGISTRY``; tests give a ``CollectorRegistry`` of their own.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        run_buckets: Sequence[float] = RUN_BUCKETS,
        wait_buckets: Sequence[float] = WAIT_BUCKETS,
        max_series: int = MAX_SERIES,
    ) -> None:
        self.run_bounds = _bounds("run_buckets", run_buckets)
        self.wait_bounds = _bounds("wait_buckets", wait_buckets)
        if not (isinstance(max_series, int) and max_series >= 1):
            raise ConfigurationError(f"max_series must be an int >= 1, not {max_series!r}")
        self._max_series = max_series
        self._lock = threading.Lock()
        self._local = threading.local()
        self._tables: list[_Table] = []
        # Series of threads that ended, by labels.
        self._retired: dict[tuple[str, str], Series] = {}
        # Every (queue, task) label pair handed out, to bound them.
        self._labels: set[tuple[str, str]] = set()
        self._reclaimed = 0
        self._snapshots: dict[object, Snapshot] = {}
        self._sample_errors: dict[str, int] = {}
        #: What the collector is registered on (None: nothing).
        self.registry = registry
        if registry is not None:
            registry.register(self)

    # -- the hot path ------------------------------------------------------

    def series(self, queue: str, payload: JSONValue) -> Series:
        """The calling thread's series of ``queue`` and the task ``payload`` names."""
        try:
            table: _Table = self._local.table
        except AttributeError:
            table = self._new_table()
        # task_name_of(payload), inline: a call costs a tenth of this method.
        name = payload.get("task") if payload.__class__ is dict else None
        if name.__class__ is not str:
            name = None
        tasks = table.series.get(queue)
        if tasks is not None:
            found = tasks.get(name)
            if found is not None:
                return found
        return self._add_series(table, queue, name)

    # -- the slow path -----------------------------------------------------

    def _new_table(self) -> _Table:
        table = _Table(threading.current_thread())
        with self._lock:
            self._fold_ended()
            self._tables.append(table)
        self._local.table = table
        return table

    def _add_series(self, table: _Table, queue: str, name: str | None) -> Series:
        labels = (queue, NO_TASK if name is None else name)
        with self._lock:
            if labels not in self._labels and len(self._labels) >= self._max_series:
                # Not cached under the payload's name: a flood of made-up
                # task names must not grow this thread's table either.
                labels = (OTHER, OTHER)
                tasks = table.series.setdefault(OTHER, {})
                found = tasks.get(OTHER)
                if found is None:
                    found = tasks[OTHER] = self._make(labels)
                    self._labels.add(labels)
                return found
            self._labels.add(labels)
            series = self._make(labels)
            table.series.setdefault(queue, {})[name] = series
            return series

    def _make(self, labels: tuple[str, str]) -> Series:
        return Series(labels[0], labels[1], len(self.run_bounds), len(self.wait_bounds))

    def _fold_ended(self) -> None:
        """Fold the tables of threads that ended into ``_retired`` (with ``_lock`` held)."""
        alive: list[_Table] = []
        for table in self._tables:
            if table.thread.is_alive():
                alive.append(table)
                continue
            for tasks in table.series.values():
                for series in tasks.values():
                    key = (series.queue, series.task)
                    total = self._retired.get(key)
                    if total is None:
                        total = self._retired[key] = self._make(key)
                    total.add(series)
        self._tables = alive

    def add_reclaimed(self, count: int) -> None:
        with self._lock:
            self._reclaimed += count

    # -- sampled state -----------------------------------------------------

    def put_snapshot(self, source: object, snapshot: Snapshot) -> None:
        """Export ``snapshot`` as ``source``'s latest read of its namespace."""
        with self._lock:
            self._snapshots[source] = snapshot

    def drop_snapshot(self, source: object) -> None:
        """Stop exporting ``source``'s snapshot (its sampler stopped)."""
        with self._lock:
            self._snapshots.pop(source, None)

    def sample_failed(self, namespace: str) -> None:
        with self._lock:
            self._sample_errors[namespace] = self._sample_errors.get(namespace, 0) + 1

    # -- reading -----------------------------------------------------------

    def totals(self) -> dict[tuple[str, str], Series]:
        """Every series summed over the threads, by (queue, task) labels."""
        with self._lock:
            self._fold_ended()
            out: dict[tuple[str, str], Series] = {}
            groups: list[Iterable[Series]] = [self._retired.values()]
            for table in self._tables:
                groups.extend(tasks.values() for tasks in table.series.values())
            for group in groups:
                for series in group:
                    key = (series.queue, series.task)
                    total = out.get(key)
                    if total is None:
                        total = out[key] = self._make(key)
                    total.add(series)
            return out

    def collect(self) -> Iterator[Metric]:
        """The metric families (prometheus_client's collector protocol)."""
        totals = sorted(self.totals().items())
        with self._lock:
            reclaimed = self._reclaimed
            errors = dict(self._sample_errors)
            # The latest snapshot per namespace, whichever sampler took it.
            latest: dict[str, Snapshot] = {}
            for snap in self._snapshots.values():
                if snap.namespace not in latest or snap.at > latest[snap.namespace].at:
                    latest[snap.namespace] = snap
        yield from self._job_families(totals)
        done = CounterMetricFamily(
            "qw_jobs_reclaimed",
            "Jobs this process's workers requeued or failed because their leases expired.",
        )
        done.add_metric([], reclaimed)
        yield done
        yield from _sampled_families(sorted(latest.items()), errors)

    def _job_families(self, totals: list[tuple[tuple[str, str], Series]]) -> Iterator[Metric]:
        qt = ["queue", "task"]
        enqueued = CounterMetricFamily(
            "qw_jobs_enqueued", "Jobs created by this process's enqueues.", labels=qt
        )
        dedup = CounterMetricFamily(
            "qw_jobs_deduplicated",
            "Enqueued jobs not created because a live job held their dedupe key.",
            labels=qt,
        )
        started = CounterMetricFamily(
            "qw_jobs_started", "Attempts started (jobs claimed) by this process.", labels=qt
        )
        finished = CounterMetricFamily(
            "qw_jobs_finished",
            "Attempts ended, by outcome (retried: failed, will run again; released: "
            "given back at shutdown, not counted as an attempt).",
            labels=[*qt, "outcome"],
        )
        lost = CounterMetricFamily(
            "qw_leases_lost",
            "Attempts whose lease was gone (reclaimed by another worker); their outcome "
            "was dropped.",
            labels=qt,
        )
        run = HistogramMetricFamily(
            "qw_job_run_seconds", "How long an attempt's task ran.", labels=qt
        )
        wait = HistogramMetricFamily(
            "qw_job_wait_seconds",
            "From a job being due (run_at, else created_at) to its attempt starting, "
            "on the store's clock.",
            labels=qt,
        )
        run_le = [_go_float(b) for b in self.run_bounds] + ["+Inf"]
        wait_le = [_go_float(b) for b in self.wait_bounds] + ["+Inf"]
        for (queue, task), s in totals:
            labels = [queue, task]
            enqueued.add_metric(labels, s.enqueued)
            dedup.add_metric(labels, s.deduplicated)
            started.add_metric(labels, s.started)
            for outcome, value in (
                ("succeeded", s.succeeded),
                ("failed", s.failed),
                ("cancelled", s.cancelled),
                ("retried", s.retried),
                ("released", s.released),
            ):
                finished.add_metric([queue, task, outcome], value)
            lost.add_metric(labels, s.lost)
            run.add_metric(labels, _cumulative(run_le, s.run), s.run_sum)
            wait.add_metric(labels, _cumulative(wait_le, s.wait), s.wait_sum)
        yield from (enqueued, dedup, started, finished, lost, run, wait)


def _sampled_families(
    latest: list[tuple[str, Snapshot]], errors: dict[str, int]
) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(
        "qw_queue_jobs",
        "Jobs in the store per queue and status, as last sampled.",
        labels=["namespace", "queue", "status"],
    )
    oldest = GaugeMetricFamily(
        "qw_queue_oldest_job_age_seconds",
        "Age (now minus created_at, store clock) of the oldest job per queue and live "
        "status, as last sampled; absent when there is none.",
        labels=["namespace", "queue", "status"],
    )
    workers = GaugeMetricFamily(
        "qw_workers", "Workers in the namespace's registry, as last sampled.", labels=["namespace"]
    )
    up = GaugeMetricFamily(
        "qw_worker_up",
        "1 if the worker heartbeated recently (within 60 s, store clock), else 0.",
        labels=["namespace", "worker"],
    )
    beat = GaugeMetricFamily(
        "qw_worker_last_heartbeat_timestamp_seconds",
        "When the worker last heartbeated (store clock, Unix seconds).",
        labels=["namespace", "worker"],
    )
    sampled = GaugeMetricFamily(
        "qw_metrics_sample_timestamp_seconds",
        "When the namespace's state was last read (store clock, Unix seconds).",
        labels=["namespace"],
    )
    failed = CounterMetricFamily(
        "qw_metrics_sample_errors",
        "Reads of the namespace's state that failed (retried next period).",
        labels=["namespace"],
    )
    for namespace, snap in latest:
        sampled.add_metric([namespace], snap.at)
        for queue, by_status in sorted(snap.counts.items()):
            for status, count in sorted(by_status.items()):
                jobs.add_metric([namespace, queue, status], count)
        for (queue, status), age in sorted(snap.oldest.items()):
            oldest.add_metric([namespace, queue, status], age)
        workers.add_metric([namespace], len(snap.workers))
        for worker, last_seen, alive in snap.workers:
            up.add_metric([namespace, worker], 1.0 if alive else 0.0)
            if last_seen is not None:
                beat.add_metric([namespace, worker], last_seen)
    for namespace, count in sorted(errors.items()):
        failed.add_metric([namespace], count)
    yield from (jobs, oldest, workers, up, beat, sampled, failed)


def _cumulative(le: list[str], counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip(le, counts, strict=True):
        total += count
        out.append((bound, total))
    return out


def _bounds(name: str, buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in buckets)
    if not bounds or list(bounds) != sorted(set(bounds)) or bounds[-1] == float("inf"):
        raise ConfigurationError(
            f"{name} must be increasing finite bounds (+Inf is added), not {buckets!r}"
        )
    return bounds


#: How prometheus_client writes an ``le`` bound (untyped there).
_go_float = cast("Callable[[float], str]", _utils.floatToGoString)

_default: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """The process's metrics on prometheus_client's ``REGISTRY`` (made at first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Metrics(REGISTRY)
        return _default
