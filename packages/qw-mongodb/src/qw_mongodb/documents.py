"""Every filter, update, document and index the backend sends: pure functions.

Nothing here does I/O, so the exact shape of a claim, a fenced terminal
write, a reclaim or an outbox relay is unit-tested without a server. The
backend module only chooses which of these to send and in what order. No
status is decided here: :mod:`qw.transitions` decides every transition and
:func:`transition_update` writes it as it is.

A job document::

    {_id, queue, payload, priority, run_at, max_attempts, attempts, status,
     created_at, seq, token, finished_by, worker, lease_expires_at,
     cancel_requested, rank, [dedupe_key, dedupe_live], [result], [error],
     [started_at], [finished_at], [batch], [outbox: [{key, type, data, at}]],
     [limit_key, [limit: {concurrency, rate, per}], [fair]], [voided],
     [progress: {fraction, message, at}]}

``rank`` is the fair rank (0 unless ``fair``; a document written before
schema 3 has none, which sorts like 0 before every job inserted after it).
``limit`` holds exactly the fields the job declared. ``voided`` lists claim
tokens under which the job may no longer be claimed (see
:mod:`qw_mongodb.flow`, the gate sweep). ``progress`` is the running task's
last report (:func:`progress_update`); a job that never reported, or one
written before progress existed, has none and reads ``progress`` None.

A workflow step has, besides (a plain job has none of these)::

    {workflow, parents, children, on_parent_failure, failed_parents,
     settled, pending, ended_settled, [adder, adder_token], [adding: [{b, n}]]}

``settled`` lists the parents whose end has been counted, and ``pending``
counts the others: one update pushes a parent and decrements ``pending``,
filtered on the parent not being in ``settled`` yet, so counting is
idempotent and the step is ready when ``pending`` is 0. ``ended_settled``
is False until the step's own end has been carried to its children and its
workflow. ``adder`` (with
its claim token) marks a step staged by :meth:`add_steps`; ``adding`` on the
running step lists the batches it has committed and not yet revealed.

A workflow document (collection ``workflows``)::

    {_id, state, batch, created_at, output, finished_at, cancel_requested,
     cancel_done, [outbox]}

``state`` is ``pending`` until :meth:`create_workflow` commits it; steps
not ended are counted from the steps themselves, never kept as a counter.

Payloads, results, errors and event data are stored as JSON text: BSON cannot
carry every JSON value (integers beyond 64 bits) and a stored ``$``-key must
never be read as an operator, so the text is the exact value the producer
sent: the client's JSON text, written as it is. ``dedupe_live`` holds the
dedupe key only while the job is live (or staged), which is what the unique
partial index enforces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel

from qw.contract import Insert, WorkflowInsert
from qw.model import (
    PROGRESS_EVENT,
    Job,
    JobStatus,
    Limit,
    ParentFailure,
    Progress,
    WorkerInfo,
    Workflow,
    WorkflowState,
)
from qw.transitions import Ready, Transition
from qw.validation import decode_json
from qw_mongodb.clock import as_utc, to_millis

__all__ = [
    "CANDIDATE_PROJECTION",
    "CLAIM_INDEX",
    "CLAIM_SORT",
    "ENDED_PROJECTION",
    "EVENT_CURSOR",
    "JOB_SEQ",
    "LIVE",
    "PENDING",
    "PENDING_OUTBOX",
    "UNFINISHED_CANCELS",
    "UNSETTLED_ENDS",
    "Doc",
]

Doc = dict[str, Any]

#: Status of the jobs of a multi-job enqueue between their insert and their
#: commit: invisible to claims, reads and counts.
PENDING = "pending"
WAITING = JobStatus.WAITING.value
QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value
LIVE = [WAITING, QUEUED, RUNNING]
TERMINAL = [s.value for s in JobStatus if s.is_terminal]
VISIBLE: Doc = {"status": {"$ne": PENDING}}
#: A workflow while its steps run; ``pending`` (above) before its create commits.
WF_RUNNING = WorkflowState.RUNNING.value
WF_ENDED = [s.value for s in WorkflowState if s is not WorkflowState.RUNNING]
#: Claim order: priority, fair rank, FIFO.
CLAIM_SORT = [("priority", ASCENDING), ("rank", ASCENDING), ("seq", ASCENDING)]
#: The index that serves it; schema 2 had ``claim_order`` without ``rank``.
CLAIM_INDEX = "claim_fair_order"
OLD_CLAIM_INDEX = "claim_order"
PENDING_OUTBOX: Doc = {"outbox.key": {"$exists": True}}
JOB_SEQ = "job_seq"
EVENT_CURSOR = "event_cursor"
# Fields a job loses whenever it leaves ``running``.
OFF_LEASE: Doc = {
    "worker": None,
    "lease_expires_at": None,
    "cancel_requested": False,
    "token": None,
}


# -- indexes -----------------------------------------------------------------


def job_indexes() -> list[IndexModel]:
    """The indexes of the ``jobs`` collection."""
    return [
        # claim: equality on status (the partial filter), $in on queue, then a
        # merge sort on (priority, rank, seq); run_at filtered from the index.
        IndexModel(
            [("queue", 1), ("priority", 1), ("rank", 1), ("seq", 1), ("run_at", 1)],
            name=CLAIM_INDEX,
            partialFilterExpression={"status": QUEUED},
        ),
        # reclaim: running jobs by lease expiry.
        IndexModel(
            [("lease_expires_at", 1)],
            name="lease_expiry",
            partialFilterExpression={"status": RUNNING},
        ),
        # dedupe: one live job per key (dedupe_live is unset when a job ends).
        IndexModel(
            [("dedupe_live", 1)],
            name="dedupe_live",
            unique=True,
            partialFilterExpression={"dedupe_live": {"$type": "string"}},
        ),
        IndexModel([("queue", 1), ("status", 1), ("_id", 1)], name="queue_status_id"),
        IndexModel([("status", 1), ("_id", 1)], name="status_id"),
        IndexModel(
            [("finished_at", 1)],
            name="finished_at",
            partialFilterExpression={"finished_at": {"$type": "date"}},
        ),
        IndexModel([("outbox.key", 1)], name="outbox_pending", sparse=True),
        IndexModel([("batch", 1)], name="enqueue_batch", sparse=True),
        # Workflow steps only (plain jobs have no ``workflow``: no upkeep for them).
        IndexModel(
            [("workflow", 1), ("_id", 1)],
            name="workflow_id",
            partialFilterExpression={"workflow": {"$type": "string"}},
        ),
        IndexModel(
            [("workflow", 1), ("status", 1)],
            name="workflow_status",
            partialFilterExpression={"workflow": {"$type": "string"}},
        ),
        # The sweep: steps whose end has not been carried yet.
        IndexModel(
            [("status", 1)],
            name="unsettled_ends",
            partialFilterExpression={"ended_settled": False},
        ),
        # Keyed jobs only: list_jobs(key=), and keys() counting by key and status.
        IndexModel(
            [("limit_key", 1), ("_id", 1)],
            name="limit_key_id",
            partialFilterExpression={"limit_key": {"$type": "string"}},
        ),
        IndexModel(
            [("limit_key", 1), ("status", 1)],
            name="limit_key_status",
            partialFilterExpression={"limit_key": {"$type": "string"}},
        ),
    ]


def workflow_indexes() -> list[IndexModel]:
    """The indexes of the ``workflows`` collection."""
    return [
        IndexModel([("state", 1), ("_id", 1)], name="state_id"),
        IndexModel(
            [("finished_at", 1)],
            name="finished_at",
            partialFilterExpression={"finished_at": {"$type": "date"}},
        ),
        IndexModel([("outbox.key", 1)], name="outbox_pending", sparse=True),
        # The sweep: cancels interrupted before every step was cancelled.
        IndexModel(
            [("state", 1)],
            name="unfinished_cancels",
            partialFilterExpression={"cancel_requested": True, "cancel_done": False},
        ),
    ]


def event_indexes() -> list[IndexModel]:
    """The indexes of the ``events`` collection (``_id`` is the deterministic key)."""
    return [
        IndexModel([("cursor", 1)], name="cursor", unique=True),
        IndexModel([("acked", 1), ("cursor", 1)], name="unacked"),
        IndexModel([("acked", 1), ("created_at", 1)], name="acked_age"),
    ]


# -- enqueue -----------------------------------------------------------------


def job_document(
    new: Insert,
    *,
    seq: int,
    now: datetime,
    batch: str | None = None,
    children: Iterable[str] = (),
    adder: tuple[str, str] | None = None,
    rank: int = 0,
) -> Doc:
    """The document for a new job; staged (``pending``) when part of a multi-job batch.

    Which jobs get one is :func:`qw.transitions.plan_enqueue`'s decision. A
    workflow step (always staged) also gets its edges: ``children`` are the
    steps of its batch that name it as a parent, and ``adder`` the job id
    and claim token of the running step that adds it (:meth:`add_steps`).
    ``rank`` is its fair rank, fixed here (0 unless the job is ``fair``).
    """
    run_at = new.run_at if new.run_at is not None else now + timedelta(seconds=new.delay or 0)
    doc: Doc = {
        "_id": new.id,
        "queue": new.queue,
        "payload": new.payload,  # the client's JSON text, never encoded again
        "priority": new.priority,
        "run_at": to_millis(run_at),
        "max_attempts": new.max_attempts,
        "attempts": 0,
        "status": QUEUED if batch is None else PENDING,
        "created_at": now,
        "seq": seq,
        "rank": rank,
        **OFF_LEASE,
        "finished_by": None,
    }
    if new.limit_key is not None:
        doc["limit_key"] = new.limit_key
        if new.limit is not None:
            doc["limit"] = limit_document(new.limit)
        if new.fair:
            doc["fair"] = True
    if new.dedupe_key is not None:
        doc["dedupe_key"] = new.dedupe_key
        doc["dedupe_live"] = new.dedupe_key
    if batch is not None:
        doc["batch"] = batch
    if new.workflow is not None:
        doc["workflow"] = new.workflow
        doc["parents"] = list(new.parents)
        doc["children"] = list(children)
        doc["on_parent_failure"] = new.on_parent_failure.value
        doc["failed_parents"] = []
        doc["settled"] = []
        doc["pending"] = len(new.parents)
        doc["ended_settled"] = False
        if adder is not None:
            doc["adder"], doc["adder_token"] = adder
    return doc


def step_children(steps: Iterable[Insert]) -> dict[str, list[str]]:
    """Each parent's children among ``steps``, in insert order (parents outside included)."""
    children: dict[str, list[str]] = {}
    for step in steps:
        for parent in step.parents:
            children.setdefault(parent, []).append(step.id)
    return children


