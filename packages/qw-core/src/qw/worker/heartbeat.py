"""The worker's one housekeeping loop: leases, timeouts, registry, reclaim sweep.

One thread per worker, not one per job: every ``renew_s`` it renews all
held leases in one ``renew_many`` call (which also reports operator
cancels), every tick it stops sync jobs past their timeout, every
``heartbeat_s`` it refreshes the worker registry and prunes stale entries,
and every ``reclaim_s`` it requeues jobs whose leases expired (any worker
may; the store makes it safe).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Protocol

from qw.client import Client
from qw.errors import QwError
from qw.model import WorkerInfo
from qw.worker.config import WorkerConfig

__all__ = ["Heartbeat"]

log = logging.getLogger("qw.worker")

_TICK_S = 0.2


class Housekept(Protocol):
    """What the loop looks after (the runtime)."""

    @property
    def info(self) -> WorkerInfo: ...

    def renew_leases(self, client: Client) -> None: ...

    def reclaimed(self, count: int) -> None: ...

    def expire_timeouts(self, now: float) -> None: ...


class Heartbeat:
    def __init__(self, host: Housekept, client: Client, config: WorkerConfig) -> None:
        self._host = host
        self._client = client
        self._config = config
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="qw-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        config = self._config
        tick = min(_TICK_S, config.renew_s / 2)
        now = time.monotonic()
        next_renew = now + config.renew_s
        next_beat = now + config.heartbeat_s
        next_reclaim = now
        while not self._stop.wait(tick):
            now = time.monotonic()
            self._guard("timeouts", self._host.expire_timeouts, now)
            if now >= next_renew:
                self._guard("lease renewal", self._host.renew_leases, self._client)
                next_renew = now + config.renew_s
            if now >= next_beat:
                self._guard("registry heartbeat", self._client.heartbeat, self._host.info)
                self._guard("registry pruning", self._prune)
                next_beat = now + config.heartbeat_s
            if now >= next_reclaim:
                self._guard("reclaim sweep", self._reclaim)
                next_reclaim = now + config.reclaim_s

    def _prune(self) -> None:
        """Remove registry entries of workers that stopped heartbeating (killed ones).

        Safe with any number of workers doing it, and against a mistake:
        ``heartbeat`` is an upsert on every backend (memory: dict assignment;
        sqlite, postgres: INSERT ... ON CONFLICT DO UPDATE; redis: HSET), so a
        live worker removed here is back at its next heartbeat.
        """
        cutoff = self._client.now() - timedelta(seconds=self._config.prune_after_s)
        me = self._host.info.id
        for worker in self._client.workers():
            if worker.id != me and worker.last_seen is not None and worker.last_seen < cutoff:
                self._client.remove_worker(worker.id)
                log.info(
                    "removed stale registry entry %s (last seen %s)", worker.id, worker.last_seen
                )

    def _reclaim(self) -> None:
        count = self._client.reclaim_expired()
        if count:
            log.info("requeued or failed %d jobs whose leases expired", count)
            self._host.reclaimed(count)

    @staticmethod
    def _guard(what: str, fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except QwError as exc:
            log.warning("%s failed: %r", what, exc)
        except Exception:
            log.exception("%s failed unexpectedly", what)
