"""The exact filters, updates and indexes the backend sends, checked without a server."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from qw.contract import Insert, WorkflowInsert
from qw.model import (
    Abort,
    Complete,
    EventSpec,
    Fail,
    JobStatus,
    Lease,
    ParentFailure,
    Release,
    WorkflowState,
)
from qw.transitions import (
    EVENT_CANCELLED,
    EVENT_FAILED,
    LEASE_EXPIRED_ERROR,
    Ready,
    plan_cancel_queued,
    plan_finish,
    plan_reclaim,
    plan_retry,
    workflow_event,
)
from qw.validation import encode_json
from qw_mongodb import documents as d

NOW = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
CLAIM = "ab" * 16
LEASE = Lease("job-1", d.lease_token(CLAIM, "job-1"), NOW, attempt=1, max_attempts=3)


def insert(
    queue: str, payload: str, *, id: str, dedupe_key: str | None = None, delay: float | None = None
) -> Insert:
    """A new job as the client hands it over: the payload already JSON text."""
    return Insert(id, queue, payload, 0, None, delay, 3, dedupe_key)


def test_claim_filter_takes_due_queued_jobs_of_the_queues_only() -> None:
    assert d.claim_filter(["a", "b"], NOW) == {
        "status": "queued",
        "queue": {"$in": ["a", "b"]},
        "run_at": {"$lte": NOW},
    }
    # Priority, then fair rank, then FIFO.
    assert d.CLAIM_SORT == [("priority", 1), ("rank", 1), ("seq", 1)]


def test_the_claim_index_serves_the_claim_query() -> None:
    (claim,) = [ix.document for ix in d.job_indexes() if ix.document["name"] == d.CLAIM_INDEX]
    # Partial on exactly the status equality the claim filter carries.
    assert claim["partialFilterExpression"] == {"status": "queued"}
    keys = list(claim["key"])
    assert keys[0] == "queue"  # the $in
    assert keys[1:4] == [k for k, _ in d.CLAIM_SORT]  # the sort, merged across queues
    assert "run_at" in keys  # filtered from the index, no fetch for future jobs


def test_a_batch_claim_stamps_only_candidates_that_are_still_claimable() -> None:
    assert d.stamp_filter(["x", "y"], ["a"], NOW, CLAIM) == {
        "_id": {"$in": ["x", "y"]},
        **d.claim_filter(["a"], NOW),
        # A claim token the gate sweep voided on a job never claims it.
        "voided": {"$ne": CLAIM},
    }


def test_claim_update_leases_under_the_token_and_counts_the_attempt() -> None:
    update = d.claim_update(CLAIM, "w1", NOW, 1.5)
    assert update == {
        "$set": {
            "status": "running",
            "token": CLAIM,
            "worker": "w1",
            "started_at": NOW,
            "lease_expires_at": NOW + timedelta(seconds=1.5),
            "cancel_requested": False,
        },
        "$inc": {"attempts": 1},
    }


def test_lease_tokens_are_unique_per_job_and_fence_on_job_claim_and_attempt() -> None:
    a, b = d.lease_token(CLAIM, "job-1"), d.lease_token(CLAIM, "job-2")
    assert a != b
    assert d.fence_filter("job-1", a, 2) == {
        "_id": "job-1",
        "status": "running",
        "token": CLAIM,
        "attempts": 2,
    }
    # A lease shown for another job matches no stored token.
    foreign = d.fence_filter("job-2", a, 1)["token"]
    assert foreign != CLAIM
    assert foreign.startswith("!")
    # Job ids may contain dots; the claim token never does.
    dotted = d.lease_token(CLAIM, "a.b.c")
    assert d.claim_token_of(dotted, "a.b.c") == CLAIM


def finish_update(outcome: Complete | Fail | Release | Abort) -> d.Doc:
    """The update finish() sends for ``outcome``, decided as the client decides it."""
    body = None
    if isinstance(outcome, Complete):
        body = encode_json(outcome.result)
    elif not isinstance(outcome, Release):
        body = encode_json(outcome.error)
    event = None if isinstance(outcome, Release) else outcome.event
    data = None if event is None else encode_json(event.data)
    t = plan_finish(outcome, body=body, event_data=data)
    key = d.finish_event_key(outcome.lease.job_id, outcome.lease.token)
    return d.transition_update(t, now=NOW, event_key=key)


def test_complete_is_fenced_and_carries_its_event_in_the_same_update() -> None:
    update = finish_update(Complete(LEASE, {"ok": 1}, EventSpec("done", {"n": 2})))
    assert update["$set"] == {
        **d.OFF_LEASE,
        "status": "succeeded",
        "finished_by": LEASE.token,
        "result": '{"ok":1}',
        "finished_at": NOW,
    }
    assert update["$unset"] == {"dedupe_live": ""}
    assert update["$push"] == {
        "outbox": {
            "key": f"job-1/{LEASE.token}",
            "type": "done",
            "data": '{"n":2}',
            "at": NOW,
        }
    }


def test_fail_with_attempts_left_requeues_at_the_retry_time() -> None:
    update = finish_update(Fail(LEASE, "boom", retry_in=2.0))
    assert update["$set"]["status"] == "queued"
    assert update["$set"]["run_at"] == NOW + timedelta(seconds=2)
    assert update["$set"]["error"] == '"boom"'
    assert update["$set"]["finished_by"] == LEASE.token
    assert "finished_at" not in update["$set"]
    assert "$unset" not in update  # a requeued job keeps its dedupe key live
    last = replace(LEASE, attempt=3)
    final = finish_update(Fail(last, "boom", retry_in=2.0))
    assert final["$set"]["status"] == "failed"
    assert final["$set"]["finished_at"] == NOW
    assert "run_at" not in final["$set"]


def test_release_gives_the_attempt_back_and_abort_cancels() -> None:
    update = finish_update(Release(LEASE))
    assert update["$set"]["status"] == "queued"
    assert update["$set"]["attempts"] == LEASE.attempt - 1  # fenced on attempts == 1
    assert "$push" not in update
    update = finish_update(Abort(LEASE, "stop"))
    assert update["$set"]["status"] == "cancelled"
    assert update["$set"]["finished_at"] == NOW
    assert update["$unset"] == {"dedupe_live": ""}


def test_a_transition_is_written_field_for_field_and_json_as_the_text_given() -> None:
    # Text the client encoded is stored as it is: never decoded or encoded again.
    t = plan_reclaim(attempts=1, max_attempts=1, queue="q")._replace(
        attempts=7,
        run_in=1.5,
        result='{"big":1180591620717411303424}',
        finished_by="tok",
    )
    update = d.transition_update(t, now=NOW, event_key="k")
    assert update["$set"] == {
        **d.OFF_LEASE,
        "status": "failed",
        "finished_by": "tok",
        "attempts": 7,
        "run_at": NOW + timedelta(seconds=1.5),
        "result": '{"big":1180591620717411303424}',
        "error": LEASE_EXPIRED_ERROR,
        "finished_at": NOW,
    }
    assert update["$push"]["outbox"] == {
        "key": "k",
        "type": EVENT_FAILED,
        "data": t.event_data,
        "at": NOW,
    }


def test_reclaim_is_a_compare_and_set_on_status_token_and_expiry() -> None:
    doc = {"_id": "j", "token": CLAIM, "attempts": 1, "max_attempts": 2, "queue": "q"}
    assert d.reclaim_filter(doc, NOW) == {
        "_id": "j",
        "status": "running",
        "token": CLAIM,
        "lease_expires_at": {"$lte": NOW},
    }
    t = plan_reclaim(attempts=1, max_attempts=2, queue="q")
    update = d.transition_update(t, now=NOW, event_key=d.expired_event_key("j", CLAIM))
    assert update == {"$set": {**d.OFF_LEASE, "status": "queued", "finished_by": None}}


def test_reclaim_of_the_last_attempt_fails_with_the_expired_event() -> None:
    t = plan_reclaim(attempts=2, max_attempts=2, queue="q")
    update = d.transition_update(t, now=NOW, event_key=d.expired_event_key("j", CLAIM))
    assert update["$set"]["status"] == "failed"
    assert update["$set"]["error"] == '{"reason":"lease_expired"}'
    assert update["$set"]["finished_by"] is None
    assert update["$unset"] == {"dedupe_live": ""}
    (entry,) = [update["$push"]["outbox"]]
    assert entry["key"] == f"j/{CLAIM}/expired"
    assert entry["type"] == EVENT_FAILED
    assert entry["data"] == '{"queue":"q","reason":"lease_expired","attempts":2}'


def test_cancel_of_a_queued_job_writes_its_event_in_the_same_update() -> None:
    assert d.cancel_queued("j", "q") == {
        "_id": "j",
        "status": "queued",
        "queue": "q",
        "retries": None,
    }
    t = plan_cancel_queued(queue="q")
    update = d.transition_update(t, now=NOW, event_key=d.cancel_event_key("j"))
    assert update["$set"]["status"] == "cancelled"
    assert update["$set"]["finished_at"] == NOW
    assert update["$set"]["finished_by"] is None
    assert update["$unset"] == {"dedupe_live": ""}
    assert update["$push"]["outbox"]["key"] == "j/cancelled"
    assert update["$push"]["outbox"]["type"] == EVENT_CANCELLED
    assert update["$push"]["outbox"]["data"] == '{"queue":"q","reason":"cancelled"}'
    assert d.cancel_running("j") == (
        {"_id": "j", "status": "running"},
        {"$set": {"cancel_requested": True}},
    )


def test_the_relay_inserts_under_the_entry_key_and_pulls_the_entry() -> None:
    entry = d.outbox_entry("j/t", "done", '{"a":1}', NOW)
    assert d.event_document("j", entry, 7) == {
        "_id": "j/t",
        "cursor": 7,
        "job_id": "j",
        "type": "done",
        "data": '{"a":1}',
        "created_at": NOW,
        "acked": False,
    }
    # Event data is always stored as JSON text, as 0.1.0 stored it.
    assert d.outbox_entry("j/t", "done", None, NOW)["data"] == "null"
    assert d.outbox_done("j", "j/t") == ({"_id": "j"}, {"$pull": {"outbox": {"key": "j/t"}}})
    assert d.counter_bump(d.EVENT_CURSOR, 1) == ({"_id": "event_cursor"}, {"$inc": {"n": 1}})
    # A job is purged only once its events left its document.
    assert d.purge_jobs_filter(NOW)["outbox.key"] == {"$exists": False}


def test_dedupe_is_a_unique_partial_index_on_the_live_key() -> None:
    (ix,) = [ix.document for ix in d.job_indexes() if ix.document["name"] == "dedupe_live"]
    assert ix["unique"] is True
    assert ix["partialFilterExpression"] == {"dedupe_live": {"$type": "string"}}
    live = d.job_document(insert("q", "1", dedupe_key="k", id="a"), seq=1, now=NOW)
    assert live["dedupe_live"] == "k"
    assert live["status"] == "queued"
    staged = d.job_document(insert("q", "1", id="b"), seq=2, now=NOW, batch="B")
    assert staged["status"] == d.PENDING
    assert staged["batch"] == "B"
    assert "dedupe_live" not in staged


def test_job_documents_keep_the_clients_json_text_and_times_in_milliseconds() -> None:
    text = '{"$where":1,"big":1180591620717411303424}'
    doc = d.job_document(insert("q", text, delay=1.5, id="x"), seq=3, now=NOW)
    assert doc["payload"] is text  # written as the client encoded it
    assert doc["run_at"] == NOW + timedelta(seconds=1.5)
    assert doc["run_at"].microsecond % 1000 == 0
    job = d.job_from_document(doc)
    assert job.payload == {"$where": 1, "big": 2**70}
    assert job.status is JobStatus.QUEUED


def test_no_state_machine_is_left_in_the_documents_module() -> None:
    # qw.transitions decides; these are gone for good.
    for name in ("plan_enqueue", "retries", "finish_status", "finish_update", "reclaim_update"):
        assert not hasattr(d, name), name


@pytest.mark.parametrize("name", [d.CLAIM_INDEX, "lease_expiry", "dedupe_live", "outbox_pending"])
def test_every_index_the_backend_relies_on_exists(name: str) -> None:
    assert name in {ix.document["name"] for ix in d.job_indexes()}


def test_change_stream_watches_queued_jobs_and_switches_only() -> None:
    from qw_mongodb.wakeups import change_stream_pipeline

    (match, project) = change_stream_pipeline()
    ors = match["$match"]["$or"]
    assert {"ns.coll": "jobs", "operationType": "insert", "fullDocument.status": "queued"} in ors
    assert {
        "ns.coll": "jobs",
        "operationType": "update",
        "updateDescription.updatedFields.status": "queued",
    } in ors
    assert {"ns.coll": "switches"} in ors
    assert "_id" not in project["$project"]  # the resume token must stay


def test_wakeup_events_name_their_queue_or_wake_everyone() -> None:
    from qw_mongodb.wakeups import queues_of_change, queues_of_signal, signal_document

    insert = {"operationType": "insert", "fullDocument": {"queue": "mail"}}
    assert queues_of_change(insert) == ["mail"]
    assert queues_of_change({"operationType": "update", "ns": {"coll": "jobs"}}) is None
    assert queues_of_signal(signal_document(["a", "b"])) == ["a", "b"]
    assert queues_of_signal(signal_document(None)) is None


# -- workflows -----------------------------------------------------------------


def step_insert(id: str, *parents: str, workflow: str = "w") -> Insert:
    return Insert(
        id,
        "q",
        "1",
        0,
        None,
        None,
        3,
        None,
        JobStatus.WAITING if parents else JobStatus.QUEUED,
        workflow,
        tuple(parents),
        ParentFailure.RUN,
    )


def test_a_plain_job_document_has_no_step_fields() -> None:
    doc = d.job_document(insert("q", "1", id="plain"), seq=1, now=NOW)
    assert not {"workflow", "parents", "children", "settled", "pending", "ended_settled"} & set(doc)
    job = d.job_from_document(doc)
    assert (job.workflow, job.parents, job.children, job.failed_parents) == (None, (), (), ())


def test_a_step_is_staged_with_its_edges_and_an_uncarried_end() -> None:
    steps = [step_insert("a"), step_insert("b", "a"), step_insert("c", "a", "b")]
    children = d.step_children(steps)
    assert children == {"a": ["b", "c"], "b": ["c"]}
    doc = d.job_document(steps[2], seq=3, now=NOW, batch="B", children=(), adder=("x", "tok"))
    assert doc["status"] == d.PENDING
    assert {k: doc[k] for k in ("workflow", "parents", "children", "settled", "pending")} == {
        "workflow": "w",
        "parents": ["a", "b"],
        "children": [],
        "settled": [],
        "pending": 2,
    }
    assert (doc["on_parent_failure"], doc["ended_settled"]) == ("run", False)
    assert (doc["adder"], doc["adder_token"]) == ("x", "tok")
    revealed = {**doc, "status": "waiting", "failed_parents": ["a"]}
    job = d.job_from_document(revealed)
    assert (job.status, job.parents, job.failed_parents) == (JobStatus.WAITING, ("a", "b"), ("a",))
    assert job.on_parent_failure is ParentFailure.RUN


def test_revealing_a_batch_makes_steps_with_parents_waiting_first() -> None:
    (waiting, queued) = d.reveal_steps("B")
    assert waiting == (
        {"batch": "B", "status": d.PENDING, "parents.0": {"$exists": True}},
        {"$set": {"status": "waiting"}},
    )
    assert queued == ({"batch": "B", "status": d.PENDING}, {"$set": {"status": "queued"}})


def test_counting_a_parent_is_guarded_so_a_repeat_changes_nothing() -> None:
    filter_, update = d.settle_children(["c1", "c2"], "p", JobStatus.SUCCEEDED)
    assert filter_ == {"_id": {"$in": ["c1", "c2"]}, "status": "waiting", "settled": {"$ne": "p"}}
    assert update == {"$push": {"settled": "p"}, "$inc": {"pending": -1}}
    _, failed = d.settle_children(["c1"], "p", JobStatus.CANCELLED)
    assert failed["$push"] == {"settled": "p", "failed_parents": "p"}
    assert d.ready_steps(["c1"]) == {"_id": {"$in": ["c1"]}, "status": "waiting", "pending": 0}
    doc = {"_id": "c1", "queue": "q", "failed_parents": ["p"], "on_parent_failure": "cancel"}
    assert d.ready_of(doc) == Ready("c1", "q", ParentFailure.CANCEL, ("p",))


def test_a_workflow_ends_once_by_compare_and_set_with_its_event() -> None:
    filter_, update = d.workflow_end(
        "w",
        WorkflowState.FAILED,
        cancel_requested=False,
        event=workflow_event("w", WorkflowState.FAILED),
        now=NOW,
    )
    assert filter_ == {"_id": "w", "state": "running", "cancel_requested": False}
    assert update["$set"] == {"state": "failed", "finished_at": NOW}
    assert update["$push"]["outbox"] == d.outbox_entry(
        "w/workflow", "workflow.failed", '{"workflow":"w","state":"failed"}', NOW
    )
    # A step's leaving waiting, a workflow's end: keys no other event of the namespace has.
    keys = {
        d.settled_event_key("w"),
        d.workflow_event_key("w"),
        d.cancel_event_key("w"),
        d.finish_event_key("w", d.lease_token(CLAIM, "w")),
    }
    assert len(keys) == 4


def test_a_workflow_is_pending_until_its_create_commits() -> None:
    doc = d.workflow_document(WorkflowInsert("w", "w.out"), batch="B", now=NOW)
    assert (doc["state"], doc["batch"], doc["cancel_requested"], doc["cancel_done"]) == (
        d.PENDING,
        "B",
        False,
        False,
    )
    assert d.commit_workflow("w", "B") == (
        {"_id": "w", "batch": "B", "state": d.PENDING},
        {"$set": {"state": "running"}},
    )
    flow = d.workflow_from_document({**doc, "state": "running"}, {JobStatus.QUEUED: 2})
    assert (flow.id, flow.state, flow.output, flow.steps) == (
        "w",
        WorkflowState.RUNNING,
        "w.out",
        2,
    )


def test_an_add_commits_by_the_fenced_write_that_gives_the_step_its_children() -> None:
    assert d.add_commit(["n1"], "B", 2) == {
        "$push": {"adding": {"b": "B", "n": 2}, "children": {"$each": ["n1"]}}
    }
    assert d.add_commit([], "B", 1) == {"$push": {"adding": {"b": "B", "n": 1}}}
    assert d.add_done("x", "B") == ({"_id": "x"}, {"$pull": {"adding": {"b": "B"}}})


def test_steps_are_purged_only_with_their_workflow() -> None:
    assert d.purge_jobs_filter(NOW)["workflow"] is None  # matches plain jobs (no field) only
    assert d.purge_workflows_filter(NOW) == {
        "state": {"$in": ["succeeded", "failed", "cancelled"]},
        "finished_at": {"$lt": NOW},
        "outbox.key": {"$exists": False},
    }


def test_a_step_not_ended_counts_as_live_staged_or_not() -> None:
    assert d.live_steps("w") == {
        "workflow": "w",
        "status": {"$nin": ["succeeded", "failed", "cancelled"]},
    }
    assert d.UNSETTLED_ENDS == {
        "ended_settled": False,
        "status": {"$in": ["succeeded", "failed", "cancelled"]},
    }


def test_workflow_indexes_leave_plain_jobs_out() -> None:
    by_name = {ix.document["name"]: ix.document for ix in d.job_indexes()}
    for name in ("workflow_id", "workflow_status"):
        assert by_name[name]["partialFilterExpression"] == {"workflow": {"$type": "string"}}
    assert by_name["unsettled_ends"]["partialFilterExpression"] == {"ended_settled": False}
    names = {ix.document["name"] for ix in d.workflow_indexes()}
    assert names == {"state_id", "finished_at", "outbox_pending", "unfinished_cancels"}


def test_a_retry_is_one_update_with_its_event_and_a_key_per_retry() -> None:
    doc = {"_id": "j", "status": "failed", "attempts": 1, "max_attempts": 1, "dedupe_key": "k"}
    t = plan_retry(JobStatus.FAILED, 1, 1, None, job_id="j", queue="q")
    assert t is not None
    assert d.retry_filter(doc) == {"_id": "j", "status": "failed", "attempts": 1, "retries": None}
    update = d.retry_update(t, doc, now=NOW)
    fields = update["$set"]
    assert (fields["status"], fields["max_attempts"], fields["retries"]) == ("queued", 2, 1)
    assert fields["dedupe_live"] == "k", "a retried job holds its dedupe key again"
    assert fields["result"] == "null"
    assert update["$unset"] == {"started_at": "", "finished_at": ""}
    assert update["$push"]["outbox"]["key"] == "j/retried/1"
    again = d.retry_update(t, {**doc, "retries": 1}, now=NOW)
    assert again["$push"]["outbox"]["key"] == "j/retried/2"
    # A cancel after a retry has a key of its own: the relay would drop a repeat.
    assert d.cancel_event_key("j", 1) != d.cancel_event_key("j")
