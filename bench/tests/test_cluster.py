"""The cluster phase's own logic: picking queues and namespaces, the masters' figures, the report.

No server for most: a fixed ``CLUSTER SLOTS`` reply and a fixed result. The
last test runs the phase for real at a tiny size on a cluster it starts
(skipped without redis-server and redis-cli).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import cluster, run
from qw_redis.sharded import propose_shard

#: ``CLUSTER SLOTS`` of a 3-master cluster as ``redis-cli --cluster create`` lays it out.
SLOTS = [
    [0, 5460, [b"127.0.0.1", 7000, b"a" * 40, {}]],
    [5461, 10922, [b"127.0.0.1", 7001, b"b" * 40, {}]],
    [10923, 16383, [b"127.0.0.1", 7002, b"c" * 40, {}]],
]
PORTS = [7000, 7001, 7002]


def test_queues_two_on_each_shard_in_turn() -> None:
    queues = cluster.QUEUES
    assert len(queues) == len(set(queues)) == 6
    shards = [propose_shard(q, 3) for q in queues]
    # Job i goes to queue i % 6: consecutive queues are on consecutive shards.
    assert shards == [0, 1, 2, 0, 1, 2]
    assert cluster.pick_queues() == queues  # the same every run
    assert [propose_shard(q, 2) for q in cluster.pick_queues(2, 3, prefix="x")] == [0, 1] * 3


def test_slot_owner_and_namespace_on_three_masters() -> None:
    owner = cluster.slot_owner(SLOTS)
    assert (owner(0), owner(5460), owner(5461), owner(16383)) == (7000, 7000, 7001, 7002)
    with pytest.raises(LookupError):
        owner(16384)
    ns = cluster.pick_namespace(owner, 3, "bench-s3-")
    tags = cluster.shard_tags(ns, 3)
    assert tags == [ns, f"{ns}/1", f"{ns}/2"]
    assert len({owner(cluster.tag_slot(t)) for t in tags}) == 3
    # The tag alone decides the slot, as Redis hashes it.
    from redis.crc import key_slot

    assert cluster.tag_slot(f"{ns}/1") == key_slot(f"qw:{{{ns}/1}}:anything".encode())
    # One master cannot hold three shards apart.
    with pytest.raises(LookupError, match="spreads 3 tags"):
        cluster.pick_namespace(lambda slot: 7000, 3, "x")
    assert cluster.pick_namespace(lambda slot: 7000, 1, "x") == "x0"


def test_layout_puts_each_shard_on_its_master() -> None:
    owner = cluster.slot_owner(SLOTS)
    ns = cluster.pick_namespace(owner, 3, "bench-s3-")
    rows = cluster.layout(ns, 3, owner, PORTS)
    assert [r["queue"] for r in rows] == list(cluster.QUEUES)
    assert {r["master"] for r in rows} == {0, 1, 2}
    by_shard = {r["shard"]: r["master"] for r in rows}
    assert len(by_shard) == 3
    assert all(by_shard[r["shard"]] == r["master"] for r in rows)
    plain = cluster.layout("plain", 1, owner, PORTS)
    assert {(r["shard"], r["tag"], r["master"]) for r in plain} == {
        (0, "plain", PORTS.index(owner(cluster.tag_slot("plain"))))
    }


def test_usage_deltas_and_shares() -> None:
    before = [{"port": p, "cpu_s": 1.0, "commands": 100} for p in PORTS]
    after = [
        {"port": 7000, "cpu_s": 4.0, "commands": 400},
        {"port": 7001, "cpu_s": 1.0, "commands": 100},
        {"port": 7002, "cpu_s": 2.0, "commands": 200},
    ]
    got = cluster.usage(before, after)
    assert [g["cpu_s"] for g in got] == [3.0, 0.0, 1.0]
    assert [g["commands"] for g in got] == [300, 0, 100]
    assert [g["cpu_share"] for g in got] == [0.75, 0.0, 0.25]
    assert [g["commands_share"] for g in got] == [0.75, 0.0, 0.25]
    idle = cluster.usage(before, before)
    assert [g["cpu_share"] for g in idle] == [0.0, 0.0, 0.0]


def test_sizes_defaults_options_and_refusals() -> None:
    full = cluster.Sizes.of(quick=False)
    assert full.n == 200_000
    assert full.settings == ((1, 16), (2, 16), (3, 16), (4, 4))
    assert full.shard_counts == (1, 3)
    assert cluster.Sizes.of(quick=True).n == 20_000
    ns = cluster.parse(
        ["--quick", "--n", "600", "--settings", "1x4,2x8", "--shards", "3", "--reps", "2"]
    )
    sizes = cluster.sizes_of(ns)
    assert (sizes.n, sizes.settings, sizes.shard_counts, sizes.reps) == (
        600,
        ((1, 4), (2, 8)),
        (3,),
        2,
    )
    for bad in ({"n": 5}, {"settings": ()}, {"shard_counts": (4,)}, {"reps": 0}):
        with pytest.raises(ValueError, match="cluster phase"):
            cluster.Sizes.of(quick=True, **bad)


def test_run_dispatches_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake(args: list[str]) -> int:
        seen.append(list(args))
        return 0

    monkeypatch.setattr(cluster, "main", fake)
    assert run.main(["cluster", "--n", "600"]) == 0
    assert run.main(["--quick", "cluster"]) == 0
    assert seen == [["--n", "600"], ["--quick"]]


def _drain(jobs_per_s: float, cpu: list[float], ok: bool = True) -> dict[str, Any]:
    total = sum(cpu)
    return {
        "ok": True,
        "result": {
            "jobs_per_s": jobs_per_s,
            "seconds": 2.0,
            "steady_jobs_per_s": jobs_per_s * 1.05,
            "exactly_once": ok,
            "ran": 1200,
            "store_succeeded": 1200,
            "machine_busy_cores": 1.97,
            "masters": [
                {"port": p, "cpu_s": c, "cpu_share": c / total, "commands": int(c * 1000)}
                for p, c in zip(PORTS, cpu, strict=True)
            ],
        },
        "load_start": [1.0, 0.9, 0.8],
        "load_end": [1.5, 1.0, 0.8],
    }


def fixed_data() -> dict[str, Any]:
    owner = cluster.slot_owner(SLOTS)
    namespaces = {"1": "bench-s1-0", "3": cluster.pick_namespace(owner, 3, "bench-s3-")}
    return {
        "name": "bench-cluster-test",
        "argv": ["--n", "1200"],
        "started": "2026-12-02T10:00:00+0000",
        "duration_s": 42.0,
        "sizes": {"n": 1200, "settings": [[1, 16], [2, 16]], "shard_counts": [1, 3]},
        "machine": {
            "cpu_count": 2,
            "cpu_model": "Test CPU",
            "memory_gib": 8.0,
            "platform": "Linux",
            "python": "3.11.7",
            "packages": {"qw-core": "0.1.0"},
            "load_at_start": [1.0, 0.9, 0.8],
            "load_at_end": [1.5, 1.0, 0.8],
        },
        "cluster": {
            "masters": [
                {"port": p, "slots": s}
                for p, s in zip(PORTS, ["0-5460", "5461-10922", "10923-16383"], strict=True)
            ],
            "redis": "7.0.15",
            "persistence": cluster.PERSISTENCE,
        },
        "queues": list(cluster.QUEUES),
        "namespaces": namespaces,
        "layout": {k: cluster.layout(v, int(k), owner, PORTS) for k, v in namespaces.items()},
        "worker_plugins": ["logging"],
        "runs": {
            "1": {
                "1px16": _drain(7000.0, [0.01, 0.01, 1.4]),
                "2px16": {"ok": False, "error": "timed out after 500 s (killed)"},
            },
            "3": {
                "1px16": {**_drain(8000.0, [0.4, 0.4, 0.4]), "reps_jobs_per_s": [7500.0, 8000.0]},
                "2px16": _drain(9000.0, [0.5, 0.45, 0.45], ok=False),
            },
        },
    }


def test_summary_and_best() -> None:
    data = fixed_data()
    s = cluster.summarize(data["runs"]["1"]["1px16"])
    assert s is not None
    assert s["busiest_share"] == pytest.approx(1.4 / 1.42)
    assert s["masters_cpu_s"] == pytest.approx(1.42)
    assert s["busiest_core"] == pytest.approx(0.7)
    assert cluster.summarize(data["runs"]["1"]["2px16"]) is None
    # A drain that did not run each job exactly once is never the best.
    best3 = cluster.best(data, 3)
    assert best3 is not None
    assert best3[0] == "1px16"
    assert cluster.best({"runs": {}}, 3) is None


def test_keep_shows_a_failure_first_else_the_fastest() -> None:
    slow, fast = _drain(7000.0, [1.0, 1.0, 1.0]), _drain(9000.0, [1.0, 1.0, 1.0])
    kept = cluster.keep([slow, fast])
    assert kept["result"]["jobs_per_s"] == 9000.0
    assert kept["reps_jobs_per_s"] == [7000.0, 9000.0]
    twice = _drain(9500.0, [1.0, 1.0, 1.0], ok=False)
    assert cluster.keep([fast, twice])["result"]["jobs_per_s"] == 9500.0
    dead = {"ok": False, "error": "boom"}
    kept = cluster.keep([fast, dead])
    assert kept["error"] == "boom"
    assert kept["reps_jobs_per_s"] == [9000.0, None]


def test_markdown_from_fixed_json(tmp_path: Path) -> None:
    data = json.loads(json.dumps(fixed_data()))
    text = cluster.markdown(data)
    assert "On 2 cores, all 3 masters, the workers and this harness share the same CPUs" in text
    assert "| 1 | 1px16 | 7,000 | 99% | 70% | 1.4 | yes |" in text
    assert "| 3 | 1px16 | 8,000 | 33% | 20% | 1.2 | yes |" in text
    assert "## shards=1" in text
    assert "## shards=3" in text
    assert "| 2px16 | failed: timed out after 500 s (killed) | |" in text
    assert "0.0 (1%) | 0.0 (1%) | 1.4 (99%)" in text
    assert "| 2px16 | 9,000 (9,450) | NO (1,200 ran, 1,200 succeeded)" in text
    assert "| 1px16 | 8,000 (8,400; reps 7,500 / 8,000) | yes" in text
    assert "## How it was taken" in text
    assert "`python -m bench.run cluster --n 1200`" in text
    assert "start [1.0, 0.9, 0.8], end [1.5, 1.0, 0.8]" in text
    paths = cluster.write(data, tmp_path, "bench-cluster-test")
    assert [p.name for p in paths] == ["bench-cluster-test.json", "bench-cluster-test.md"]
    assert json.loads(paths[0].read_text())["runs"]["3"]["1px16"]["ok"]


@pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli")),
    reason="redis-server / redis-cli not installed",
)
def test_real_tiny_run(tmp_path: Path) -> None:
    code = cluster.main(
        ["--n", "600", "--settings", "1x4", "--out", str(tmp_path), "--name", "tiny"]
    )
    data = json.loads((tmp_path / "tiny.json").read_text())
    assert code == 0, data["runs"]
    for shards in ("1", "3"):
        r = data["runs"][shards]["1px4"]["result"]
        assert r["exactly_once"]
        assert r["ran"] == r["store_succeeded"] == 600
    plain = data["runs"]["1"]["1px4"]["result"]
    sharded = data["runs"]["3"]["1px4"]["result"]
    # A plain namespace's keys are on one master; a sharded one's on all three.
    assert sum(1 for tags in plain["keys_by_tag"].values() if tags) == 1
    assert sum(1 for tags in sharded["keys_by_tag"].values() if tags) == 3
    placed = {q: int(s) for q, s in sharded["placement_stored"].items()}
    assert placed == {q: propose_shard(q, 3) for q in cluster.QUEUES}
    assert min(m["cpu_share"] for m in sharded["masters"]) > 0.15
    assert (tmp_path / "tiny.md").read_text().startswith("# qw benchmark: `tiny`")
