"""The harness's own logic: probe files, percentiles, goals, store guards (no servers needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bench import probe, report
from bench.config import Stores, full_plan, quick_plan
from bench.stats import percentile


def test_probe_records_from_threads_and_forked_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(probe.ENV, str(tmp_path))
    counter = probe.Counter(tmp_path)
    probe.record(1)
    pid = os.fork()
    if pid == 0:  # the child writes to a file of its own
        probe.record(2)
        probe.record(3)
        os._exit(0)
    os.waitpid(pid, 0)
    probe.record(4)
    records = probe.read(tmp_path)
    assert sorted(r.index for r in records) == [1, 2, 3, 4]
    assert len(list(tmp_path.glob("*.log"))) == 2
    assert counter() == 4
    probe.record(5)
    assert counter() == 5  # incremental: only the new line is read
    assert probe.count(tmp_path) == 5


def test_counter_ignores_a_partial_line(tmp_path: Path) -> None:
    (tmp_path / "1.log").write_bytes(b"1 10\n2 2")
    counter = probe.Counter(tmp_path)
    assert counter() == 1
    with (tmp_path / "1.log").open("ab") as f:
        f.write(b"0\n")
    assert counter() == 2
    assert [r.index for r in probe.read(tmp_path)] == [1, 2]


def test_percentile() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_redis_db_zero_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    with pytest.raises(SystemExit):
        Stores.from_env(tmp_path)
    monkeypatch.setenv("QW_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
    with pytest.raises(SystemExit):
        Stores.from_env(tmp_path)


def test_plans() -> None:
    quick, full = quick_plan(), full_plan()
    assert (quick.drain_n, quick.concurrencies, quick.backlog) == (2_000, (1, 4), 50_000)
    assert (full.drain_n, full.concurrencies, full.backlog) == (20_000, (1, 4, 16), 1_000_000)
    assert full.phase_timeout("drain", 1_000_000) > full.phase_timeout("drain", 20_000)


def _drain(rate: float, ok: bool = True) -> dict[str, Any]:
    return {"ok": True, "result": {"jobs_per_s": rate, "exactly_once": ok}}


def _data(qw_rate: float, peer_rate: float, p50: float, p99: float, ratio: float) -> dict[str, Any]:
    return {
        "systems": {
            "qw-redis": {
                "status": "ran",
                "drain": {"1": _drain(qw_rate / 2), "4": _drain(qw_rate)},
                "wakeup": {"ok": True, "result": {"p50_ms": p50, "p99_ms": p99}},
                "backlog": {
                    "ok": True,
                    "result": {
                        "backlog": 1_000_000,
                        "backlog_p50_ms": ratio,
                        "empty_p50_ms": 1.0,
                        "ratio_p50": ratio,
                    },
                },
            },
            "rq-redis": {
                "status": "ran",
                "drain": {"1": _drain(peer_rate), "4": _drain(1e9, ok=False)},
            },
        }
    }


def test_goals_pass() -> None:
    verdicts = {
        g["goal"].split(":")[0]: g["status"] for g in report.goals(_data(250, 100, 1.5, 10, 1.5))
    }
    assert verdicts == {
        "drain on redis": "PASS",
        "wake-up on redis": "PASS",
        "claim latency on redis, 1,000,000 queued ≤ 2x empty (p50)": "PASS",
    }


def test_goals_fail_and_unverified_drains_do_not_count() -> None:
    # The peer's 1e9 jobs/s drain did not run exactly N once: it must not be its best.
    goals = report.goals(_data(150, 100, 2.5, 10, 2.5))
    assert [g["status"] for g in goals] == ["FAIL", "FAIL", "FAIL"]
    assert "rq-redis 100/s" in goals[0]["value"]
    assert report.best_drain({"drain": {"1": _drain(5.0, ok=False)}}) is None


def test_failures_are_listed() -> None:
    entry = {"drain": {"4": {"ok": False, "error": "timed out after 60 s (killed)"}}}
    assert report.failures(entry) == ["drain c=4: timed out after 60 s (killed)"]
    unsupported = {"enqueue": {"ok": False, "unsupported": True, "error": "no bulk"}}
    assert report.failures(unsupported) == []