def live_keys_filter(keys: Iterable[str]) -> Doc:
    """Live jobs holding any of ``keys``."""
    return {"dedupe_live": {"$in": list(keys)}, "status": {"$in": LIVE}}


def commit_batch(batch: str) -> tuple[Doc, Doc]:
    """Filter and update that make a staged batch visible (idempotent)."""
    return {"batch": batch, "status": PENDING}, {"$set": {"status": QUEUED}}


def reveal_steps(batch: str) -> list[tuple[Doc, Doc]]:
    """The updates, in order, that make a staged batch of steps visible (idempotent).

    A step with parents becomes ``waiting``, the others ``queued``: the
    status the client gave each Insert, told apart by whether it has parents.
    """
    staged: Doc = {"batch": batch, "status": PENDING}
    return [
        ({**staged, "parents.0": {"$exists": True}}, {"$set": {"status": WAITING}}),
        (staged, {"$set": {"status": QUEUED}}),
    ]


def counter_bump(name: str, n: int) -> tuple[Doc, Doc]:
    """Reserve ``n`` numbers from the counter ``name`` (read the new value back)."""
    return {"_id": name}, {"$inc": {"n": n}}


# -- claim, renew ------------------------------------------------------------


def claim_filter(queues: Iterable[str], now: datetime) -> Doc:
    """Due queued jobs on ``queues``; served by the ``claim_order`` index."""
    return {"status": QUEUED, "queue": {"$in": list(queues)}, "run_at": {"$lte": now}}


