"""RQ (Redis): a worker pool of SimpleWorkers (no fork per job).

RQ scales by processes (``worker-pool -n``); the full sweep runs 1, 2, 4 and 8.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.config import Setting
from bench.drivers.base import Workers, poll_until, python_cmd, spawn
from bench.drivers.redis_common import RedisPeer

__all__ = ["Rq"]

WORKER_CLASS = "rq.worker.SimpleWorker"


class Rq(RedisPeer):
    system = "rq"
    bulk = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: Any = None

    def version(self) -> str:
        return version("rq")

    def full_sweep(self) -> list[Setting]:
        return [Setting(f"{n}p", n, 1) for n in (1, 2, 4, 8)]

    def describe(self, setting: Setting) -> dict[str, str]:
        return self.settings(setting.processes)

    def start_setting(self, setting: Setting, probe_dir: Path, *, drain: int | None) -> Workers:
        return self.start(setting.processes, probe_dir, drain=drain)

    def settings(self, concurrency: int) -> dict[str, str]:
        return {
            "worker": f"rq worker-pool -n {concurrency} -w {WORKER_CLASS} ({concurrency} worker "
            "processes; SimpleWorker runs jobs in the worker process instead of forking "
            "per job; --quiet: no per-job log lines)",
            "bulk": "Queue.enqueue_many with Queue.prepare_data (one pipeline per call)",
            "task": "sync no-op function",
        }

    def _q(self) -> Any:
        if self._queue is None:
            from rq import Queue

            self._queue = Queue("bench", connection=self.redis())
        return self._queue

    def close(self) -> None:
        self._queue = None
        super().close()

    def enqueue(self, indexes: range, batch: int) -> None:
        from rq import Queue

        from bench.apps.rq_tasks import noop

        q = self._q()
        if batch == 1:
            for i in indexes:
                q.enqueue(noop, i)
            return
        items = list(indexes)
        for s in range(0, len(items), batch):
            q.enqueue_many([Queue.prepare_data(noop, (i,)) for i in items[s : s + batch]])

    def start(self, concurrency: int, probe_dir: Path, *, drain: int | None) -> Workers:
        log = self.log("worker")
        cmd = python_cmd(
            "-m",
            "rq.cli",
            "worker-pool",
            "-u",
            self.stores.redis,
            "-w",
            WORKER_CLASS,
            "-n",
            str(concurrency),
            "--quiet",
            "bench",
        )
        proc = spawn(cmd, log, self.worker_env(probe_dir))
        return Workers([proc], [log], probe_dir)

    def _finished(self) -> int:
        from rq.registry import FinishedJobRegistry

        key = FinishedJobRegistry("bench", connection=self.redis()).key
        return int(self.redis().zcard(key))

    def wait_drained(self, workers: Workers, n: int, deadline: float) -> int:
        return poll_until(
            lambda: self._finished() >= n,
            deadline,
            progress=self.progress(workers, n),
            workers=workers,
        )

    def succeeded(self) -> int | None:
        return self._finished()
