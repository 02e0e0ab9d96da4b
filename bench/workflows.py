"""The workflow phases, the same for every system: three shapes, timed and checked.

* chain: ``n`` steps one after another, each taking its parent's result.
  Per step: the parent's terminal write committed (qw: the worker's
  ``qw_job_finished`` hook; Celery: its ``task_success`` signal) to the
  child's first line, and, for every system, the parent's last line to the
  child's first line. Idle workers at the wake-up phase's concurrency.
* fan-out: ``n`` parallel steps and one fan-in step that takes all their
  results; from just before the enqueue call to the fan-in's terminal write.
* flows: ``count`` workflows of :data:`FLOW_STEPS` steps each (a diamond,
  then a map of five, then a fan-in: see :func:`flow_indexes`), enqueued
  first, then the system's own workers at one concurrency; steps/s from the
  first step's start to the last terminal write. qw also drains as many
  plain jobs at the same concurrency on the same store, for the per-step
  overhead.

Every step appends its index to the probe files when it starts; a phase
passes only if every expected index ran exactly once (no retry, no
duplicate, no stray) and every fan-in's result says it saw every input
(the fan-in step itself fails unless its inputs are exactly the expected
ones).
"""

from __future__ import annotations

import abc
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench import probe
from bench.drivers.base import Driver, Unsupported, Workers, poll_until
from bench.stats import percentile

__all__ = [
    "FLOW_STEPS",
    "WARMUP_BASE",
    "FlowDriver",
    "chain",
    "chain_latencies",
    "expected_join",
    "fanout",
    "flow_indexes",
    "flows",
    "peer_concurrencies",
    "poll_count",
    "poll_probe",
    "tally",
]

#: Steps in each workflow of the ``flows`` shape.
FLOW_STEPS = 10
#: Indexes of the warm-up chain (kept apart from measured ones).
WARMUP_BASE = 10_000_000
WARMUP_STEPS = 3


def _say(msg: str) -> None:
    print(f"    {msg}", file=sys.stderr, flush=True)


# -- the shapes, as indexes ---------------------------------------------------


def flow_indexes(w: int) -> dict[str, Any]:
    """The steps of workflow ``w`` of the ``flows`` shape, by role, as probe indexes.

    ``a``; ``b`` and ``c`` each take ``a``'s result (the diamond's sides);
    ``d`` is a fan-in of ``b`` and ``c``; ``e`` is a map of five steps that
    run after ``d``; ``f`` is a fan-in of the five. Ten steps, indexes
    ``10 w`` .. ``10 w + 9``.
    """
    base = FLOW_STEPS * w
    return {
        "a": base,
        "b": base + 1,
        "c": base + 2,
        "d": base + 3,
        "e": [base + 4 + k for k in range(5)],
        "f": base + 9,
    }


def expected_join(index: int, first: int, count: int) -> dict[str, int]:
    """What a fan-in step returns once it saw ``first`` .. ``first + count - 1``."""
    return {"index": index, "count": count, "sum": sum(range(first, first + count))}


def tally(indexes: Iterable[int], expected: Iterable[int]) -> dict[str, Any]:
    """Exactly-once bookkeeping of started steps against the expected indexes."""
    want = set(expected)
    ran = Counter(indexes)
    duplicates = sum(c - 1 for c in ran.values() if c > 1)
    missing = sum(1 for i in want if i not in ran)
    stray = sum(1 for i in ran if i not in want)
    return {
        "expected": len(want),
        "ran": sum(ran.values()),
        "unique": len(ran),
        "duplicates": duplicates,
        "missing": missing,
        "stray": stray,
        "exactly_once": duplicates == 0 and missing == 0 and stray == 0,
    }


def chain_latencies(
    n: int, starts: dict[int, int], before: dict[int, int], base: int = 0
) -> list[float]:
    """Milliseconds from step ``i - 1``'s moment in ``before`` to step ``i``'s start.

    ``before`` is either the parents' terminal-write times or the moments
    their bodies returned; a step missing either side is left out.
    """
    out = []
    for i in range(base + 1, base + n):
        if i in starts and i - 1 in before:
            out.append((starts[i] - before[i - 1]) / 1e6)
    return out


def _summary(values: Sequence[float]) -> dict[str, float | int]:
    return {
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values, default=float("nan")),
        "samples": len(values),
    }


def _first(records: Iterable[probe.Record]) -> dict[int, int]:
    """Each index's earliest time (a duplicate is counted by :func:`tally`, not here)."""
    out: dict[int, int] = {}
    for r in records:
        if r.index not in out or r.at_ns < out[r.index]:
            out[r.index] = r.at_ns
    return out


def peer_concurrencies(planned: Sequence[int]) -> list[int]:
    """A peer runs at the plan's concurrencies, raised to at least the CPU count.

    Celery's default concurrency is the CPU count, and neither peer is
    faster with fewer workers than cores for these parallel shapes; this
    also spares the slowest runs.
    """
    cpus = os.cpu_count() or 1
    return sorted({max(c, cpus) for c in planned})


# -- what a system provides ---------------------------------------------------


