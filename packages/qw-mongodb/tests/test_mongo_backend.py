"""What is particular to the MongoDB backend, beyond the shared contract.

These run on the same store as the contract suite: a real server when
QW_TEST_MONGODB_URL is set, else the mongomock stand-in (see the banner).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pymongo
import pytest
from mongo_store import STAND_IN, URL, Store
from pymongo.collection import Collection

import qw
from qw.contract import Insert
from qw.model import EventSpec, JobStatus, NewJob
from qw.transitions import plan_finish
from qw_mongodb import MongoBackend
from qw_mongodb import documents as d
from qw_mongodb.backend import DEFAULT_WRITE_CONCERN, SCHEMA_VERSION, choose_write_concern

needs_server = pytest.mark.skipif(
    URL is None,
    reason=f"needs a real MongoDB server (QW_TEST_MONGODB_URL): the stand-in {STAND_IN!r} "
    "has no query planner, capped collections, tailable cursors or change streams",
)


def open_client(store: Store, namespace: str, **options: object) -> qw.Client:
    return qw.Client(store.open(namespace, **options))


def insert(queue: str, payload: str, *, id: str, dedupe_key: str | None = None) -> Insert:
    """A new job as the client hands it to the backend: the payload already JSON text."""
    return Insert(id, queue, payload, 0, None, None, 3, dedupe_key)


def raw_jobs(store: Store, client: qw.Client) -> Collection[Any]:
    backend = client.backend
    assert isinstance(backend, MongoBackend)
    jobs: Collection[Any] = store.client[backend.database]["jobs"]
    return jobs


def test_each_namespace_is_its_own_database(store: Store) -> None:
    a = open_client(store, "iso-a")
    b = open_client(store, "iso-b")
    a.enqueue_one("q", 1)
    assert isinstance(a.backend, MongoBackend)
    assert a.backend.database == "qw_iso-a"
    assert store.client["qw_iso-a"]["jobs"].count_documents({}) == 1
    assert store.client["qw_iso-b"]["jobs"].count_documents({}) == 0
    assert b.counts() == {}
    a.close()
    b.close()


def test_an_event_whose_relay_was_interrupted_is_relayed_later_exactly_once(
    store: Store,
) -> None:
    client = open_client(store, "relay")
    client.enqueue_one("q", 1)
    (claim,) = client.claim(["q"], worker="w")
    # The transition and its outbox entry, as finish() writes them, but the
    # process "dies" before relaying.
    t = plan_finish(
        qw.Complete(claim.lease, "ok", EventSpec("done", {"n": 1})),
        body='"ok"',
        event_data='{"n":1}',
    )
    key = d.finish_event_key(claim.job.id, claim.lease.token)
    update = d.transition_update(t, now=client.now(), event_key=key)
    jobs = raw_jobs(store, client)
    fence = d.fence_filter(claim.job.id, claim.lease.token, claim.lease.attempt)
    assert jobs.update_one(fence, update).modified_count
    assert client.get(claim.job.id).status is JobStatus.SUCCEEDED
    first = client.fetch_events()  # relays the leftover first
    assert [(e.job_id, e.type, e.data) for e in first] == [(claim.job.id, "done", {"n": 1})]
    assert jobs.count_documents(d.PENDING_OUTBOX) == 0
    # The same entry relayed again (a second relayer that raced) is not a second event.
    entry = d.outbox_entry(key, "done", "1", client.now())
    jobs.update_one({"_id": claim.job.id}, {"$push": {"outbox": entry}})
    assert client.reclaim_expired() == 0  # the sweeper relays leftovers too
    assert client.fetch_events() == first
    # And the finished call itself, repeated, answers without a second event.
    assert (
        client.complete(claim.lease, "ok", event=EventSpec("done", {"n": 1})) is JobStatus.SUCCEEDED
    )
    assert client.fetch_events() == first
    client.close()


def test_a_staged_batch_is_invisible_until_committed(store: Store) -> None:
    client = open_client(store, "staged")
    jobs = raw_jobs(store, client)
    now = client.now()
    docs = [
        d.job_document(
            insert("q", str(i), id=f"s{i}", dedupe_key=f"k{i}"), seq=i, now=now, batch="B"
        )
        for i in range(3)
    ]
    jobs.insert_many(docs)
    assert client.find("s0") is None
    assert client.counts() == {}
    assert client.list_jobs() == []
    assert client.claim(["q"], worker="w") == []
    with pytest.raises(qw.JobNotFound):
        client.cancel("s0")
    jobs.update_many(*d.commit_batch("B"))
    assert client.counts()["q"][JobStatus.QUEUED] == 3
    client.close()


def test_the_sweeper_undoes_an_abandoned_batch_and_completes_a_begun_commit(
    store: Store,
) -> None:
    client = open_client(store, "sweep")
    jobs = raw_jobs(store, client)
    old = client.now() - timedelta(minutes=5)
    abandoned = [
        d.job_document(
            insert("q", str(i), id=f"a{i}", dedupe_key="held"), seq=i, now=old, batch="A"
        )
        for i in range(1)
    ] + [d.job_document(insert("q", "9", id="a9"), seq=9, now=old, batch="A")]
    begun = [
        d.job_document(insert("q", str(i), id=f"b{i}"), seq=10 + i, now=old, batch="B")
        for i in range(3)
    ]
    jobs.insert_many(abandoned + begun)
    jobs.update_one({"_id": "b0"}, {"$set": {"status": "queued"}})  # commit began, then crash
    client.reclaim_expired()
    assert jobs.count_documents({"batch": "A"}) == 0  # rolled back: the key is free again
    assert {j.id for j in client.list_jobs()} == {"b0", "b1", "b2"}
    assert client.enqueue_one("q", 1, dedupe_key="held").created
    client.close()


def test_a_multi_job_enqueue_with_a_taken_id_leaves_nothing_behind(store: Store) -> None:
    client = open_client(store, "allornothing")
    client.enqueue([NewJob("q", 0, id="taken")])
    with pytest.raises(qw.DuplicateJob):
        client.enqueue([NewJob("q", 1, id="new1"), NewJob("q", 2, id="taken")])
    assert [j.id for j in client.list_jobs()] == ["taken"]
    assert raw_jobs(store, client).count_documents({}) == 1  # no staged leftovers either
    client.close()


def test_the_store_itself_refuses_a_second_live_job_with_one_dedupe_key(store: Store) -> None:
    client = open_client(store, "dedupe-index")
    client.enqueue_one("q", 1, dedupe_key="k")
    doc = d.job_document(insert("q", "2", dedupe_key="k", id="other"), seq=99, now=client.now())
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        raw_jobs(store, client).insert_one(doc)
    client.close()


def test_a_newer_schema_is_refused(store: Store) -> None:
    client = open_client(store, "schema")
    assert isinstance(client.backend, MongoBackend)
    meta = store.client[client.backend.database]["meta"]
    meta.update_one({"_id": "schema"}, {"$set": {"version": SCHEMA_VERSION + 1}})
    with pytest.raises(qw.SchemaError):
        store.open("schema")
    client.close()


def test_write_concern_defaults_to_majority_journaled_unless_the_app_chose() -> None:
    assert DEFAULT_WRITE_CONCERN.document == {"w": "majority", "j": True}
    assert choose_write_concern(pymongo.WriteConcern()) is DEFAULT_WRITE_CONCERN
    assert choose_write_concern(None) is DEFAULT_WRITE_CONCERN
    mine = pymongo.WriteConcern(w=2, wtimeout=1000)
    assert choose_write_concern(mine) is mine


def test_an_unreachable_server_is_backend_unavailable() -> None:
    started = time.monotonic()
    with pytest.raises(qw.BackendUnavailable):
        MongoBackend.from_url(
            "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300&connectTimeoutMS=300",
            namespace="nowhere",
        )
    assert time.monotonic() - started < 10


@needs_server
@pytest.mark.parametrize("mode", ["tailable", "change_stream"])
def test_native_wakeups_reach_another_backend_object(store: Store, mode: str) -> None:
    if mode == "change_stream":
        hello = store.client.admin.command("hello")
        if "setName" not in hello and hello.get("msg") != "isdbgrid":
            pytest.skip("change streams need a replica set or sharded cluster; this is standalone")
    waiter = open_client(store, "wake", wakeup=mode, poll_interval=30.0)
    producer = open_client(store, "wake", wakeup="tailable", poll_interval=30.0)
    assert waiter.claim(["q"], worker="w") == []
    deadline = time.monotonic() + 10
    while not waiter.backend.hub.connected and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.02)
    waiter.wait(["q"], 0)  # consume the (re)connect wake-up
    waiter.claim(["q"], worker="w")
    started = time.monotonic()
    producer.enqueue_one("q", 1)
    assert waiter.wait(["q"], 10.0)
    assert time.monotonic() - started < 5  # pushed, not the 30 s poll
    producer.close()
    waiter.close()


def test_an_existing_id_is_refused_even_when_its_dedupe_key_is_live(store: Store) -> None:
    # As the memory reference does: the id check comes before dedupe.
    client = open_client(store, "id-before-dedupe")
    first = client.enqueue_one("q", 1, dedupe_key="k")
    with pytest.raises(qw.DuplicateJob):
        client.enqueue([NewJob("q", 2, dedupe_key="k", id=first.id)])
    assert [j.id for j in client.list_jobs()] == [first.id]
    client.close()


@needs_server
def test_the_claim_query_is_served_by_the_claim_index(store: Store) -> None:
    client = open_client(store, "claim-plan")
    client.enqueue([NewJob(q, i, priority=i % 3) for i in range(50) for q in ("a", "b")])
    jobs = raw_jobs(store, client)
    plan = jobs.find(d.claim_filter(["a", "b"], client.now())).sort(d.CLAIM_SORT).limit(5).explain()
    winning = str(plan["queryPlanner"]["winningPlan"])
    assert d.CLAIM_INDEX in winning
    assert "'SORT'" not in winning  # merged from the index, not sorted in memory
    client.close()


def test_jobs_written_by_0_1_0_are_moved_by_this_code_without_a_migration(store: Store) -> None:
    # Documents exactly as qw-mongodb 0.1.0 (commit 2402c38) wrote them. The
    # stored format of a job did not change: schema 2 (workflows) only adds
    # fields that steps have and plain jobs lack, and indexes, so the upgrade
    # rewrites no job (see test_mongo_workflows for the version bump).
    client = open_client(store, "from-0-1-0")
    jobs = raw_jobs(store, client)
    old = client.now() - timedelta(minutes=1)
    base: dict[str, Any] = {
        "queue": "q",
        "priority": 0,
        "run_at": old,
        "max_attempts": 1,
        "created_at": old,
        "worker": None,
        "lease_expires_at": None,
        "cancel_requested": False,
        "token": None,
        "finished_by": None,
    }
    jobs.insert_many(
        [
            {
                **base,
                "_id": "queued",
                "payload": '{"big":1180591620717411303424}',
                "attempts": 0,
                "status": "queued",
                "seq": 1,
                "dedupe_key": "k",
                "dedupe_live": "k",
            },
            {
                **base,
                "_id": "expired",
                "payload": "2",
                "attempts": 1,
                "status": "running",
                "seq": 2,
                "token": "cd" * 16,
                "worker": "w-old",
                "started_at": old,
                "lease_expires_at": old,
            },
            {
                **base,
                "_id": "done",
                "payload": "3",
                "attempts": 1,
                "status": "succeeded",
                "seq": 3,
                "result": '"r"',
                "finished_at": old,
                "finished_by": "ef" * 16 + ".done",
                "dedupe_key": "k",
                # written by 0.1.0's finish, not relayed before the upgrade
                "outbox": [{"key": "done/old", "type": "old.event", "data": '{"n":1}', "at": old}],
            },
        ]
    )
    assert client.enqueue_one("q", 4, dedupe_key="k") == qw.Enqueued("queued", created=False)
    assert client.reclaim_expired() == 1
    expired = client.get("expired")
    assert expired.status is JobStatus.FAILED
    assert expired.error == {"reason": "lease_expired"}
    (claim,) = client.claim(["q"], worker="w")
    assert claim.job.id == "queued"
    assert claim.job.payload == {"big": 2**70}
    assert claim.lease.attempt == 1
    assert client.complete(claim.lease, "ok", event=EventSpec("done", 1)) is JobStatus.SUCCEEDED
    assert client.get("done").result == "r"
    # In relay order: the reclaim's own event, the leftover, then the finish's.
    assert [(e.job_id, e.type, e.data) for e in client.fetch_events()] == [
        ("expired", "job.failed", {"queue": "q", "reason": "lease_expired", "attempts": 1}),
        ("done", "old.event", {"n": 1}),
        ("queued", "done", 1),
    ]
    assert jobs.count_documents(d.PENDING_OUTBOX) == 0
    client.close()