def stamp_filter(ids: Iterable[str], queues: Iterable[str], now: datetime, token: str) -> Doc:
    """The chosen candidates still claimable, under a claim token not voided on them.

    Losers of a race skip; so does a job on which the gate sweep voided
    ``token`` (its slot was taken for a crash's leftover and freed).
    """
    return {"_id": {"$in": list(ids)}, **claim_filter(queues, now), "voided": {"$ne": token}}


#: What a claim reads of each candidate to plan under limits.
CANDIDATE_PROJECTION: Doc = {
    "queue": 1,
    "priority": 1,
    "rank": 1,
    "seq": 1,
    "limit_key": 1,
    "limit": 1,
    "fair": 1,
}


def claim_order(doc: Mapping[str, Any]) -> tuple[int, int, int]:
    """A job document's place in claim order (a missing rank, schema 2's, is 0)."""
    return (doc["priority"], doc.get("rank") or 0, doc["seq"])


def claim_update(token: str, worker: str, now: datetime, lease_s: float) -> Doc:
    """Lease a job to ``worker`` under ``token``; counts the attempt."""
    return {
        "$set": {
            "status": RUNNING,
            "token": token,
            "worker": worker,
            "started_at": now,
            "lease_expires_at": lease_expiry(now, lease_s),
            "cancel_requested": False,
        },
        "$inc": {"attempts": 1},
    }


