"""Per-job cost of a qw drain: ``python -m bench.profile_drain --store postgres -n 20000 -c 4``.

Not a phase of the bench: a repeatable harness for work on the worker's
per-job path (issue 16). It enqueues N no-op jobs in a fresh namespace,
runs a real :class:`qw.Worker` in this process until every job's terminal
write committed, and reports jobs/s (first claim to last commit) and this
process's CPU per job (``time.process_time`` over the drain: every worker
thread, i.e. the Python cost the store server does not pay). The server's
own CPU is not in it; on 2 shared cores both compete, hence µs/job matters
more than jobs/s. ``--profile cprofile`` profiles the drain in every
thread (one profiler per thread, merged; cProfile inflates small calls,
so use it to rank, and the plain run's µs/job to judge).
For instruction counts run it under ``valgrind --tool=callgrind``.

Stores: ``sqlite`` (a temporary file), ``postgres`` (``QW_PG_URL``, default
db ``test`` on 127.0.0.1), ``redis`` (``QW_REDIS_URL``, default DB 0);
each run uses its own namespace and purges it afterwards.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import qw
from qw.app import task_payload
from qw.model import Job, JobStatus, NewJob
from qw.plugin import hookimpl
from qw.plugin.manager import QwPluginManager

QUEUE = "prof"
TASK = "prof.noop"
URLS = {
    "postgres": os.environ.get("QW_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    "redis": os.environ.get("QW_REDIS_URL", "redis://127.0.0.1:6379/0"),
}


class _Stop:
    """Stops the worker once ``target`` jobs succeeded; notes the first claim and last commit."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.done = 0
        self.first: float | None = None
        self.last: float | None = None
        self.cpu_first: float | None = None
        self.cpu_last: float | None = None
        self.worker: qw.Worker | None = None

    @hookimpl
    def qw_job_claimed(self, job: Job) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()

    @hookimpl
    def qw_job_finished(self, job: Job, status: JobStatus) -> None:
        self.done += 1
        if self.done == self.target:
            self.last = time.perf_counter()
            self.cpu_last = time.process_time()
            assert self.worker is not None
            self.worker.request_stop()


def _url(store: str, tmp: Path) -> str:
    if store == "sqlite":
        return f"sqlite:///{tmp / 'prof.db'}"
    return URLS[store]


def _plugins(stop: _Stop, with_logging: bool) -> QwPluginManager:
    plugins = QwPluginManager()
    if with_logging:
        # What a plain qw-core install runs (as the bench's baseline()).
        import qw.plugins.logging

        plugins.register(qw.plugins.logging, name="logging")
    plugins.register(stop, name="prof.stop")
    return plugins


def drain(
    store: str,
    n: int,
    concurrency: int,
    *,
    profile: str | None,
    with_logging: bool,
    prefetch: int | None = None,
) -> dict[str, Any]:
    """One drain of ``n`` no-op jobs; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        url = _url(store, Path(tmp))
        namespace = f"prof{secrets.token_hex(4)}"
        client = qw.open(url, namespace=namespace, plugins=QwPluginManager())
        try:
            app = qw.App(client=client)

            @app.task(name=TASK, queue=QUEUE, max_attempts=3)
            def noop(index: int) -> None:
                return None

            jobs = [NewJob(QUEUE, task_payload(TASK, [i])) for i in range(n)]
            for start in range(0, n, 1000):
                client.enqueue(jobs[start : start + 1000])
            stop = _Stop(n)
            worker = qw.Worker(
                app,
                qw.WorkerConfig(queues=(QUEUE,), concurrency=concurrency, prefetch=prefetch),
                plugins=_plugins(stop, with_logging),
                load_plugins=False,
            )
            stop.worker = worker
            profilers = _start_profiler(profile)
            _callgrind("on")
            worker.run(handle_signals=False)
            _callgrind("off")
            _stop_profiler(profilers, 45)
            if stop.last is None or stop.first is None:
                raise RuntimeError(f"the worker stopped after {stop.done} of {n} jobs")
            assert stop.cpu_first is not None
            assert stop.cpu_last is not None
            wall = stop.last - stop.first
            cpu = stop.cpu_last - stop.cpu_first
            return {"jobs_s": n / wall, "cpu_us": cpu / n * 1e6, "stats": worker.stats}
        finally:
            try:
                client.purge(0)
            finally:
                client.close()


def _callgrind(state: str) -> None:
    """Turn callgrind's instrumentation on or off, when this process runs under it.

    ``QW_PROF_CALLGRIND=1 valgrind --tool=callgrind --instr-atstart=no python -m
    bench.profile_drain ...`` then counts the drain's instructions only (enqueue and
    start-up excluded); ``Collected`` / N is instructions per job, free of
    the machine's load (threads are serialised, so batch sizes differ from
    a real run's: compare such counts with each other only).
    """
    if os.environ.get("QW_PROF_CALLGRIND"):
        import subprocess

        subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True)


def _start_profiler(kind: str | None) -> list[Any] | None:
    """cProfile in this thread and in every thread started from now on (each its own)."""
    if kind is None:
        return None
    import cProfile

    profilers: list[cProfile.Profile] = []

    def boot(*_: object) -> None:
        # Called once as a new thread's first profile event: swap in a profiler.
        sys.setprofile(None)
        profiler = cProfile.Profile()
        profilers.append(profiler)
        profiler.enable()

    threading.setprofile(boot)
    main = cProfile.Profile()
    profilers.append(main)
    main.enable()
    return profilers


def _stop_profiler(profilers: list[Any] | None, top: int) -> None:
    if profilers is None:
        return
    import pstats

    threading.setprofile(None)
    profilers[0].disable()
    stats = pstats.Stats(profilers[0])
    for profiler in profilers[1:]:
        stats.add(profiler)
    stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="postgres", help="sqlite, postgres, redis (comma list)")
    parser.add_argument("-n", type=int, default=20000, help="jobs per drain")
    parser.add_argument("-c", default="4", help="concurrency (comma list)")
    parser.add_argument("-r", "--repeat", type=int, default=3, help="drains per setting")
    parser.add_argument("--profile", choices=["cprofile"], help="cProfile every thread")
    parser.add_argument(
        "--no-logging", action="store_true", help="without qw-core's logging plugin"
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        help="a fixed prefetch (default adaptive): fixed batches keep counts comparable",
    )
    args = parser.parse_args(argv)
    for store in args.store.split(","):
        for c in (int(x) for x in args.c.split(",")):
            runs = [
                drain(
                    store,
                    args.n,
                    c,
                    profile=args.profile,
                    with_logging=not args.no_logging,
                    prefetch=args.prefetch,
                )
                for _ in range(args.repeat)
            ]
            rates = [r["jobs_s"] for r in runs]
            cpus = [r["cpu_us"] for r in runs]
            print(
                f"{store} c={c} n={args.n}: jobs/s "
                + " ".join(f"{x:,.0f}" for x in rates)
                + f" (median {statistics.median(rates):,.0f}); CPU µs/job "
                + " ".join(f"{x:.1f}" for x in cpus)
                + f" (min {min(cpus):.1f}); load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
