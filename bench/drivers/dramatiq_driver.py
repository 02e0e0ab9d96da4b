"""Dramatiq (Redis): its CLI's worker processes and threads."""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

from bench.drivers.base import Unsupported, Workers, poll_until, python_cmd, spawn
from bench.drivers.redis_common import RedisPeer

__all__ = ["Dramatiq"]


def split(concurrency: int) -> tuple[int, int]:
    """Processes x threads = concurrency, processes up to the CPU count (dramatiq's default)."""
    cpus = os.cpu_count() or 1
    processes = max(1, min(concurrency, cpus))
    return processes, max(1, concurrency // processes)


class Dramatiq(RedisPeer):
    system = "dramatiq"

    def version(self) -> str:
        return version("dramatiq")

    def settings(self, concurrency: int) -> dict[str, str]:
        p, t = split(concurrency)
        return {
            "worker": f"dramatiq CLI --processes {p} --threads {t} (defaults are processes=CPUs, "
            "threads=8)",
            "broker": "RedisBroker, default middleware (an idle consumer polls Redis with "
            "backoff up to the worker timeout, 1 s by default)",
            "task": "sync no-op actor",
        }

    def enqueue(self, indexes: range, batch: int) -> None:
        if batch > 1:
            raise Unsupported("Dramatiq has no bulk enqueue API (one broker.enqueue per message)")
        from bench.apps.dramatiq_app import noop

        for i in indexes:
            noop.send(i)

    def close(self) -> None:
        super().close()

    def start(self, concurrency: int, probe_dir: Path, *, drain: int | None) -> Workers:
        p, t = split(concurrency)
        log = self.log("worker")
        cmd = python_cmd(
            "-m",
            "dramatiq",
            "bench.apps.dramatiq_app",
            "--processes",
            str(p),
            "--threads",
            str(t),
            "--queues",
            "bench",
        )
        proc = spawn(cmd, log, self.worker_env(probe_dir))
        return Workers([proc], [log], probe_dir)

    def wait_drained(self, workers: Workers, n: int, deadline: float) -> int:
        r = self.redis()
        # An acked message leaves the .msgs hash; prefill ended before the workers started.
        return poll_until(
            lambda: r.hlen("dramatiq:bench.msgs") == 0 and workers.ran() >= n,
            deadline,
            progress=self.progress(workers, n),
            workers=workers,
        )

    def succeeded(self) -> int | None:
        return None