def lease_expiry(now: datetime, lease_s: float) -> datetime:
    return to_millis(now + timedelta(seconds=lease_s))


def lease_token(claim_token: str, job_id: str) -> str:
    """The token a lease carries: the claim's token (stored on the job) and the job's id.

    One claim stamps one fresh token on all the jobs it wins; appending the
    job id makes every lease's token unique, and a token shown for the
    wrong job matches nothing.
    """
    return f"{claim_token}.{job_id}"


def claim_token_of(token: str, job_id: str) -> str:
    """The stored claim token a lease token stands for (one no stored token equals, if foreign)."""
    claim, dot, owner = token.partition(".")  # claim tokens are hex: no dot
    if not dot or owner != job_id or not claim:
        return "!" + token  # stored tokens are hex: this never matches
    return claim


def fence_filter(job_id: str, token: str, attempt: int) -> Doc:
    """The job only while ``token`` holds its lease for ``attempt``: every lease op's CAS.

    The attempt is part of the fence because the client decides a finish by
    the lease's attempt; a lease naming another attempt matches nothing.
    """
    return {
        "_id": job_id,
        "status": RUNNING,
        "token": claim_token_of(token, job_id),
        "attempts": attempt,
    }


def renew_update(expires: datetime) -> Doc:
    return {"$set": {"lease_expires_at": expires}}


# -- progress ----------------------------------------------------------------


def progress_event_key(job_id: str, token: str, report: str) -> str:
    """A progress report's event key; ``report`` is fresh per report (the relay dedupes on keys)."""
    return f"{job_id}/{token}/progress/{report}"


def progress_update(
    fraction: float | None, message: str | None, event_data: str, *, now: datetime, event_key: str
) -> Doc:
    """The job's new progress and its ``job.progress`` outbox entry: one single-document write.

    Send it with the lease's :func:`fence_filter`, as a finish is sent: a
    stale lease matches nothing and nothing is written.
    """
    return {
        "$set": {"progress": {"fraction": fraction, "message": message, "at": now}},
        "$push": {"outbox": outbox_entry(event_key, PROGRESS_EVENT, event_data, now)},
    }


def progress_of(doc: Mapping[str, Any] | None) -> Progress | None:
    """The progress :func:`progress_update` stored, or None for none."""
    if doc is None:
        return None
    fraction = doc.get("fraction")
    return Progress(
        fraction=None if fraction is None else float(fraction),
        message=doc.get("message"),
        at=as_utc(doc["at"]),
    )


# -- terminal writes ---------------------------------------------------------


def finish_event_key(job_id: str, token: str) -> str:
    """A token moves a job out of ``running`` at most once: job and token name its event."""
    return f"{job_id}/{token}"


def expired_event_key(job_id: str, token: str) -> str:
    return f"{job_id}/{token}/expired"


def cancel_event_key(job_id: str, retries: int | None = None) -> str:
    # A job is cancelled from ``queued`` at most once per retry (``retries``
    # as read by the cancel's compare-and-set; None or 0 before any retry).
    return f"{job_id}/cancelled" + (f"/{retries}" if retries else "")


def retry_event_key(job_id: str, retries: int) -> str:
    """The key of the event of the job's ``retries``-th retry (one retry applies per count)."""
    return f"{job_id}/retried/{retries}"


def outbox_entry(key: str, type_: str, data: str | None, now: datetime) -> Doc:
    """An event held in the job's own document until it is relayed (``data`` is JSON text)."""
    return {"key": key, "type": type_, "data": "null" if data is None else data, "at": now}


