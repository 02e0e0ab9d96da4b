"""The scale phase's own logic: sizes, the RSS slope and drift, goals, the report; real runs.

No servers: the end-to-end parts run qw's worker process on SQLite in a
temporary directory, at tiny sizes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from bench import scale


def test_sizes_defaults_options_and_refusals() -> None:
    full = scale.Sizes.of(quick=False)
    assert (full.backlog, full.soak_s, full.depth_low, full.depth_high) == (
        10_000_000,
        600.0,
        50_000,
        100_000,
    )
    assert scale.Sizes.of(quick=True).backlog == 100_000
    ns = scale.parse(
        ["--quick", "--soak-s", "30", "--soak-depth", "2000,4000", "--backlog", "5000"]
    )
    sizes = scale.sizes_of(ns)
    assert (sizes.soak_s, sizes.depth_low, sizes.depth_high, sizes.backlog) == (
        30.0,
        2000,
        4000,
        5000,
    )
    for bad in ({"backlog": 10}, {"depth_low": 5000, "depth_high": 5000}, {"soak_s": 1.0}):
        with pytest.raises(ValueError, match="bad sizes"):
            scale.Sizes.of(quick=True, **bad)


def test_least_squares_slope_per_minute() -> None:
    # 0.5 MB per second is 30 MB per minute, whatever the intercept.
    assert scale.slope_per_min([(t, 100 + 0.5 * t) for t in range(60)]) == pytest.approx(30.0)
    assert scale.slope_per_min([(t, 42.0) for t in range(10)]) == 0.0
    # Noise around a flat line fits to (nearly) zero.
    noisy = [(float(t), 50.0 + (0.3 if t % 2 else -0.3)) for t in range(600)]
    assert abs(scale.slope_per_min(noisy)) < 0.01
    assert math.isnan(scale.slope_per_min([(1.0, 5.0)]))
    assert math.isnan(scale.slope_per_min([(1.0, 5.0), (1.0, 6.0)]))


def _soak(rss: Any, soak_s: float = 600.0, rate: int = 1000) -> list[tuple[float, float, int]]:
    return [(float(t), float(rss(t)), rate * t) for t in range(int(soak_s) + 1)]


def test_a_flat_soak_passes_after_its_warm_up() -> None:
    # Growth in the first tenth (start-up, caches) does not count; flat after it.
    summary = scale.summarize_soak(_soak(lambda t: min(t, 60) / 2 + 40), 600.0)
    assert summary["flat"]
    assert summary["slope_mb_per_min"] == pytest.approx(0.0, abs=1e-9)
    assert summary["fit_points"] == 481
    assert summary["jobs_per_s_by_tenth"] == [1000.0] * 10
    assert summary["jobs_per_s"] == 1000.0
    assert summary["rss_max_mb"] == 70.0


def test_a_leak_or_a_step_fails() -> None:
    leak = scale.summarize_soak(_soak(lambda t: 100 + 1.5 * t / 60), 600.0)
    assert not leak["flat"]
    assert leak["slope_mb_per_min"] == pytest.approx(1.5)
    # A slope under the bound, but the last tenth 10% above the second: not flat.
    step = scale.summarize_soak(_soak(lambda t: 110.0 if t >= 540 else 100.0), 600.0)
    assert step["slope_mb_per_min"] < scale.GOAL_SLOPE_MB_MIN
    assert step["drift"] == pytest.approx(0.10)
    assert not step["flat"]
    # A slow leak under both bounds passes: the bounds are what the goal states.
    slow = scale.summarize_soak(_soak(lambda t: 200 + 0.5 * t / 60), 600.0)
    assert slow["flat"]


def test_throughput_by_tenth_follows_the_samples() -> None:
    # 2,000 jobs/s for the first half, 500 after.
    samples = [(float(t), 50.0, 2000 * min(t, 300) + 500 * max(t - 300, 0)) for t in range(601)]
    by_tenth = scale.summarize_soak(samples, 600.0)["jobs_per_s_by_tenth"]
    assert by_tenth == [2000.0] * 5 + [500.0] * 5


def _backlog(ratio: float) -> dict[str, Any]:
    return {
        "ok": True,
        "result": {
            "backlog": 10_000_000,
            "fill_s": 300.0,
            "fill_jobs_per_s": 33_333.0,
            "fill_first_rate": 35_000.0,
            "fill_last_rate": 30_000.0,
            "empty_p50_ms": 0.5,
            "empty_p99_ms": 1.0,
            "backlog_p50_ms": 0.5 * ratio,
            "backlog_p99_ms": 2.0,
            "ratio_p50": ratio,
            "p50_ms_by_depth": [[0, 0.5], [10_000_000, 0.5 * ratio]],
            "bytes_per_million": 500 * scale.MB,
        },
        "load_start": [1.0, 1.0, 1.0],
        "load_end": [1.5, 1.0, 1.0],
    }


def test_goals_pass_fail_and_a_failed_part() -> None:
    soak = {"ok": True, "result": scale.summarize_soak(_soak(lambda t: 80.0), 600.0)}
    data = {
        "backlog": {
            "qw-redis": _backlog(1.2),
            "qw-postgres": _backlog(2.5),
            "qw-sqlite": {"ok": False, "error": "RuntimeError: would need 30 GB"},
        },
        "soak": {"qw-redis": soak},
    }
    rows = {(r["goal"].split("(")[-1].rstrip(")"), r["goal"][:5]): r for r in scale.goals(data)}
    assert rows[("qw-redis", "claim")]["status"] == "PASS"
    assert rows[("qw-postgres", "claim")]["status"] == "FAIL"
    assert "2.50x" in rows[("qw-postgres", "claim")]["detail"]
    assert rows[("qw-sqlite", "claim")]["status"] == "FAIL"
    assert "30 GB" in rows[("qw-sqlite", "claim")]["detail"]
    assert rows[("qw-redis", "worke")]["status"] == "PASS"


def _machine() -> dict[str, Any]:
    return {
        "cpu_count": 2,
        "cpu_model": "test CPU",
        "memory_gib": 1.0,
        "python": "3.11",
        "postgresql": "15",
        "redis": "7",
    }


def test_write_merges_stores_of_other_runs(tmp_path: Path) -> None:
    sizes = scale.Sizes.of(quick=True)
    first = {
        "name": "s",
        "sizes": asdict(sizes),
        "machine": _machine(),
        "runs": [{"argv": ["a"]}],
        "backlog": {"qw-redis": _backlog(1.1)},
        "soak": {},
    }
    scale.write(first, tmp_path, "s", merge=False)
    second = dict(first, runs=[{"argv": ["b"]}], backlog={"qw-postgres": _backlog(3.0)})
    scale.write(second, tmp_path, "s", merge=True)
    data = json.loads((tmp_path / "s.json").read_text())
    assert set(data["backlog"]) == {"qw-redis", "qw-postgres"}
    assert data["runs"] == [{"argv": ["a"]}, {"argv": ["b"]}]
    text = (tmp_path / "s.md").read_text()
    assert "| qw-redis | 10,000,000 |" in text
    assert "- qw-redis: 0 queued 0.500, 10,000,000 queued 0.550" in text
    assert "| FAIL |" in text
    # Without merge, the file holds this run only.
    scale.write(dict(first), tmp_path, "s", merge=False)
    assert set(json.loads((tmp_path / "s.json").read_text())["backlog"]) == {"qw-redis"}


def _spec(tmp_path: Path, part: str, **sizes: Any) -> dict[str, Any]:
    base = scale.Sizes.of(quick=True, samples=5, **sizes)
    return {
        "driver": "qw-sqlite",
        "phase": part,
        "workdir": str(tmp_path),
        "timeout": 120,
        "sizes": asdict(base),
    }


def test_a_real_backlog_on_sqlite(tmp_path: Path) -> None:
    r = scale.phase(_spec(tmp_path, "backlog", backlog=3000))
    assert r["backlog"] == 3000
    assert [c for c, _ in r["fill_checkpoints"]] == [1000, 2000, 3000]
    # Five claims at each tenth but the last, each taking a job (queued counts
    # what was left); the last measurement sees exactly the backlog.
    depths = [q for q, _ in r["p50_ms_by_depth"]]
    assert depths == [0, 1000, 1995, 3000]
    assert all(ms > 0 for _, ms in r["p50_ms_by_depth"])
    assert r["empty_p50_ms"] > 0
    assert r["backlog_p50_ms"] > 0
    assert r["size_full"]["bytes"] > r["size_empty"]["bytes"]
    assert r["bytes_per_million"] > 0
    # Cleaned up: the SQLite files are gone.
    assert not list(tmp_path.rglob("qw.db*"))


def test_a_real_soak_on_sqlite_then_purge(tmp_path: Path) -> None:
    r = scale.phase(_spec(tmp_path, "soak", soak_s=5.0, depth_low=1000, depth_high=2000))
    assert r["exactly_once"]
    assert r["succeeded"] == r["enqueued"] == r["ran"] >= 2000
    assert len(r["samples"]) >= 4
    assert r["min_depth"] is None or r["min_depth"] >= 0
    assert all(rss > 0 for _, rss, _ in r["samples"])
    size = r["size"]
    assert size["finished"] == r["enqueued"]
    assert size["purged_jobs"] == r["enqueued"]
    # SQLite frees the purged pages into its freelist; VACUUM gives them back.
    assert size["after_purge"]["freelist_count"] > 0
    assert size["after_vacuum"]["bytes"] < size["full"]["bytes"]
