"""The Redis structures agree with each other after every kind of transition.

The contract suite checks ``counts()`` against ``list_jobs()``; this checks
the layer below: the counts hash, the status indexes, the ready/scheduled/
running sets and the dedupe hash, against the status column itself.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

import qw
from qw.contract import Abort, Complete, Fail, Release
from qw.model import EventSpec, JobStatus, NewJob
from qw_redis.keys import Keyspace, packed_queue
from qw_redis.scripts import NAMES, source
from qw_testkit.base import new_namespace

from .servers import drop_namespaces


@pytest.fixture(params=["single", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("redis_url" if request.param == "single" else "cluster_url"))


def _raw(url: str) -> Any:
    if url.startswith("redis+cluster://"):
        return RedisCluster.from_url(
            url.replace("redis+cluster://", "redis://"), decode_responses=True
        )
    return redis.Redis.from_url(url, decode_responses=True)


def check_invariants(r: Any, keys: Keyspace, queues: list[str]) -> None:
    status = r.hgetall(keys.column("status"))
    queue = {i: packed_queue(v) for i, v in r.hgetall(keys.column("job")).items()}
    assert set(status) == set(queue) == set(r.zrange(keys.key("ids"), 0, -1))
    recount = Counter(f"{queue[i]}:{s}" for i, s in status.items())
    assert {k: int(v) for k, v in r.hgetall(keys.key("counts")).items()} == dict(recount)
    for s in JobStatus:
        indexed = set(r.zrange(keys.key(f"st_{s.value}"), 0, -1))
        assert indexed == {i for i, v in status.items() if v == s.value}, s
    waiting: set[str] = set()
    for q in queues:
        ready_key, sched_key = keys.queue_keys([q])
        ready = {m[16:] for m in r.zrange(ready_key, 0, -1)}
        sched = set(r.zrange(sched_key, 0, -1))
        assert not ready & sched
        assert all(queue[i] == q for i in ready | sched)
        waiting |= ready | sched
    assert waiting == {i for i, v in status.items() if v == "queued"}
    assert set(r.zrange(keys.key("running"), 0, -1)) == {
        i for i, v in status.items() if v == "running"
    }
    assert set(r.zrange(keys.key("done"), 0, -1)) == {
        i for i, v in status.items() if v in ("succeeded", "failed", "cancelled")
    }
    for dkey, holder in r.hgetall(keys.key("dedupe")).items():
        assert status.get(holder) in ("queued", "running"), dkey


def test_structures_agree_after_a_mixed_workload(url: str) -> None:
    namespace = new_namespace()
    keys = Keyspace(namespace)
    queues = ["a", "b"]
    client = qw.open(url, namespace=namespace)
    r = _raw(url)
    try:
        answers = client.enqueue(
            [NewJob(q, i, dedupe_key=f"k{i}" if i < 5 else None) for i in range(40) for q in queues]
        )
        assert sum(a.created for a in answers) == 75
        client.enqueue([NewJob("a", "later", delay=0.3), NewJob("b", "much later", delay=600)])
        check_invariants(r, keys, queues)
        claims = client.claim(queues, worker="w", lease_s=0.2, limit=12)
        outcomes = [
            Complete(claims[0].lease, 1, EventSpec("done")),
            Fail(claims[1].lease, "x", retry_in=0),
            Fail(claims[2].lease, "x", retry_in=60),
            Fail(claims[3].lease, "x"),
            Abort(claims[4].lease, "stop", EventSpec("aborted")),
            Release(claims[5].lease),
        ]
        assert all(s is not None for s in client.finish(outcomes))
        # Repeats and stale tokens change nothing.
        assert client.finish(outcomes[:1]) == [JobStatus.SUCCEEDED]
        client.finish(outcomes[1:])
        check_invariants(r, keys, queues)
        client.cancel(claims[6].job.id)  # running: flagged only
        queued = client.list_jobs(status=JobStatus.QUEUED, limit=3)
        for job in queued:
            client.cancel(job.id)
        check_invariants(r, keys, queues)
        time.sleep(0.35)  # leases of claims[6:] expire; "later" falls due
        assert client.reclaim_expired() == 6
        check_invariants(r, keys, queues)
        while batch := client.claim(queues, worker="w", limit=50):
            client.finish([Complete(c.lease) for c in batch])
            check_invariants(r, keys, queues)
        assert client.purge(0).jobs > 0
        check_invariants(r, keys, queues)
        assert client.counts() == {"b": {s: int(s is JobStatus.QUEUED) for s in JobStatus}}
    finally:
        client.close()
        r.close()
        if not url.startswith("redis+cluster://"):
            drop_namespaces(url, {namespace})


def test_every_script_that_changes_a_status_flushes_its_index_and_counts() -> None:
    for name in NAMES:
        body = source(name, "PUBLISH").split("local function flush()", 1)[1]
        if "set_status(" in body.split("\nend\n", 1)[1]:
            assert re.search(r"\bflush\(\)", body.split("\nend\n", 1)[1]), name
