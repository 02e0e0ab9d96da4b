"""qw itself, on each of its stores, driven through qw.Client and the real qw.Worker."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench import probe, stores
from bench.config import Setting
from bench.drivers.base import QUEUE, Workers, poll_until, python_cmd, spawn, stop, tail
from bench.workflows import FlowDriver, flow_indexes, poll_probe

if TYPE_CHECKING:
    import qw

__all__ = ["QwMongo", "QwPostgres", "QwRedis", "QwSqlite"]

TASK = "bench.noop"
NAMESPACE = "bench"
PG_DB = "qw_bench"


class QwDriver(FlowDriver):
    system = "qw"
    bulk = True
    _client_obj: qw.Client | None = None
    _app_obj: tuple[qw.App, Any, Any] | None = None

    def url(self) -> str:
        raise NotImplementedError

    def version(self) -> str:
        import qw

        return qw.__version__

    def full_sweep(self) -> list[Setting]:
        # Concurrency 1 never wins a drain; 4 processes on 2 CPUs is the top of the range.
        combos = ((1, 4), (1, 16), (2, 4), (2, 16), (4, 4), (4, 16))
        return [Setting(f"{p}px{c}", p, c) for p, c in combos]

    def describe(self, setting: Setting) -> dict[str, str]:
        return self._settings(setting.processes, setting.concurrency)

    def settings(self, concurrency: int) -> dict[str, str]:
        return self._settings(1, concurrency)

    def _settings(self, processes: int, concurrency: int) -> dict[str, str]:
        return {
            "worker": f"qw.Worker, {processes} process(es), concurrency={concurrency} "
            "(thread pool) each",
            "config": "WorkerConfig defaults: lease_s=30, finish_batch=500, poll_interval=1",
            "task": "sync no-op; each success writes its job.succeeded outbox event",
            "store": self.store_note,
        }

    #: The store's own settings that matter for the numbers (URL defaults).
    store_note = ""

    def unavailable(self) -> str | None:
        from qw.errors import QwError
        from qw.registry import load_backend

        try:
            load_backend(self.url())
        except QwError as exc:
            return f"backend not installed: {exc}"
        return None

    def client(self) -> qw.Client:
        import qw

        if self._client_obj is None:
            from bench.qwplugins import baseline

            self._client_obj = qw.open(self.url(), namespace=NAMESPACE, plugins=baseline())
        return self._client_obj

    def close(self) -> None:
        if self._client_obj is not None:
            self._client_obj.close()
            self._client_obj = None
        if self._app_obj is not None:
            # The app was given its client (see _flow_app), so it does not close it.
            self._app_obj[0].client.close()
            self._app_obj = None

    def enqueue(self, indexes: range, batch: int) -> None:
        from qw.app import task_payload
        from qw.model import NewJob

        client = self.client()
        jobs = [NewJob(QUEUE, task_payload(TASK, [i])) for i in indexes]
        for start in range(0, len(jobs), batch):
            client.enqueue(jobs[start : start + batch])

    #: What the async client does on this store, for the report.
    async_note = "the thread-pool wrapper (qw.aio.ThreadedAsyncBackend)"

    def async_settings(self, producers: int) -> str:
        return (
            "qw.aio.open_async (AsyncClient), AsyncClient.enqueue of one job per call; "
            f"{self.async_note}; {self.store_note}"
        )

    async def async_producer(self, producers: int) -> _AsyncProducer:
        from bench.qwplugins import baseline
        from qw.aio import open_async

        client = await open_async(self.url(), namespace=NAMESPACE, plugins=baseline())
        return _AsyncProducer(client)

    def start(self, concurrency: int, probe_dir: Path, *, drain: int | None) -> Workers:
        log = self.log("worker")
        cmd = python_cmd(
            "-m", "bench.apps.qw_worker", self.url(), NAMESPACE, str(concurrency), str(drain or 0)
        )
        proc = spawn(cmd, log, {"QW_BENCH_PROBE_DIR": str(probe_dir)})
        return Workers([proc], [log], probe_dir)

    def start_setting(self, setting: Setting, probe_dir: Path, *, drain: int | None) -> Workers:
        if setting.processes == 1 or not drain:
            return self.start(setting.concurrency, probe_dir, drain=drain)
        # Several processes on one queue: none knows how many jobs it will run, so
        # each notes its own last terminal write and runs until the harness stops it.
        logs = [self.log(f"worker{k}") for k in range(setting.processes)]
        cmd = python_cmd(
            "-m", "bench.apps.qw_worker", self.url(), NAMESPACE, str(setting.concurrency), "-1"
        )
        procs = [spawn(cmd, log, {"QW_BENCH_PROBE_DIR": str(probe_dir)}) for log in logs]
        return Workers(procs, logs, probe_dir, extra={"shared": True})

    def wait_drained(self, workers: Workers, n: int, deadline: float) -> int:
        if not workers.extra.get("shared"):
            return self.wait_exit_and_read_end(workers, n, deadline)
        # Every task started (the probe, cheap), then the store counts every job
        # succeeded; then the processes stop and say when each wrote its last job.
        poll_until(
            lambda: workers.ran() >= n and self.succeeded() == n,
            deadline,
            interval=0.02,
            progress=self.progress(workers, n),
            workers=workers,
        )
        stop(workers.procs)
        for proc, log in zip(workers.procs, workers.logs, strict=True):
            # Killed by the SIGTERM itself: the process was still starting (the
            # others drained the queue first), so it had not claimed anything;
            # qw.Worker.run handles the signal before its first claim.
            if proc.returncode not in (0, -signal.SIGTERM):
                raise RuntimeError(f"worker exited with {proc.returncode}: {tail(log)}")
        ends = [int(p.read_text()) for p in workers.probe_dir.glob("*.end")]
        if not ends:
            raise RuntimeError(f"workers wrote no end time: {tail(workers.logs[0])}")
        return max(ends)

    def succeeded(self) -> int | None:
        from qw.model import JobStatus

        counts = self.client().counts()
        return int(counts.get(QUEUE, {}).get(JobStatus.SUCCEEDED, 0))

    # -- workflows ------------------------------------------------------------

    def flow_settings(self, concurrency: int) -> dict[str, str]:
        return {
            "worker": f"qw.Worker, 1 process, concurrency={concurrency} (thread pool), the "
            "same worker and WorkerConfig defaults as the plain drains",
            "workflows": "app.workflow(): wf.add(task, parent_step, ...) for chains and "
            "diamonds, wf.map() for fan-outs, a step list as a fan-in's argument; each "
            "workflow stored by one create_workflow call",
            "store": self.store_note,
        }

    def _flow_app(self) -> tuple[qw.App, Any, Any]:
        if self._app_obj is None:
            import qw
            from bench.apps.qw_worker import register
            from bench.qwplugins import baseline

            app = qw.App(client=qw.open(self.url(), namespace=NAMESPACE, plugins=baseline()))
            step, join = register(app)
            self._app_obj = (app, step, join)
        return self._app_obj

    def submit_chain(self, n: int, base: int = 0) -> Any:
        app, step, _ = self._flow_app()
        wf = app.workflow(f"chain{base}")
        prev = wf.add(step, base)
        for i in range(base + 1, base + n):
            prev = wf.add(step, i, prev, i - 1)
        return wf.enqueue()

    def submit_fanout(self, n: int) -> Any:
        app, step, join = self._flow_app()
        wf = app.workflow("fanout")
        parts = wf.map(step, range(n))
        wf.add(join, n, parts, 0, n)
        return wf.enqueue()

    def submit_flows(self, count: int) -> list[Any]:
        app, step, join = self._flow_app()
        handles = []
        for w in range(count):
            ix = flow_indexes(w)
            wf = app.workflow(f"w{w}")
            a = wf.add(step, ix["a"])
            b = wf.add(step, ix["b"], a, ix["a"])
            c = wf.add(step, ix["c"], a, ix["a"])
            d = wf.add(join, ix["d"], [b, c], ix["b"], 2)
            es = wf.map(step, ix["e"], after=[d])
            wf.add(join, ix["f"], es, ix["e"][0], len(ix["e"]))
            handles.append(wf.enqueue())
        return handles

    def wait_done(self, handle: Any, last: int, workers: Workers, deadline: float) -> int:
        # The worker's qw_job_finished hook notes the last step's commit.
        return poll_probe(workers.probe_dir, probe.FIN, last, deadline, workers)

    def wait_flows(self, handles: list[Any], steps: int, workers: Workers, deadline: float) -> int:
        # The worker stops itself after the last step's terminal write, noting that moment.
        return self.wait_exit_and_read_end(workers, steps, deadline)

    def outcome(self, handle: Any) -> tuple[bool, Any]:
        from qw.errors import WorkflowFailed

        try:
            return True, handle.result(timeout=30)
        except WorkflowFailed as exc:
            return False, f"{exc.state}: {exc.errors}"

    def store_steps(self, handles: list[Any]) -> int | None:
        from qw.model import JobStatus

        return sum(int(h.status().counts.get(JobStatus.SUCCEEDED, 0)) for h in handles)

    def claim_latencies(self, samples: int) -> list[float]:
        """Seconds per ``claim(limit=1)`` call, ``samples`` times (each claim then completed)."""
        client = self.client()
        out: list[float] = []
        for _ in range(samples):
            t0 = time.perf_counter()
            claims = client.claim([QUEUE], worker="bench-claimer", limit=1)
            out.append(time.perf_counter() - t0)
            if len(claims) != 1:
                raise RuntimeError(f"claim returned {len(claims)} jobs, expected 1")
            client.complete(claims[0].lease)
        return out


class QwSqlite(QwDriver):
    store = "sqlite"
    store_note = "URL defaults: WAL, synchronous=FULL, other processes' commits polled every 5 ms"

    def url(self) -> str:
        return f"sqlite:///{self.workdir / 'qw.db'}"

    def reset(self) -> None:
        self.close()
        for path in self.workdir.glob("qw.db*"):
            path.unlink()

    def cleanup(self) -> None:
        self.reset()


class QwPostgres(QwDriver):
    store = "postgres"
    store_note = "URL defaults: pool 1..10 connections, LISTEN/NOTIFY wake-ups"
    async_note = (
        "native (psycopg AsyncConnectionPool, pool 1..10); single-job calls that meet a busy "
        "pool share one commit (each call returns once its own job is committed)"
    )

    def url(self) -> str:
        return self.stores.postgres_db(PG_DB)

    def reset(self) -> None:
        self.close()
        stores.pg_recreate(self.stores, PG_DB)

    def cleanup(self) -> None:
        self.close()
        stores.pg_drop(self.stores, PG_DB)


class QwRedis(QwDriver):
    store = "redis"
    store_note = "URL defaults: Lua scripts, pub/sub wake-ups"
    async_note = "native (redis.asyncio, at most 64 connections)"

    def url(self) -> str:
        return self.stores.redis

    def reset(self) -> None:
        self.close()
        stores.redis_flush(self.stores)

    def cleanup(self) -> None:
        self.reset()


class QwMongo(QwDriver):
    store = "mongodb"
    _DB: ClassVar[str] = "qw_bench"

    def url(self) -> str:
        return self.stores.mongodb or ""

    def unavailable(self) -> str | None:
        if not self.stores.mongodb:
            return "no MongoDB server given (set QW_BENCH_MONGODB_URL)"
        return super().unavailable()

    def reset(self) -> None:
        self.close()
        import pymongo  # type: ignore[import-not-found,unused-ignore]

        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(self.url())
        try:
            db = client.get_default_database(default=self._DB)
            if not db.name.startswith("qw_bench"):
                raise ValueError(
                    f"QW_BENCH_MONGODB_URL must name a qw_bench* database, not {db.name}"
                )
            client.drop_database(db.name)
        finally:
            client.close()

    def cleanup(self) -> None:
        self.reset()
        shutil.rmtree(self.workdir, ignore_errors=True)


class _AsyncProducer:
    def __init__(self, client: qw.AsyncClient) -> None:
        self._client = client

    async def enqueue(self, index: int) -> None:
        from qw.app import task_payload
        from qw.model import NewJob

        await self._client.enqueue([NewJob(QUEUE, task_payload(TASK, [index]))])

    async def count(self) -> int:
        counts = await self._client.counts()
        return sum(counts.get(QUEUE, {}).values())

    async def close(self) -> None:
        await self._client.aclose()
