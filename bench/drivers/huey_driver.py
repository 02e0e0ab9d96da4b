"""Huey on Redis and on SQLite: its consumer with thread workers, or with worker processes.

The full sweep runs ``-k thread -w 1/4/16`` (one process) and ``-k process
-w 2/4/8`` (one consumer forking that many worker processes), the two
worker types Huey documents besides greenlets (gevent is not installed).
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.config import Setting
from bench.drivers.base import Driver, Unsupported, Workers, poll_until, python_cmd, spawn
from bench.drivers.redis_common import RedisPeer

__all__ = ["HueyRedis", "HueySqlite"]


class _Huey(Driver):
    #: Extra consumer options (polling delays for storages that poll).
    consumer_options: tuple[str, ...] = ()

    def version(self) -> str:
        return version("huey")

    def settings(self, concurrency: int) -> dict[str, str]:
        return self._settings("thread", concurrency)

    def _settings(self, kind: str, workers: int) -> dict[str, str]:
        opts = " ".join(self.consumer_options)
        return {
            "worker": f"huey_consumer -w {workers} -k {kind} {opts}".rstrip(),
            "task": "sync no-op; returns None, so no result is stored (Huey's default)",
        }

    def full_sweep(self) -> list[Setting]:
        threads = [Setting(f"threadx{w}", 1, w, {"kind": "thread"}) for w in (1, 4, 16)]
        procs = [Setting(f"processx{w}", w, 1, {"kind": "process"}) for w in (2, 4, 8)]
        return threads + procs

    def describe(self, setting: Setting) -> dict[str, str]:
        kind = str(setting.extra.get("kind", "thread"))
        return self._settings(kind, setting.total)

    def start_setting(self, setting: Setting, probe_dir: Path, *, drain: int | None) -> Workers:
        kind = str(setting.extra.get("kind", "thread"))
        return self._start(kind, setting.total, probe_dir)

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def _huey(self) -> Any:
        os.environ.update(self.env())
        from bench.apps import huey_app

        return huey_app.huey

    def enqueue(self, indexes: range, batch: int) -> None:
        if batch > 1:
            raise Unsupported("Huey has no bulk enqueue API (one enqueue per task)")
        from bench.apps.huey_app import noop

        self._huey()
        for i in indexes:
            noop(i)

    def start(self, concurrency: int, probe_dir: Path, *, drain: int | None) -> Workers:
        return self._start("thread", concurrency, probe_dir)

    def _start(self, kind: str, workers: int, probe_dir: Path) -> Workers:
        log = self.log("worker")
        cmd = python_cmd(
            "-m",
            "huey.bin.huey_consumer",
            "bench.apps.huey_app.huey",
            "-w",
            str(workers),
            "-k",
            kind,
            *self.consumer_options,
        )
        proc = spawn(cmd, log, {"QW_BENCH_PROBE_DIR": str(probe_dir), **self.env()})
        return Workers([proc], [log], probe_dir)

    def wait_drained(self, workers: Workers, n: int, deadline: float) -> int:
        huey = self._huey()
        # Huey keeps no record of a task that returned None: the last task's
        # end is its last write. Check the probe first (cheap), then the queue.
        return poll_until(
            lambda: workers.ran() >= n and huey.pending_count() == 0,
            deadline,
            progress=self.progress(workers, n),
            workers=workers,
        )

    def succeeded(self) -> int | None:
        return None


class HueyRedis(_Huey, RedisPeer):
    system = "huey"
    store = "redis"

    def env(self) -> dict[str, str]:
        return {"QW_BENCH_HUEY_STORE": "redis", "QW_BENCH_REDIS_URL": self.stores.redis}

    def settings(self, concurrency: int) -> dict[str, str]:
        out = super().settings(concurrency)
        out["storage"] = "RedisHuey (blocking BRPOP dequeue, its default)"
        return out


class HueySqlite(_Huey):
    system = "huey"
    store = "sqlite"
    # SqliteStorage polls; Huey's documented -d/-m options bound its sleep (defaults 0.1 s/10 s).
    consumer_options = ("-d", "0.01", "-m", "0.1")

    @property
    def path(self) -> Path:
        return self.workdir / "huey.db"

    def env(self) -> dict[str, str]:
        return {"QW_BENCH_HUEY_STORE": "sqlite", "QW_BENCH_HUEY_SQLITE": str(self.path)}

    def settings(self, concurrency: int) -> dict[str, str]:
        out = super().settings(concurrency)
        out["storage"] = "SqliteHuey (WAL, SQLite's default synchronous), polled"
        return out

    def reset(self) -> None:
        # Huey made its tables when the app was imported; flush() empties them.
        self._huey().flush()

    def cleanup(self) -> None:
        for p in self.workdir.glob("huey.db*"):
            p.unlink()
