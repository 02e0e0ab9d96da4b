"""The harness's own logic: probe files, percentiles, sweeps, goals, store guards (no servers)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from bench import bare, phases, probe, report, run
from bench.config import Setting, Stores, basic_sweep, full_plan, quick_plan
from bench.drivers.qw_driver import QwSqlite
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
    checks = {"ran": 100, "unique": 100 if ok else 99, "store_succeeded": None}
    return {"ok": True, "result": {"jobs_per_s": rate, "exactly_once": ok, **checks}}


def _bare(rates: dict[str, float]) -> dict[str, Any]:
    checks = {"exactly_once": True, "finished": 100, "unique": 100, "store_done": 100}
    runs = {label: {"jobs_per_s": r, **checks} for label, r in rates.items()}
    result = {"runs": runs}
    top = bare.best(result)
    return {"ok": True, "result": {**result, "best": top[1] if top else None}}


def _data(qw_rate: float, peer_rate: float, p50: float, p99: float, ratio: float) -> dict[str, Any]:
    return {
        "systems": {
            "qw-redis": {
                "status": "ran",
                "drain": {"1": _drain(qw_rate / 2), "2px16": _drain(qw_rate)},
                "bare": _bare({"B=50x1c": qw_rate, "B=500x2c": 1.5 * qw_rate}),
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
            # At-least-once: the 3x goal's peer.
            "dramatiq-redis": {
                "status": "ran",
                "drain": {"2px8t": _drain(peer_rate), "4px4t": _drain(1e9, ok=False)},
            },
            # At-most-once by default: shown beside the goal, not judged.
            "huey-redis": {"status": "ran", "drain": {"process x4": _drain(2 * peer_rate)}},
        }
    }


def test_goals_pass() -> None:
    goals = report.goals(_data(350, 100, 0.8, 9.5, 1.5))
    verdicts = {g["goal"]: g["status"] for g in goals}
    assert verdicts == {
        "drain on redis: qw ≥ 3x fastest at-least-once peer": "PASS",
        "drain on redis: qw vs fastest peer of any delivery": "INFO",
        "drain on redis: qw ≥ 50% of the bare-store cycle": "PASS",
        "wake-up on redis: p50 ≤ 1 ms, p99 ≤ 10 ms": "PASS",
        "claim latency on redis, 1,000,000 queued ≤ 2x empty (p50)": "PASS",
    }
    # The best rows: qw's 2px16, dramatiq's 2px8t, the bare cycle's B=500x2c.
    assert (
        "qw 350/s (2px16) vs dramatiq-redis 100/s (2px8t, at-least-once): 3.50x"
        in (goals[0]["value"])
    )
    assert "huey-redis 200/s (process x4, at-most-once)" in goals[1]["value"]
    assert "bare 525/s (B=500x2c): 67%" in goals[2]["value"]


def test_goals_fail_and_unverified_drains_do_not_count() -> None:
    # The peer's 1e9 jobs/s drain did not run exactly N once: it must not be its best.
    goals = report.goals(_data(250, 100, 1.2, 10, 2.5))
    assert [g["status"] for g in goals] == ["FAIL", "INFO", "PASS", "FAIL", "FAIL"]
    assert "dramatiq-redis 100/s" in goals[0]["value"]
    assert report.best_drain({"drain": {"1": _drain(5.0, ok=False)}}) is None
    data = _data(250, 100, 1.0, 10, 1.0)
    assert [g["status"] for g in report.goals(data) if "wake" in g["goal"]] == ["PASS"]
    data["systems"]["qw-redis"]["bare"] = _bare({"B=50x1c": 1000.0})
    bare_goal = [g for g in report.goals(data) if "bare" in g["goal"]]
    assert [g["status"] for g in bare_goal] == ["FAIL"]
    assert "25%" in bare_goal[0]["value"]


def _enqueue(single: float | None) -> dict[str, Any]:
    mode = {"supported": single is not None, "jobs_per_s": single}
    return {"ok": True, "result": {"single": mode}}


def test_single_enqueue_goal_is_against_the_fastest_peer_of_the_store() -> None:
    systems: dict[str, Any] = {
        "qw-redis": {"status": "ran", "enqueue": _enqueue(5000.0)},
        "huey-redis": {"status": "ran", "enqueue": _enqueue(7000.0)},
        "saq-redis": {"status": "ran", "enqueue": _enqueue(4000.0)},
        "qw-postgres": {"status": "ran", "enqueue": _enqueue(2500.0)},
        "pgqueuer-postgres": {"status": "ran", "enqueue": _enqueue(2400.0)},
        # A peer with no figure (failed phase) and a store with no peer are left out.
        "rq-redis": {"status": "ran", "enqueue": {"ok": False, "error": "boom"}},
        "qw-sqlite": {"status": "ran", "enqueue": _enqueue(3000.0)},
    }
    goals = {g["goal"]: (g["status"], g["value"]) for g in report.enqueue_goals(systems)}
    assert goals == {
        "single-call enqueue on postgres: qw ≥ fastest peer": (
            "PASS",
            "qw 2,500/s vs pgqueuer-postgres 2,400/s: 1.04x",
        ),
        "single-call enqueue on redis: qw ≥ fastest peer": (
            "FAIL",
            "qw 5,000/s vs huey-redis 7,000/s: 0.71x",
        ),
    }


def test_best_drain_is_the_fastest_verified_setting() -> None:
    entry = {"drain": {"4": _drain(10.0), "2px16": _drain(30.0), "4px16": _drain(99.0, ok=False)}}
    assert report.best_drain(entry) == (30.0, "2px16")
    # A bare concurrency (the basic sweep) reads c=C.
    assert report.best_drain({"drain": {"4": _drain(10.0), "16": _drain(5.0)}}) == (10.0, "c=4")
    assert report.delivery("dramatiq") == "at-least-once"
    assert report.delivery("huey") == "at-most-once"


def test_drain_table_shows_every_setting_and_marks_the_best() -> None:
    systems = _data(350, 100, 1.5, 10, 1.5)["systems"]
    lines = report.drain_sections(systems, list(systems))
    rows = [line for line in lines if line.startswith("| redis |") or "| redis |" in line]
    assert any("| qw | redis | **2px16** (best) | **350** |" in r for r in rows)
    assert any("| qw | redis | c=1 | 175 |" in r for r in rows)
    assert any("| dramatiq | redis | 4px4t |" in r and "NO" in r for r in rows)
    assert any("**B=500x2c** (best) | **525**" in line for line in lines)


def test_sweeps_and_settings() -> None:
    sweep = basic_sweep((1, 4))
    assert [(s.label, s.processes, s.concurrency) for s in sweep] == [("1", 1, 1), ("4", 1, 4)]
    setting = Setting("2px8t", 2, 8, {"kind": "process"})
    assert Setting.of(asdict(setting)) == setting
    assert setting.total == 16
    plan, _ = run.parse([])
    assert plan.sweep == "full"
    plan, _ = run.parse(["--quick"])
    assert plan.sweep == "basic"
    plan, _ = run.parse(["--sweep", "basic", "--bare-batches", "10,20", "--bare-clients", "1"])
    assert (plan.sweep, plan.bare_batches, plan.bare_clients) == ("basic", (10, 20), (1,))
    with pytest.raises(SystemExit):
        run.parse(["--sweep", "huge"])


def test_failures_are_listed() -> None:
    entry = {"drain": {"4": {"ok": False, "error": "timed out after 60 s (killed)"}}}
    assert report.failures(entry) == ["drain c=4: timed out after 60 s (killed)"]
    unsupported = {"enqueue": {"ok": False, "unsupported": True, "error": "no bulk"}}
    assert report.failures(unsupported) == []


def test_a_multi_process_qw_drain_on_sqlite(tmp_path: Path) -> None:
    # Two worker processes share one queue: the drain ends at the later one's last
    # terminal write, and every job ran exactly once across both.
    driver = QwSqlite(Stores("postgresql://unused", "redis://unused/9", None, tmp_path))
    setting = Setting("2px4", 2, 4)
    r = phases.drain(driver, 300, 4, time.monotonic() + 120, setting)
    assert r["exactly_once"]
    assert (r["ran"], r["unique"], r["store_succeeded"]) == (300, 300, 300)
    assert r["setting"]["label"] == "2px4"
    assert r["jobs_per_s"] > 0
    driver.cleanup()
