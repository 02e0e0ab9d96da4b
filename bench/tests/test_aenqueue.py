"""The async enqueue phase's own logic: its count check failing, the goals, the report.

No servers: the end-to-end runs use qw's async client on the memory backend.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from bench import aenqueue, report
from bench.config import Stores
from bench.drivers.qw_driver import QwDriver, _AsyncProducer


class QwMemory(QwDriver):
    """qw on the memory backend: one process, no worker."""

    store = "memory"
    _names = itertools.count()

    def __init__(self, stores: Stores) -> None:
        super().__init__(stores)
        self._name = "aenq0"

    def url(self) -> str:
        return f"memory://{self._name}"

    def reset(self) -> None:
        self.close()
        self._name = f"aenq{next(self._names)}"

    def cleanup(self) -> None:
        self.reset()


class Dropping(QwMemory):
    """Its producer loses every tenth job: the phase must refuse the figure."""

    async def async_producer(self, producers: int) -> _AsyncProducer:
        inner = await super().async_producer(producers)

        class Lossy(_AsyncProducer):
            async def enqueue(self, index: int) -> None:
                if index % 10 or index >= aenqueue.WARMUP_BASE:
                    await inner.enqueue(index)

        return Lossy(inner._client)


def _stores(tmp_path: Path) -> Stores:
    return Stores("postgresql://unused", "redis://unused/9", None, tmp_path)


def test_every_job_of_every_producer_is_stored_once(tmp_path: Path) -> None:
    driver = QwMemory(_stores(tmp_path))
    r = aenqueue.run(driver, 300, 16)
    assert (r["n"], r["producers"], r["stored"], r["exactly_n"]) == (300, 16, 310, True)
    assert r["jobs_per_s"] > 0


def test_a_producer_that_loses_jobs_fails_the_phase(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the store holds 280 jobs, not 310"):
        aenqueue.run(Dropping(_stores(tmp_path)), 300, 4)


def _runs(**rates: float) -> dict[str, Any]:
    return {p: {"ok": True, "result": {"n": 100, "jobs_per_s": r}} for p, r in rates.items()}


def _systems() -> dict[str, Any]:
    return {
        "qw-postgres": {"status": "ran", "aenqueue": _runs(**{"1": 900.0, "16": 3000.0})},
        "pgqueuer-postgres": {"status": "ran", "aenqueue": _runs(**{"1": 1000.0, "16": 2000.0})},
        "qw-redis": {
            "status": "ran",
            "aenqueue": {"1": {"ok": False, "error": "RuntimeError: boom"}},
        },
        "saq-redis": {"status": "ran", "aenqueue": _runs(**{"1": 5000.0})},
    }


def test_goals_compare_qw_with_its_peer_per_store_and_producer_count() -> None:
    goals = aenqueue.goals(_systems())
    assert [(g["goal"], g["status"]) for g in goals] == [
        ("async enqueue on postgres, 1 producers: ≥ 1x pgqueuer-postgres", "FAIL"),
        ("async enqueue on postgres, 16 producers: ≥ 1x pgqueuer-postgres", "PASS"),
        ("async enqueue on redis, 1 producers: ≥ 1x saq-redis", "FAIL"),
    ]
    assert goals[0]["value"] == "900 vs 1,000 jobs/s: 0.90x"
    assert goals[1]["value"] == "3,000 vs 2,000 jobs/s: 1.50x"
    assert goals[2]["value"] == "qw-redis: RuntimeError: boom"


def test_a_failed_run_fails_the_system_and_the_table_says_so() -> None:
    systems = _systems()
    assert report.failures(systems["qw-redis"]) == ["async enqueue p=1: RuntimeError: boom"]
    assert report.failures(systems["qw-postgres"]) == []
    lines = aenqueue.sections({"systems": systems}, list(systems))
    assert "## Async enqueue: concurrent asyncio producers, one job per call" in lines
    assert "| qw-postgres | 16 | 100 | 3,000 |  |" in lines
    assert "| qw-redis | 1 | - | failed: RuntimeError: boom | |" in lines