def transition_update(t: Transition, *, now: datetime, event_key: str) -> Doc:
    """The update that applies every field of ``t``, with its event under ``event_key``.

    Send it with the compare-and-set filter of the operation (:func:`fence_filter`,
    :func:`reclaim_filter`, :func:`cancel_queued`); the whole transition and
    its outbox entry are one single-document write.
    """
    fields: Doc = {**OFF_LEASE, "status": t.status.value, "finished_by": t.finished_by}
    update: Doc = {"$set": fields}
    if t.attempts is not None:
        fields["attempts"] = t.attempts
    if t.run_in is not None:
        fields["run_at"] = to_millis(now + timedelta(seconds=t.run_in))
    if t.result is not None:
        fields["result"] = t.result
    if t.error is not None:
        fields["error"] = t.error
    if t.finished:
        fields["finished_at"] = now
    if t.status.is_terminal:
        # Index upkeep, not a decision: only live jobs hold their dedupe key.
        update["$unset"] = {"dedupe_live": ""}
    if t.event_type is not None:
        update["$push"] = {"outbox": outbox_entry(event_key, t.event_type, t.event_data, now)}
    return update


# -- reclaim -----------------------------------------------------------------


def expired_filter(now: datetime) -> Doc:
    """Running jobs whose lease expired; served by the ``lease_expiry`` index."""
    return {"status": RUNNING, "lease_expires_at": {"$lte": now}}


EXPIRED_PROJECTION: Doc = {
    "token": 1,
    "attempts": 1,
    "max_attempts": 1,
    "queue": 1,
    "limit_key": 1,
}


def reclaim_filter(doc: Mapping[str, Any], now: datetime) -> Doc:
    """Compare-and-set on (status, token): a job finished or renewed meanwhile is left alone."""
    return {
        "_id": doc["_id"],
        "status": RUNNING,
        "token": doc["token"],
        "lease_expires_at": {"$lte": now},
    }


def stale_staged_filter(cutoff: datetime) -> Doc:
    """Staged jobs of a multi-job enqueue whose producer never committed them."""
    return {"status": PENDING, "created_at": {"$lt": cutoff}}


#: Staged workflow steps, of any age (a plain enqueue's staged jobs have no ``workflow``).
STAGED_STEPS: Doc = {"status": PENDING, "workflow": {"$type": "string"}}


def batch_committed_filter(batch: str) -> Doc:
    """Any job of ``batch`` already made visible: then the whole batch was inserted."""
    return {"batch": batch, "status": {"$ne": PENDING}}


# -- cancel ------------------------------------------------------------------


def cancel_queued(job_id: str, queue: str, status: str = QUEUED, retries: int | None = None) -> Doc:
    """Compare-and-set for cancelling a queued or waiting job: still so, on its event's queue.

    The update is :func:`transition_update` of
    :func:`qw.transitions.plan_cancel_queued`, under :func:`cancel_event_key`
    of ``retries``, which the filter holds too (None matches a job never retried).
    """
    return {"_id": job_id, "status": status, "queue": queue, "retries": retries}


#: What :meth:`MongoBackend.retry` reads to decide with :func:`qw.transitions.plan_retry`.
RETRY_PROJECTION: Doc = {
    "status": 1,
    "attempts": 1,
    "max_attempts": 1,
    "queue": 1,
    "workflow": 1,
    "dedupe_key": 1,
    "retries": 1,
}


def retry_filter(doc: Mapping[str, Any]) -> Doc:
    """Compare-and-set on what the retry read: status, attempts and retry count."""
    return {
        "_id": doc["_id"],
        "status": doc["status"],
        "attempts": doc["attempts"],
        "retries": doc.get("retries"),
    }


def retry_update(t: Transition, doc: Mapping[str, Any], *, now: datetime) -> Doc:
    """Every field of ``t`` (:func:`qw.transitions.plan_retry`'s), and its outbox entry.

    The job is live again, so it holds its dedupe key again (``dedupe_live``,
    which the unique index refuses if a producer took the key since the
    read); ``retries`` counts it, and keys its event.
    """
    retries = (doc.get("retries") or 0) + 1
    update = transition_update(t, now=now, event_key=retry_event_key(doc["_id"], retries))
    fields = update["$set"]
    fields["retries"] = retries
    if t.max_attempts is not None:
        fields["max_attempts"] = t.max_attempts
    if doc.get("dedupe_key") is not None:
        fields["dedupe_live"] = doc["dedupe_key"]
    if t.reopened:
        update["$unset"] = {"started_at": "", "finished_at": ""}
    return update


def cancel_running(job_id: str) -> tuple[Doc, Doc]:
    """A running job is only flagged; its worker sees it on renew."""
    return {"_id": job_id, "status": RUNNING}, {"$set": {"cancel_requested": True}}


