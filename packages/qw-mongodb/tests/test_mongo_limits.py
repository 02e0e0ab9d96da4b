"""What is particular to MongoDB's flow control: gates, their sweep, fair counters, schema 3.

These run on the same store as the contract suite: a real server when
QW_TEST_MONGODB_URL is set, else the mongomock stand-in (see the banner).
The crash windows are made by writing what a crash leaves, document by
document, then letting the backend find it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from mongo_store import Store
from pymongo.collection import Collection

import qw
from qw.model import JobStatus, KeyState, Limit, NewJob, Schedule
from qw.transitions import plan_finish
from qw_mongodb import MongoBackend
from qw_mongodb import documents as d
from qw_mongodb import flow as f
from qw_mongodb.backend import SCHEMA_VERSION
from qw_mongodb.claiming import Claimer
from qw_mongodb.clock import as_utc

ONE = Limit(concurrency=1)


def open_client(store: Store, namespace: str) -> qw.Client:
    return qw.Client(store.open(namespace))


def backend_of(client: qw.Client) -> MongoBackend:
    backend = client.backend
    assert isinstance(backend, MongoBackend)
    return backend


def coll(store: Store, client: qw.Client, name: str) -> Collection[Any]:
    collection: Collection[Any] = store.client[backend_of(client).database][name]
    return collection


def kjob(key: str | None, payload: object = None, **options: Any) -> NewJob:
    return NewJob("q", payload, limit_key=key, **options)  # type: ignore[arg-type]


def ids(claims: list[qw.Claim]) -> list[str]:
    return [c.job.id for c in claims]


def claim(client: qw.Client, limit: int = 10, lease_s: float = 30.0) -> list[qw.Claim]:
    return client.claim(["q"], worker="w", lease_s=lease_s, limit=limit)


def gate(store: Store, client: qw.Client, key: str) -> dict[str, Any]:
    doc = coll(store, client, "gates").find_one({"_id": key})
    assert doc is not None
    return dict(doc)


def age_holders(store: Store, client: qw.Client, key: str, by: timedelta) -> None:
    """Make every holder of ``key``'s gate look ``by`` older (what the clock would do)."""
    gates = coll(store, client, "gates")
    doc = gate(store, client, key)
    held = [{**h, "a": h["a"] - by} for h in doc["held"]]
    gates.update_one({"_id": key}, {"$set": {"held": held}})


# -- schema 3 ----------------------------------------------------------------


def test_a_schema_2_store_is_upgraded_and_its_jobs_read_as_jobs_without_a_key(
    store: Store,
) -> None:
    client = open_client(store, "from-schema-2")
    database = backend_of(client).database
    old = client.now() - timedelta(minutes=1)
    client.close()
    db = store.client[database]
    # As qw-mongodb 0.2 left it: schema 2, its claim index (no rank), none for
    # keys, and jobs without rank, key, limit or fairness. (Its other indexes are
    # kept as made: mongomock cannot rebuild a partial unique index over data.)
    db["meta"].update_one({"_id": "schema"}, {"$set": {"version": 2}})
    for name in (d.CLAIM_INDEX, "limit_key_id", "limit_key_status"):
        db["jobs"].drop_index(name)
    db["jobs"].create_index(
        [("queue", 1), ("priority", 1), ("seq", 1), ("run_at", 1)],
        name=d.OLD_CLAIM_INDEX,
        partialFilterExpression={"status": "queued"},
    )
    base: dict[str, Any] = {
        "queue": "q",
        "priority": 0,
        "run_at": old,
        "max_attempts": 3,
        "attempts": 0,
        "status": "queued",
        "created_at": old,
        "worker": None,
        "lease_expires_at": None,
        "cancel_requested": False,
        "token": None,
        "finished_by": None,
    }
    db["jobs"].insert_many(
        [
            {**base, "_id": "old-1", "payload": "1", "seq": 1},
            {**base, "_id": "old-2", "payload": "2", "seq": 2},
        ]
    )
    db["counters"].insert_one({"_id": d.JOB_SEQ, "n": 2})
    client = open_client(store, "from-schema-2")
    schema = db["meta"].find_one({"_id": "schema"})
    assert schema is not None
    assert schema["version"] == SCHEMA_VERSION == 3
    indexes = db["jobs"].index_information()
    assert d.OLD_CLAIM_INDEX not in indexes
    assert d.CLAIM_INDEX in indexes
    for job in client.get_many(["old-1", "old-2"]):
        assert job is not None
        assert (job.limit_key, job.limit, job.fair) == (None, None, False)
    assert client.keys() == []
    assert client.list_jobs(key="k") == []
    # New jobs, fair ones too, come after the old ones of the same priority (rank 0).
    new = [a.id for a in client.enqueue([kjob("k", 3, fair=True, limit=ONE), kjob(None, 4)])]
    assert ids(claim(client)) == ["old-1", "old-2", *new]
    assert [s.key for s in client.keys(limit=10)] == ["k"]
    client.close()


