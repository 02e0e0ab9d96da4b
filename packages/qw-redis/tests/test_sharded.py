"""Sharded namespaces (``shards=N``): placement, the shard count, migration, wake-ups, slots.

The contract kit runs whole against sharded namespaces too (test_contract.py);
these check what is particular to them, on the real single server and on the
3-master loopback Cluster.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from redis.crc import key_slot

import qw
from qw.model import Complete, JobStatus, Lease, NewJob
from qw_redis import RedisBackend
from qw_redis.keys import Keyspace
from qw_redis.sharded import ShardedRedisBackend, propose_shard
from qw_redis.urls import MAX_SHARDS
from qw_testkit.base import new_namespace

from .test_contract import with_shards
from .test_invariants import _raw
from .test_migrate import write_v1_namespace

#: Queue names whose proposed shard (of 3) is 0, 1 and 2.
BY_SHARD = {
    s: next(f"q{i}" for i in range(100) if propose_shard(f"q{i}", 3) == s) for s in range(3)
}


def sharded(client: qw.Client) -> ShardedRedisBackend:
    backend = client.backend
    assert isinstance(backend, ShardedRedisBackend)
    return backend


def test_queues_are_placed_by_their_name_and_their_jobs_keyed_under_their_shard(
    url: str, namespace: str
) -> None:
    r = _raw(url)
    with qw.open(with_shards(url, 3), namespace=namespace) as client:
        backend = sharded(client)
        ids = {s: client.enqueue_one(q, s).id for s, q in BY_SHARD.items()}
        for s, q in BY_SHARD.items():
            assert backend.shard_of(q) == s
            keys = Keyspace(namespace, s)
            assert r.hexists(keys.column("job"), ids[s]), f"the job of {q} is on shard {s}"
            assert r.zcard(f"{keys.prefix}q:{q}:ready") == 1
            others = [Keyspace(namespace, o) for o in range(3) if o != s]
            assert not any(r.hexists(k.column("job"), ids[s]) for k in others)
        assert r.hgetall(Keyspace(namespace).placement_key) == {
            q: str(s) for s, q in BY_SHARD.items()
        }
        assert r.get(Keyspace(namespace).shards_key) == "3"
    r.close()


def test_a_client_given_no_shards_routes_as_the_store_says(url: str, namespace: str) -> None:
    with qw.open(with_shards(url, 3), namespace=namespace) as first:
        job = first.enqueue_one(BY_SHARD[2], "x").id
    with qw.open(url, namespace=namespace) as later:
        assert sharded(later).shards == 3
        assert later.get(job).queue == BY_SHARD[2]
        (claim,) = later.claim([BY_SHARD[0], BY_SHARD[2]], worker="w")
        assert claim.job.id == job


def test_the_shard_count_only_grows_and_placed_queues_never_move(url: str, namespace: str) -> None:
    with qw.open(with_shards(url, 3), namespace=namespace) as client:
        client.enqueue_one(BY_SHARD[2], 1)
    with qw.open(with_shards(url, 2), namespace=namespace) as fewer:
        assert sharded(fewer).shards == 3
        assert sharded(fewer).shard_of(BY_SHARD[2]) == 2
    with qw.open(with_shards(url, 5), namespace=namespace) as more:
        assert sharded(more).shards == 5
        assert sharded(more).shard_of(BY_SHARD[2]) == 2
        assert more.counts()[BY_SHARD[2]][JobStatus.QUEUED] == 1


def test_a_0_1_0_namespace_sharded_keeps_its_queues_and_jobs_on_shard_0(
    url: str, namespace: str
) -> None:
    r = _raw(url)
    write_v1_namespace(r, Keyspace(namespace))
    with qw.open(with_shards(url, 3), namespace=namespace) as client:
        backend = sharded(client)
        assert backend.shard_of("q") == 0
        assert backend.shard_of("other") == 0
        q1, r1 = client.get_many(["q1", "r1"])
        assert q1 is not None
        assert r1 is not None
        assert (q1.queue, q1.status, q1.dedupe_key) == ("q", JobStatus.QUEUED, "k1")
        assert [e.job_id for e in client.fetch_events()] == ["d1"]
        (claim,) = client.claim(["q", BY_SHARD[1]], worker="w2")
        assert claim.job.id == "q1"
        # 0.1.0's lease names no queue: the router finds its job by id.
        assert r1.lease_expires_at is not None
        lease = Lease("r1", "ab12cd1", r1.lease_expires_at, attempt=1, max_attempts=3)
        assert client.finish([Complete(lease, "done")]) == [JobStatus.SUCCEEDED]
        client.complete(claim.lease)
        # New queues spread; the old ones keep their jobs where they were.
        placed = {backend.shard_of(q) for q in BY_SHARD.values()}
        assert placed == {0, 1, 2}
        assert client.counts()["q"][JobStatus.SUCCEEDED] == 2
    r.close()


def test_a_new_shard_starts_with_the_operators_switches_and_limits(
    url: str, namespace: str
) -> None:
    with qw.open(url, namespace=namespace) as plain:
        plain.set_enabled(False)
        plain.set_limit("k", qw.Limit(concurrency=1))
    with qw.open(with_shards(url, 3), namespace=namespace) as client:
        for q in BY_SHARD.values():
            client.enqueue_one(q, q)
        assert client.claim(list(BY_SHARD.values()), worker="w", limit=10) == []
        client.set_enabled(True)
        assert len(client.claim(list(BY_SHARD.values()), worker="w", limit=10)) == 3
        for s in range(3):
            assert sharded(client)._shard(s).limits() == {"k": qw.Limit(concurrency=1)}


def test_event_cursors_carry_their_shard(url: str, namespace: str) -> None:
    with qw.open(with_shards(url, 3), namespace=namespace) as client:
        for q in BY_SHARD.values():
            client.enqueue_one(q, q)
        for claim in client.claim(list(BY_SHARD.values()), worker="w", limit=10):
            client.complete(claim.lease, event=qw.EventSpec("done", claim.job.queue))
        events = client.fetch_events()
        assert sorted((e.cursor % MAX_SHARDS, e.data) for e in events) == list(BY_SHARD.items())
        assert client.ack_events([e.cursor for e in events]) == 3
        assert client.fetch_events() == []


def test_one_wait_over_queues_on_several_shards_wakes_for_each(url: str, namespace: str) -> None:
    queues = list(BY_SHARD.values())
    with (
        qw.open(with_shards(url, 3), namespace=namespace) as worker,
        qw.open(with_shards(url, 3), namespace=namespace) as producer,
    ):
        backend = worker.backend
        for q in queues:
            assert worker.claim(queues, worker="w") == []
            woke: list[float] = []

            def wait(woke: list[float] = woke) -> None:
                started = time.monotonic()
                if backend.wait(queues, 10.0):
                    woke.append(time.monotonic() - started)

            waiter = threading.Thread(target=wait)
            waiter.start()
            time.sleep(0.2)
            producer.enqueue_one(q, q)
            waiter.join(10.0)
            assert woke, f"an enqueue on {q} woke nobody"
            assert woke[0] < 2.0, f"woken after {woke[0]:.2f} s"
            (claim,) = worker.claim(queues, worker="w")
            worker.complete(claim.lease)


def test_a_batch_or_workflow_across_shards_is_refused_naming_them(url: str, namespace: str) -> None:
    with qw.open(with_shards(url, 3), namespace=namespace) as client:
        with pytest.raises(qw.errors.CrossShard, match=r"shard 0: q\d+; shard 1: q\d+"):
            client.enqueue([NewJob(BY_SHARD[0], 1), NewJob(BY_SHARD[1], 2)])
        steps = [NewJob(BY_SHARD[0], 1, id="w.a"), NewJob(BY_SHARD[2], 2, id="w.b")]
        with pytest.raises(qw.errors.CrossShard, match="workflow 'w'"):
            client.create_workflow("w", steps)
        assert client.counts() == {}
        # Within one shard, a batch and a workflow are atomic as ever.
        same = [
            NewJob(BY_SHARD[1], 1, id="w.a"),
            NewJob(BY_SHARD[1], 2, id="w.b", parents=("w.a",)),
        ]
        assert client.create_workflow("w", same).created


def test_a_workflow_id_on_one_shard_is_taken_on_the_others(url: str, namespace: str) -> None:
    with qw.open(with_shards(url, 3), namespace=namespace) as client:
        assert client.create_workflow("w", [NewJob(BY_SHARD[1], 1, id="w.a")]).created
        again = client.create_workflow("w", [NewJob(BY_SHARD[2], 1, id="w.b")])
        assert not again.created
        assert client.find("w.b") is None


def test_a_client_opened_before_sharding_places_new_queues_on_shard_0_and_is_refused_others(
    url: str, namespace: str
) -> None:
    r = _raw(url)
    # Opened while the namespace is plain: it sends every job to shard 0.
    stale = qw.open(url, namespace=namespace)
    assert isinstance(stale.backend, RedisBackend)
    stale.enqueue_one("old", 0)
    with qw.open(with_shards(url, 3), namespace=namespace) as router:
        router.enqueue_one(BY_SHARD[2], 1)
        before = {s: r.hgetall(Keyspace(namespace, s).key("counts")) for s in range(3)}
        # A queue placed on another shard: each way of inserting is refused,
        # writing nothing (a lone job, a batch, a workflow).
        refusals: list[Any] = [
            lambda: stale.enqueue_one(BY_SHARD[2], 2),
            lambda: stale.enqueue([NewJob("new0", 3), NewJob(BY_SHARD[2], 4)]),
            lambda: stale.create_workflow("w", [NewJob(BY_SHARD[2], 5, id="w.a")]),
        ]
        for refused in refusals:
            with pytest.raises(qw.SchemaError, match=rf"queue '{BY_SHARD[2]}' lives on shard 2"):
                refused()
        assert {s: r.hgetall(Keyspace(namespace, s).key("counts")) for s in range(3)} == before
        assert r.hget(Keyspace(namespace).placement_key, "new0") is None
        assert stale.find("w.a") is None
        # A queue not placed yet is placed where the stale client put its job,
        # and routers find it there, whatever its name proposes.
        fresh = next(q for q in (f"n{i}" for i in range(100)) if propose_shard(q, 3) != 0)
        job = stale.enqueue_one(fresh, 6).id
        assert sharded(router).shard_of(fresh) == 0
        (claim,) = router.claim([fresh], worker="w")
        assert claim.job.id == job
        assert router.get(job).queue == fresh
        # Queues on shard 0 stay open to it.
        stale.enqueue([NewJob("old", 7), NewJob(fresh, 8)])
        assert router.counts()["old"][JobStatus.QUEUED] == 2
    stale.close()
    r.close()


def test_bad_shard_counts_are_refused_before_any_io() -> None:
    for bad in ("0", "65", "two", "-1"):
        with pytest.raises(qw.ConfigurationError, match="shards"):
            RedisBackend.from_url(f"redis://127.0.0.1:1/0?shards={bad}", namespace="ns")


def test_each_shard_is_its_own_cluster_slot(cluster_url: str) -> None:
    namespace = new_namespace()
    slots = {key_slot(Keyspace(namespace, s).key("seq").encode()) for s in range(8)}
    assert len(slots) == 8, "8 shards, 8 tags, 8 slots"
    with qw.open(with_shards(cluster_url, 3), namespace=namespace) as client:
        for q in BY_SHARD.values():
            client.enqueue_one(q, q)
        nodes = _slot_owners(cluster_url)
        for s in range(3):
            slot = key_slot(Keyspace(namespace, s).key("seq").encode())
            node = redis.Redis(port=nodes[slot], decode_responses=True)
            try:
                # The shard's keys are on the master owning its slot, not elsewhere.
                assert node.exists(Keyspace(namespace, s).column("job")) == 1
            finally:
                node.close()


def _slot_owners(cluster_url: str) -> dict[int, int]:
    port = int(cluster_url.rsplit(":", 1)[1])
    r = redis.Redis(port=port, decode_responses=True)
    try:
        ranges: Any = r.execute_command("CLUSTER SLOTS")
    finally:
        r.close()
    owners: dict[int, int] = {}
    for start, end, master, *_ in ranges:
        for slot in range(int(start), int(end) + 1):
            owners[slot] = int(master[1])
    return owners


def test_one_worker_runs_every_job_of_queues_on_every_shard_once(url: str, namespace: str) -> None:
    app = qw.App(with_shards(url, 3), namespace)
    tasks = {}
    for s, queue in BY_SHARD.items():

        def double(x: int, s: int = s) -> list[int]:
            return [s, 2 * x]

        tasks[queue] = app.task(double, name=f"double{s}", queue=queue)
    answers = {
        queue: app.enqueue_many([task.job(i) for i in range(200)]) for queue, task in tasks.items()
    }
    # A workflow on one shard's queues, its steps run by the same worker.
    flow = app.workflow("sharded")
    first = flow.add(tasks[BY_SHARD[1]], 1)
    flow.add(tasks[BY_SHARD[1]], 2, after=[first])
    flow.enqueue()
    worker = app.worker(list(BY_SHARD.values()), concurrency=8, poll_interval=0.05)
    runner = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            counts = app.client.counts()
            done = sum(counts.get(q, {}).get(JobStatus.SUCCEEDED, 0) for q in BY_SHARD.values())
            if done == 602:
                break
            time.sleep(0.1)
    finally:
        worker.stop()
        runner.join(30)
    for s, queue in BY_SHARD.items():
        jobs = app.client.get_many([a.id for a in answers[queue]])
        assert [j.result if j else None for j in jobs] == [[s, 2 * i] for i in range(200)]
        assert all(j is not None and j.attempts == 1 for j in jobs), "each ran once"
    assert app.client.get_workflow("sharded").state is qw.WorkflowState.SUCCEEDED
    app.close()
