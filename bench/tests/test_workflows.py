"""The workflow phases' own logic: shapes, exactly-once tallies, latencies, goals, the report.

No peers and no servers: the end-to-end checks run qw on SQLite in a temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import probe, report, run, workflows
from bench.config import Stores, full_plan, quick_plan
from bench.workflows import FLOW_STEPS, chain_latencies, expected_join, flow_indexes, tally


def test_flow_shape_is_ten_distinct_contiguous_steps() -> None:
    seen: list[int] = []
    for w in range(3):
        ix = flow_indexes(w)
        steps = [ix["a"], ix["b"], ix["c"], ix["d"], *ix["e"], ix["f"]]
        assert len(steps) == FLOW_STEPS == 10
        assert sorted(steps) == list(range(10 * w, 10 * w + 10))
        seen += steps
    assert len(set(seen)) == 30
    assert expected_join(9, 4, 5) == {"index": 9, "count": 5, "sum": 4 + 5 + 6 + 7 + 8}


def test_tally_exactly_once() -> None:
    assert tally([0, 1, 2], range(3))["exactly_once"]
    twice = tally([0, 1, 1, 2], range(3))
    assert (twice["duplicates"], twice["ran"], twice["unique"]) == (1, 4, 3)
    assert not twice["exactly_once"]
    short = tally([0, 2], range(3))
    assert (short["missing"], short["exactly_once"]) == (1, False)
    stray = tally([0, 1, 2, 7], range(3))
    assert (stray["stray"], stray["exactly_once"]) == (1, False)


def test_peers_run_at_least_at_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflows.os, "cpu_count", lambda: 2)
    assert workflows.peer_concurrencies((1, 2, 4, 16)) == [2, 4, 16]
    assert workflows.peer_concurrencies((1,)) == [2]


def test_chain_latencies_pair_each_step_with_its_parent() -> None:
    starts = {0: 100, 1: 2_100_000, 2: 5_000_000, 3: 9_000_000}
    fins = {0: 1_100_000, 1: 4_000_000, 2: 7_000_000}
    assert chain_latencies(4, starts, fins) == [1.0, 1.0, 2.0]
    # A step missing either side is left out, not counted as zero.
    assert chain_latencies(4, {1: 2_000_000, 3: 9_000_000}, {0: 1_000_000}) == [1.0]
    assert chain_latencies(2, {11: 3_000_000}, {10: 1_000_000}, base=10) == [2.0]


@pytest.fixture(autouse=True)
def _fresh_probe() -> Any:
    # Each test records under a directory of its own.
    probe.forget()
    yield
    probe.forget()


def test_probe_kinds_are_kept_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(probe.ENV, str(tmp_path))
    tail = probe.Tail(tmp_path, probe.FIN)
    probe.record(1)
    probe.record(1, probe.DONE)
    probe.record(1, probe.FIN, at_ns=42)
    assert [(r.index, r.at_ns) for r in probe.read(tmp_path, probe.FIN)] == [(1, 42)]
    assert [r.index for r in probe.read(tmp_path)] == [1]
    assert probe.count(tmp_path) == 1  # only starts count as jobs that ran
    assert [r.at_ns for r in tail()] == [42]
    probe.record(2, probe.FIN, at_ns=43)
    assert [r.index for r in tail()] == [2]  # incremental
    assert tail() == []


def test_plans_have_workflow_sizes() -> None:
    full, quick = full_plan(), quick_plan()
    assert (full.wf_chain, full.wf_fanout, full.wf_flows) == (1_000, 10_000, 1_000)
    assert quick.wf_fanout < full.wf_fanout
    assert quick.wf_flows < full.wf_flows
    assert full.phase_timeout("wf_fanout", 10_000) > full.phase_timeout("wf_fanout", 100)


def test_cli_takes_workflow_sizes() -> None:
    plan, _ = run.parse(["--quick", "--wf-chain", "20", "--wf-fanout", "200", "--wf-flows", "20"])
    assert (plan.wf_chain, plan.wf_fanout, plan.wf_flows) == (20, 200, 20)
    plan, _ = run.parse(["--wf-concurrency", "2,8", "--systems", "qw-sqlite,celery-redis"])
    assert plan.wf_concurrencies == (2, 8)
    assert plan.systems == ("qw-sqlite", "celery-redis")


def _phase(result: dict[str, Any] | None, ok: bool = True) -> dict[str, Any]:
    if result is None:
        return {"ok": False, "error": "RuntimeError: workflows check failed"}
    return {"ok": True, "result": {**result, "ok": ok}}


def _flows(rate: float, plain: float | None = None, ok: bool = True) -> dict[str, Any]:
    r: dict[str, Any] = {"steps_per_s": rate}
    if plain is not None:
        r["plain"] = {"jobs_per_s": plain}
    return _phase(r, ok)


def test_best_flows_counts_verified_runs_only() -> None:
    entry = {
        "workflows": {"flows": {"1": _flows(10), "4": _flows(30), "16": _flows(1e9, ok=False)}}
    }
    assert report.best_flows(entry) == (30.0, 4)
    assert report.best_flows({"workflows": {"flows": {"4": _phase(None)}}}) is None
    assert run.best_concurrency(entry["workflows"]["flows"]) == 4
    assert run.best_concurrency({}) is None


def _systems(
    steps: float, plain: float, peer: float, chain_p50: float, wake_p50: float | None
) -> dict[str, Any]:
    qw: dict[str, Any] = {
        "status": "ran",
        "workflows": {
            "flows": {"4": _flows(steps, plain), "16": _flows(steps / 2, plain)},
            "chain": _phase({"commit_to_start": {"p50_ms": chain_p50, "p99_ms": 9.0}}),
        },
    }
    if wake_p50 is not None:
        wake = {"p50_ms": wake_p50, "p99_ms": 5.0, "max_ms": 6.0, "seen": 9, "samples": 9}
        qw["wakeup"] = {"ok": True, "result": wake}
    return {
        "qw-redis": qw,
        "celery-redis": {"status": "ran", "workflows": {"flows": {"2": _flows(peer)}}},
        "dbos-postgres": {"status": "ran", "workflows": {"flows": {"4": _flows(peer / 2)}}},
    }


def _verdicts(systems: dict[str, Any]) -> dict[str, str]:
    return {g["goal"].split(":")[0]: g["status"] for g in report.workflow_goals(systems)}


def test_workflow_goals_pass() -> None:
    goals = report.workflow_goals(_systems(3000, 4000, 900, 3.0, 2.0))
    assert [g["status"] for g in goals] == ["PASS", "PASS", "PASS"]
    assert "a step costs 1.33x a job" in goals[0]["value"]
    assert "celery-redis 900/s (c=2): 3.33x" in goals[1]["value"]
    assert "1.50x" in goals[2]["value"]


def test_workflow_goals_fail_with_the_figures() -> None:
    goals = report.workflow_goals(_systems(2000, 4000, 900, 5.0, 2.0))
    assert [g["status"] for g in goals] == ["FAIL", "FAIL", "FAIL"]
    assert "2.00x a job" in goals[0]["value"]
    assert "2.22x" in goals[1]["value"]
    assert "2.50x" in goals[2]["value"]


def test_chain_goal_needs_a_wake_up_figure() -> None:
    assert _verdicts(_systems(3000, 4000, 900, 1.0, None)) == {
        "workflow step on redis": "PASS",
        "workflow steps/s on redis": "PASS",
        "chain step latency on redis": "FAIL",
    }


def test_failed_workflow_phases_fail_their_goals_and_are_listed() -> None:
    systems = _systems(3000, 4000, 900, 1.0, 1.0)
    qw = systems["qw-redis"]
    qw["workflows"] = {
        "flows": {"4": _phase(None)},
        "fanout": {"ok": False, "error": "timed out after 620 s (killed)"},
        "chain": _phase(None),
    }
    assert set(_verdicts(systems).values()) == {"FAIL"}
    assert report.failures(qw) == [
        "workflows of 10 steps c=4: RuntimeError: workflows check failed",
        "fan-out: timed out after 620 s (killed)",
        "chain: RuntimeError: workflows check failed",
    ]


def test_report_renders_workflow_tables() -> None:
    systems = _systems(3000, 4000, 900, 1.0, 1.0)
    flow_result = {
        "ran": 100,
        "unique": 100,
        "workflows_wrong": 0,
        "store_succeeded": 100,
    }
    for entry in systems.values():
        for phase in entry["workflows"]["flows"].values():
            phase["result"].update(flow_result)
        entry["workflows"]["fanout"] = _phase(
            {
                "concurrency": 4,
                "total_s": 1.5,
                "enqueue_s": 0.2,
                "steps_per_s": 7000.0,
                "ran": 10_001,
                "unique": 10_001,
                "output": expected_join(10_000, 0, 10_000),
            }
        )
        entry["workflows"]["chain"] = _phase(
            {
                "commit_to_start": None,
                "done_to_start": {"p50_ms": 2.0, "p99_ms": 4.0},
                "total_s": 2.0,
                "ran": 1000,
            }
        )
    systems["qw-redis"]["workflows"]["chain"]["result"]["commit_to_start"] = {
        "p50_ms": 1.0,
        "p99_ms": 3.0,
    }
    systems["celery-redis"]["plain_jobs"] = False
    systems["dbos-postgres"]["plain_jobs"] = False
    plan = {
        "name": "t",
        "drain_n": 10,
        "concurrencies": [4],
        "wake_samples": 1,
        "wake_gap_ms": [20, 80],
        "wake_concurrency": 4,
        "backlog": 10,
        "wf_chain": 1000,
        "wf_fanout": 10_000,
        "wf_flows": 10,
        "wf_concurrencies": [2, 4, 16],
    }
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
    data = {"plan": plan, "machine": machine, "started": "now", "duration_s": 1, "systems": systems}
    data["goals"] = report.goals(data)
    text = report.markdown(data)
    assert "## Workflows of 10 steps" in text
    assert "| qw | redis | - | 3,000 (plain 4,000) | 1,500 (plain 4,000) | 3,000 |" in text
    assert "| celery | redis | 900 | - | - | 900 |" in text
    assert "## Fan-out of 10,000 steps + one fan-in" in text
    assert "| qw | redis | 1.00 / 3.00 | 2.00 / 4.00 | 1.00 |" in text
    assert "| dbos | postgres | not measured | 2.00 / 4.00 | - |" in text
    # A workflow-only peer has no rows in the plain-job tables.
    drains = text.split("## Drain throughput")[1].split("##")[1]
    assert "celery" not in drains


def test_steps_check_their_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qw
    from bench.apps.qw_worker import register

    monkeypatch.setenv(probe.ENV, str(tmp_path))
    app = qw.App("memory://", namespace="bench-test")
    step, join = register(app)
    assert step(3, 2, 2) == 3
    with pytest.raises(ValueError, match="parent result"):
        step(3, None, 2)
    assert join(9, [5, 4, 6, 8, 7], 4, 5) == expected_join(9, 4, 5)
    with pytest.raises(ValueError, match="saw 4 results"):
        join(9, [4, 5, 6, 7], 4, 5)
    with pytest.raises(ValueError):
        join(9, [4, 5, 6, 7, 7], 4, 5)  # a result twice, one missing
    assert [r.index for r in probe.read(tmp_path)] == [3, 3, 9, 9, 9]


@pytest.fixture
def qw_sqlite(tmp_path: Path) -> Any:
    from bench.drivers.qw_driver import QwSqlite

    driver = QwSqlite(Stores("postgresql://unused", "redis://unused/9", None, tmp_path))
    yield driver
    driver.cleanup()


def test_qw_workflow_phases_end_to_end_on_sqlite(qw_sqlite: Any) -> None:
    import time

    deadline = time.monotonic() + 60
    chain = workflows.chain(qw_sqlite, 5, 2, deadline)
    assert chain["exactly_once"]
    assert (chain["output"], chain["store_succeeded"]) == (4, 5)
    assert chain["commit_to_start"]["samples"] == 4
    fan = workflows.fanout(qw_sqlite, 20, 2, deadline)
    assert fan["output"] == expected_join(20, 0, 20)
    assert fan["ran"] == 21
    flows = workflows.flows(qw_sqlite, 3, 2, deadline)
    assert (flows["steps"], flows["workflows_wrong"], flows["store_succeeded"]) == (30, 0, 30)
