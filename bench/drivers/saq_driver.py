"""SAQ (Redis): asyncio worker with concurrency slots."""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

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

    def settings(self, concurrency: int) -> dict[str, str]:
        return {
            "worker": f"saq.Worker, 1 process, concurrency={concurrency} (async slots)",
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
        log = self.log("worker")
        cmd = python_cmd("-m", "bench.apps.saq_app", str(concurrency))
        proc = spawn(cmd, log, self.worker_env(probe_dir))
        return Workers([proc], [log], probe_dir)

    def wait_drained(self, workers: Workers, n: int, deadline: float) -> int:
        r = self.redis()
        return poll_until(
            lambda: r.zcard("saq:bench:incomplete") == 0 and workers.ran() >= n,
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