class FlowDriver(Driver):
    """A system that runs workflows: its three shapes, as a user of it writes them.

    Handles are whatever the system returns for a submitted workflow. The
    workers are the same :meth:`Driver.start` workers as for plain jobs
    (``drain`` is then a number of steps).
    """

    #: False for a peer that only takes part in the workflow phases.
    plain_jobs = True

    def flow_concurrencies(self, planned: Sequence[int]) -> list[int]:
        """The concurrencies to run the 10-step workflows at (qw: all of the plan's)."""
        return list(planned)

    @abc.abstractmethod
    def flow_settings(self, concurrency: int) -> dict[str, str]:
        """The settings used at ``concurrency`` for the workflow phases (the report states them)."""

    @abc.abstractmethod
    def submit_chain(self, n: int, base: int = 0) -> Any:
        """Enqueue a chain, steps ``base`` .. ``base + n - 1``, each taking its parent's result."""

    @abc.abstractmethod
    def submit_fanout(self, n: int) -> Any:
        """Enqueue steps 0 .. n-1 in parallel and a fan-in ``n`` of all their results."""

    @abc.abstractmethod
    def submit_flows(self, count: int) -> list[Any]:
        """Enqueue ``count`` workflows of the :func:`flow_indexes` shape."""

    @abc.abstractmethod
    def wait_done(self, handle: Any, last: int, workers: Workers, deadline: float) -> int:
        """Block until the workflow ended (its step ``last`` written); return that time (ns)."""

    @abc.abstractmethod
    def wait_flows(self, handles: list[Any], steps: int, workers: Workers, deadline: float) -> int:
        """Block until every workflow ended; return the time of the last terminal write (ns)."""

    @abc.abstractmethod
    def outcome(self, handle: Any) -> tuple[bool, Any]:
        """Whether the ended workflow succeeded, and its output (the fan-in's result)."""

    def store_steps(self, handles: list[Any]) -> int | None:
        """How many steps the store records as succeeded (None: it keeps no such count)."""
        return None

    # Plain-job methods a workflow-only peer does not have.
    def enqueue(self, indexes: range, batch: int) -> None:
        raise Unsupported(f"{self.id} takes part in the workflow phases only")

    def wait_drained(self, workers: Workers, n: int, deadline: float) -> int:
        raise Unsupported(f"{self.id} takes part in the workflow phases only")

    def succeeded(self) -> int | None:
        raise Unsupported(f"{self.id} takes part in the workflow phases only")


def _checked(result: dict[str, Any], ok: bool, what: str) -> dict[str, Any]:
    result["ok"] = ok
    if not ok:
        raise RuntimeError(f"{what} check failed: {result}")
    return result


def _warm_up(driver: FlowDriver, workers: Workers, deadline: float) -> None:
    # The workers are up, connected and idle once this short chain ran.
    handle = driver.submit_chain(WARMUP_STEPS, WARMUP_BASE)
    driver.wait_done(handle, WARMUP_BASE + WARMUP_STEPS - 1, workers, deadline)
    time.sleep(0.5)


def chain(driver: FlowDriver, n: int, concurrency: int, deadline: float) -> dict[str, Any]:
    """A chain of ``n`` steps on idle workers: per-step latency and total time."""
    driver.reset()
    with tempfile.TemporaryDirectory(prefix="qw-bench-probe-") as tmp:
        probe_dir = Path(tmp)
        workers = driver.start(concurrency, probe_dir, drain=None)
        try:
            _warm_up(driver, workers, deadline)
            t0 = time.time_ns()
            handle = driver.submit_chain(n)
            end_ns = driver.wait_done(handle, n - 1, workers, deadline)
            ok, output = driver.outcome(handle)
        finally:
            driver.halt(workers)
        starts = [r for r in probe.read(probe_dir) if r.index < WARMUP_BASE]
        dones = _first(r for r in probe.read(probe_dir, probe.DONE) if r.index < WARMUP_BASE)
        fins = _first(r for r in probe.read(probe_dir, probe.FIN) if r.index < WARMUP_BASE)
    store = driver.store_steps([handle])
    driver.close()
    first = _first(starts)
    check = tally((r.index for r in starts), range(n))
    total_s = (end_ns - t0) / 1e9
    result: dict[str, Any] = {
        "n": n,
        "concurrency": concurrency,
        "total_s": total_s,
        "steps_per_s": n / total_s,
        "commit_to_start": _summary(chain_latencies(n, first, fins)) if fins else None,
        "done_to_start": _summary(chain_latencies(n, first, dones)),
        "succeeded": ok,
        "output": output,
        "store_succeeded": store,
        **check,
    }
    good = ok and output == n - 1 and check["exactly_once"]
    if store is not None:
        good = good and store == n
    c2s = result["commit_to_start"]
    _say(
        f"{driver.id} chain of {n}: {total_s:.2f} s; step latency commit->start p50 "
        f"{c2s['p50_ms'] if c2s else float('nan'):.2f} ms, done->start p50 "
        f"{result['done_to_start']['p50_ms']:.2f} ms; exactly_once={check['exactly_once']}"
    )
    return _checked(result, good, "chain")