# -- gates -------------------------------------------------------------------


def test_every_keyed_claim_holds_a_slot_and_every_exit_gives_it_back(store: Store) -> None:
    client = open_client(store, "gate-held")
    a = [x.id for x in client.enqueue([kjob("k", i) for i in range(3)])]
    claims = claim(client)
    assert sorted(ids(claims)) == sorted(a)
    doc = gate(store, client, "k")
    # No limit at all: still held, so that a limit set now counts these three.
    assert doc["n"] == 3
    assert sorted(h["j"] for h in doc["held"]) == sorted(a)
    assert not doc.get("starts"), "no rate: no start recorded"
    client.set_limit("k", Limit(concurrency=3))
    client.enqueue([kjob("k", "more")])
    assert claim(client) == []
    client.complete(claims[0].lease)
    client.release(claims[1].lease)
    client.fail(claims[2].lease, "no")
    assert gate(store, client, "k")["n"] == 0
    assert gate(store, client, "k")["held"] == []
    client.close()


def test_jobs_declaring_different_limits_on_one_key_are_each_held_to_their_own(
    store: Store,
) -> None:
    client = open_client(store, "mixed-limits")
    three = Limit(concurrency=3)
    big = [x.id for x in client.enqueue([kjob("k", i, limit=three) for i in range(2)])]
    small = client.enqueue([kjob("k", "small", limit=ONE)])[0].id
    last = client.enqueue([kjob("k", "big", limit=three)])[0].id
    # Two running when the small one comes up: its own 1 holds it, the big one's 3 does not.
    assert ids(claim(client)) == [*big, last]
    assert client.get(small).status is JobStatus.QUEUED
    client.close()


def slow_claimer(client: qw.Client) -> Claimer:
    """A claim to be stepped through by hand: plan, then (after interference) take."""
    backend = backend_of(client)
    now = client.now()
    token = "cd" * 16
    return Claimer(
        jobs=backend._jobs,
        gates=backend._gates,
        limits=backend._limits,
        queues=["q"],
        now=now,
        token=token,
        update=d.claim_update(token, "slow", now, 30.0),
    )


def test_a_claim_that_loses_its_job_to_another_gives_its_slot_back(store: Store) -> None:
    mine = open_client(store, "lost-job")
    other = open_client(store, "lost-job")
    two = Limit(concurrency=2)
    first, second = (x.id for x in mine.enqueue([kjob("k", i, limit=two) for i in range(2)]))
    claimer = slow_claimer(mine)
    picks, _ = claimer._plan(1)
    assert [p.id for p in picks] == [first, second]
    # Another worker claims the first job between this claim's read and its writes.
    assert ids(claim(other, limit=1)) == [first]
    # Its slot is taken (2 fit), its job write loses, the slot is given back;
    # then the spare pick is tried.
    assert claimer._take_all(picks, 1)
    assert [x["_id"] for x in claimer.won] == [second]
    doc = gate(store, mine, "k")
    assert doc["n"] == 2
    assert sorted(h["j"] for h in doc["held"]) == sorted([first, second])
    mine.close()
    other.close()


