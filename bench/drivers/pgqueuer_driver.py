"""PGQueuer (PostgreSQL): asyncpg, QueueManager consumers, batch dequeue.

The full sweep: processes x consumers per process of 1x4, 1x16, 2x4, 2x16,
4x4, each consumer dequeuing batches of 10 (PGQueuer's default). In drain
mode each process exits once the queue is empty and its in-flight jobs are
logged; the drain ends at the last process' end.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import stores
from bench.config import Setting
from bench.drivers.base import Driver, Workers, python_cmd, spawn

__all__ = ["PgQueuer"]

DB = "qw_bench_pgqueuer"
#: PGQueuer's default dequeue batch size, also what its benchmark tool uses.
BATCH = 10


class PgQueuer(Driver):
    system = "pgqueuer"
    store = "postgres"
    bulk = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queries: Any = None
        self._conn: Any = None

    def version(self) -> str:
        return version("pgqueuer")

    def full_sweep(self) -> list[Setting]:
        combos = ((1, 4), (1, 16), (2, 4), (2, 16), (4, 4))
        return [Setting(f"{p}px{c}", p, c, {"batch": BATCH}) for p, c in combos]

    def describe(self, setting: Setting) -> dict[str, str]:
        batch = int(setting.extra.get("batch", BATCH))
        return self._settings(setting.processes, setting.concurrency, batch)

    def start_setting(self, setting: Setting, probe_dir: Path, *, drain: int | None) -> Workers:
        batch = int(setting.extra.get("batch", BATCH))
        return self._start(setting.processes, setting.concurrency, batch, probe_dir, drain)

    def settings(self, concurrency: int) -> dict[str, str]:
        return self._settings(1, concurrency, BATCH)

    def _settings(self, processes: int, concurrency: int, batch: int) -> dict[str, str]:
        return {
            "worker": f"{processes} process(es), {concurrency} QueueManager consumer(s) each, "
            "each its own asyncpg connection (as PGQueuer's benchmark tool scales --dequeue)",
            "batch_size": str(batch),
            "driver": "AsyncpgDriver (PGQueuer's docs: asyncpg ~2x psycopg)",
            "mode": "drain (exits when empty) for drains, continuous for wake-up",
            "task": "async no-op entrypoint",
        }

    @property
    def dsn(self) -> str:
        return self.stores.postgres_db(DB)

    def _run(self, coro: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def _q(self) -> Any:
        if self._queries is None:
            import asyncpg  # type: ignore[import-untyped]
            from pgqueuer.db import AsyncpgDriver
            from pgqueuer.queries import Queries

            self._conn = self._run(asyncpg.connect(self.dsn))
            self._queries = Queries(AsyncpgDriver(self._conn))
        return self._queries

    def close(self) -> None:
        if self._conn is not None:
            self._run(self._conn.close())
        self._conn = self._queries = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def reset(self) -> None:
        self.close()
        stores.pg_recreate(self.stores, DB)
        self._run(self._q().install())

    def cleanup(self) -> None:
        self.close()
        stores.pg_drop(self.stores, DB)

    def enqueue(self, indexes: range, batch: int) -> None:
        q = self._q()
        if batch == 1:
            for i in indexes:
                self._run(q.enqueue("bench", str(i).encode()))
            return
        items = list(indexes)
        for s in range(0, len(items), batch):
            chunk = items[s : s + batch]
            self._run(
                q.enqueue(
                    ["bench"] * len(chunk), [str(i).encode() for i in chunk], [0] * len(chunk)
                )
            )

    def start(self, concurrency: int, probe_dir: Path, *, drain: int | None) -> Workers:
        return self._start(1, concurrency, BATCH, probe_dir, drain)

    def _start(
        self, processes: int, concurrency: int, batch: int, probe_dir: Path, drain: int | None
    ) -> Workers:
        logs = [self.log(f"worker{k}") for k in range(processes)]
        cmd = python_cmd(
            "-m",
            "bench.apps.pgqueuer_worker",
            self.dsn,
            str(concurrency),
            str(batch),
            str(drain or 0),
        )
        env = {"QW_BENCH_PROBE_DIR": str(probe_dir)}
        procs = [spawn(cmd, log, env) for log in logs]
        return Workers(procs, logs, probe_dir)

    def wait_drained(self, workers: Workers, n: int, deadline: float) -> int:
        return self.wait_exit_and_read_end(workers, n, deadline)

    def async_settings(self, producers: int) -> str:
        return f"asyncpg pool of {_pool_size(producers)} (AsyncpgPoolDriver), Queries.enqueue"

    async def async_producer(self, producers: int) -> _Producer:
        import asyncpg
        from pgqueuer.db import AsyncpgPoolDriver
        from pgqueuer.queries import Queries

        size = _pool_size(producers)
        pool = await asyncpg.create_pool(self.dsn, min_size=size, max_size=size)
        return _Producer(pool, Queries(AsyncpgPoolDriver(pool)))

    def succeeded(self) -> int | None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            left = conn.execute("SELECT count(*) FROM pgqueuer").fetchone()
            logged = conn.execute(
                "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
            ).fetchone()
        assert left is not None
        assert logged is not None
        if left[0]:
            return -int(left[0])  # jobs still in the queue table: never a pass
        return int(logged[0])


def _pool_size(producers: int) -> int:
    # One connection per producer, up to asyncpg's pool default of 10 doubled:
    # PGQueuer's best here (more connections than cores only add contention).
    return max(1, min(producers, 20))


class _Producer:
    def __init__(self, pool: Any, queries: Any) -> None:
        self._pool, self._q = pool, queries

    async def enqueue(self, index: int) -> None:
        await self._q.enqueue("bench", str(index).encode())

    async def count(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM pgqueuer"))

    async def close(self) -> None:
        await self._pool.close()