# -- the outbox relay --------------------------------------------------------


def event_document(job_id: str, entry: Mapping[str, Any], cursor: int) -> Doc:
    """The relayed event; its ``_id`` is the entry's deterministic key (idempotent insert)."""
    return {
        "_id": entry["key"],
        "cursor": cursor,
        "job_id": job_id,
        "type": entry["type"],
        "data": entry["data"],
        "created_at": entry["at"],
        "acked": False,
    }


def outbox_done(job_id: str, key: str) -> tuple[Doc, Doc]:
    """Drop a relayed entry from its job's outbox."""
    return {"_id": job_id}, {"$pull": {"outbox": {"key": key}}}


def purge_jobs_filter(cutoff: datetime) -> Doc:
    """Plain terminal jobs finished before ``cutoff`` whose events have all been relayed.

    Workflow steps go only with their workflow (:func:`purge_workflows_filter`).
    """
    return {
        "status": {"$in": TERMINAL},
        "finished_at": {"$lt": cutoff},
        "outbox.key": {"$exists": False},
        "workflow": None,
    }


def purge_workflows_filter(cutoff: datetime) -> Doc:
    """Workflows that ended before ``cutoff`` whose own event has been relayed."""
    return {
        "state": {"$in": WF_ENDED},
        "finished_at": {"$lt": cutoff},
        "outbox.key": {"$exists": False},
    }


def purge_events_filter(cutoff: datetime) -> Doc:
    return {"acked": True, "created_at": {"$lt": cutoff}}


# -- workflows ---------------------------------------------------------------


def workflow_document(workflow: WorkflowInsert, *, batch: str, now: datetime) -> Doc:
    """A new workflow, ``pending`` until :func:`commit_workflow` (steps staged under ``batch``)."""
    return {
        "_id": workflow.id,
        "state": PENDING,
        "batch": batch,
        "created_at": now,
        "output": workflow.output,
        "finished_at": None,
        "cancel_requested": False,
        "cancel_done": False,
    }


def staged_workflow(workflow_id: str, batch: str) -> Doc:
    """The workflow while the create that staged ``batch`` has not committed it."""
    return {"_id": workflow_id, "batch": batch, "state": PENDING}


def commit_workflow(workflow_id: str, batch: str) -> tuple[Doc, Doc]:
    """A create's commit point: one update makes the workflow exist (its steps follow)."""
    return staged_workflow(workflow_id, batch), {"$set": {"state": WF_RUNNING}}


def add_commit(children: list[str], batch: str, n: int) -> Doc:
    """:meth:`add_steps`' commit point, sent with the lease's :func:`fence_filter`.

    The running step gets its new children and a note of the batch, which
    stays until the batch is revealed (whoever finds the note finishes it).
    """
    update: Doc = {"$push": {"adding": {"b": batch, "n": n}}}
    if children:
        update["$push"]["children"] = {"$each": children}
    return update


def add_done(adder: str, batch: str) -> tuple[Doc, Doc]:
    """The batch is revealed: drop its note from the step that added it."""
    return {"_id": adder}, {"$pull": {"adding": {"b": batch}}}


def request_cancel(workflow_id: str) -> tuple[Doc, Doc]:
    return {"_id": workflow_id, "state": WF_RUNNING}, {"$set": {"cancel_requested": True}}


def cancel_done(workflow_id: str) -> tuple[Doc, Doc]:
    """Every step the cancel found not running has been cancelled (the sweep stops redoing it)."""
    return {"_id": workflow_id}, {"$set": {"cancel_done": True}}


#: Workflows whose cancel was interrupted before every step was cancelled.
UNFINISHED_CANCELS: Doc = {"state": WF_RUNNING, "cancel_requested": True, "cancel_done": False}


def cancellable_steps(workflow_id: str, batch: str | None = None) -> Doc:
    """Steps a workflow cancel acts on: waiting and queued ones are cancelled, running flagged."""
    query: Doc = {"workflow": workflow_id, "status": {"$in": LIVE}}
    if batch is not None:
        query["batch"] = batch
    return query


def settle_children(children: list[str], parent: str, status: JobStatus) -> tuple[Doc, Doc]:
    """Count ``parent`` (ended ``status``) as ended for each waiting child, once per child.

    The filter's ``settled: {$ne: parent}`` makes a repeat (a crash, then
    the sweep; or two settlers racing) change nothing.
    """
    push: Doc = {"settled": parent}
    if status is not JobStatus.SUCCEEDED:
        push["failed_parents"] = parent
    return (
        {"_id": {"$in": children}, "status": WAITING, "settled": {"$ne": parent}},
        {"$push": push, "$inc": {"pending": -1}},
    )