def test_a_rated_claim_that_loses_its_job_takes_its_start_back(store: Store) -> None:
    client = open_client(store, "lost-start")
    rated = Limit(rate=5, per=3600.0)
    first, second = (x.id for x in client.enqueue([kjob("k", i, limit=rated) for i in range(2)]))
    claimer = slow_claimer(client)
    picks, _ = claimer._plan(1)
    assert client.cancel(first) is JobStatus.CANCELLED  # gone meanwhile; the gate unchanged
    assert claimer._take_all(picks, 1)
    assert [x["_id"] for x in claimer.won] == [second]
    doc = gate(store, client, "k")
    assert [h["j"] for h in doc["held"]] == [second]
    assert [s["t"] for s in doc["starts"]] == [d.lease_token("cd" * 16, second)], (
        "the lost claim never started: its start is taken back"
    )
    assert client.keys() == [KeyState("k", 0, 1, rated, False, 1)]
    client.close()


def test_a_rated_claim_whose_gate_changed_since_its_read_plans_again(store: Store) -> None:
    mine = open_client(store, "rated-cas")
    other = open_client(store, "rated-cas")
    rated = Limit(concurrency=2, rate=5, per=3600.0)
    first, second = (x.id for x in mine.enqueue([kjob("k", i, limit=rated) for i in range(2)]))
    claimer = slow_claimer(mine)
    picks, _ = claimer._plan(1)
    assert ids(claim(other, limit=1)) == [first]
    # Its compare-and-set on the gate's version fails: nothing held, nothing claimed.
    assert claimer._take_all(picks, 1)
    assert claimer.won == []
    doc = gate(store, mine, "k")
    assert (doc["n"], len(doc["starts"])) == (1, 1), "only the other worker's slot and start"
    # Planned again from a fresh read, it takes the second.
    assert [x["_id"] for x in claimer.run(1)] == [second]
    doc = gate(store, mine, "k")
    assert (doc["n"], len(doc["starts"])) == (2, 2)
    assert mine.keys() == [KeyState("k", 0, 2, rated, False, 2)]
    mine.close()
    other.close()


def test_a_slot_left_by_a_claimer_that_died_before_its_job_write_is_freed(
    store: Store,
) -> None:
    client = open_client(store, "died-claiming")
    first, second = (x.id for x in client.enqueue([kjob("k", i, limit=ONE) for i in range(2)]))
    now = client.now()
    dead = "de" * 16
    # What a claimer that died after its gate write leaves: a slot, no running job.
    coll(store, client, "gates").insert_one(
        f.gate_document("k", [f.held_entry(first, dead, now)], [], f.new_version())
    )
    assert claim(client) == [], "the slot is held"
    assert client.reclaim_expired() == 0
    assert claim(client) == [], "within the grace, the sweep leaves it: it may be a slow claimer"
    age_holders(store, client, "k", f.GATE_GRACE + timedelta(seconds=1))
    client.reclaim_expired()
    jobs = coll(store, client, "jobs")
    voided = jobs.find_one({"_id": first})
    assert voided is not None
    assert voided["voided"] == [dead]
    (c,) = claim(client)
    assert c.job.id == first
    client.release(c.lease)
    # The claimer was only slow: its own job write now matches nothing.
    update = d.claim_update(dead, "slow", client.now(), 30.0)
    late = jobs.update_one(d.stamp_filter([first], ["q"], client.now(), dead), update)
    assert not late.matched_count
    assert client.get(first).status is JobStatus.QUEUED
    assert ids(claim(client)) == [first]
    assert client.get(second).status is JobStatus.QUEUED
    client.close()


def test_a_slot_left_by_a_worker_that_died_after_its_jobs_exit_is_freed(store: Store) -> None:
    client = open_client(store, "died-finishing")
    first, second = (x.id for x in client.enqueue([kjob("k", i, limit=ONE) for i in range(2)]))
    (c,) = claim(client)
    # The job's own exit write, and no give-back: the worker died in between.
    t = plan_finish(qw.Complete(c.lease, "ok"), body='"ok"', event_data=None)
    update = d.transition_update(t, now=client.now(), event_key="x")
    fence = d.fence_filter(first, c.lease.token, c.lease.attempt)
    assert coll(store, client, "jobs").update_one(fence, update).modified_count
    assert claim(client) == []
    age_holders(store, client, "k", f.GATE_GRACE + timedelta(seconds=1))
    client.reclaim_expired()
    assert ids(claim(client)) == [second]
    client.close()


