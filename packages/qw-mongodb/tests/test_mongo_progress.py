"""What is particular to MongoDB's progress reports and result waits.

The contract (progress fenced and committed with its event, results awaited)
is the kit's; these check what only this store can get wrong: the stored
field, jobs written before progress existed, the relay of the report's
event, and the wait that the change stream of job ends wakes.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mongo_store import STAND_IN, URL, Store
from pymongo.collection import Collection

import qw
from qw.model import PROGRESS_EVENT, JobStatus, Progress
from qw_mongodb import MongoBackend
from qw_mongodb import documents as d
from qw_mongodb.backend import ENDED_RECHECK_S, SCHEMA_VERSION
from qw_mongodb.wakeups import EndedJobs, ended_job_of_change, ended_jobs_pipeline

NOW = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)


def open_client(store: Store, namespace: str, **options: object) -> qw.Client:
    return qw.Client(store.open(namespace, **options))


def backend_of(client: qw.Client) -> MongoBackend:
    backend = client.backend
    assert isinstance(backend, MongoBackend)
    return backend


def raw_jobs(store: Store, client: qw.Client) -> Collection[Any]:
    jobs: Collection[Any] = store.client[backend_of(client).database]["jobs"]
    return jobs


def claim_one(client: qw.Client) -> qw.Claim:
    (claim,) = client.claim(["q"], worker="w")
    return claim


# -- the documents and the stream, without a store ------------------------------


def test_a_job_document_without_progress_reads_progress_none() -> None:
    assert d.progress_of(None) is None
    doc = {"fraction": 1, "message": None, "at": NOW}
    assert d.progress_of(doc) == Progress(1.0, None, NOW)


def test_a_report_is_one_fenced_write_of_the_field_and_its_outbox_entry() -> None:
    update = d.progress_update(0.5, "m", '{"x":1}', now=NOW, event_key="k")
    assert update["$set"] == {"progress": {"fraction": 0.5, "message": "m", "at": NOW}}
    assert update["$push"] == {"outbox": d.outbox_entry("k", PROGRESS_EVENT, '{"x":1}', NOW)}
    assert set(update) == {"$set", "$push"}, "nothing else of the job changes"
    assert d.progress_event_key("j", "t.j", "a") != d.progress_event_key("j", "t.j", "b")
    assert d.progress_event_key("j", "t.j", "a") != d.finish_event_key("j", "t.j")


def test_the_stream_of_job_ends_names_the_ended_job_and_matches_only_ends() -> None:
    (match, _) = ended_jobs_pipeline()
    wanted = match["$match"]["updateDescription.updatedFields.status"]["$in"]
    assert sorted(wanted) == sorted(s.value for s in JobStatus if s.is_terminal)
    assert ended_job_of_change({"documentKey": {"_id": "j1"}}) == "j1"
    assert ended_job_of_change({"operationType": "update"}) is None


def test_ended_jobs_wakes_only_the_waiters_of_an_id_and_forgets_them() -> None:
    waiters = EndedJobs(poll_interval=0.25)
    with waiters.watch("a") as a, waiters.watch("b") as b:
        waiters.ended(["a", "nobody"])
        assert a.is_set()
        assert not b.is_set()
        waiters.set_connected(True)  # ends may have been missed while down: wake all
        assert b.is_set()
    assert waiters._watchers == {}, "no id is kept once its waits are over"
    waiters.ended(["a"])  # nobody waits: nothing kept
    assert waiters._watchers == {}


# -- progress ----------------------------------------------------------------


def test_a_report_is_stored_on_the_job_and_relayed_as_one_event(store: Store) -> None:
    client = open_client(store, "progress")
    assert client.capabilities.progress
    job_id = client.enqueue_one("q", 1).id
    claim = claim_one(client)
    client.set_progress(claim.lease, 0.25, "resizing")
    doc = raw_jobs(store, client).find_one({"_id": job_id})
    assert doc is not None
    assert doc["progress"]["fraction"] == 0.25
    assert doc["progress"]["message"] == "resizing"
    assert not doc.get("outbox"), "the report's event is relayed at once, then dropped"
    progress = client.get(job_id).progress
    assert progress is not None
    assert (progress.fraction, progress.message) == (0.25, "resizing")
    assert abs(progress.at - client.now()) < timedelta(seconds=5)
    client.set_progress(claim.lease, message="almost")
    events = [e for e in client.fetch_events(limit=100) if e.type == PROGRESS_EVENT]
    assert [e.data for e in events] == [
        {"fraction": 0.25, "message": "resizing"},
        {"fraction": None, "message": "almost"},
    ]
    assert {e.job_id for e in events} == {job_id}
    assert client.get(job_id).progress == Progress(None, "almost", events[1].created_at)
    client.complete(claim.lease, "done")
    ended = client.get(job_id)
    assert ended.status is JobStatus.SUCCEEDED
    assert ended.progress is not None, "kept after the end"
    assert ended.progress.message == "almost"
    client.close()


def test_a_stale_lease_reports_nothing(store: Store) -> None:
    client = open_client(store, "progress-stale")
    job_id = client.enqueue_one("q", 1).id
    claim = claim_one(client)
    forged = dataclasses.replace(claim.lease, token=claim.lease.token + "0")
    with pytest.raises(qw.LeaseLost):
        client.set_progress(forged, 0.5)
    client.complete(claim.lease)
    with pytest.raises(qw.LeaseLost):
        client.set_progress(claim.lease, 0.9, "after the end")
    assert client.get(job_id).progress is None
    assert [e.type for e in client.fetch_events(limit=100) if e.type == PROGRESS_EVENT] == []
    doc = raw_jobs(store, client).find_one({"_id": job_id})
    assert doc is not None
    assert "progress" not in doc
    client.close()


def test_a_report_whose_relay_was_interrupted_is_relayed_later_exactly_once(
    store: Store,
) -> None:
    client = open_client(store, "progress-relay")
    job_id = client.enqueue_one("q", 1).id
    claim = claim_one(client)
    # The fenced write set_progress sends, but the process "dies" before relaying.
    key = d.progress_event_key(job_id, claim.lease.token, "r1")
    update = d.progress_update(
        0.5, None, '{"fraction":0.5,"message":null}', now=client.now(), event_key=key
    )
    fence = d.fence_filter(job_id, claim.lease.token, claim.lease.attempt)
    assert raw_jobs(store, client).update_one(fence, update).modified_count == 1
    assert client.get(job_id).progress is not None
    first = [e for e in client.fetch_events(limit=100) if e.type == PROGRESS_EVENT]
    again = [e for e in client.fetch_events(limit=100) if e.type == PROGRESS_EVENT]
    assert [e.data for e in first] == [{"fraction": 0.5, "message": None}]
    assert [e.cursor for e in again] == [e.cursor for e in first]
    client.close()


def test_jobs_written_at_schema_3_before_progress_read_progress_none(store: Store) -> None:
    # The schema number did not move for progress (see SCHEMA_VERSION): a
    # store and its jobs as qw-mongodb wrote them before progress existed
    # open as they are, read progress None, and take reports.
    client = open_client(store, "before-progress")
    backend = backend_of(client)
    old = client.now() - timedelta(minutes=1)
    client.close()
    db = store.client[backend.database]
    assert db["meta"].find_one({"_id": "schema"})["version"] == SCHEMA_VERSION == 3
    base: dict[str, Any] = {
        "queue": "q", "payload": "1", "priority": 0, "run_at": old, "max_attempts": 3,
        "attempts": 0, "created_at": old, "rank": 0, "worker": None,
        "lease_expires_at": None, "cancel_requested": False, "token": None,
        "finished_by": None,
    }  # fmt: skip
    db["jobs"].insert_many(
        [
            {**base, "_id": "old-queued", "status": "queued", "seq": 1},
            {**base, "_id": "old-done", "status": "succeeded", "seq": 2, "result": '"r"',
             "finished_at": old, "attempts": 1},
        ]
    )  # fmt: skip
    db["counters"].insert_one({"_id": d.JOB_SEQ, "n": 2})
    client = open_client(store, "before-progress")
    assert db["meta"].find_one({"_id": "schema"})["version"] == 3, "no upgrade for progress"
    assert [j.progress for j in client.get_many(["old-queued", "old-done"])] == [None, None]
    assert client.wait_finished("old-done", 0).result == "r"
    claim = claim_one(client)
    assert claim.job.id == "old-queued"
    assert claim.job.progress is None
    client.set_progress(claim.lease, 1.0)
    progress = client.get("old-queued").progress
    assert progress is not None
    assert progress.fraction == 1.0
    client.close()


# -- result waits --------------------------------------------------------------


def test_result_wakeup_is_declared_only_with_change_streams(store: Store) -> None:
    client = open_client(store, "declared")
    backend = backend_of(client)
    if URL is None:
        # The stand-in runs with polled wake-ups: no stream, so the client polls.
        assert not client.capabilities.result_wakeup
    else:
        hello = store.client.admin.command("hello")
        streams = "setName" in hello or hello.get("msg") == "isdbgrid"
        assert client.capabilities.result_wakeup is streams
    assert backend.capabilities.progress
    assert not backend.capabilities.transactional
    with pytest.raises(qw.Unsupported):
        backend.enqueue_in(object(), [])
    client.close()


def test_wait_finished_answers_at_once_for_an_ended_job_and_none_for_an_unknown_one(
    store: Store,
) -> None:
    client = open_client(store, "wait-basics")
    backend = backend_of(client)
    assert backend.wait_finished("nobody", 5.0) is None
    job_id = client.enqueue_one("q", 1).id
    started = time.monotonic()
    job = backend.wait_finished(job_id, 0.3)
    assert job is not None
    assert job.status is JobStatus.QUEUED
    assert 0.3 <= time.monotonic() - started < 3, "as it is after the timeout"
    client.complete(claim_one(client).lease, 7)
    started = time.monotonic()
    job = backend.wait_finished(job_id, 30.0)
    assert job is not None
    assert job.result == 7
    assert time.monotonic() - started < 1
    client.close()


def test_a_wait_is_woken_by_a_finish_through_the_same_object(store: Store) -> None:
    # Local ends wake at once even with no stream. The stand-in is not
    # thread-safe, but only the finisher writes, and only to another job's
    # fields while the waiter sleeps between reads.
    client = open_client(store, "wait-local")
    backend = backend_of(client)
    job_id = client.enqueue_one("q", 1).id
    claim = claim_one(client)
    answers: list[qw.Job | None] = []
    waiter = threading.Thread(target=lambda: answers.append(backend.wait_finished(job_id, 30.0)))
    waiter.start()
    time.sleep(1.0)  # the waiter's pauses have grown to their longest
    assert waiter.is_alive()
    done = time.monotonic()
    with backend._ended.watch(job_id) as ended:
        client.abort(claim.lease, "stop")
        assert ended.is_set(), "the finish itself wakes this object's waiters"
    waiter.join(10)
    assert not waiter.is_alive()
    assert time.monotonic() - done < 0.2, "woken, not left to its next read"
    (job,) = answers
    assert job is not None
    assert job.status is JobStatus.CANCELLED
    client.close()


def test_a_wait_polls_for_an_end_written_by_another_object(store: Store) -> None:
    waiting = open_client(store, "wait-other")
    other = open_client(store, "wait-other")
    job_id = other.enqueue_one("q", 1).id
    claim = claim_one(other)
    answers: list[qw.Job | None] = []
    backend = backend_of(waiting)
    waiter = threading.Thread(target=lambda: answers.append(backend.wait_finished(job_id, 30.0)))
    waiter.start()
    time.sleep(0.5)
    done = time.monotonic()
    other.complete(claim.lease, "ok")
    waiter.join(10)
    assert not waiter.is_alive()
    # A poll of at most 250 ms between reads, or the stream on a server that has one.
    assert time.monotonic() - done < 2
    (job,) = answers
    assert job is not None
    assert job.result == "ok"
    other.close()
    waiting.close()


@pytest.mark.skipif(
    URL is None,
    reason=f"needs a real MongoDB replica set (QW_TEST_MONGODB_URL): the stand-in {STAND_IN!r} "
    "has no change streams",
)
def test_the_change_stream_of_job_ends_wakes_a_wait(store: Store) -> None:
    hello = store.client.admin.command("hello")
    if "setName" not in hello and hello.get("msg") != "isdbgrid":
        pytest.skip("change streams need a replica set or sharded cluster; this is standalone")
    waiting = open_client(store, "wait-stream", wakeup="change_stream", poll_interval=30.0)
    other = open_client(store, "wait-stream", wakeup="tailable", poll_interval=30.0)
    assert waiting.capabilities.result_wakeup
    job_id = other.enqueue_one("q", 1).id
    claim = claim_one(other)
    backend = backend_of(waiting)
    assert waiting.wait_finished(job_id, 0).status is JobStatus.RUNNING  # opens the stream
    deadline = time.monotonic() + 10
    while not backend._ended.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend._ended.connected
    answers: list[qw.Job] = []
    waiter = threading.Thread(target=lambda: answers.append(waiting.wait_finished(job_id, 60.0)))
    waiter.start()
    time.sleep(0.5)
    done = time.monotonic()
    other.complete(claim.lease, "streamed")
    waiter.join(30)
    # With the stream live the wait reads again only every ENDED_RECHECK_S:
    # an answer well before that was pushed.
    assert time.monotonic() - done < ENDED_RECHECK_S / 2
    assert answers[0].result == "streamed"
    other.close()
    waiting.close()


def test_a_declared_stream_that_is_down_leaves_waits_to_the_poll(store: Store) -> None:
    # Change-stream mode declares result_wakeup; where the stream cannot open
    # (the stand-in, or a standalone server) the wait must still answer
    # within a poll: the Listener keeps retrying while waits read the job.
    hello = store.client.admin.command("hello") if URL is not None else {}
    if "setName" in hello or hello.get("msg") == "isdbgrid":
        pytest.skip("change streams work on this server: the down-stream path is not reachable")
    backend = MongoBackend.from_client(
        store.client, namespace="stream-down", wakeup="change_stream"
    )
    store.databases.add(backend.database)
    waiting = qw.Client(backend)
    assert waiting.capabilities.result_wakeup
    other = open_client(store, "stream-down")
    job_id = other.enqueue_one("q", 1).id
    claim = claim_one(other)
    answers: list[qw.Job] = []
    waiter = threading.Thread(target=lambda: answers.append(waiting.wait_finished(job_id, 30.0)))
    waiter.start()
    time.sleep(0.5)
    assert not backend._ended.connected
    done = time.monotonic()
    other.complete(claim.lease, "polled")
    waiter.join(10)
    assert time.monotonic() - done < 2, "read again within the client's 250 ms poll"
    assert answers[0].result == "polled"
    other.close()
    waiting.close()
