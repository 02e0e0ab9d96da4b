"""The scale phase (issue 16): a huge backlog, a long soak, the store's size, purge.

Run on its own (``python -m bench.run scale [--quick] [options]``, through
nox ``nox -s bench -- scale``), not in the default run: at full size it
takes most of an hour. Results go to ``bench/results/<name>.{json,md,png}``
(``bench-scale`` by default), rewritten after each store, so a run cut short
keeps what finished.

* **backlog**: ``Client.claim(limit=1)`` latency (each claimed job then
  completed, as the backlog phase does) on an empty queue, then with
  ``backlog`` jobs queued (10,000,000; quick 100,000), filled by bulk
  enqueues of 1,000; fill rate, and the store's size with the backlog.
  Goal: p50 with the backlog ≤ :data:`GOAL_RATIO` x the empty queue's.
* **soak**: the real worker process (as the drains start it) at full speed
  for ``soak_s`` seconds, fed by a producer here that keeps between
  ``depth_low`` and ``depth_high`` jobs queued; the worker's RSS
  (``/proc/<pid>/status`` VmRSS) every second. Goal: RSS flat (see
  :func:`summarize_soak`). Then the producer stops, the worker drains what
  is left and stops, and the finished jobs give the store's size per
  million finished jobs, and the time ``Client.purge(0)`` takes to remove
  them, with the size after it (and after VACUUM, PostgreSQL and SQLite).

Each store's part runs as ``python -m bench.scale phase SPEC`` in a process
group of its own with a deadline (``bench.run.run_phase``). PostgreSQL uses
a database of its own (:data:`PG_DB`), so that a bench run elsewhere that
recreates ``qw_bench`` cannot drop it midway.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import probe, stores
from bench.config import ROOT, Stores
from bench.drivers.qw_driver import QwDriver, QwPostgres, QwRedis, QwSqlite
from bench.spawn import answer, run_in_group
from bench.stats import percentile
from bench.tables import fmt, load_span, phase_result

__all__ = [
    "GOAL_DRIFT",
    "GOAL_RATIO",
    "GOAL_SLOPE_MB_MIN",
    "Sizes",
    "goals",
    "main",
    "markdown",
    "slope_per_min",
    "summarize_soak",
    "write",
]

#: Claim p50 with the backlog at most this many times the empty queue's.
GOAL_RATIO = 2.0
#: RSS flat: the least-squares slope after warm-up below this (MB per minute) ...
GOAL_SLOPE_MB_MIN = 1.0
#: ... and the last tenth of the soak within this fraction of the second tenth.
GOAL_DRIFT = 0.05
#: The stores of each part, by default.
BACKLOG_SYSTEMS = ("qw-redis", "qw-postgres", "qw-sqlite")
SOAK_SYSTEMS = ("qw-postgres", "qw-redis")
PARTS = ("backlog", "soak")
#: The PostgreSQL database of this phase (``qw_bench*``, as the harness may drop).
PG_DB = "qw_bench_scale"
#: Another ``qw_bench*`` name for it (the harness refuses any other).
PG_DB_ENV = "QW_BENCH_SCALE_PG_DB"
#: Bulk enqueue size: qw's documented bulk path, ``Client.enqueue(list)``.
BULK = 1000
#: Free memory / disk kept beyond what a backlog's fill is projected to need.
MARGIN = 3 * 1024**3
MB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Sizes:
    """Backlog size and claims per case; the soak's length, concurrency and queue depth."""

    backlog: int
    samples: int
    soak_s: float
    concurrency: int
    depth_low: int
    depth_high: int

    @classmethod
    def of(cls, *, quick: bool, **given: Any) -> Sizes:
        default = (
            cls(100_000, 50, 60.0, 4, 5_000, 10_000)
            if quick
            else cls(10_000_000, 200, 600.0, 4, 50_000, 100_000)
        )
        sizes = replace(default, **{k: v for k, v in given.items() if v is not None})
        if (
            sizes.backlog < BULK
            or sizes.samples < 5
            or sizes.soak_s < 5
            or sizes.concurrency < 1
            or not BULK <= sizes.depth_low < sizes.depth_high
        ):
            raise ValueError(f"scale phase: bad sizes {sizes}")
        return sizes

    def timeout(self, part: str) -> float:
        """Seconds a store's part may take (generous: a hung store, not a slow one)."""
        if part == "backlog":
            # A fill floor of 2,000 jobs/s.
            return 600.0 + self.backlog / 2000.0
        # The soak, then draining the rest, purge and VACUUM.
        return self.soak_s + 1200.0


# -- the drivers: qw's, on databases of this phase ----------------------------