def test_a_live_holder_is_kept_by_the_sweep_and_looked_at_again_a_grace_later(
    store: Store,
) -> None:
    client = open_client(store, "live-holder")
    first, _ = (x.id for x in client.enqueue([kjob("k", i, limit=ONE) for i in range(2)]))
    (c,) = claim(client)
    age_holders(store, client, "k", f.GATE_GRACE + timedelta(seconds=1))
    client.reclaim_expired()
    (held,) = gate(store, client, "k")["held"]
    assert held["j"] == first
    assert as_utc(held["a"]) > client.now() - f.GATE_GRACE, "its age refreshed"
    assert claim(client) == [], "still running: still holding its slot"
    job = coll(store, client, "jobs").find_one({"_id": first})
    assert job is not None
    assert "voided" not in job
    assert client.complete(c.lease) is JobStatus.SUCCEEDED
    client.close()


def test_idle_gates_go_with_purge_and_gates_with_starts_stay(store: Store) -> None:
    client = open_client(store, "idle-gates")
    client.enqueue([kjob("plain"), kjob("rated", limit=Limit(rate=1, per=3600.0))])
    for c in claim(client):
        client.complete(c.lease)
    client.purge(3600)
    gates = coll(store, client, "gates")
    assert [g["_id"] for g in gates.find()] == ["rated"]
    assert client.keys() == [], "no live job and no operators' limit"
    client.close()


# -- fair ranks --------------------------------------------------------------


def test_fair_ranks_are_stored_on_the_jobs_and_counted_per_queue_and_key(store: Store) -> None:
    client = open_client(store, "fair-counters")
    a = [x.id for x in client.enqueue([kjob("A", i, fair=True) for i in range(3)])]
    b = [x.id for x in client.enqueue([kjob("B", i, fair=True) for i in range(2)])]
    plain = client.enqueue_one("q", "plain").id
    jobs = coll(store, client, "jobs")
    rank = {doc["_id"]: doc["rank"] for doc in jobs.find({}, {"rank": 1})}
    assert [rank[i] for i in a] == [0, 1, 2]
    assert [rank[i] for i in b] == [0, 1]
    assert rank[plain] == 0
    counters = {doc["_id"]: doc["n"] for doc in coll(store, client, "fair_ranks").find()}
    assert counters == {"q\nA": 3, "q\nB": 2}
    assert ids(claim(client, limit=4)) == [a[0], b[0], plain, a[1]]
    clock = coll(store, client, "fair_ranks").find_one({"_id": "q"})
    assert clock is not None
    assert clock["n"] == 1, "the fair clock: the highest rank claimed"
    client.close()


# -- the keyed mark ----------------------------------------------------------


def test_a_namespace_is_marked_by_its_first_keyed_job_and_the_switches_do_not_show_it(
    store: Store,
) -> None:
    client = open_client(store, "keyed-mark")
    client.enqueue_one("q", "plain")
    switches = coll(store, client, "switches")
    assert switches.find_one({"_id": "flow:keyed"}) is None
    client.enqueue([kjob("k")])
    assert switches.find_one({"_id": "flow:keyed"}) is not None
    assert client.switches() == qw.Switches()
    # Another client, opened afresh, plans its claims from the mark.
    again = open_client(store, "keyed-mark")
    client.set_limit("k", Limit(concurrency=0))
    assert [c.job.payload for c in claim(again)] == ["plain"]
    client.close()
    again.close()


# -- schedules ---------------------------------------------------------------


def test_a_schedule_tick_is_compared_at_the_stores_millisecond_precision(store: Store) -> None:
    client = open_client(store, "tick-precision")
    client.save_schedule(Schedule("s", "every 30s", "UTC", "q", "app.task"))
    tick = client.now().replace(microsecond=123456)
    assert client.advance_schedule("s", tick)
    (s,) = client.schedules()
    assert s.last_tick == tick.replace(microsecond=123000)
    assert not client.advance_schedule("s", tick + timedelta(microseconds=500)), "same millisecond"
    assert client.advance_schedule("s", tick + timedelta(milliseconds=1))
    client.save_schedule(Schedule("s", "every 60s", "UTC", "q", "app.task"))
    (s,) = client.schedules()
    assert (s.spec, s.last_tick) == ("every 60s", tick.replace(microsecond=124000))
    client.close()