def ready_steps(ids: list[str]) -> Doc:
    """Those of ``ids`` still waiting whose every parent has been counted as ended."""
    return {"_id": {"$in": ids}, "status": WAITING, "pending": 0}


READY_PROJECTION: Doc = {"queue": 1, "failed_parents": 1, "on_parent_failure": 1}


def ready_of(doc: Mapping[str, Any]) -> Ready:
    """The ready step (:func:`ready_steps`) as :func:`qw.transitions.plan_settled` reads it."""
    return Ready(
        doc["_id"],
        doc["queue"],
        ParentFailure(doc.get("on_parent_failure", ParentFailure.CANCEL.value)),
        tuple(doc.get("failed_parents", ())),
    )


def settled_cas(step_id: str) -> Doc:
    """Compare-and-set for applying :func:`qw.transitions.plan_settled`: still waiting."""
    return {"_id": step_id, "status": WAITING}


def settled_event_key(step_id: str) -> str:
    # A step leaves ``waiting`` at most once.
    return f"{step_id}/settled"


def workflow_event_key(workflow_id: str) -> str:
    # A workflow ends at most once; workflow ids have no "/", tokens no "workflow".
    return f"{workflow_id}/workflow"


#: What carrying a step's end needs of it (read back by the write that ends it).
ENDED_PROJECTION: Doc = {
    "queue": 1,
    "status": 1,
    "outbox": 1,
    "workflow": 1,
    "children": 1,
    "adding": 1,
    "limit_key": 1,
}

#: Steps that ended but whose end has not been carried to children and workflow.
UNSETTLED_ENDS: Doc = {"ended_settled": False, "status": {"$in": TERMINAL}}


def live_steps(workflow_id: str) -> Doc:
    """Steps of the workflow not ended (staged ones included): while one exists it runs."""
    return {"workflow": workflow_id, "status": {"$nin": TERMINAL}}


def carried(ids: list[str]) -> tuple[Doc, Doc]:
    return {"_id": {"$in": ids}}, {"$set": {"ended_settled": True}}


def workflow_end(
    workflow_id: str,
    state: WorkflowState,
    *,
    cancel_requested: bool,
    event: tuple[str, str],
    now: datetime,
) -> tuple[Doc, Doc]:
    """End the workflow, with its event, if it is still running with the flag as read.

    ``state`` is :func:`qw.transitions.plan_workflow_end` of what was read;
    the filter on ``cancel_requested`` makes a cancel landing meanwhile
    send the caller round again.
    """
    type_, data = event
    return (
        {"_id": workflow_id, "state": WF_RUNNING, "cancel_requested": cancel_requested},
        {
            "$set": {"state": state.value, "finished_at": now},
            "$push": {"outbox": outbox_entry(workflow_event_key(workflow_id), type_, data, now)},
        },
    )


def step_counts_pipeline(workflow_ids: list[str]) -> list[Doc]:
    """Steps per (workflow, status), for ``Workflow.counts`` and the end decision."""
    return [
        {"$match": {"workflow": {"$in": workflow_ids}, **VISIBLE}},
        {"$group": {"_id": {"w": "$workflow", "s": "$status"}, "n": {"$sum": 1}}},
    ]


def workflow_from_document(doc: Mapping[str, Any], counts: Mapping[JobStatus, int]) -> Workflow:
    return Workflow(
        id=doc["_id"],
        state=WorkflowState(doc["state"]),
        created_at=as_utc(doc["created_at"]),
        output=doc.get("output"),
        finished_at=_date(doc.get("finished_at")),
        cancel_requested=bool(doc.get("cancel_requested", False)),
        counts=dict(counts),
    )


# -- workers -----------------------------------------------------------------


def heartbeat_update(worker: WorkerInfo, now: datetime) -> Doc:
    """Register or refresh ``worker``; the first start time stays."""
    return {
        "$set": {
            "queues": list(worker.queues),
            "host": worker.host,
            "pid": worker.pid,
            "concurrency": worker.concurrency,
            "last_seen": now,
        },
        "$setOnInsert": {"started_at": to_millis(worker.started_at) if worker.started_at else now},
    }