class ScalePostgres(QwPostgres):
    @property
    def db(self) -> str:
        # Two invocations at once (one per part) need a database each.
        return os.environ.get(PG_DB_ENV, PG_DB)

    def url(self) -> str:
        return self.stores.postgres_db(self.db)

    def reset(self) -> None:
        self.close()
        stores.pg_recreate(self.stores, self.db)

    def cleanup(self) -> None:
        self.close()
        stores.pg_drop(self.stores, self.db)


class ScaleRedis(QwRedis):
    def cleanup(self) -> None:
        # FLUSHDB of millions of keys blocks the (shared) server for seconds;
        # ASYNC frees them in a background thread.
        self.close()
        client = _redis(self)
        try:
            if int(client.connection_pool.connection_kwargs.get("db", 0)) == 0:
                raise ValueError("refusing to flush Redis DB 0")
            client.flushdb(asynchronous=True)
        finally:
            client.close()


DRIVERS: dict[str, type[QwDriver]] = {
    "qw-sqlite": QwSqlite,
    "qw-postgres": ScalePostgres,
    "qw-redis": ScaleRedis,
}


def _redis(driver: QwDriver) -> Any:
    import redis

    return redis.Redis.from_url(driver.stores.redis)


# -- the store's size ---------------------------------------------------------


def store_size(driver: QwDriver) -> dict[str, Any]:
    """What the store holds now: ``bytes`` is the figure compared (see the README)."""
    if isinstance(driver, QwSqlite):
        return _sqlite_size(driver.workdir / "qw.db")
    if isinstance(driver, QwPostgres):
        return _pg_size(driver.url())
    return _redis_size(driver)


def _sqlite_size(path: Path) -> dict[str, Any]:
    import sqlite3

    files = {p.name: p.stat().st_size for p in path.parent.glob(path.name + "*")}
    out: dict[str, Any] = {"bytes": sum(files.values()), "files": files}
    if path.exists():
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for pragma in ("page_size", "page_count", "freelist_count"):
                out[pragma] = conn.execute(f"PRAGMA {pragma}").fetchone()[0]
        finally:
            conn.close()
    return out


def _pg_size(url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%'"
        ).fetchall()
        db = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    tables = {str(name): int(size) for name, size in rows}
    return {
        # Tables with their indexes and TOAST: qw's own data, not the catalog.
        "bytes": sum(tables.values()),
        "tables": dict(sorted(tables.items(), key=lambda kv: -kv[1])),
        "database_bytes": int(db[0]) if db else None,
    }


def _redis_size(driver: QwDriver, most: int = 10_000) -> dict[str, Any]:
    client = _redis(driver)
    try:
        info = client.info("memory")
        dbsize = int(client.dbsize())
        # qw-redis keeps a namespace in a few large keys (a hash per field, a
        # few sorted sets), so every key of the DB is measured; MEMORY USAGE
        # samples 100 elements of each large one (SAMPLES 0 would walk
        # millions of fields and block the shared server).
        keys = [k for _, k in zip(range(most), client.scan_iter(count=1000), strict=False)]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=100)
        usage = {k.decode(): int(u) for k, u in zip(keys, pipe.execute(), strict=True) if u}
        return {
            # This DB's keys (other users of the server do not move it).
            "bytes": sum(usage.values()),
            "keys": dbsize,
            "largest_keys": dict(sorted(usage.items(), key=lambda kv: -kv[1])[:8]),
            # Server-wide, every DB: other users of the server move it too.
            "used_memory": int(info["used_memory"]),
            "used_memory_rss": int(info["used_memory_rss"]),
            "maxmemory": int(info.get("maxmemory", 0)),
        }
    finally:
        client.close()


def _used_memory_per_million(
    before: dict[str, Any], after: dict[str, Any], jobs: int
) -> dict[str, float]:
    """Redis: the server's ``used_memory`` growth per million jobs (empty elsewhere)."""
    if "used_memory" not in before:
        return {}
    return {"used_memory_per_million": (after["used_memory"] - before["used_memory"]) / jobs * 1e6}


def _free_room(driver: QwDriver) -> tuple[int, str]:
    """Bytes the store may still grow by, and what bounds it."""
    if isinstance(driver, QwRedis):
        client = _redis(driver)
        try:
            info = client.info("memory")
        finally:
            client.close()
        if int(info.get("maxmemory", 0)):
            return int(info["maxmemory"]) - int(info["used_memory"]) - MARGIN, "maxmemory"
        return _mem_available() - MARGIN, "MemAvailable"
    where = driver.workdir if isinstance(driver, QwSqlite) else Path("/var/lib/postgresql")
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = shutil.disk_usage("/").free
    return free - MARGIN, f"free disk at {where}"


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MiB (psutil is not in the bench venv), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


# -- backlog ------------------------------------------------------------------


