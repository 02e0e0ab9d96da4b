"""The plugins phase's own logic: sizes, run order, medians, goals, the report; one real drain.

No servers: the end-to-end drains run qw's worker process on SQLite in a
temporary directory, with the config's plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import plugins, run


def _ok(rate: float, cpu: float = 50.0) -> dict[str, Any]:
    return {"ok": True, "result": {"jobs_per_s": rate, "cpu_us_per_job": cpu}}


def _failed(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


def test_sizes_defaults_options_and_refusals() -> None:
    assert plugins.Sizes.of(quick=False) == plugins.Sizes(20_000, (1, 16), 5)
    assert plugins.Sizes.of(quick=True) == plugins.Sizes(5_000, (4,), 3)
    _, ns = run.parse(
        ["--plugins-n", "1000", "--plugins-concurrency", "2,8", "--plugins-reps", "7"]
    )
    assert run.plugins_sizes(ns) == plugins.Sizes(1_000, (2, 8), 7)
    _, ns = run.parse(["--quick", "--plugins-reps", "1"])
    assert run.plugins_sizes(ns) == plugins.Sizes(5_000, (4,), 1)
    for bad in ({"n": 10}, {"concurrencies": (0,)}):
        with pytest.raises(ValueError, match="bad sizes"):
            plugins.Sizes.of(quick=False, **bad)


def test_configs_run_interleaved_round_by_round() -> None:
    order = plugins.schedule(["off", "metrics", "tracing"], 2)
    assert order == [
        (0, "off"),
        (0, "metrics"),
        (0, "tracing"),
        (1, "off"),
        (1, "metrics"),
        (1, "tracing"),
    ]


def test_summary_medians_and_slowdowns() -> None:
    summary = plugins.summarize(
        {
            "off": [_ok(10_000, 50), _ok(12_000, 48), _ok(11_000, 52)],
            "metrics": [_ok(10_800, 53), _ok(10_200, 51), _ok(9_000, 60)],
            "tracing": [_ok(5_000), _failed("boom")],
        }
    )
    off, on, tracing = summary["off"], summary["metrics"], summary["tracing"]
    assert off["median"] == 11_000
    assert off["slowdown"] is None
    assert off["cpu_median"] == 50
    assert on["median"] == 10_200
    assert on["slowdown"] == pytest.approx(1 - 10_200 / 11_000)
    assert on["cpu_delta_us"] == pytest.approx(3.0)
    # A failed round: no figure, the error kept.
    assert tracing["median"] is None
    assert tracing["slowdown"] is None
    assert tracing["errors"] == ["boom"]
    assert tracing["jobs_per_s"] == [5_000]


def _phase(summary: dict[str, Any], unavailable: dict[str, str] | None = None) -> dict[str, Any]:
    return {"unavailable": unavailable or {}, "by_c": {"4": {"runs": {}, "summary": summary}}}


def test_goals_pass_fail_and_skip() -> None:
    passing = plugins.summarize({"off": [_ok(10_000, 50)], "metrics": [_ok(9_600, 52)]})
    failing = plugins.summarize({"off": [_ok(10_000)], "metrics": [_ok(9_400)]})
    systems = {
        "qw-postgres": {"plugins": _phase(passing)},
        "qw-redis": {"plugins": _phase(failing)},
    }
    out = plugins.goals(systems)
    assert [g["status"] for g in out] == ["PASS", "FAIL"]
    assert out[0]["goal"] == "qw-postgres drain c=4 with metrics: ≤ 5% slower than off"
    assert out[0]["value"] == "9,600 vs 10,000 jobs/s: +4.0%; +2.0 µs/job CPU"
    assert out[1]["value"].startswith("9,400 vs 10,000 jobs/s: +6.0%")
    # Exactly the goal: a pass.
    edge = plugins.summarize({"off": [_ok(10_000)], "metrics": [_ok(9_500)]})
    (goal,) = plugins.goals({"qw-redis": {"plugins": _phase(edge)}})
    assert goal["status"] == "PASS"
    # Not installed: a skip with the reason; the phase not run: no goal at all.
    alone = plugins.summarize({"off": [_ok(10_000)]})
    why = {"metrics": "qw-metrics is not installed (qw_metrics.plugin)"}
    (goal,) = plugins.goals({"qw-redis": {"plugins": _phase(alone, why)}})
    assert goal == {"goal": goal["goal"], "value": why["metrics"], "status": "SKIP"}
    assert plugins.goals({"qw-redis": {}}) == []
    # A failed round of metrics or of the baseline: a failure, with why.
    broken = plugins.summarize({"off": [_failed("worker died")], "metrics": [_ok(9_000)]})
    (goal,) = plugins.goals({"qw-postgres": {"plugins": _phase(broken)}})
    assert goal["status"] == "FAIL"
    assert "worker died" in goal["value"]
    skipped = {"qw-postgres": {"plugins": {"skipped": "cannot tell"}}}
    assert plugins.goals(skipped)[0]["status"] == "SKIP"


def test_report_section_and_failures() -> None:
    summary = plugins.summarize(
        {"off": [_ok(10_000, 50)], "metrics": [_ok(9_000, 55), _failed("lost it")]}
    )
    why = {"tracing": "qw-tracing is not installed (qw_tracing.plugin)"}
    entry = {"plugins": _phase(summary, why)}
    data = {"systems": {"qw-redis": entry, "rq-redis": {}}}
    lines = plugins.sections(data, ["qw-redis", "rq-redis"])
    assert lines[1].startswith("## Plugins")
    assert "| qw-redis | 4 | off | 10,000 |  | 50.0 |  | 10,000 |" in lines
    assert "| qw-redis | 4 | metrics | failed |  |  |  | 9,000; failed: lost it |" in lines
    assert f"| qw-redis | | tracing | skipped | | | | {why['tracing']} |" in lines
    assert plugins.failures(entry) == ["plugins=metrics c=4: lost it"]
    assert plugins.sections({"systems": {"rq-redis": {}}}, ["rq-redis"]) == []


def test_a_config_whose_package_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plugins.missing("off") is None
    monkeypatch.setitem(plugins.PLUGIN_MODULES, "tracing", "qw_no_such_plugin.plugin")
    assert plugins.missing("tracing") == "qw-tracing is not installed (qw_no_such_plugin.plugin)"
    assert plugins.missing("both") == plugins.missing("tracing")
    answer = plugins.phase({"phase": "plugins_check"})
    assert set(answer["unavailable"]) == {"tracing", "both"}


def test_the_cpu_mark_counts_to_the_last_success() -> None:
    from qw.model import JobStatus

    mark = plugins.cpu_mark(2)
    mark.qw_worker_started()
    with pytest.raises(RuntimeError, match="did not complete"):
        mark.seconds()
    sum(i * i for i in range(200_000))  # some CPU
    mark.qw_job_finished(JobStatus.QUEUED)  # a retry is no success
    mark.qw_job_finished(JobStatus.SUCCEEDED)
    mark.qw_job_finished(JobStatus.SUCCEEDED)
    spent = mark.seconds()
    mark.qw_job_finished(JobStatus.SUCCEEDED)  # after the end: not counted
    assert mark.seconds() == spent > 0


@pytest.mark.parametrize("config", ["off", "metrics", "both"])
def test_a_real_drain_with_the_configs_plugins(config: str, tmp_path: Path) -> None:
    if why := plugins.missing(config):
        pytest.skip(f"SKIPPED LOUDLY: {why}")
    spec = {
        "phase": "plugins_drain",
        "driver": "qw-sqlite",
        "workdir": str(tmp_path),
        "timeout": 120,
        "n": 300,
        "concurrency": 2,
        "config": config,
    }
    result = plugins.phase(spec)
    assert result["exactly_once"]
    assert result["config"] == config
    assert result["ran"] == 300
    assert 0 < result["cpu_us_per_job"] < 1e6
    # The worker loaded exactly the config's plugins.
    (path,) = tmp_path.rglob(f"worker-plugins-{config}.log")
    log = path.read_text()
    expected = sorted(["bench.cpu", "bench.drain", "logging", "qw.run", *plugins.CONFIGS[config]])
    assert f"plugins: {expected}" in log
