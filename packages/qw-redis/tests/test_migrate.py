"""Namespaces written by older qw-redis open, converted, and read as jobs without limits.

Version 1 of the key layout (0.1.0, no marker) kept every job field in its
own hash; version 2 packs the fields fixed at enqueue into ``f:job`` and
adds workflows, whose keys a 0.1.0 namespace has none of; version 3 adds
flow control (a ``lim`` field per job with a limit key, ranked ready
members, the key indexes), none of which a version-2 namespace has. The
older data below is written field by field as those versions' scripts
wrote it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import qw
from qw.errors import SchemaError
from qw.model import Complete, JobStatus, KeyState, Lease, Limit, NewJob
from qw_redis import RedisBackend
from qw_redis.keys import LEGACY_COLUMNS, SCHEMA_VERSION, Keyspace
from qw_testkit.base import new_namespace

from .servers import drop_namespaces
from .test_invariants import _raw, check_invariants

NOW = 1_790_000_000_000_000  # µs, in the past of any test run
LATER = NOW * 2  # µs, far in the future


def _v1_job(r: Any, keys: Keyspace, id_: str, queue: str, seq: int, **fields: object) -> None:
    """One job's fields as 0.1.0's enqueue.lua wrote them, and its status's indexes."""
    p = keys.prefix
    status = str(fields.pop("status", "queued"))
    columns: dict[str, object] = {
        "queue": queue,
        "payload": json.dumps(fields.pop("payload", None)),
        "prio": fields.pop("prio", 0),
        "run_at": fields.pop("run_at", NOW),
        "max": 3,
        "att": 0,
        "created": NOW,
        "seq": f"{seq:016d}",
        "status": status,
        **fields,
    }
    for column, value in columns.items():
        r.hset(f"{p}f:{column}", id_, str(value))
    r.zadd(f"{p}ids", {id_: 0})
    r.zadd(f"{p}st_{status}", {id_: 0})
    r.hincrby(f"{p}counts", f"{queue}:{status}", 1)


def write_v1_namespace(r: Any, keys: Keyspace) -> None:
    p = keys.prefix
    _v1_job(r, keys, "q1", "q", 1, payload={"a": 1}, dedupe="k1")
    r.hset(f"{p}dedupe", "k1", "q1")
    r.zadd(f"{p}q:q:ready", {f"{1:016d}q1": 0})
    _v1_job(r, keys, "q2", "q", 2, payload="later", prio=-1, run_at=LATER)
    r.zadd(f"{p}q:q:sched", {"q2": LATER})
    # A running job: 0.1.0's tokens do not name the queue.
    _v1_job(
        r,
        keys,
        "r1",
        "other",
        3,
        status="running",
        att=1,
        token="ab12cd1",
        worker="w",
        started=NOW,
        lease=LATER,
    )
    r.zadd(f"{p}running", {"r1": LATER})
    _v1_job(
        r, keys, "d1", "q", 4, status="succeeded", att=1, result='"ok"', finished=NOW, fby="ab12cd0"
    )
    r.zadd(f"{p}done", {"d1": NOW})
    r.set(f"{p}seq", 5)
    r.xadd(
        f"{p}events", {"job": "d1", "type": "job.succeeded", "data": "null", "at": NOW}, id="5-0"
    )
    r.zadd(f"{p}ev_unacked", {"5": 5})


def test_a_0_1_0_namespace_is_converted_at_open_and_reads_as_plain_jobs(url: str) -> None:
    namespace = new_namespace()
    keys = Keyspace(namespace)
    r = _raw(url)
    write_v1_namespace(r, keys)
    client = qw.open(url, namespace=namespace)
    try:
        assert r.get(keys.prefix + "schema") == str(SCHEMA_VERSION)
        for column in LEGACY_COLUMNS:
            assert not r.exists(f"{keys.prefix}f:{column}"), column
        check_invariants(r, keys, ["q", "other"])
        assert isinstance(client.backend, RedisBackend)
        assert "nothing to do" in client.backend.migrate()
        q1, q2, r1, d1 = client.get_many(["q1", "q2", "r1", "d1"])
        assert q1 is not None
        assert q2 is not None
        assert r1 is not None
        assert d1 is not None
        assert (q1.queue, q1.payload, q1.dedupe_key, q1.status) == ("q", {"a": 1}, "k1", "queued")
        assert (q1.workflow, q1.parents, q1.children, q1.failed_parents) == (None, (), (), ())
        assert (q2.priority, q2.payload, q2.run_at.year) == (-1, "later", 2083)
        assert (r1.queue, r1.status, r1.worker, r1.attempts) == ("other", "running", "w", 1)
        assert (d1.status, d1.result) == (JobStatus.SUCCEEDED, "ok")
        assert client.counts()["q"][JobStatus.QUEUED] == 2
        assert [j.id for j in client.list_jobs(status=JobStatus.QUEUED)] == ["q1", "q2"]
        assert [e.job_id for e in client.fetch_events()] == ["d1"]
        # The key q1 holds is still held; the queued job is claimed as it was.
        assert client.enqueue_one("q", 2, dedupe_key="k1").id == "q1"
        (claim,) = client.claim(["q"], worker="w2")
        assert (claim.job.id, claim.job.payload, claim.job.dedupe_key) == ("q1", {"a": 1}, "k1")
        # The 0.1.0 lease finishes (its token names no queue: it is looked up).
        assert r1.lease_expires_at is not None
        lease = Lease("r1", "ab12cd1", r1.lease_expires_at, attempt=1, max_attempts=3)
        assert client.finish([Complete(lease, "done")]) == [JobStatus.SUCCEEDED]
        client.complete(claim.lease)
        check_invariants(r, keys, ["q", "other"])
        assert client.purge(0).jobs == 3
        assert client.counts() == {"q": {s: int(s is JobStatus.QUEUED) for s in JobStatus}}
        # Workflows work in the converted namespace.
        client.create_workflow(
            "w", [NewJob("q", 1, id="w.1"), NewJob("q", 2, id="w.2", parents=("w.1",))]
        )
        check_invariants(r, keys, ["q", "other"])
    finally:
        client.close()
        r.close()
        if not url.startswith("redis+cluster://"):
            drop_namespaces(url, {namespace})


