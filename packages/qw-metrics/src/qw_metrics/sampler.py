"""Reading a namespace's state on a schedule: queue depth, oldest job, the worker registry.

One :class:`Sampler` thread reads each namespace it was given a client for,
every ``period`` seconds, with :func:`read_snapshot`: one ``counts()``, one
``list_jobs(queue=, status=, limit=1)`` per queue and live status that has
jobs, one ``workers()``. Never per job. A read that fails is logged and
counted (``qw_metrics_sample_errors_total``); the last good snapshot stays
exported and the next period tries again. The sampler never raises into
the worker that started it.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from qw.client import Client
from qw.errors import ConfigurationError
from qw.model import JobStatus
from qw_metrics.metrics import Metrics, Snapshot, default_metrics

__all__ = ["AGE_STATUSES", "STALE_AFTER_S", "Sampler", "read_snapshot", "watch"]

log = logging.getLogger("qw_metrics")

#: Statuses whose oldest job's age is exported. Terminal statuses are left
#: out: their oldest job is only as old as the purge policy lets it be.
AGE_STATUSES = (JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING)
#: A worker whose last heartbeat is older than this is exported as down
#: (``qw_worker_up`` 0), as ``qw status`` shows it ``stale``.
STALE_AFTER_S = 60.0


def read_snapshot(client: Client, *, stale_after: float = STALE_AFTER_S) -> Snapshot:
    """Read ``client``'s namespace once.

    The oldest job of a queue and status is the first one ``list_jobs``
    answers: jobs are listed by ascending id, and the ids qw makes are
    UUIDv7 (:mod:`qw.ids`), which sort in creation order (to the
    millisecond across processes, exactly within one). A job enqueued with
    an id of the caller's own sorts where that id does.
    """
    now = client.now()
    counts = client.counts()
    oldest: dict[tuple[str, str], float] = {}
    for queue, by_status in counts.items():
        for status in AGE_STATUSES:
            if by_status.get(status, 0) <= 0:
                continue
            first = client.list_jobs(queue=queue, status=status, limit=1)
            if first:
                oldest[(queue, status.value)] = max(_seconds(now, first[0].created_at), 0.0)
    workers = tuple(
        (
            w.id,
            None if w.last_seen is None else w.last_seen.timestamp(),
            w.last_seen is not None and _seconds(now, w.last_seen) <= stale_after,
        )
        for w in client.workers()
    )
    return Snapshot(
        namespace=client.namespace,
        at=now.timestamp(),
        counts={q: {s.value: n for s, n in by.items()} for q, by in counts.items()},
        oldest=oldest,
        workers=workers,
    )


def _seconds(now: datetime, then: datetime) -> float:
    return (now - then).total_seconds()


class Sampler:
    """A daemon thread that exports a snapshot of each namespace it has a client for.

    Clients come and go with :meth:`add` and :meth:`remove` (keyed by an
    owner, such as a worker's id); the first client added for a namespace
    is read while it is there. :meth:`stop` ends the thread and withdraws
    its snapshots. A client is never closed here.
    """

    def __init__(self, period: float, metrics: Metrics | None = None) -> None:
        if not (isinstance(period, int | float) and 0 < period < float("inf")):
            raise ConfigurationError(f"the sampling period must be seconds > 0, not {period!r}")
        self.period = float(period)
        self._metrics = metrics if metrics is not None else default_metrics()
        self._lock = threading.Lock()
        # Held while a client is read: remove() waits for a read of its client.
        self._reading = threading.Lock()
        self._owners: dict[object, Client] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, owner: object, client: Client) -> None:
        """Read ``client``'s namespace (unless an earlier owner's client covers it)."""
        if not client.capabilities.thread_safe:
            log.warning(
                "qw_metrics: not sampling namespace %r: the %s backend is not thread-safe",
                client.namespace,
                client.backend.name,
            )
            return
        with self._lock:
            self._owners[owner] = client

    def remove(self, owner: object) -> int:
        """Stop reading ``owner``'s client, once a read of it ended; how many owners are left."""
        with self._reading, self._lock:
            client = self._owners.pop(owner, None)
            if client is not None and not any(
                c.namespace == client.namespace for c in self._owners.values()
            ):
                self._metrics.drop_snapshot((self, client.namespace))
            return len(self._owners)

    def start(self) -> Sampler:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="qw-metrics-sampler", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (waiting up to ``timeout`` s for a read) and withdraw the snapshots."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._lock:
            namespaces = {c.namespace for c in self._owners.values()}
            self._owners.clear()
        for namespace in namespaces:
            self._metrics.drop_snapshot((self, namespace))

    def sample(self) -> None:
        """Read every namespace once now (the thread calls this each period)."""
        with self._lock:
            chosen: dict[str, Client] = {}
            for client in self._owners.values():
                chosen.setdefault(client.namespace, client)
        for namespace, client in chosen.items():
            with self._reading:
                with self._lock:
                    if client not in self._owners.values():
                        continue  # removed meanwhile
                try:
                    snapshot = read_snapshot(client)
                except Exception as exc:
                    self._metrics.sample_failed(namespace)
                    log.warning(
                        "qw_metrics: reading namespace %r failed (%r); retrying in %.3g s",
                        namespace,
                        exc,
                        self.period,
                    )
                    continue
                self._metrics.put_snapshot((self, namespace), snapshot)

    def _loop(self) -> None:
        # The first read waits one period: a worker that starts and stops at
        # once (tests, `qw worker --burst`-like use) adds no reads.
        while not self._stop.wait(self.period):
            try:
                self.sample()
            except Exception:  # a bug here must not end the thread silently
                log.exception("qw_metrics: the sampler failed unexpectedly")


def watch(client: Client, every: float = 15.0, *, metrics: Metrics | None = None) -> Sampler:
    """Sample ``client``'s namespace every ``every`` s in this process (a producer, a web app).

    Returns the started :class:`Sampler`; :meth:`Sampler.stop` (or a
    ``with`` block) ends it. The client must stay open while it runs.
    """
    sampler = Sampler(every, metrics)
    sampler.add(client, client)
    return sampler.start()
