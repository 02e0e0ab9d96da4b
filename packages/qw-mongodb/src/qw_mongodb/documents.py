"""Every filter, update, document and index the backend sends: pure functions.

Nothing here does I/O, so the exact shape of a claim, a fenced terminal
write, a reclaim or an outbox relay is unit-tested without a server. The
backend module only chooses which of these to send and in what order. No
status is decided here: :mod:`qw.transitions` decides every transition and
:func:`transition_update` writes it as it is.

A job document::

    {_id, queue, payload, priority, run_at, max_attempts, attempts, status,
     created_at, seq, token, finished_by, worker, lease_expires_at,
     cancel_requested, [dedupe_key, dedupe_live], [result], [error],
     [started_at], [finished_at], [batch], [outbox: [{key, type, data, at}]]}

Payloads, results, errors and event data are stored as JSON text: BSON cannot
carry every JSON value (integers beyond 64 bits) and a stored ``$``-key must
never be read as an operator, so the text is the exact value the producer
sent: the client's JSON text, written as it is. ``dedupe_live`` holds the
dedupe key only while the job is live (or staged), which is what the unique
partial index enforces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel

from qw.contract import Insert
from qw.model import Job, JobStatus, WorkerInfo
from qw.transitions import Transition
from qw.validation import decode_json
from qw_mongodb.clock import as_utc, to_millis

__all__ = [
    "CLAIM_SORT",
    "EVENT_CURSOR",
    "JOB_SEQ",
    "LIVE",
    "PENDING",
    "PENDING_OUTBOX",
    "Doc",
]

Doc = dict[str, Any]

#: Status of the jobs of a multi-job enqueue between their insert and their
#: commit: invisible to claims, reads and counts.
PENDING = "pending"
QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value
LIVE = [QUEUED, RUNNING]
TERMINAL = [s.value for s in JobStatus if s.is_terminal]
VISIBLE: Doc = {"status": {"$ne": PENDING}}
CLAIM_SORT = [("priority", ASCENDING), ("seq", ASCENDING)]
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
        # merge sort on (priority, seq); run_at filtered from the index.
        IndexModel(
            [("queue", 1), ("priority", 1), ("seq", 1), ("run_at", 1)],
            name="claim_order",
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
    ]


def event_indexes() -> list[IndexModel]:
    """The indexes of the ``events`` collection (``_id`` is the deterministic key)."""
    return [
        IndexModel([("cursor", 1)], name="cursor", unique=True),
        IndexModel([("acked", 1), ("cursor", 1)], name="unacked"),
        IndexModel([("acked", 1), ("created_at", 1)], name="acked_age"),
    ]


# -- enqueue -----------------------------------------------------------------


def job_document(new: Insert, *, seq: int, now: datetime, batch: str | None = None) -> Doc:
    """The document for a new job; staged (``pending``) when part of a multi-job batch.

    Which jobs get one is :func:`qw.transitions.plan_enqueue`'s decision.
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
        **OFF_LEASE,
        "finished_by": None,
    }
    if new.dedupe_key is not None:
        doc["dedupe_key"] = new.dedupe_key
        doc["dedupe_live"] = new.dedupe_key
    if batch is not None:
        doc["batch"] = batch
    return doc


def live_keys_filter(keys: Iterable[str]) -> Doc:
    """Live jobs holding any of ``keys``."""
    return {"dedupe_live": {"$in": list(keys)}, "status": {"$in": LIVE}}


def commit_batch(batch: str) -> tuple[Doc, Doc]:
    """Filter and update that make a staged batch visible (idempotent)."""
    return {"batch": batch, "status": PENDING}, {"$set": {"status": QUEUED}}


def counter_bump(name: str, n: int) -> tuple[Doc, Doc]:
    """Reserve ``n`` numbers from the counter ``name`` (read the new value back)."""
    return {"_id": name}, {"$inc": {"n": n}}


# -- claim, renew ------------------------------------------------------------


def claim_filter(queues: Iterable[str], now: datetime) -> Doc:
    """Due queued jobs on ``queues``; served by the ``claim_order`` index."""
    return {"status": QUEUED, "queue": {"$in": list(queues)}, "run_at": {"$lte": now}}


def stamp_filter(ids: Iterable[str], queues: Iterable[str], now: datetime) -> Doc:
    """The candidates of a batch claim that are still claimable (losers skip)."""
    return {"_id": {"$in": list(ids)}, **claim_filter(queues, now)}


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


# -- terminal writes ---------------------------------------------------------


def finish_event_key(job_id: str, token: str) -> str:
    """A token moves a job out of ``running`` at most once: job and token name its event."""
    return f"{job_id}/{token}"


def expired_event_key(job_id: str, token: str) -> str:
    return f"{job_id}/{token}/expired"


def cancel_event_key(job_id: str) -> str:
    # A job is cancelled from ``queued`` at most once: cancelled is terminal.
    return f"{job_id}/cancelled"


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


EXPIRED_PROJECTION: Doc = {"token": 1, "attempts": 1, "max_attempts": 1, "queue": 1}


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


def batch_committed_filter(batch: str) -> Doc:
    """Any job of ``batch`` already made visible: then the whole batch was inserted."""
    return {"batch": batch, "status": {"$ne": PENDING}}


# -- cancel ------------------------------------------------------------------


def cancel_queued(job_id: str, queue: str) -> Doc:
    """Compare-and-set for cancelling a queued job: still queued, on the queue its event names.

    The update is :func:`transition_update` of
    :func:`qw.transitions.plan_cancel_queued`, under :func:`cancel_event_key`.
    """
    return {"_id": job_id, "status": QUEUED, "queue": queue}


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
    """Terminal jobs finished before ``cutoff`` whose events have all been relayed."""
    return {
        "status": {"$in": TERMINAL},
        "finished_at": {"$lt": cutoff},
        "outbox.key": {"$exists": False},
    }


def purge_events_filter(cutoff: datetime) -> Doc:
    return {"acked": True, "created_at": {"$lt": cutoff}}


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


# -- reading back ------------------------------------------------------------


def _date(value: Any) -> datetime | None:
    return None if value is None else as_utc(value)


def job_from_document(doc: Mapping[str, Any]) -> Job:
    return Job(
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