def test_a_namespace_of_a_newer_layout_is_refused(redis_url: str) -> None:
    namespace = new_namespace()
    keys = Keyspace(namespace)
    r = _raw(redis_url)
    try:
        r.set(keys.prefix + "schema", SCHEMA_VERSION + 1)
        with pytest.raises(SchemaError, match="upgrade qw-redis"):
            RedisBackend.from_url(redis_url, namespace=namespace)
    finally:
        r.close()
        drop_namespaces(redis_url, {namespace})


def test_a_large_0_1_0_namespace_converts_in_batches(redis_url: str) -> None:
    namespace = new_namespace()
    keys = Keyspace(namespace)
    r = _raw(redis_url)
    n = 12_000
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            _v1_job(pipe, keys, f"j{i:05d}", "q", i + 1, payload=i)
            pipe.zadd(keys.prefix + "q:q:ready", {f"{i + 1:016d}j{i:05d}": 0})
        pipe.execute()
        backend = RedisBackend.from_url(redis_url, namespace=namespace)
        try:
            client = qw.Client(backend)
            assert client.counts()["q"][JobStatus.QUEUED] == n
            claims = client.claim(["q"], worker="w", limit=3)
            assert [c.job.payload for c in claims] == [0, 1, 2]
            check_invariants(r, keys, ["q"])
        finally:
            backend.close()
    finally:
        r.close()
        drop_namespaces(redis_url, {namespace})


def _v2_job(r: Any, keys: Keyspace, id_: str, queue: str, seq: int, **fields: object) -> None:
    """One job as version 2's enqueue.lua wrote it (the packed job field), and its indexes."""
    p = keys.prefix
    status = str(fields.pop("status", "queued"))
    payload = json.dumps(fields.pop("payload", None))
    prio = fields.pop("prio", 0)
    columns: dict[str, object] = {
        "job": f"{prio}:3:{NOW}:{seq:016d}:{queue}:-1:{payload}",
        "run_at": fields.pop("run_at", NOW),
        "att": 0,
        "status": status,
        **fields,
    }
    for column, value in columns.items():
        r.hset(f"{p}f:{column}", id_, str(value))
    r.zadd(f"{p}ids", {id_: 0})
    r.zadd(f"{p}st_{status}", {id_: 0})
    r.hincrby(f"{p}counts", f"{queue}:{status}", 1)
    if status == "queued":
        r.zadd(f"{p}q:{queue}:ready", {f"{seq:016d}{id_}": prio})


def test_a_version_2_namespace_reads_as_jobs_without_limits_and_takes_keyed_jobs(
    url: str,
) -> None:
    namespace = new_namespace()
    keys = Keyspace(namespace)
    r = _raw(url)
    p = keys.prefix
    r.set(p + "schema", 2)
    _v2_job(r, keys, "old1", "q", 1, payload="first")
    _v2_job(r, keys, "old2", "q", 2, payload="second")
    _v2_job(r, keys, "run", "q", 3, status="running", att=1, token="t:1:q", worker="w", lease=LATER)
    r.zadd(p + "running", {"run": LATER})
    r.set(p + "seq", 3)
    client = qw.open(url, namespace=namespace)
    try:
        assert r.get(p + "schema") == str(SCHEMA_VERSION)
        assert isinstance(client.backend, RedisBackend)
        assert "nothing to do" in client.backend.migrate()
        check_invariants(r, keys, ["q"])
        old = client.get_many(["old1", "old2", "run"])
        assert [(j.limit_key, j.limit, j.fair) for j in old if j] == [(None, None, False)] * 3
        assert client.keys() == []
        assert [j.id for j in client.list_jobs(key="k")] == []
        # New keyed jobs join them: old jobs are rank 0, FIFO first, never held back.
        one = Limit(concurrency=1)
        new = [
            a.id
            for a in client.enqueue(
                [NewJob("q", i, limit_key="k", limit=one, fair=True) for i in range(3)]
            )
        ]
        claims = client.claim(["q"], worker="w2", limit=10)
        assert [c.job.id for c in claims] == ["old1", "old2", new[0]]
        assert client.keys() == [KeyState("k", 2, 1, one)]
        check_invariants(r, keys, ["q"])
        # The version-2 lease finishes as before.
        lease = Lease("run", "t:1:q", claims[0].lease.expires_at, attempt=1, max_attempts=3)
        assert client.finish([Complete(lease, "done")]) == [JobStatus.SUCCEEDED]
        for c in claims:
            client.complete(c.lease)
        assert [c.job.id for c in client.claim(["q"], worker="w2", limit=10)] == [new[1]]
        check_invariants(r, keys, ["q"])
    finally:
        client.close()
        r.close()
        if not url.startswith("redis+cluster://"):
            drop_namespaces(url, {namespace})