def backlog(driver: QwDriver, sizes: Sizes, deadline: float) -> dict[str, Any]:
    """Claim latency on an empty queue, then with ``sizes.backlog`` queued; fill rate, size."""
    n, k = sizes.backlog, sizes.samples
    driver.reset()
    empty: list[float] = []
    for i in range(k):
        driver.enqueue(range(i, i + 1), 1)
        empty += driver.claim_latencies(1)
    driver.reset()
    base = store_size(driver)
    # After this many jobs the store's growth per job is known: refuse a fill
    # that would not fit (a Redis without maxmemory would take the machine).
    probe_at = min(n, 100_000)
    every = max(BULK, n // 10 // BULK * BULK)
    checkpoints: list[tuple[int, float]] = []
    # Claim p50 along the way (each tenth), off the fill's clock; the jobs
    # those claims take are enqueued again at the end, so that n are queued.
    by_depth: list[tuple[int, float]] = []
    taken, paused = 0, 0.0
    t0 = shown = time.perf_counter()
    for start in range(0, n, BULK):
        stop = min(start + BULK, n)
        driver.enqueue(range(start, stop), BULK)
        now = time.perf_counter()
        if stop % every == 0 or stop == n:
            checkpoints.append((stop, now - t0 - paused))
            if stop < n:
                some = driver.claim_latencies(max(5, k // 10))
                by_depth.append((stop - taken, percentile(some, 50) * 1e3))
                taken += len(some)
                paused += time.perf_counter() - now
        # Checked again at each tenth: another run on the machine may be growing too.
        if stop == probe_at or (stop > probe_at and stop % every == 0 and stop < n):
            grown = store_size(driver)["bytes"] - base["bytes"]
            need = grown / stop * (n - stop)
            room, bound = _free_room(driver)
            print(f"    {driver.id}: {grown / stop:,.0f} B/job; {n:,} need ~{need / 1e9:.1f} GB")
            if need > room:
                raise RuntimeError(
                    f"{n:,} jobs would need ~{need / 1e9:.1f} GB more ({grown / stop:,.0f} B "
                    f"per job), {bound} leaves {room / 1e9:.1f} GB"
                )
        if now - shown > 10:
            shown = now
            print(f"    {driver.id}: {stop:,}/{n:,} enqueued, {stop / (now - t0):,.0f}/s")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{stop:,}/{n:,} enqueued at the deadline")
    fill_s = time.perf_counter() - t0 - paused
    driver.enqueue(range(n, n + taken), BULK)
    full_size = store_size(driver)
    full = driver.claim_latencies(k)
    driver.close()
    e50, b50 = percentile(empty, 50) * 1e3, percentile(full, 50) * 1e3
    rates = [
        (c1 - c0) / (t1 - t0)
        for (c0, t0), (c1, t1) in zip([(0, 0.0), *checkpoints], checkpoints, strict=False)
        if t1 > t0
    ]
    result = {
        "backlog": n,
        "samples": k,
        "bulk": BULK,
        "fill_s": fill_s,
        "fill_jobs_per_s": n / fill_s,
        "fill_checkpoints": checkpoints,
        "fill_first_rate": rates[0] if rates else None,
        "fill_last_rate": rates[-1] if rates else None,
        "empty_p50_ms": e50,
        "empty_p99_ms": percentile(empty, 99) * 1e3,
        "backlog_p50_ms": b50,
        "backlog_p99_ms": percentile(full, 99) * 1e3,
        "ratio_p50": b50 / e50 if e50 > 0 else math.nan,
        "p50_ms_by_depth": [[0, e50], *by_depth, [n, b50]],
        "size_empty": base,
        "size_full": full_size,
        "bytes_per_million": (full_size["bytes"] - base["bytes"]) / n * 1e6,
        **_used_memory_per_million(base, full_size, n),
    }
    print(f"    {driver.id}: claim p50 empty {e50:.2f} ms, {n:,} queued {b50:.2f} ms")
    return result


# -- soak ---------------------------------------------------------------------


def slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per minute (NaN: too few times)."""
    if len(points) < 2:
        return math.nan
    mt = sum(t for t, _ in points) / len(points)
    mv = sum(v for _, v in points) / len(points)
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return math.nan
    cov = sum((t - mt) * (v - mv) for t, v in points)
    return cov / var * 60.0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarize_soak(samples: Sequence[Sequence[float]], soak_s: float) -> dict[str, Any]:
    """RSS and throughput figures of one soak from its per-second samples.

    ``samples`` are ``(t_s, rss_mb, jobs_started)`` from the worker's start.
    The soak is cut in tenths (a minute each for 10 minutes): the slope is
    fitted over the last eight (after two of warm-up), the drift is the last
    tenth's mean RSS against the second's. Flat: slope below
    :data:`GOAL_SLOPE_MB_MIN` and ``|drift|`` at most :data:`GOAL_DRIFT`.
    """
    tenth = soak_s / 10.0
    inside = [s for s in samples if s[0] <= soak_s]
    fit = [(s[0], s[1]) for s in inside if s[0] >= 2 * tenth]
    second = [s[1] for s in inside if tenth <= s[0] < 2 * tenth]
    last = [s[1] for s in inside if s[0] >= soak_s - tenth]
    slope = slope_per_min(fit)
    m2, mlast = _mean(second), _mean(last)
    drift = mlast / m2 - 1.0 if m2 > 0 else math.nan

    def started_by(t: float) -> float:
        # Jobs started by time t: the last sample at or before it (none started at 0).
        return max((s[2] for s in inside if s[0] <= t), default=0)

    windows = [(started_by((i + 1) * tenth) - started_by(i * tenth)) / tenth for i in range(10)]
    jobs = inside[-1][2] if inside else 0
    flat = (
        not math.isnan(slope)
        and not math.isnan(drift)
        and slope < GOAL_SLOPE_MB_MIN
        and abs(drift) <= GOAL_DRIFT
    )
    rss = [s[1] for s in inside]
    return {
        "slope_mb_per_min": slope,
        "fit_points": len(fit),
        "rss_second_tenth_mb": m2,
        "rss_last_tenth_mb": mlast,
        "rss_first_mb": rss[0] if rss else math.nan,
        "rss_max_mb": max(rss, default=math.nan),
        "drift": drift,
        "jobs_per_s_by_tenth": windows,
        "jobs_started": jobs,
        "jobs_per_s": jobs / soak_s if soak_s else math.nan,
        "flat": flat,
    }


def _check_probe(directory: Path, n: int) -> dict[str, int]:
    """Lines, duplicates, missing and stray indexes of the soak's probe files (0..n-1)."""
    seen = bytearray(n)
    lines = dup = stray = 0
    for path in directory.glob(f"*.{probe.START}"):
        for line in path.read_bytes().split(b"\n"):
            if not line:
                continue
            i = int(line.split(b" ", 1)[0])
            lines += 1
            if not 0 <= i < n:
                stray += 1
            elif seen[i]:
                dup += 1
            else:
                seen[i] = 1
    return {"ran": lines, "duplicates": dup, "stray": stray, "missing": n - seen.count(1)}


def soak(driver: QwDriver, sizes: Sizes, deadline: float) -> dict[str, Any]:
    """The worker for ``soak_s`` s under a bounded queue; then size per million and purge."""
    driver.reset()
    base = store_size(driver)
    enqueued = 0

    def fill(to: int) -> None:
        nonlocal enqueued
        while enqueued < to:
            driver.enqueue(range(enqueued, enqueued + BULK), BULK)
            enqueued += BULK

    fill(sizes.depth_high)
    samples: list[tuple[float, float, int]] = []
    started = [0]
    halt = threading.Event()
    depths: list[int] = []
    with tempfile.TemporaryDirectory(prefix="qw-bench-scale-") as tmp:
        probe_dir = Path(tmp)
        workers = driver.start(sizes.concurrency, probe_dir, drain=None)
        pid = workers.procs[0].pid
        counter = probe.Counter(probe_dir)
        lock = threading.Lock()
        t0 = time.monotonic()

        def count() -> int:
            # Both threads read the probe files (the producer for the depth).
            with lock:
                started[0] = counter()
                return started[0]

        def sample() -> None:
            # One sample a second, on a schedule (not drifting with the reads).
            tick = t0
            while not halt.is_set():
                done = count()
                rss = rss_mb(pid)
                if rss is not None:
                    at = time.monotonic() - t0
                    samples.append((at, rss, done))
                    if sizes.soak_s / 10 <= at <= sizes.soak_s:
                        # While the producer runs (the drain-out at the end empties the queue).
                        depths.append(enqueued - done)
                tick += 1.0
                halt.wait(max(0.0, tick - time.monotonic()))

        sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        sampler.start()
        try:
            shown = t0
            while (now := time.monotonic()) - t0 < sizes.soak_s:
                if msg := workers.failed():
                    raise RuntimeError(msg)
                depth = enqueued - count()
                if depth < sizes.depth_low:
                    fill(enqueued + (sizes.depth_high - depth) // BULK * BULK)
                else:
                    time.sleep(0.05)
                if now - shown > 30:
                    shown = now
                    room, bound = _free_room(driver)
                    if room < 0:
                        # Redis keeps every finished job in memory: stop before it runs out.
                        raise RuntimeError(f"stopped at {now - t0:.0f} s: {bound} nearly used up")
                    rss = f"{samples[-1][1]:.1f}" if samples else "?"
                    print(
                        f"    {driver.id}: {now - t0:.0f} s, {started[0]:,} started, "
                        f"depth {depth:,}, RSS {rss} MB"
                    )
            soak_end = time.monotonic() - t0
            # The producer stopped: the worker drains what is left (all finished).
            while count() < enqueued:
                if msg := workers.failed():
                    raise RuntimeError(msg)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{started[0]:,}/{enqueued:,} started at the deadline")
                time.sleep(0.2)
        finally:
            driver.halt(workers)
            halt.set()
            sampler.join()
        check = _check_probe(probe_dir, enqueued)
    succeeded = driver.succeeded() or 0
    summary = summarize_soak(samples, sizes.soak_s)
    exactly_once = (
        check["ran"] == enqueued and check["duplicates"] == check["missing"] == check["stray"] == 0
    ) and succeeded == enqueued
    result: dict[str, Any] = {
        "soak_s": sizes.soak_s,
        "concurrency": sizes.concurrency,
        "depth": [sizes.depth_low, sizes.depth_high],
        # The least queued at a sample from the first tenth to the end of the soak
        # (0: the worker may have waited for the producer).
        "min_depth": min(depths, default=None),
        "drained_at_s": soak_end,
        "enqueued": enqueued,
        "succeeded": succeeded,
        **check,
        "exactly_once": exactly_once,
        **summary,
        "samples": [[round(t, 2), round(r, 2), j] for t, r, j in samples],
    }
    print(
        f"    {driver.id}: {summary['jobs_per_s']:,.0f} jobs/s, RSS slope "
        f"{summary['slope_mb_per_min']:.3f} MB/min, drift {summary['drift']:+.1%}"
    )
    if not exactly_once:
        raise RuntimeError(f"soak check failed: {check}, store succeeded={succeeded}")
    result["size"] = finished_size(driver, base, succeeded)
    return result


def finished_size(driver: QwDriver, base: dict[str, Any], finished: int) -> dict[str, Any]:
    """The store's size with ``finished`` jobs done, ``purge(0)``'s time, the size after it."""
    full = store_size(driver)
    out: dict[str, Any] = {
        "finished": finished,
        "empty": base,
        "full": full,
        "bytes_per_million": (full["bytes"] - base["bytes"]) / finished * 1e6,
        **_used_memory_per_million(base, full, finished),
    }
    t0 = time.perf_counter()
    purged = driver.client().purge(0.0)
    out["purge_s"] = time.perf_counter() - t0
    out["purged_jobs"], out["purged_events"] = purged.jobs, purged.events
    out["after_purge"] = store_size(driver)
    driver.close()
    if isinstance(driver, QwPostgres):
        import psycopg

        with psycopg.connect(driver.url(), autocommit=True) as conn:
            t0 = time.perf_counter()
            conn.execute("VACUUM")
            out["vacuum_s"] = time.perf_counter() - t0
            out["after_vacuum"] = _pg_size(driver.url())
            t0 = time.perf_counter()
            conn.execute("VACUUM FULL")
            out["vacuum_full_s"] = time.perf_counter() - t0
        out["after_vacuum_full"] = _pg_size(driver.url())
    elif isinstance(driver, QwSqlite):
        import sqlite3

        lite = sqlite3.connect(driver.workdir / "qw.db", isolation_level=None)
        try:
            t0 = time.perf_counter()
            lite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            lite.execute("VACUUM")
            lite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            out["vacuum_s"] = time.perf_counter() - t0
        finally:
            lite.close()
        out["after_vacuum"] = _sqlite_size(driver.workdir / "qw.db")
    print(
        f"    {driver.id}: {finished:,} finished = {out['bytes_per_million'] / MB:,.0f} MB/M; "
        f"purge {out['purge_s']:.1f} s"
    )
    return out


# -- one part of one store, in its own process --------------------------------


def phase(spec: dict[str, Any]) -> dict[str, Any]:
    s = spec["sizes"]
    sizes = Sizes(**s)
    driver = DRIVERS[spec["driver"]](Stores.from_env(Path(spec["workdir"])))
    deadline = time.monotonic() + float(spec["timeout"]) - 10.0
    try:
        if spec["phase"] == "backlog":
            return backlog(driver, sizes, deadline)
        if spec["phase"] == "soak":
            return soak(driver, sizes, deadline)
        raise ValueError(f"unknown scale phase {spec['phase']!r}")
    finally:
        driver.cleanup()


def phase_main(arg: str) -> int:
    spec = json.loads(arg)
    return answer(lambda: phase(spec))


# -- goals and the report -------------------------------------------------------


def goals(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per store and goal: claim p50 within 2x with the backlog, worker RSS flat."""
    rows: list[dict[str, Any]] = []
    for system, entry in data.get("backlog", {}).items():
        r = phase_result(entry)
        goal = f"claim p50 with the backlog ≤ {GOAL_RATIO:g}x the empty queue's ({system})"
        if r is None:
            rows.append({"goal": goal, "status": "FAIL", "detail": str(entry.get("error"))})
            continue
        ok = r["ratio_p50"] <= GOAL_RATIO
        detail = (
            f"{r['backlog_p50_ms']:.3f} ms with {r['backlog']:,} queued vs "
            f"{r['empty_p50_ms']:.3f} ms empty: {r['ratio_p50']:.2f}x"
        )
        rows.append({"goal": goal, "status": "PASS" if ok else "FAIL", "detail": detail})
    for system, entry in data.get("soak", {}).items():
        r = phase_result(entry)
        goal = (
            f"worker RSS flat: slope < {GOAL_SLOPE_MB_MIN:g} MB/min, last tenth within "
            f"{GOAL_DRIFT:.0%} of the second ({system})"
        )
        if r is None:
            rows.append({"goal": goal, "status": "FAIL", "detail": str(entry.get("error"))})
            continue
        detail = (
            f"slope {r['slope_mb_per_min']:+.3f} MB/min, {r['rss_second_tenth_mb']:.1f} → "
            f"{r['rss_last_tenth_mb']:.1f} MB ({r['drift']:+.1%})"
        )
        rows.append({"goal": goal, "status": "PASS" if r["flat"] else "FAIL", "detail": detail})
    return rows


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:,.1f}"


def markdown(data: dict[str, Any]) -> str:
    """The report: machine and sizes, the goals, then a table per part."""
    m, z = data["machine"], data["sizes"]
    lines = [
        f"# qw bench '{data['name']}': scale (issue 16)",
        "",
        f"Machine: {m['cpu_count']} x {m['cpu_model']}, {m.get('memory_gib')} GiB, "
        f"Python {m['python']}; PostgreSQL {m['postgresql']}; Redis {m['redis']}.",
        f"Sizes: backlog {z['backlog']:,} (bulk enqueues of {BULK:,}), {z['samples']} claims "
        f"per case; soak {z['soak_s']:g} s at concurrency {z['concurrency']}, queue kept "
        f"between {z['depth_low']:,} and {z['depth_high']:,}.",
        "",
        "Each store's part ran in its own process; the load average (1 min) at its start "
        "and end is in its row: the machine has 2 CPUs, shared. The invocations merged into "
        "this report (those started together ran at the same time, sharing the machine):",
        "",
        *(f"- {r.get('started', '?')}: `{' '.join(r.get('argv', []))}`" for r in data["runs"]),
        "",
        "## Goals",
        "",
        "| goal | status | detail |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {g['goal']} | {g['status']} | {g['detail']} |" for g in goals(data)]
    lines += [
        "",
        "## Claim latency with the backlog",
        "",
        "| store | queued | fill s | fill jobs/s (first / last tenth) | claim p50 / p99 ms, "
        "empty | with the backlog | ratio p50 | store size, MB per million queued | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for system, entry in data.get("backlog", {}).items():
        r = phase_result(entry)
        if r is None:
            lines.append(f"| {system} | failed: {entry.get('error')} | | | | | | | |")
            continue
        lines.append(
            f"| {system} | {r['backlog']:,} | {fmt(r['fill_s'], 0)} | "
            f"{fmt(r['fill_jobs_per_s'], 0)} ({fmt(r['fill_first_rate'], 0)} / "
            f"{fmt(r['fill_last_rate'], 0)}) | {fmt(r['empty_p50_ms'], 3)} / "
            f"{fmt(r['empty_p99_ms'], 3)} | {fmt(r['backlog_p50_ms'], 3)} / "
            f"{fmt(r['backlog_p99_ms'], 3)} | {fmt(r['ratio_p50'], 2)} | "
            f"{_per_million(r)} | {load_span(entry)} |"
        )
    curves = [
        f"- {system}: " + ", ".join(f"{q:,} queued {ms:.3f}" for q, ms in r["p50_ms_by_depth"])
        for system, entry in data.get("backlog", {}).items()
        if (r := phase_result(entry)) and "p50_ms_by_depth" in r
    ]
    if curves:
        lines += [
            "",
            "Claim p50 (ms) as the backlog fills (a tenth of the claims at each tenth; "
            "their jobs are enqueued again before the last measurement):",
            "",
            *curves,
        ]
    lines += [
        "",
        "## Soak: the worker's RSS",
        "",
        "| store | s | jobs/s (by tenth: first / min / last) | RSS MB: start, 2nd tenth, "
        "last tenth, max | slope MB/min (after 2 tenths) | drift | exactly once | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for system, entry in data.get("soak", {}).items():
        r = phase_result(entry)
        if r is None:
            lines.append(f"| {system} | failed: {entry.get('error')} | | | | | | |")
            continue
        w = [x for x in r["jobs_per_s_by_tenth"] if not math.isnan(x)] or [math.nan]
        lines.append(
            f"| {system} | {r['soak_s']:g} | {fmt(r['jobs_per_s'], 0)} ({fmt(w[0], 0)} / "
            f"{fmt(min(w), 0)} / {fmt(w[-1], 0)}) | {fmt(r['rss_first_mb'], 1)}, "
            f"{fmt(r['rss_second_tenth_mb'], 1)}, {fmt(r['rss_last_tenth_mb'], 1)}, "
            f"{fmt(r['rss_max_mb'], 1)} | {r['slope_mb_per_min']:+.3f} | {r['drift']:+.1%} | "
            f"{'yes' if r['exactly_once'] else 'NO'} ({r['ran']:,} ran) | {load_span(entry)} |"
        )
    lines += [
        "",
        "## Store size per million finished jobs, and purge",
        "",
        "| store | finished | size MB (empty → finished) | MB per million | purge s "
        "(jobs, events) | MB after purge | after VACUUM | after VACUUM FULL |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for system, entry in data.get("soak", {}).items():
        r = phase_result(entry)
        if r is None or "size" not in r:
            continue
        z2 = r["size"]
        vac = z2.get("after_vacuum")
        full = z2.get("after_vacuum_full")
        lines.append(
            f"| {system} | {z2['finished']:,} | {_mb(z2['empty']['bytes'])} → "
            f"{_mb(z2['full']['bytes'])} | {_per_million(z2)} | "
            f"{fmt(z2['purge_s'], 1)} ({z2['purged_jobs']:,}, {z2['purged_events']:,}) | "
            f"{_mb(z2['after_purge']['bytes'])} | "
            f"{_mb(vac['bytes']) if vac else '-'} | {_mb(full['bytes']) if full else '-'} |"
        )
    lines += [
        "",
        "Sizes: PostgreSQL, `pg_total_relation_size` summed over qw's tables (indexes and "
        "TOAST included); Redis, `MEMORY USAGE` (100 elements sampled per key) summed over "
        "the bench DB's keys, and in brackets the growth of the server's `used_memory` (every "
        "DB: other users of the shared server move it too); SQLite, the database file + WAL "
        "+ shm. The size with the jobs counts from the empty store. Purge removes finished "
        "jobs and acknowledged events: nothing consumes the outbox here, so the `job.succeeded` "
        "events stay (PostgreSQL's `events` table after VACUUM FULL). Per-store details (per "
        "table, the largest keys, free pages) are in the JSON.",
        "",
    ]
    return "\n".join(lines)


def _per_million(r: dict[str, Any]) -> str:
    text = _mb(r["bytes_per_million"])
    if "used_memory_per_million" in r:
        text += f" (used_memory: {_mb(r['used_memory_per_million'])})"
    return text


def chart(data: dict[str, Any], path: Path) -> bool:
    """RSS and jobs/s over each soak, claim p50 by queued jobs; False if nothing to draw."""
    soaked = {
        s: r for s, e in data.get("soak", {}).items() if (r := phase_result(e)) and r["samples"]
    }
    filled = {
        s: r
        for s, e in data.get("backlog", {}).items()
        if (r := phase_result(e)) and "p50_ms_by_depth" in r
    }
    if not soaked and not filled:
        return False
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(18, 4.8))
    for system, r in soaked.items():
        ts = [s[0] for s in r["samples"]]
        ax1.plot(
            ts,
            [s[1] for s in r["samples"]],
            label=f"{system} ({r['slope_mb_per_min']:+.2f} MB/min)",
        )
        # Jobs started per 10 s window, plotted at the window's end.
        pairs = [(a, b) for a, b in itertools.pairwise(r["samples"][::10]) if b[0] > a[0]]
        rate = [(b[2] - a[2]) / (b[0] - a[0]) for a, b in pairs]
        ax2.plot([b[0] for _, b in pairs], rate, label=system)
    ax1.set_xlabel("s since the worker started")
    ax1.set_ylabel("worker RSS, MiB")
    ax1.set_title("Soak: the worker's RSS (VmRSS, every second)")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("s since the worker started")
    ax2.set_ylabel("jobs/s (10 s windows)")
    ax2.set_title("Soak: throughput")
    ax2.legend(fontsize=8)
    for system, r in filled.items():
        points = r["p50_ms_by_depth"]
        ax3.plot([q / 1e6 for q, _ in points], [p for _, p in points], marker="o", label=system)
    ax3.set_xlabel("jobs queued, millions")
    ax3.set_ylabel("claim(limit=1) p50, ms")
    ax3.set_title("Claim latency as the backlog fills")
    ax3.set_ylim(bottom=0)
    if filled:
        ax3.legend(fontsize=8)
    fig.suptitle(f"qw bench '{data['name']}': {data['machine']['cpu_count']} CPUs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(data: dict[str, Any], out_dir: Path, stem: str, *, merge: bool) -> list[Path]:
    """Write the JSON, the report and the chart; with ``merge``, keep other stores' results.

    The merge is under a lock, so that two invocations (one per part) can
    write into one report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md, png = (out_dir / f"{stem}{ext}" for ext in (".json", ".md", ".png"))
    # The lock file lives with the raw files (not committed).
    (out_dir / "raw").mkdir(exist_ok=True)
    with open(out_dir / "raw" / f"{stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if merge and js.exists():
            old = json.loads(js.read_text())
            for part in PARTS:
                data[part] = {**old.get(part, {}), **data.get(part, {})}
            runs = old.get("runs", [])
            data["runs"] = runs + [r for r in data["runs"] if r not in runs]
        js.write_text(json.dumps(data, indent=2, default=str) + "\n")
        text = markdown(data)
        paths = [js, md]
        if chart(data, png):
            text += f"\n![{stem}]({png.name})\n"
            paths.append(png)
        md.write_text(text)
    return paths


# -- the orchestrator ---------------------------------------------------------


def run_part(system: str, part: str, workdir: Path, sizes: Sizes) -> dict[str, Any]:
    """One part of one store as ``python -m bench.scale phase SPEC``, killed at its deadline."""
    timeout = sizes.timeout(part)
    spec = {
        "driver": system,
        "phase": part,
        "workdir": str(workdir),
        "timeout": timeout,
        "sizes": asdict(sizes),
    }
    return run_in_group(["bench.scale", "phase"], spec, timeout)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run scale", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="100,000 queued, a 60 s soak")
    p.add_argument("--parts", default=",".join(PARTS), help="backlog,soak (default both)")
    p.add_argument("--systems", help=f"backlog stores (default {','.join(BACKLOG_SYSTEMS)})")
    p.add_argument("--soak-systems", help=f"soak stores (default {','.join(SOAK_SYSTEMS)})")
    p.add_argument("--backlog", type=int, help="queued jobs (default 10,000,000; quick 100,000)")
    p.add_argument("--samples", type=int, help="claims per case (default 200; quick 50)")
    p.add_argument("--soak-s", type=float, help="soak seconds (default 600; quick 60)")
    p.add_argument("--soak-concurrency", type=int, help="the soak worker's concurrency (4)")
    p.add_argument("--soak-depth", help="LOW,HIGH jobs kept queued (default 50000,100000)")
    p.add_argument("--merge", action="store_true", help="keep other stores' results in the file")
    p.add_argument(
        "--name", help="results file stem (default bench-scale; quick bench-scale-quick)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return p.parse_args(list(argv))


def sizes_of(ns: argparse.Namespace) -> Sizes:
    low, high = (int(x) for x in ns.soak_depth.split(",")) if ns.soak_depth else (None, None)
    return Sizes.of(
        quick=ns.quick,
        backlog=ns.backlog,
        samples=ns.samples,
        soak_s=ns.soak_s,
        concurrency=ns.soak_concurrency,
        depth_low=low,
        depth_high=high,
    )


def main(argv: Sequence[str]) -> int:
    from bench import machine

    ns = parse(argv)
    sizes = sizes_of(ns)
    parts = [p.strip() for p in ns.parts.split(",") if p.strip()]
    chosen = {
        "backlog": ns.systems.split(",") if ns.systems else list(BACKLOG_SYSTEMS),
        "soak": ns.soak_systems.split(",") if ns.soak_systems else list(SOAK_SYSTEMS),
    }
    bad = [p for p in parts if p not in PARTS] + [
        s for p in parts for s in chosen[p] if s not in DRIVERS
    ]
    if bad:
        raise SystemExit(f"unknown parts or systems {bad}; parts {PARTS}, systems {list(DRIVERS)}")
    name = ns.name or ("bench-scale-quick" if ns.quick else "bench-scale")
    workdir = ns.out / "raw" / name
    workdir.mkdir(parents=True, exist_ok=True)
    described = machine.describe(Stores.from_env(workdir))
    data: dict[str, Any] = {
        "name": name,
        "sizes": asdict(sizes),
        "machine": described,
        "runs": [{"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": list(argv)}],
        "backlog": {},
        "soak": {},
    }
    failed = False
    for part in parts:
        for system in chosen[part]:
            log(f"{system}: {part} ({asdict(sizes)})")
            load_start = machine.load()
            entry = run_part(system, part, workdir, sizes)
            entry.update(load_start=load_start, load_end=machine.load())
            if not entry.get("ok"):
                failed = True
                log(f"{system}: {part} failed: {entry.get('error')}")
            data[part][system] = entry
            for path in write(data, ns.out, name, merge=ns.merge):
                log(f"wrote {path}")
            # A later write of this run keeps what this one merged in.
            ns.merge = True
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "phase":
        sys.exit(phase_main(sys.argv[2]))
    sys.exit(main(sys.argv[1:]))
