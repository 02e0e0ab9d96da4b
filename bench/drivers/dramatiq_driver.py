"""Dramatiq (Redis): its CLI's worker processes and threads.

The full sweep: ``--processes`` x ``--threads`` of 1x8 (one process at the
default thread count), 2x4, 2x8 (the CLI's default on 2 CPUs), 2x16, 4x4
(2x1 was dropped: one thread a process never came near the others).
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

from bench.config import Setting
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

    def full_sweep(self) -> list[Setting]:
        combos = ((1, 8), (2, 4), (2, 8), (2, 16), (4, 4))
        return [Setting(f"{p}px{t}t", p, t) for p, t in combos]

    def describe(self, setting: Setting) -> dict[str, str]:
        return self._settings(setting.processes, setting.concurrency)

    def start_setting(self, setting: Setting, probe_dir: Path, *, drain: int | None) -> Workers:
        return self._start(setting.processes, setting.concurrency, probe_dir)

    def settings(self, concurrency: int) -> dict[str, str]:
        return self._settings(*split(concurrency))

    def _settings(self, p: int, t: int) -> dict[str, str]:
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
        return self._start(*split(concurrency), probe_dir)

    def _start(self, p: int, t: int, probe_dir: Path) -> Workers:
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
