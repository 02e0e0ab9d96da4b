"""A lone plain job has a script of its own (lua/enqueue_one.lua) that stores what enqueue.lua does.

The contract suite checks the behaviour through the client; this checks the
stored layout itself, key by key, for a job enqueued alone and one enqueued
in a batch (lua/enqueue.lua), due now and delayed, and that a duplicate id
refused by the lone script writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

import qw
from qw.errors import DuplicateJob
from qw.model import NewJob
from qw.plugin.manager import QwPluginManager
from qw_redis import RedisBackend
from qw_testkit.base import new_namespace

from .servers import drop_namespaces


@pytest.fixture
def store(redis_url: str) -> Iterator[tuple[qw.Client, redis.Redis[Any]]]:
    namespace = new_namespace()
    backend = RedisBackend.from_url(redis_url, namespace=namespace)
    client = qw.Client(backend, plugins=QwPluginManager())
    raw: redis.Redis[Any] = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client, raw
    finally:
        client.close()
        raw.close()
        drop_namespaces(redis_url, {namespace})


def _stored(client: qw.Client, raw: redis.Redis[Any], job_id: str, queue: str) -> dict[str, Any]:
    """Everything stored for ``job_id``, with its creation time and FIFO position taken out."""
    keys = client.backend.keyspace  # type: ignore[attr-defined]
    ready, sched = keys.queue_keys([queue])
    prio, maxa, _created, seq, q, dl, rest = raw.hget(keys.column("job"), job_id).split(":", 6)
    members = {m: s for m, s in raw.zrange(ready, 0, -1, withscores=True) if m.endswith(job_id)}
    return {
        "job": (prio, maxa, q, dl, rest),
        "seq_digits": len(seq),
        "run_at_set": raw.hget(keys.column("run_at"), job_id) is not None,
        "att": raw.hget(keys.column("att"), job_id),
        "status": raw.hget(keys.column("status"), job_id),
        "in_queued": raw.zscore(keys.key("st_queued"), job_id),
        "in_ids": raw.zscore(keys.key("ids"), job_id),
        "ready": [(m == seq + job_id, s) for m, s in members.items()],
        "sched": raw.zscore(sched, job_id) is not None,
    }


@pytest.mark.parametrize("delay", [None, 3600])
def test_a_lone_job_is_stored_as_a_batch_stores_it(
    store: tuple[qw.Client, redis.Redis[Any]], delay: int | None
) -> None:
    client, raw = store
    one = NewJob("q", {"n": 1}, id="lone", priority=3, max_attempts=5, delay=delay)
    batch = [
        NewJob("q", {"n": 1}, id="batched", priority=3, max_attempts=5, delay=delay),
        NewJob("q", {"n": 2}, id="other", delay=delay),
    ]
    assert [e.id for e in client.enqueue([one])] == ["lone"]
    assert [e.id for e in client.enqueue(batch)] == ["batched", "other"]
    lone, batched = _stored(client, raw, "lone", "q"), _stored(client, raw, "batched", "q")
    assert lone == batched
    assert lone["sched"] is (delay is not None)
    assert lone["ready"] == ([] if delay else [(True, 3.0)])
    assert client.counts()["q"]["queued"] == 3
    job = client.get("lone")
    assert job is not None
    assert (job.payload, job.priority) == ({"n": 1}, 3)


def test_a_lone_duplicate_writes_nothing(store: tuple[qw.Client, redis.Redis[Any]]) -> None:
    client, raw = store
    client.enqueue([NewJob("q", {"n": 1}, id="dup")])
    keys = client.backend.keyspace  # type: ignore[attr-defined]
    before = {k: raw.dump(k) for k in raw.scan_iter(match=keys.prefix + "*")}
    with pytest.raises(DuplicateJob):
        client.enqueue([NewJob("q", {"n": 2}, id="dup")])
    after = {k: raw.dump(k) for k in raw.scan_iter(match=keys.prefix + "*")}
    assert after == before
    job = client.get("dup")
    assert job is not None
    assert job.payload == {"n": 1}
