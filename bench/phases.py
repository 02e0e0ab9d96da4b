"""The measured phases, the same for every system: each returns a JSON-able dict.

* enqueue: one call per job, then bulk calls where the system documents them.
* drain: ``n`` jobs pre-enqueued, then the system's own workers at one
  setting (processes x concurrency x the system's knobs); jobs/s from the
  first task start (just after the first claim) to the last terminal write,
  and the check that exactly ``n`` ran, once each.
* wakeup: idle workers; jobs enqueued one at a time at random gaps; latency
  from just before the enqueue call to the task's first line.
* backlog (qw only): ``claim(limit=1)`` latency on an empty queue, then with
  a large backlog queued.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import probe
from bench.config import Plan, Setting
from bench.drivers.base import Driver, Unsupported, poll_until
from bench.stats import percentile

__all__ = ["backlog", "drain", "enqueue", "wakeup"]

#: Indexes of warm-up jobs (kept apart from measured ones).
WARMUP_BASE = 10_000_000


def _say(msg: str) -> None:
    print(f"    {msg}", file=sys.stderr, flush=True)


def enqueue(driver: Driver, plan: Plan) -> dict[str, Any]:
    """Jobs per second for single calls and for each bulk size."""
    results: dict[str, Any] = {}
    modes = [("single", 1, plan.enqueue_single)] + [
        (f"bulk{size}", size, plan.enqueue_bulk) for size in plan.bulk_sizes
    ]
    for label, size, count in modes:
        driver.reset()
        try:
            driver.enqueue(range(min(size, 10)), size)  # connect, create, warm caches
        except Unsupported as exc:
            results[label] = {"supported": False, "note": str(exc)}
            continue
        t0 = time.perf_counter()
        driver.enqueue(range(10, 10 + count), size)
        seconds = time.perf_counter() - t0
        results[label] = {
            "supported": True,
            "jobs": count,
            "batch": size,
            "seconds": seconds,
            "jobs_per_s": count / seconds,
        }
        _say(f"{driver.id} enqueue {label}: {count / seconds:,.0f} jobs/s")
    driver.close()
    driver.reset()
    return results


def drain(
    driver: Driver, n: int, concurrency: int, deadline: float, setting: Setting | None = None
) -> dict[str, Any]:
    """Throughput of the system's own workers over ``n`` pre-enqueued jobs.

    ``setting`` (default: one process at ``concurrency``) says how the workers run.
    """
    if setting is None:
        setting = Setting(str(concurrency), 1, concurrency)
    label = setting.label if setting.label != str(setting.concurrency) else f"c={concurrency}"
    driver.reset()
    t0 = time.perf_counter()
    driver.prefill(range(n))
    prefill_s = time.perf_counter() - t0
    driver.close()
    _say(f"{driver.id} {label}: {n} jobs enqueued in {prefill_s:.1f} s; draining")
    with tempfile.TemporaryDirectory(prefix="qw-bench-probe-") as tmp:
        probe_dir = Path(tmp)
        workers = driver.start_setting(setting, probe_dir, drain=n)
        try:
            end_ns = driver.wait_drained(workers, n, deadline)
        finally:
            driver.halt(workers)
        records = probe.read(probe_dir)
    store_count = driver.succeeded()
    driver.close()
    ran = Counter(r.index for r in records)
    start_ns = min((r.at_ns for r in records), default=end_ns)
    last_ns = max((r.at_ns for r in records), default=end_ns)
    # Secondary figure: the rate after the first 5% of jobs started, which
    # leaves out worker start-up staggering (multi-process peers start slowly).
    starts = sorted(r.at_ns for r in records)
    k = max(1, n // 20)
    steady = (n - k) / max((end_ns - starts[k]) / 1e9, 1e-9) if len(starts) > k else None
    seconds = max((end_ns - start_ns) / 1e9, 1e-9)
    duplicates = sum(c - 1 for c in ran.values() if c > 1)
    missing = sum(1 for i in range(n) if i not in ran)
    stray = sum(1 for i in ran if not 0 <= i < n)
    ok = len(records) == n and duplicates == 0 and missing == 0 and stray == 0
    if store_count is not None:
        ok = ok and store_count == n
    result = {
        "n": n,
        "concurrency": setting.concurrency,
        "setting": {
            "label": setting.label,
            "processes": setting.processes,
            "concurrency": setting.concurrency,
            "extra": setting.extra,
        },
        "seconds": seconds,
        "jobs_per_s": n / seconds,
        "steady_jobs_per_s": steady,
        "prefill_s": prefill_s,
        "tail_ms": (end_ns - last_ns) / 1e6,
        "ran": len(records),
        "unique": len(ran),
        "duplicates": duplicates,
        "missing": missing,
        "store_succeeded": store_count,
        "exactly_once": ok,
    }
    _say(
        f"{driver.id} {label}: {n / seconds:,.0f} jobs/s; ran={len(records)} "
        f"unique={len(ran)} store={store_count} exactly_once={ok}"
    )
    if not ok:
        raise RuntimeError(f"drain check failed: {result}")
    return result


def wakeup(driver: Driver, plan: Plan, deadline: float) -> dict[str, Any]:
    """Enqueue-to-start latency with idle workers."""
    driver.reset()
    rng = random.Random(7)
    samples = plan.wake_samples
    with tempfile.TemporaryDirectory(prefix="qw-bench-probe-") as tmp:
        probe_dir = Path(tmp)
        workers = driver.start(plan.wake_concurrency, probe_dir, drain=None)
        try:
            # Warm-up: the workers are up, connected and idle once these ran.
            driver.enqueue(range(WARMUP_BASE, WARMUP_BASE + 3), 1)
            poll_until(lambda: workers.ran() >= 3, deadline, interval=0.05, workers=workers)
            time.sleep(0.5)
            sent: dict[int, int] = {}
            for i in range(samples):
                time.sleep(rng.uniform(*plan.wake_gap_ms) / 1000.0)
                sent[i] = time.time_ns()
                driver.enqueue(range(i, i + 1), 1)
            poll_until(
                lambda: workers.ran() >= 3 + samples,
                deadline,
                interval=0.05,
                progress=driver.progress(workers, 3 + samples),
                workers=workers,
            )
        finally:
            driver.halt(workers)
            driver.close()
        records = probe.read(probe_dir)
    started = {r.index: r.at_ns for r in records if r.index < WARMUP_BASE}
    lat_ms = [(started[i] - sent[i]) / 1e6 for i in sent if i in started]
    result = {
        "samples": samples,
        "concurrency": plan.wake_concurrency,
        "gap_ms": list(plan.wake_gap_ms),
        "p50_ms": percentile(lat_ms, 50),
        "p99_ms": percentile(lat_ms, 99),
        "max_ms": max(lat_ms, default=float("nan")),
        "seen": len(lat_ms),
    }
    _say(f"{driver.id} wake-up: p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms")
    return result


def backlog(driver: Driver, plan: Plan) -> dict[str, Any]:
    """``claim(limit=1)`` latency, empty queue vs ``plan.backlog`` queued jobs (qw only)."""
    from bench.drivers.qw_driver import QwDriver

    if not isinstance(driver, QwDriver):
        raise Unsupported("the backlog phase measures qw only")
    driver.reset()
    k = plan.backlog_samples
    empty: list[float] = []
    for i in range(k):
        driver.enqueue(range(i, i + 1), 1)
        empty += driver.claim_latencies(1)
    driver.reset()
    t0 = time.perf_counter()
    step = 1000
    shown = t0
    for start in range(0, plan.backlog, step):
        driver.enqueue(range(start, min(start + step, plan.backlog)), step)
        if time.perf_counter() - shown > 5:
            shown = time.perf_counter()
            _say(f"{driver.id} backlog: {start + step:,}/{plan.backlog:,} enqueued")
    fill_s = time.perf_counter() - t0
    full = driver.claim_latencies(k)
    driver.close()
    driver.reset()
    e50, b50 = percentile(empty, 50) * 1e3, percentile(full, 50) * 1e3
    result = {
        "backlog": plan.backlog,
        "samples": k,
        "fill_s": fill_s,
        "empty_p50_ms": e50,
        "empty_p99_ms": percentile(empty, 99) * 1e3,
        "backlog_p50_ms": b50,
        "backlog_p99_ms": percentile(full, 99) * 1e3,
        "ratio_p50": b50 / e50 if e50 > 0 else float("nan"),
    }
    _say(f"{driver.id} claim p50: empty {e50:.2f} ms, {plan.backlog:,} queued {b50:.2f} ms")
    return result
