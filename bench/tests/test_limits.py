"""The limits phase's own logic: body-span overlap, its checks failing, goals, the report.

No servers: the end-to-end runs use qw on SQLite in a temporary directory
(the drains need a worker process) and the memory backend (the claim
latency, all in this process).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from bench import limits, probe, report, run
from bench.apps.qw_worker import register_limits
from bench.config import Stores, full_plan, quick_plan
from bench.drivers.qw_driver import QwDriver, QwSqlite
from bench.limits import LIMIT, max_overlap
from bench.probe import Record


def _spans(*spans: tuple[int, int, int]) -> tuple[list[Record], list[Record]]:
    """(index, start, end) triples as start and end records."""
    return [Record(i, a) for i, a, _ in spans], [Record(i, b) for i, _, b in spans]


def test_overlap_counts_bodies_running_at_one_instant_per_key() -> None:
    starts, ends = _spans((0, 0, 10), (2, 5, 15), (4, 8, 9), (1, 0, 100), (3, 200, 300))
    # Key of an index: its parity. Key 0 has 0, 2, 4 all running at t=8..9.
    assert max_overlap(starts, ends, lambda i: f"k:{i % 2}", 1_000) == {"k:0": 3, "k:1": 1}


def test_overlap_touching_spans_do_not_count_and_open_spans_run_to_the_end() -> None:
    starts, ends = _spans((0, 0, 10), (1, 10, 20))
    assert max_overlap(starts, ends, lambda i: "k", 99) == {"k": 1}
    # Index 1 never ended: it runs to end_ns, over index 2's span.
    starts, ends = _spans((0, 0, 10), (2, 50, 60))
    starts.append(Record(1, 5))
    assert max_overlap(starts, ends, lambda i: "k", 99) == {"k": 2}
    # A duplicate start counts once, from its first record (the tally counts duplicates).
    starts, ends = _spans((0, 0, 10))
    assert max_overlap([*starts, Record(0, 3)], ends, lambda i: "k", 99) == {"k": 1}


def test_sizes_follow_the_plan_and_the_options() -> None:
    full = limits.Sizes.of(full_plan(), quick=False)
    assert (full.n, full.concurrencies, full.throttled, full.keys) == (
        20_000,
        (1, 4, 16),
        100_000,
        1_000,
    )
    quick = limits.Sizes.of(quick_plan(), quick=True)
    assert (quick.n, quick.concurrencies, quick.throttled) == (2_000, (1, 4, 16), 10_000)
    plan, ns = run.parse(
        ["--quick", "--limits-n", "500", "--limits-concurrency", "16", "--limits-throttled", "99"]
    )
    sizes = run.limits_sizes(plan, ns)
    assert (sizes.n, sizes.concurrencies, sizes.throttled) == (500, (16,), 99)
    assert sizes.timeout("limits_claim") > sizes.timeout("limits_drain") > 0


# -- goals and the report ------------------------------------------------------


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "result": result}


def _drain(rate: float, most: int = 2) -> dict[str, Any]:
    return _ok(
        {
            "jobs_per_s": rate,
            "max_overlap": most,
            "sampled_max_running": most,
            "samples": 7,
            "ran": 100,
            "store_succeeded": 100,
        }
    )


def _claim(empty: float, full: float, paused: float) -> dict[str, Any]:
    return _ok(
        {
            "throttled": 100_000,
            "fill_s": 12.0,
            "empty_p50_ms": empty,
            "empty_p99_ms": empty * 2,
            "full_p50_ms": full,
            "full_p99_ms": full * 2,
            "paused_p50_ms": paused,
            "paused_p99_ms": paused * 2,
            "ratio_full_p50": full / empty,
            "ratio_paused_p50": paused / empty,
        }
    )


def _systems(limited: dict[str, Any], claim: dict[str, Any]) -> dict[str, Any]:
    return {
        "qw-sqlite": {
            "status": "ran",
            "limits": {
                "drains": {
                    "4": {"unlimited": _drain(1000), "limited": _drain(100)},
                    "16": {"unlimited": _drain(1000), "limited": limited},
                },
                "claim": claim,
            },
        },
        "qw-redis": {"status": "ran", "limits": {"skipped": "the redis backend does not ..."}},
    }


def _verdicts(systems: dict[str, Any]) -> list[tuple[str, str]]:
    return [(g["goal"], g["status"]) for g in limits.goals(systems, report.STORES)]


def test_goals_pass_at_concurrency_16_and_skips_say_why() -> None:
    systems = _systems(_drain(850), _claim(1.0, 1.9, 1.5))
    goals = limits.goals(systems, report.STORES)
    assert [g["status"] for g in goals] == ["PASS", "PASS", "PASS", "SKIP", "SKIP"]
    # Judged at c=16: the c=4 pair's 0.10x does not count.
    assert "(c=16)" in goals[0]["goal"]
    assert "850 vs 1,000 jobs/s: 0.85x" in goals[0]["value"]
    assert "100,000 throttled jobs ahead, keys full" in goals[1]["goal"]
    assert "1.90x" in goals[1]["value"]
    assert goals[3]["value"] == "skipped: the redis backend does not ..."


def test_goals_fail_with_the_figures() -> None:
    goals = limits.goals(_systems(_drain(700), _claim(1.0, 2.5, 3.0)), report.STORES)
    assert [g["status"] for g in goals[:3]] == ["FAIL", "FAIL", "FAIL"]
    assert "0.70x" in goals[0]["value"]
    assert (goals[1]["value"][-5:], goals[2]["value"][-5:]) == ("2.50x", "3.00x")


def test_a_key_over_its_limit_fails_the_goal_and_the_run() -> None:
    over = {
        "ok": False,
        "error": "RuntimeError: limits drain check failed: 1 keys had more than 2 jobs "
        "running at once (task bodies): k:7 (3 at once)",
    }
    broken_claim = {"ok": False, "error": "RuntimeError: limits claim check failed: ..."}
    systems = _systems(over, broken_claim)
    goals = limits.goals(systems, report.STORES)
    assert [g["status"] for g in goals[:2]] == ["FAIL", "FAIL"]
    assert "k:7 (3 at once)" in goals[0]["value"]
    failed = report.failures(systems["qw-sqlite"])
    assert failed == [
        f"limits drain c=16 (limited): {over['error']}",
        f"limits claim latency: {broken_claim['error']}",
    ]
    # A skip is not a failure.
    assert report.failures(systems["qw-redis"]) == []


def test_report_renders_the_limits_section() -> None:
    systems = _systems(_drain(850), _claim(1.0, 1.9, 1.5))
    machine = {
        "cpu_count": 2,
        "cpu_model": "x",
        "memory_gib": 1,
        "platform": "p",
        "python": "3.11",
        "postgresql": "15",
        "redis": "7",
        "packages": {},
        "load_at_start": [0.1, 0.1, 0.1],
    }
    plan = {
        "name": "t",
        "drain_n": 100,
        "concurrencies": [4, 16],
        "wake_samples": 1,
        "wake_gap_ms": [20, 80],
        "wake_concurrency": 4,
        "backlog": 10,
    }
    data: dict[str, Any] = {
        "plan": plan,
        "machine": machine,
        "started": "now",
        "duration_s": 1,
        "systems": systems,
        "limits_plan": {"n": 100, "keys": 1000, "hot_keys": 10},
    }
    data["goals"] = report.goals(data)
    text = report.markdown(data)
    assert "## Flow control: a concurrency limit per key (qw)" in text
    assert "| sqlite | 4 | 1,000 | 100 | 0.10x | 2 / 2 (7) | yes (100 ran, store 100) |" in text
    assert "| sqlite | 16 | 1,000 | 850 | 0.85x |" in text
    assert "| sqlite | 100,000 | 1.00 / 2.00 | 1.90 / 3.80 | 1.90x | 1.50 / 3.00 | 1.50x |" in text
    assert "- redis: the redis backend does not ..." in text
    assert "| **SKIP** |" in text


# -- end to end on real stores -------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_probe() -> Any:
    probe.forget()
    yield
    probe.forget()


@pytest.fixture
def qw_sqlite(tmp_path: Path) -> Any:
    driver = QwSqlite(Stores("postgresql://unused", "redis://unused/9", None, tmp_path))
    yield driver
    driver.cleanup()


def test_a_key_over_its_limit_fails_the_drain(qw_sqlite: QwSqlite) -> None:
    # Jobs without a limit, each body held 30 ms, 4 at once over 2 keys: the
    # check, told no key may have more than 1 running, must catch it.
    with pytest.raises(RuntimeError, match=r"more than 1 jobs running at once .*k:[01] \("):
        limits.drain(
            qw_sqlite, 24, 4, time.monotonic() + 60, keys=2, limit=None, expect=1, hold_ms=30
        )


def test_the_limited_drain_keeps_every_key_within_its_limit(qw_sqlite: QwSqlite) -> None:
    if not limits.capability(qw_sqlite)["limits"]:
        pytest.skip("the sqlite backend does not declare limits yet")
    r = limits.drain(qw_sqlite, 120, 8, time.monotonic() + 60, keys=4, hold_ms=5, sample_s=0.05)
    assert (r["ok"], r["ran"], r["unique"], r["store_succeeded"]) == (True, 120, 120, 120)
    assert r["limit"] == LIMIT
    # 8 worker threads, 4 keys: the limit bit, and held.
    assert r["max_overlap"] == LIMIT
    assert r["samples"] > 0
    assert r["sampled_max_running"] <= LIMIT


class QwMemory(QwDriver):
    """qw on the memory backend, for the claim phase (one process, no worker)."""

    store = "memory"
    _names = itertools.count()

    def __init__(self, stores: Stores) -> None:
        super().__init__(stores)
        self._name = "bench0"

    def url(self) -> str:
        return f"memory://{self._name}"

    def reset(self) -> None:
        self.close()
        self._name = f"bench{next(self._names)}"

    def cleanup(self) -> None:
        self.reset()


def test_claim_latency_with_a_throttled_backlog(tmp_path: Path) -> None:
    driver = QwMemory(Stores("postgresql://unused", "redis://unused/9", None, tmp_path))
    r = limits.claim_latency(driver, 300, 20, hot_keys=3)
    assert r["ok"], r["problems"]
    assert (r["held"], r["samples"]) == (3 * LIMIT, {"empty": 20, "full": 20, "paused": 20})
    assert r["empty_p50_ms"] > 0
    assert r["ratio_full_p50"] > 0
    assert r["ratio_paused_p50"] > 0


def test_a_claim_of_anything_but_the_claimable_job_is_caught(tmp_path: Path) -> None:
    import qw

    driver = QwMemory(Stores("postgresql://unused", "redis://unused/9", None, tmp_path))
    app = qw.App(driver.url(), namespace="bench")
    unlimited, limited = register_limits(app)
    client = driver.client()
    # A job that is not throttled at all sits ahead: the claim takes it, and the check says so.
    client.enqueue([unlimited.job(0, 0)])
    samples, err = limits._claim_samples(client, limited, 5, 1)
    assert len(samples) == 1
    assert err is not None
    assert "not the claimable job" in err
    driver.cleanup()
