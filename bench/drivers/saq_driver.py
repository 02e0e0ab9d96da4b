"""SAQ (Redis): asyncio workers with concurrency slots, in one or more processes.

SAQ's CLI scales by processes (``saq --workers N`` starts N processes of one
``saq.Worker`` each); the driver starts N worker processes itself, the same
thing, so that each writes its own log. Full sweep: processes x concurrency
of 1x4, 1x16, 2x4, 2x16, 4x16.
"""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.config import Setting
from bench.drivers.base import Unsupported, Workers, poll_until, python_cmd, spawn
from bench.drivers.redis_common import RedisPeer

__all__ = ["Saq"]


class Saq(RedisPeer):
    system = "saq"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: Any = None

    def version(self) -> str:
        return version("saq")

    def full_sweep(self) -> list[Setting]:
        combos = ((1, 4), (1, 16), (2, 4), (2, 16), (4, 16))
        return [Setting(f"{p}px{c}", p, c) for p, c in combos]

    def describe(self, setting: Setting) -> dict[str, str]:
        return self._settings(setting.processes, setting.concurrency)

    def start_setting(self, setting: Setting, probe_dir: Path, *, drain: int | None) -> Workers:
        return self._start(setting.processes, setting.concurrency, probe_dir)

    def settings(self, concurrency: int) -> dict[str, str]:
        return self._settings(1, concurrency)

    def _settings(self, processes: int, concurrency: int) -> dict[str, str]:
        return {
            "worker": f"saq.Worker, {processes} process(es) (as `saq --workers {processes}`), "
            f"concurrency={concurrency} (async slots) each",
            "queue": "RedisQueue via Queue.from_url, defaults",
            "task": "async no-op",
        }

    def _run(self, coro: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def _q(self) -> Any:
        if self._queue is None:
            from bench.apps.saq_app import make_queue

            self._queue = make_queue()
            self._run(self._queue.connect())
        return self._queue

    def close(self) -> None:
        if self._queue is not None:
            self._run(self._queue.disconnect())
            self._queue = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        super().close()

    def enqueue(self, indexes: range, batch: int) -> None:
        if batch > 1:
            raise Unsupported("SAQ has no bulk enqueue API (Queue.map enqueues and waits)")
        q = self._q()
        for i in indexes:
            self._run(q.enqueue("noop", i=i))

    def async_settings(self, producers: int) -> str:
        return "one Queue (Queue.from_url, defaults: redis.asyncio pool), Queue.enqueue"

    async def async_producer(self, producers: int) -> _Producer:
        from bench.apps.saq_app import make_queue

        queue = make_queue()
        await queue.connect()
        return _Producer(queue)

    def start(self, concurrency: int, probe_dir: Path, *, drain: int | None) -> Workers:
        return self._start(1, concurrency, probe_dir)

    def _start(self, processes: int, concurrency: int, probe_dir: Path) -> Workers:
        logs = [self.log(f"worker{k}") for k in range(processes)]
        cmd = python_cmd("-m", "bench.apps.saq_app", str(concurrency))
        procs = [spawn(cmd, log, self.worker_env(probe_dir)) for log in logs]
        return Workers(procs, logs, probe_dir)

    def wait_drained(self, workers: Workers, n: int, deadline: float) -> int:
        r = self.redis()
        # The job records' `complete` status can land after the incomplete set
        # empties (seen on a busy machine: 1,998 of 2,000): the drain ends when
        # all are written. The scan runs only once the cheap checks pass.
        return poll_until(
            lambda: (
                r.zcard("saq:bench:incomplete") == 0
                and workers.ran() >= n
                and self.succeeded() == n
            ),
            deadline,
            progress=self.progress(workers, n),
            workers=workers,
        )

    def succeeded(self) -> int | None:
        r = self.redis()
        done = 0
        keys = list(r.scan_iter("saq:job:bench:*", count=1000))
        for s in range(0, len(keys), 1000):
            for raw in r.mget(keys[s : s + 1000]):
                if raw is not None and json.loads(raw).get("status") == "complete":
                    done += 1
        return done


class _Producer:
    def __init__(self, queue: Any) -> None:
        self._queue = queue

    async def enqueue(self, index: int) -> None:
        await self._queue.enqueue("noop", i=index)

    async def count(self) -> int:
        return int(await self._queue.count("incomplete"))

    async def close(self) -> None:
        await self._queue.disconnect()
