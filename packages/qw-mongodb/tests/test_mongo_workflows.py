"""Workflows on MongoDB: each window a crash can leave open, and what closes it.

The backend settles after a step's own write (``atomic_settle=False``), and
stages a batch of steps before one write commits it. Each test here stops
the backend in one of those windows, by writing what a crashed process
leaves behind or by making one internal call fail, and checks that the
next call (usually ``reclaim_expired``) completes the work exactly once.
Run on the same store as the contract suite (see the banner).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from mongo_store import Store
from pymongo.collection import Collection
from pymongo.errors import AutoReconnect

import qw
from qw.contract import Insert, WorkflowInsert
from qw.model import Event, JobStatus, NewJob, ParentFailure, WorkflowState
from qw_mongodb import MongoBackend
from qw_mongodb import documents as d
from qw_mongodb.backend import SCHEMA_VERSION, STAGED_GRACE

WAITING, QUEUED, RUNNING = JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING
SUCCEEDED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.CANCELLED


def open_client(store: Store, namespace: str) -> qw.Client:
    return qw.Client(store.open(namespace))


def backend_of(client: qw.Client) -> MongoBackend:
    backend = client.backend
    assert isinstance(backend, MongoBackend)
    return backend


def collection(store: Store, client: qw.Client, name: str) -> Collection[Any]:
    coll: Collection[Any] = store.client[backend_of(client).database][name]
    return coll


def field(coll: Collection[Any], _id: str, name: str) -> Any:
    doc = coll.find_one({"_id": _id})
    assert doc is not None, f"no document {_id!r}"
    return doc[name]


def status(client: qw.Client, *ids: str) -> list[JobStatus]:
    return [client.get(i).status for i in ids]


def workflow_events(client: qw.Client) -> list[tuple[str, str]]:
    events: list[Event] = client.fetch_events(limit=1000)
    return [(e.job_id, e.type) for e in events if e.type.startswith("workflow.")]


def chain(w: str, n: int = 2) -> list[NewJob]:
    """``w.1`` then ``w.2`` (its child) and so on."""
    return [
        NewJob("q", i, id=f"{w}.{i}", parents=(f"{w}.{i - 1}",) if i > 1 else ())
        for i in range(1, n + 1)
    ]


def run_all(client: qw.Client) -> None:
    while claims := client.claim(["q"], worker="w", limit=10):
        for cl in claims:
            client.complete(cl.lease, cl.job.id)


def fail_once(backend: MongoBackend, name: str) -> Callable[[], int]:
    """Make ``backend.<name>`` raise a driver error on its next call; return a call counter."""
    real = getattr(backend, name)
    calls = [0]

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise AutoReconnect("injected")
        return real(*args, **kwargs)

    setattr(backend, name, broken)
    return lambda: calls[0]


# -- a step's end, carried after its own write -----------------------------------


def test_the_backend_says_it_settles_after_the_step_write(store: Store) -> None:
    client = open_client(store, "wf-caps")
    assert client.capabilities.atomic_settle is False
    client.close()


def test_an_end_interrupted_after_its_write_is_carried_by_reclaim_exactly_once(
    store: Store,
) -> None:
    client = open_client(store, "wf-torn")
    client.create_workflow("w", chain("w", 3))
    backend_of(client)._interrupt_settles(1)
    (cl,) = client.claim(["q"], worker="w")
    assert client.complete(cl.lease) is SUCCEEDED
    assert status(client, "w.1", "w.2") == [SUCCEEDED, WAITING]
    jobs = collection(store, client, "jobs")
    assert field(jobs, "w.1", "ended_settled") is False
    client.reclaim_expired()
    assert status(client, "w.2") == [QUEUED]
    assert field(jobs, "w.1", "ended_settled") is True
    run_all(client)
    assert client.get_workflow("w").state is WorkflowState.SUCCEEDED
    assert workflow_events(client) == [("w", "workflow.succeeded")]
    client.close()


def test_carrying_every_end_again_changes_nothing(store: Store) -> None:
    client = open_client(store, "wf-again")
    steps = [
        NewJob("q", 1, id="w.a", max_attempts=1),
        NewJob("q", 2, id="w.b", parents=("w.a",)),
        NewJob("q", 3, id="w.c", parents=("w.a",), on_parent_failure=ParentFailure.RUN),
    ]
    client.create_workflow("w", steps)
    (cl,) = client.claim(["q"], worker="w")
    client.fail(cl.lease, "no")
    run_all(client)
    before = (client.steps("w"), client.get_workflow("w"), client.fetch_events(limit=1000))
    assert before[1].state is WorkflowState.FAILED
    # As if every carry had crashed just before marking its step carried.
    collection(store, client, "jobs").update_many({}, {"$set": {"ended_settled": False}})
    for _ in range(2):
        client.reclaim_expired()
    assert (client.steps("w"), client.get_workflow("w"), client.fetch_events(limit=1000)) == before
    client.close()


def test_a_driver_error_while_carrying_leaves_the_answer_and_the_sweep_finishes(
    store: Store,
) -> None:
    client = open_client(store, "wf-error")
    client.create_workflow("w", chain("w", 1))
    calls = fail_once(backend_of(client), "_end_workflow_if_done")
    (cl,) = client.claim(["q"], worker="w")
    assert client.complete(cl.lease) is SUCCEEDED  # the step's write stands
    assert calls() == 1
    assert client.get_workflow("w").state is WorkflowState.RUNNING
    client.reclaim_expired()
    assert client.get_workflow("w").state is WorkflowState.SUCCEEDED
    assert workflow_events(client) == [("w", "workflow.succeeded")]
    client.close()


def test_a_plain_job_never_takes_the_workflow_path(store: Store) -> None:
    client = open_client(store, "wf-plain")
    backend = backend_of(client)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a plain job reached the workflow path")

    backend._carry = refuse  # type: ignore[method-assign]
    a, b, c = (client.enqueue_one("q", i, max_attempts=1).id for i in range(3))
    claims = {cl.job.id: cl for cl in client.claim(["q"], worker="w", lease_s=0.05, limit=2)}
    client.complete(claims[a].lease)
    client.cancel(c)
    time.sleep(0.1)
    assert client.reclaim_expired() == 1
    assert status(client, a, b, c) == [SUCCEEDED, JobStatus.FAILED, CANCELLED]
    time.sleep(0.01)
    assert client.purge(0).jobs == 3
    client.close()


# -- creating ------------------------------------------------------------------------


def staged(
    client: qw.Client,
    steps: list[NewJob],
    *,
    batch: str,
    ago: timedelta,
    w: str = "w",
    **extra: Any,
) -> list[dict[str, Any]]:
    """The staged step documents a create (or add) leaves when its process dies."""
    old = client.now() - ago
    inserts = [
        Insert(
            s.id,
            s.queue,
            str(s.payload),
            0,
            None,
            None,
            3,
            None,
            WAITING if s.parents else QUEUED,
            w,
            s.parents,
            s.on_parent_failure,
        )
        for s in steps
    ]
    children = d.step_children(inserts)
    return [
        d.job_document(new, seq=100 + i, now=old, batch=batch, children=children.get(new.id, ()))
        | extra
        for i, new in enumerate(inserts)
    ]


def test_a_create_that_died_after_its_commit_is_revealed_by_the_sweep(store: Store) -> None:
    client = open_client(store, "wf-create-late")
    jobs, flows = collection(store, client, "jobs"), collection(store, client, "workflows")
    old = client.now() - STAGED_GRACE * 2
    flows.insert_one(
        {
            **d.workflow_document(WorkflowInsert("w", None), batch="B", now=old),
            "state": "running",
        }
    )
    jobs.insert_many(staged(client, chain("w", 2), batch="B", ago=STAGED_GRACE * 2))
    assert client.get_workflow("w").counts == {}  # committed, not revealed yet
    client.reclaim_expired()
    assert status(client, "w.1", "w.2") == [QUEUED, WAITING]
    run_all(client)
    assert client.get_workflow("w").state is WorkflowState.SUCCEEDED
    client.close()


def test_a_fresh_uncommitted_create_is_left_to_its_writer(store: Store) -> None:
    client = open_client(store, "wf-create-fresh")
    jobs, flows = collection(store, client, "jobs"), collection(store, client, "workflows")
    flows.insert_one(d.workflow_document(WorkflowInsert("w", None), batch="B", now=client.now()))
    jobs.insert_many(staged(client, chain("w", 2), batch="B", ago=timedelta(0)))
    client.reclaim_expired()
    assert jobs.count_documents({"batch": "B", "status": d.PENDING}) == 2
    flows.update_one(*d.commit_workflow("w", "B"))  # the writer commits after all
    client.reclaim_expired()
    assert status(client, "w.1", "w.2") == [QUEUED, WAITING]
    client.close()


def test_a_create_that_died_before_its_commit_is_undone(store: Store) -> None:
    client = open_client(store, "wf-create-early")
    jobs, flows = collection(store, client, "jobs"), collection(store, client, "workflows")
    old = client.now() - STAGED_GRACE * 2
    flows.insert_one(d.workflow_document(WorkflowInsert("w", None), batch="B", now=old))
    jobs.insert_many(staged(client, chain("w", 2), batch="B", ago=STAGED_GRACE * 2))
    flows.insert_one(d.workflow_document(WorkflowInsert("lone", None), batch="L", now=old))
    assert client.find_workflow("w") is None  # pending: invisible
    assert client.list_workflows() == []
    client.reclaim_expired()
    assert jobs.count_documents({}) == 0
    assert flows.count_documents({}) == 0
    assert client.create_workflow("w", chain("w", 2)).created
    client.close()


def test_a_create_finds_its_id_taken_over_by_a_dead_create_and_takes_it(store: Store) -> None:
    client = open_client(store, "wf-create-dead")
    flows = collection(store, client, "workflows")
    old = client.now() - STAGED_GRACE * 2
    flows.insert_one(d.workflow_document(WorkflowInsert("w", None), batch="B", now=old))
    assert client.create_workflow("w", chain("w", 1)).created
    assert status(client, "w.1") == [QUEUED]
    client.close()


def test_a_create_that_failed_to_reveal_is_revealed_later(store: Store) -> None:
    client = open_client(store, "wf-reveal")
    backend = backend_of(client)
    fail_once(backend, "_reveal")
    with pytest.raises(qw.BackendUnavailable):
        client.create_workflow("w", chain("w", 2))
    assert client.get_workflow("w").state is WorkflowState.RUNNING  # committed
    assert client.create_workflow("w", chain("w", 2)).created is False
    client.reclaim_expired()  # committed: revealed at once, no grace
    assert status(client, "w.1", "w.2") == [QUEUED, WAITING]
    client.close()


# -- adding --------------------------------------------------------------------------


def test_an_add_committed_but_not_revealed_is_revealed_when_its_step_ends(store: Store) -> None:
    client = open_client(store, "wf-add-reveal")
    client.create_workflow("w", chain("w", 1))
    (cl,) = client.claim(["q"], worker="w")
    fail_once(backend_of(client), "_reveal_steps")
    with pytest.raises(qw.BackendUnavailable):
        client.add_steps(cl.lease, "w", [NewJob("q", 2, id="w.2", parents=("w.1",))])
    assert client.get("w.1").children == ("w.2",)  # committed
    assert client.find("w.2") is None  # staged
    # A retry of the same batch finds it committed: it was added.
    assert client.add_steps(cl.lease, "w", [NewJob("q", 2, id="w.2", parents=("w.1",))]) is False
    assert status(client, "w.2") == [WAITING]
    client.complete(cl.lease)
    assert status(client, "w.2") == [QUEUED]
    run_all(client)
    assert client.get_workflow("w").state is WorkflowState.SUCCEEDED
    client.close()


def test_a_step_ending_with_its_add_unrevealed_reveals_it_before_settling(store: Store) -> None:
    client = open_client(store, "wf-add-end")
    client.create_workflow("w", chain("w", 1))
    (cl,) = client.claim(["q"], worker="w")
    fail_once(backend_of(client), "_reveal_steps")
    with pytest.raises(qw.BackendUnavailable):
        client.add_steps(cl.lease, "w", [NewJob("q", 2, id="w.2", parents=("w.1",))])
    client.complete(cl.lease)
    assert status(client, "w.2") == [QUEUED]
    assert field(collection(store, client, "jobs"), "w.1", "adding") == []
    run_all(client)
    assert client.get_workflow("w").state is WorkflowState.SUCCEEDED
    client.close()


def test_an_add_that_never_committed_is_undone_and_the_workflow_then_ends(store: Store) -> None:
    client = open_client(store, "wf-add-lost")
    client.create_workflow("w", chain("w", 1))
    (cl,) = client.claim(["q"], worker="w")
    # The adder died between staging and its fenced commit.
    jobs = collection(store, client, "jobs")
    jobs.insert_many(
        staged(
            client,
            [NewJob("q", 2, id="w.2", parents=("w.1",))],
            batch="A",
            ago=STAGED_GRACE * 2,
            adder="w.1",
            adder_token="00",
        )
    )
    client.complete(cl.lease)
    # The staged step might still be committed by a live adder: the workflow waits.
    assert client.get_workflow("w").state is WorkflowState.RUNNING
    client.reclaim_expired()
    assert client.find("w.2") is None
    assert client.get_workflow("w").state is WorkflowState.SUCCEEDED
    assert workflow_events(client) == [("w", "workflow.succeeded")]
    client.close()


def test_a_retried_add_replaces_a_batch_an_earlier_attempt_never_committed(store: Store) -> None:
    client = open_client(store, "wf-add-retry")
    client.create_workflow("w", [NewJob("q", 1, id="w.1")])
    (cl,) = client.claim(["q"], worker="w")
    jobs = collection(store, client, "jobs")
    jobs.insert_many(
        staged(
            client,
            [NewJob("q", 9, id="w.2", parents=("w.1",))],
            batch="OLD",
            ago=timedelta(0),
            adder="w.1",
            adder_token="00",
        )
    )
    assert client.add_steps(cl.lease, "w", [NewJob("q", 2, id="w.2", parents=("w.1",))]) is True
    assert client.get("w.2").payload == 2
    assert jobs.count_documents({"batch": "OLD"}) == 0
    client.close()


def test_an_add_committed_but_not_revealed_is_revealed_by_the_sweep(store: Store) -> None:
    client = open_client(store, "wf-add-sweep")
    client.create_workflow("w", chain("w", 1))
    (cl,) = client.claim(["q"], worker="w")
    fail_once(backend_of(client), "_reveal_steps")
    with pytest.raises(qw.BackendUnavailable):
        client.add_steps(cl.lease, "w", [NewJob("q", 2, id="w.2", parents=("w.1",))])
    client.reclaim_expired()
    assert status(client, "w.1", "w.2") == [RUNNING, WAITING]
    assert field(collection(store, client, "jobs"), "w.1", "adding") == []
    client.close()


def test_steps_revealed_after_their_workflow_was_cancelled_are_cancelled(store: Store) -> None:
    client = open_client(store, "wf-add-cancel")
    client.create_workflow("w", chain("w", 1))
    (cl,) = client.claim(["q"], worker="w")
    backend = backend_of(client)
    real = backend._reveal

    def reveal_then_cancel(batch: str) -> None:
        # The cancel lands between the add's commit and its reveal.
        backend._reveal = real  # type: ignore[method-assign]
        client.cancel_workflow("w")
        real(batch)

    backend._reveal = reveal_then_cancel  # type: ignore[method-assign]
    added = [NewJob("q", 2, id="w.2", parents=("w.1",)), NewJob("q", 3, id="w.3")]
    assert client.add_steps(cl.lease, "w", added) is True
    assert status(client, "w.1", "w.2", "w.3") == [RUNNING, CANCELLED, CANCELLED]
    client.complete(cl.lease)
    assert client.get_workflow("w").state is WorkflowState.CANCELLED
    assert workflow_events(client) == [("w", "workflow.cancelled")]
    client.close()


# -- cancelling ----------------------------------------------------------------------


def test_a_cancel_interrupted_after_its_flag_is_finished_by_the_sweep(store: Store) -> None:
    client = open_client(store, "wf-cancel-torn")
    steps = [
        NewJob("q", 1, id="w.1"),
        NewJob("q", 2, id="w.2", parents=("w.1",), on_parent_failure=ParentFailure.RUN),
        NewJob("q", 3, id="w.3"),
    ]
    client.create_workflow("w", steps)
    (cl,) = client.claim(["q"], worker="w", limit=1)
    assert cl.job.id == "w.1"
    # The cancel's process died right after setting the flag.
    collection(store, client, "workflows").update_one(*d.request_cancel("w"))
    # The running step ends first: its children are not settled into running.
    client.complete(cl.lease)
    assert status(client, "w.2", "w.3") == [CANCELLED, CANCELLED]
    assert client.get_workflow("w").state is WorkflowState.CANCELLED
    client.reclaim_expired()
    assert workflow_events(client) == [("w", "workflow.cancelled")]
    client.close()


def test_a_cancel_with_nothing_running_interrupted_is_ended_by_reclaim(store: Store) -> None:
    client = open_client(store, "wf-cancel-sweep")
    client.create_workflow("w", chain("w", 3))
    collection(store, client, "workflows").update_one(*d.request_cancel("w"))
    client.reclaim_expired()
    assert status(client, "w.1", "w.2", "w.3") == [CANCELLED] * 3
    assert client.get_workflow("w").state is WorkflowState.CANCELLED
    cancelled = [e for e in client.fetch_events(limit=100) if e.type == "job.cancelled"]
    assert sorted(e.job_id for e in cancelled) == ["w.1", "w.2", "w.3"]
    client.close()


# -- migration -----------------------------------------------------------------------


def test_a_version_1_store_is_upgraded_on_open_and_its_jobs_are_plain_jobs(store: Store) -> None:
    client = open_client(store, "wf-upgrade")
    backend = backend_of(client)
    meta = collection(store, client, "meta")
    jobs = collection(store, client, "jobs")
    client.close()
    # As qw-mongodb 0.1.0 left it: schema 1, a job without any step field.
    store.client.drop_database(backend.database)
    meta.insert_one({"_id": "schema", "version": 1})
    old = backend.now() - timedelta(minutes=1)
    jobs.insert_one(
        {
            "_id": "old",
            "queue": "q",
            "payload": "1",
            "priority": 0,
            "run_at": old,
            "max_attempts": 1,
            "attempts": 0,
            "status": "queued",
            "created_at": old,
            "seq": 1,
            "worker": None,
            "lease_expires_at": None,
            "cancel_requested": False,
            "token": None,
            "finished_by": None,
        }
    )
    client = open_client(store, "wf-upgrade")
    assert field(meta, "schema", "version") == SCHEMA_VERSION == 3
    job = client.get("old")
    assert (job.workflow, job.parents, job.children) == (None, (), ())
    assert client.create_workflow("w", chain("w", 2)).created
    assert [j.id for j in client.list_jobs(workflow="w")] == ["w.1", "w.2"]
    (cl,) = client.claim(["q"], worker="w")
    assert cl.job.id == "old"
    client.complete(cl.lease)
    time.sleep(0.01)
    assert client.purge(0).jobs == 1  # the plain job; the workflow's steps stay
    client.close()