# -- limits ------------------------------------------------------------------

_LIMIT_FIELDS = ("concurrency", "rate", "per")


def limit_document(limit: Limit) -> Doc:
    """A limit as stored: exactly its fields that are set (``Limit()`` is ``{}``)."""
    fields = {name: getattr(limit, name) for name in _LIMIT_FIELDS}
    return {name: value for name, value in fields.items() if value is not None}


def key_counts_pipeline(limit: int, after: str | None) -> list[Doc]:
    """The first ``limit`` keys (after ``after``) with queued or running jobs, with counts.

    Each row: ``_id`` the key, ``queued``, ``running``. Served by
    ``limit_key_status``.
    """
    key: Doc = {"$type": "string"}
    if after is not None:
        key["$gt"] = after
    return [
        {"$match": {"limit_key": key, "status": {"$in": [QUEUED, RUNNING]}}},
        {
            "$group": {
                "_id": "$limit_key",
                "queued": {"$sum": {"$cond": [{"$eq": ["$status", QUEUED]}, 1, 0]}},
                "running": {"$sum": {"$cond": [{"$eq": ["$status", RUNNING]}, 1, 0]}},
            }
        },
        {"$sort": {"_id": 1}},
        {"$limit": limit},
    ]


def key_limits_pipeline(keys: list[str]) -> list[Doc]:
    """The limit one live job of each of ``keys`` declares (keys none declares: no row).

    A separate pass over the jobs that declare one, so that a key's jobs
    without a limit never hide the limit of those with one. (``$max`` over
    the limits in one pass would do on a server, not on the stand-in.)
    """
    return [
        {
            "$match": {
                "limit_key": {"$in": keys},
                "status": {"$in": [QUEUED, RUNNING]},
                "limit": {"$type": "object"},
            }
        },
        {"$group": {"_id": "$limit_key", "own": {"$first": "$limit"}}},
    ]


def limit_of(doc: Mapping[str, Any] | None) -> Limit | None:
    """The limit :func:`limit_document` stored, or None for none."""
    if doc is None:
        return None
    return Limit(**{name: doc[name] for name in _LIMIT_FIELDS if doc.get(name) is not None})


# -- reading back ------------------------------------------------------------


def _date(value: Any) -> datetime | None:
    return None if value is None else as_utc(value)


def job_from_document(doc: Mapping[str, Any]) -> Job:
    job = Job(
        id=doc["_id"],
        queue=doc["queue"],
        payload=decode_json(doc.get("payload")),
        priority=doc["priority"],
        run_at=as_utc(doc["run_at"]),
        max_attempts=doc["max_attempts"],
        attempts=doc["attempts"],
        status=JobStatus(doc["status"]),
        created_at=as_utc(doc["created_at"]),
        dedupe_key=doc.get("dedupe_key"),
        result=decode_json(doc.get("result")),
        error=decode_json(doc.get("error")),
        started_at=_date(doc.get("started_at")),
        finished_at=_date(doc.get("finished_at")),
        worker=doc.get("worker"),
        lease_expires_at=_date(doc.get("lease_expires_at")),
        cancel_requested=bool(doc.get("cancel_requested", False)),
        # A job that never reported, or written before progress existed: None.
        progress=progress_of(doc.get("progress")),
    )
    key = doc.get("limit_key")
    if key is not None:
        # Written before schema 3, a job has no key: the defaults say no limit.
        job = replace(
            job, limit_key=key, limit=limit_of(doc.get("limit")), fair=bool(doc.get("fair"))
        )
    workflow = doc.get("workflow")
    if workflow is None:
        return job  # a plain job: the step fields keep their defaults
    return replace(
        job,
        workflow=workflow,
        parents=tuple(doc.get("parents", ())),
        children=tuple(doc.get("children", ())),
        on_parent_failure=ParentFailure(doc.get("on_parent_failure", ParentFailure.CANCEL.value)),
        failed_parents=tuple(doc.get("failed_parents", ())),
    )


def worker_from_document(doc: Mapping[str, Any]) -> WorkerInfo:
    return WorkerInfo(
        id=doc["_id"],
        queues=tuple(doc.get("queues", ())),
        host=doc.get("host", ""),
        pid=doc.get("pid", 0),
        concurrency=doc.get("concurrency", 1),
        started_at=_date(doc.get("started_at")),
        last_seen=_date(doc.get("last_seen")),
    )