def fanout(driver: FlowDriver, n: int, concurrency: int, deadline: float) -> dict[str, Any]:
    """``n`` parallel steps and one fan-in: enqueue to the fan-in's terminal write."""
    driver.reset()
    with tempfile.TemporaryDirectory(prefix="qw-bench-probe-") as tmp:
        probe_dir = Path(tmp)
        workers = driver.start(concurrency, probe_dir, drain=None)
        try:
            _warm_up(driver, workers, deadline)
            t0 = time.time_ns()
            handle = driver.submit_fanout(n)
            submitted_ns = time.time_ns()
            end_ns = driver.wait_done(handle, n, workers, deadline)
            ok, output = driver.outcome(handle)
        finally:
            driver.halt(workers)
        starts = [r for r in probe.read(probe_dir) if r.index < WARMUP_BASE]
    store = driver.store_steps([handle])
    driver.close()
    check = tally((r.index for r in starts), range(n + 1))
    first = _first(starts)
    total_s = (end_ns - t0) / 1e9
    result: dict[str, Any] = {
        "n": n,
        "concurrency": concurrency,
        "total_s": total_s,
        "enqueue_s": (submitted_ns - t0) / 1e9,
        "fanin_start_s": (first[n] - t0) / 1e9 if n in first else None,
        "steps_per_s": (n + 1) / total_s,
        "succeeded": ok,
        "output": output,
        "store_succeeded": store,
        **check,
    }
    good = ok and output == expected_join(n, 0, n) and check["exactly_once"]
    if store is not None:
        good = good and store == n + 1
    _say(
        f"{driver.id} fan-out of {n:,} + fan-in: {total_s:.2f} s (enqueue "
        f"{result['enqueue_s']:.2f} s); exactly_once={check['exactly_once']} fan-in={output}"
    )
    return _checked(result, good, "fan-out")


def flows(driver: FlowDriver, count: int, concurrency: int, deadline: float) -> dict[str, Any]:
    """``count`` pre-enqueued workflows of :data:`FLOW_STEPS` steps: steps/s of the workers."""
    steps = FLOW_STEPS * count
    driver.reset()
    t0 = time.perf_counter()
    handles = driver.submit_flows(count)
    prefill_s = time.perf_counter() - t0
    _say(f"{driver.id} c={concurrency}: {count:,} workflows enqueued in {prefill_s:.1f} s")
    with tempfile.TemporaryDirectory(prefix="qw-bench-probe-") as tmp:
        probe_dir = Path(tmp)
        workers = driver.start(concurrency, probe_dir, drain=steps)
        try:
            end_ns = driver.wait_flows(handles, steps, workers, deadline)
        finally:
            driver.halt(workers)
        starts = probe.read(probe_dir)
    outcomes = [driver.outcome(h) for h in handles]
    store = driver.store_steps(handles)
    driver.close()
    check = tally((r.index for r in starts), range(steps))
    start_ns = min((r.at_ns for r in starts), default=end_ns)
    seconds = max((end_ns - start_ns) / 1e9, 1e-9)
    wrong = [
        (w, out)
        for w, (ok, out) in enumerate(outcomes)
        if not ok or out != expected_join(flow_indexes(w)["f"], flow_indexes(w)["e"][0], 5)
    ]
    result: dict[str, Any] = {
        "workflows": count,
        "steps": steps,
        "concurrency": concurrency,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "prefill_s": prefill_s,
        "workflows_wrong": len(wrong),
        "first_wrong": wrong[0] if wrong else None,
        "store_succeeded": store,
        **check,
    }
    good = not wrong and check["exactly_once"]
    if store is not None:
        good = good and store == steps
    _say(
        f"{driver.id} c={concurrency}: {steps / seconds:,.0f} steps/s; ran={check['ran']} "
        f"unique={check['unique']} wrong workflows={len(wrong)} store={store} "
        f"exactly_once={check['exactly_once']}"
    )
    return _checked(result, good, "workflows")


def poll_probe(probe_dir: Path, kind: str, index: int, deadline: float, workers: Workers) -> int:
    """Wait until a ``kind`` record of ``index`` appears; return its time (ns)."""
    tail = probe.Tail(probe_dir, kind)
    found: list[int] = []

    def check() -> bool:
        found.extend(r.at_ns for r in tail() if r.index == index)
        return bool(found)

    poll_until(check, deadline, interval=0.002, workers=workers)
    return min(found)


def poll_count(probe_dir: Path, kind: str, count: int, deadline: float, workers: Workers) -> int:
    """Wait for ``count`` records of ``kind`` (warm-up excluded); return the latest one's time."""
    tail = probe.Tail(probe_dir, kind)
    seen: list[int] = []

    def check() -> bool:
        seen.extend(r.at_ns for r in tail() if r.index < WARMUP_BASE)
        return len(seen) >= count

    poll_until(
        check,
        deadline,
        interval=0.005,
        progress=lambda: f"{len(seen)}/{count} steps written",
        workers=workers,
    )
    return max(seen)
