"""The async enqueue phase: concurrent asyncio producers, one job per call.

Each system enqueues ``n`` jobs from ``p`` coroutines on one event loop,
every call awaiting one single-job enqueue through the system's documented
async API (qw: ``AsyncClient.enqueue``; PGQueuer: ``Queries.enqueue``; SAQ:
``Queue.enqueue``). Jobs/s is ``n`` over the time from the first call to the
last answer; the phase then checks that the store holds exactly ``n`` (plus
the warm-up) jobs, or it fails. Each producer count runs on a fresh store.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from bench.drivers.base import Driver
from bench.tables import phase_result

__all__ = ["AsyncProducer", "failures", "goals", "run", "sections"]

#: The ratio goal: qw's async enqueue against its peer on the same store.
GOAL_RATIO = 1.0
#: qw on a store, the peer it is measured against there.
PAIRS = {"postgres": "pgqueuer-postgres", "redis": "saq-redis"}
WARMUP = 10
#: Indexes of warm-up jobs (kept apart from measured ones).
WARMUP_BASE = 10_000_000


class AsyncProducer(Protocol):
    """One system's async enqueue, opened on the running loop for ``p`` producers."""

    async def enqueue(self, index: int) -> None:
        """Enqueue one job for ``index``, one call."""
        ...

    async def count(self) -> int:
        """How many jobs the store holds now (none has run)."""
        ...

    async def close(self) -> None: ...


def _say(msg: str) -> None:
    print(f"    {msg}", file=sys.stderr, flush=True)


async def _measure(driver: Driver, n: int, producers: int) -> dict[str, Any]:
    producer: AsyncProducer = await driver.async_producer(producers)
    try:
        for i in range(WARMUP):  # connect, prepare, warm caches
            await producer.enqueue(WARMUP_BASE + i)
        pending = iter(range(n))

        async def produce() -> None:
            for i in pending:  # one shared iterator: each index is taken once
                await producer.enqueue(i)

        t0 = time.perf_counter()
        await asyncio.gather(*(produce() for _ in range(producers)))
        seconds = time.perf_counter() - t0
        stored = await producer.count()
    finally:
        await producer.close()
    ok = stored == n + WARMUP
    result = {
        "n": n,
        "producers": producers,
        "seconds": seconds,
        "jobs_per_s": n / seconds,
        "stored": stored,
        "exactly_n": ok,
    }
    if not ok:
        raise RuntimeError(f"the store holds {stored} jobs, not {n + WARMUP}: {result}")
    return result


def run(driver: Driver, n: int, producers: int) -> dict[str, Any]:
    """Jobs/s of ``n`` single-job async enqueues from ``producers`` coroutines."""
    driver.reset()
    driver.close()
    result = asyncio.run(_measure(driver, n, producers))
    _say(f"{driver.id} async enqueue p={producers}: {result['jobs_per_s']:,.0f} jobs/s")
    driver.reset()
    driver.close()
    return result


def failures(entry: Mapping[str, Any]) -> list[str]:
    """The failed async enqueue runs of one system (an unsupported system is not a failure)."""
    return [
        f"async enqueue p={p}: {phase.get('error')}"
        for p, phase in (entry.get("aenqueue") or {}).items()
        if not phase.get("ok") and not phase.get("unsupported")
    ]


def goals(systems: Mapping[str, Any]) -> list[dict[str, str]]:
    """Per store and producer count: qw's async enqueue ≥ GOAL_RATIO x its peer's."""
    out: list[dict[str, str]] = []
    for store, peer in PAIRS.items():
        ours = (systems.get(f"qw-{store}") or {}).get("aenqueue") or {}
        theirs = (systems.get(peer) or {}).get("aenqueue") or {}
        for p in sorted(set(ours) | set(theirs), key=int):
            goal = f"async enqueue on {store}, {p} producers: ≥ {GOAL_RATIO:g}x {peer}"
            a, b = phase_result(ours.get(p)), phase_result(theirs.get(p))
            if a is None or b is None:
                which = f"qw-{store}" if a is None else peer
                err = ((ours if a is None else theirs).get(p) or {}).get("error", "not run")
                out.append({"goal": goal, "value": f"{which}: {err}", "status": "FAIL"})
                continue
            ratio = a["jobs_per_s"] / b["jobs_per_s"]
            out.append(
                {
                    "goal": goal,
                    "value": f"{a['jobs_per_s']:,.0f} vs {b['jobs_per_s']:,.0f} jobs/s: "
                    f"{ratio:.2f}x",
                    "status": "PASS" if ratio >= GOAL_RATIO else "FAIL",
                }
            )
    return out


def sections(data: Mapping[str, Any], ids: Iterable[str]) -> list[str]:
    """The report's async enqueue table."""
    systems = data["systems"]
    rows = [d for d in ids if systems[d].get("aenqueue")]
    if not rows:
        return []
    lines = [
        "",
        "## Async enqueue: concurrent asyncio producers, one job per call",
        "",
        "`p` coroutines on one event loop share `n` indexes; each awaits one single-job "
        "enqueue per index through the system's async API (qw: `AsyncClient.enqueue`, native "
        "on PostgreSQL (psycopg's async pool) and Redis (redis-py's asyncio client); "
        "PGQueuer: `Queries.enqueue` over an asyncpg pool; SAQ: `Queue.enqueue`). "
        "Jobs/s from the first call to the last answer; the store must then hold exactly "
        f"n + {WARMUP} warm-up jobs.",
        "",
        "| system | producers | jobs | jobs/s | settings |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for d in rows:
        for p, phase in sorted(systems[d]["aenqueue"].items(), key=lambda kv: int(kv[0])):
            r = phase_result(phase)
            if r is None:
                why = "unsupported" if phase.get("unsupported") else "failed"
                lines.append(f"| {d} | {p} | - | {why}: {phase.get('error')} | |")
                continue
            lines.append(
                f"| {d} | {p} | {r['n']:,} | {r['jobs_per_s']:,.0f} | {r.get('settings', '')} |"
            )
    return lines
