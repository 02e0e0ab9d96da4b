"""procrastinate (PostgreSQL): psycopg 3, async workers with concurrency slots.

The full sweep is short (procrastinate drains below 100 jobs/s here):
processes x concurrency of 1x4, 1x16, 2x16; each process is one
``run_worker_async`` that stops once caught up (``wait=False``).
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import stores
from bench.config import Setting
from bench.drivers.base import Driver, Workers, python_cmd, spawn

__all__ = ["Procrastinate"]

DB = "qw_bench_procrastinate"


class Procrastinate(Driver):
    system = "procrastinate"
    store = "postgres"
    bulk = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        os.environ["QW_BENCH_PROCRASTINATE_DSN"] = self.dsn
        self._app: Any = None

    @property
    def dsn(self) -> str:
        return self.stores.postgres_db(DB)

    def version(self) -> str:
        return version("procrastinate")

    def full_sweep(self) -> list[Setting]:
        return [Setting(f"{p}px{c}", p, c) for p, c in ((1, 4), (1, 16), (2, 16))]

    def describe(self, setting: Setting) -> dict[str, str]:
        return self._settings(setting.processes, setting.concurrency)

    def start_setting(self, setting: Setting, probe_dir: Path, *, drain: int | None) -> Workers:
        return self._start(setting.processes, setting.concurrency, probe_dir, drain)

    def settings(self, concurrency: int) -> dict[str, str]:
        return self._settings(1, concurrency)

    def _settings(self, processes: int, concurrency: int) -> dict[str, str]:
        return {
            "worker": f"App.run_worker_async, {processes} process(es), concurrency={concurrency} "
            "(async slots) each",
            "listen_notify": "on (default)",
            "connector": "PsycopgConnector (psycopg 3 pool)",
            "mode": "wait=False for drains (stops once caught up), wait=True for wake-up",
            "task": "async no-op",
        }

    def _open(self) -> Any:
        if self._app is None:
            from bench.apps.procrastinate_app import app

            self._app = app.open()
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None

    def reset(self) -> None:
        self.close()
        stores.pg_recreate(self.stores, DB)
        self._open().schema_manager.apply_schema()

    def cleanup(self) -> None:
        self.close()
        stores.pg_drop(self.stores, DB)

    def enqueue(self, indexes: range, batch: int) -> None:
        from bench.apps.procrastinate_app import noop

        self._open()
        if batch == 1:
            for i in indexes:
                noop.defer(i=i)
            return
        items = list(indexes)
        for s in range(0, len(items), batch):
            kwargs: list[dict[str, Any]] = [{"i": i} for i in items[s : s + batch]]
            noop.batch_defer(*kwargs)

    def start(self, concurrency: int, probe_dir: Path, *, drain: int | None) -> Workers:
        return self._start(1, concurrency, probe_dir, drain)

    def _start(
        self, processes: int, concurrency: int, probe_dir: Path, drain: int | None
    ) -> Workers:
        logs = [self.log(f"worker{k}") for k in range(processes)]
        cmd = python_cmd("-m", "bench.apps.procrastinate_app", str(concurrency), str(drain or 0))
        env = {"QW_BENCH_PROBE_DIR": str(probe_dir), "QW_BENCH_PROCRASTINATE_DSN": self.dsn}
        procs = [spawn(cmd, log, env) for log in logs]
        return Workers(procs, logs, probe_dir)

    def wait_drained(self, workers: Workers, n: int, deadline: float) -> int:
        return self.wait_exit_and_read_end(workers, n, deadline)

    def succeeded(self) -> int | None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            ).fetchone()
        assert row is not None
        return int(row[0])
