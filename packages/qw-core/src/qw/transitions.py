"""The job state machine, decided once: every change a store makes to a job.

These pure functions are the normative rules. A backend never decides a
status: it is handed a :class:`Transition` (or asks this module for one,
given what it read under its compare-and-set) and applies every field of it,
in one atomic write, together with the transition's event. River's drivers
work the same way; the reason is that seven copies of a state machine are
seven places to drift.

Who decides what:

- **finish** — :func:`plan_finish`, from the outcome and the lease. The lease
  carries the attempt number and ``max_attempts`` read at claim time; nobody
  can change them while its token is current, so the decision made here is
  the one the store would make.
- **repeats** — :func:`repeat_status`: a finish whose token already moved the
  job, and whose decided status is the job's status now, is a repeat.
- **reclaim** — :func:`plan_reclaim`, for a running job whose lease expired.
- **cancel** — :func:`plan_cancel_queued` for a queued job; a running job is
  only flagged (``cancel_requested``), a terminal one is left alone.
- **enqueue** — :func:`plan_enqueue`: which new jobs to insert, given the
  dedupe keys that live jobs hold.

Every transition takes the job off its lease: ``worker``, ``lease_expires_at``
and ``token`` become null and ``cancel_requested`` false. ``finished_by``
becomes :attr:`Transition.finished_by`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from qw.model import Complete, Enqueued, Fail, JobStatus, Outcome, Release

__all__ = [
    "EVENT_CANCELLED",
    "EVENT_FAILED",
    "EVENT_SUCCEEDED",
    "EVENT_TYPES",
    "Keyed",
    "REASON_CANCELLED",
    "REASON_LEASE_EXPIRED",
    "LEASE_EXPIRED_ERROR",
    "Transition",
    "attempts_remain",
    "plan_cancel_queued",
    "plan_enqueue",
    "plan_finish",
    "plan_reclaim",
    "repeat_status",
]

#: A job ended ``succeeded`` (written by the worker with its outcome).
EVENT_SUCCEEDED = "job.succeeded"
#: A job ended ``failed``: by its worker, or by the store when a lease expired
#: with no attempts left (data ``{"queue", "reason": "lease_expired", "attempts"}``).
EVENT_FAILED = "job.failed"
#: A job ended ``cancelled``: by its worker, or by the store when a queued job
#: was cancelled (data ``{"queue", "reason": "cancelled"}``).
EVENT_CANCELLED = "job.cancelled"
EVENT_TYPES = (EVENT_SUCCEEDED, EVENT_FAILED, EVENT_CANCELLED)

#: ``reason`` of the store's own events, and of the error it writes on expiry.
REASON_LEASE_EXPIRED = "lease_expired"
REASON_CANCELLED = "cancelled"
#: The error a store writes when it fails a job whose lease expired (JSON text).
LEASE_EXPIRED_ERROR = '{"reason":"lease_expired"}'


class Transition(NamedTuple):
    """One decided change of one job, applied whole or not at all.

    A field that is None leaves the stored value as it is. JSON fields are
    already-encoded JSON text (``"null"`` stores a JSON null). A named
    tuple, not a frozen dataclass: one is made for every finished job, and a
    frozen dataclass's ``__init__`` costs several times a tuple's.

    Attributes:
        status: the job's status afterwards.
        attempts: the job's attempt count afterwards.
        run_in: seconds from the store's now to the new ``run_at``.
        result: the new ``result``.
        error: the new ``error``.
        finished: whether ``finished_at`` becomes the store's now.
        finished_by: the token recorded as having moved the job (None for
            the store's own transitions, which no finish can repeat).
        event_type: the outbox event to write in the same commit, if any.
        event_data: that event's data.
    """

    status: JobStatus
    attempts: int | None = None
    run_in: float | None = None
    result: str | None = None
    error: str | None = None
    finished: bool = False
    finished_by: str | None = None
    event_type: str | None = None
    event_data: str | None = None


def attempts_remain(attempts: int, max_attempts: int) -> bool:
    """Whether a job that has made ``attempts`` attempts may make another."""
    return attempts < max_attempts


def plan_finish(
    outcome: Outcome, *, body: str | None = None, event_data: str | None = None
) -> Transition:
    """The transition for a worker's ``outcome`` on the job its lease holds.

    ``body`` is the outcome's result (complete) or error (fail, abort) and
    ``event_data`` its event's data, both as JSON text. The lease's
    ``attempt`` and ``max_attempts`` decide a failure: it is retried,
    ``retry_in`` seconds from the store's now, only when ``retry_in`` is
    given and attempts remain; otherwise it is final.
    """
    lease = outcome.lease
    token = lease.token
    if isinstance(outcome, Release):
        # The attempt is given back: it did not run to an outcome.
        return Transition(JobStatus.QUEUED, attempts=lease.attempt - 1, finished_by=token)
    event_type = outcome.event.type if outcome.event is not None else None
    retry_in = outcome.retry_in if isinstance(outcome, Fail) else None
    if retry_in is not None and attempts_remain(lease.attempt, lease.max_attempts):
        return Transition(
            JobStatus.QUEUED,
            run_in=retry_in,
            error=body,
            finished_by=token,
            event_type=event_type,
            event_data=event_data,
        )
    if isinstance(outcome, Complete):
        status, result, error = JobStatus.SUCCEEDED, body, None
    else:
        status = JobStatus.FAILED if isinstance(outcome, Fail) else JobStatus.CANCELLED
        result, error = None, body
    return Transition(
        status,
        result=result,
        error=error,
        finished=True,
        finished_by=token,
        event_type=event_type,
        event_data=event_data,
    )


def repeat_status(
    transition: Transition, status: JobStatus, finished_by: str | None
) -> JobStatus | None:
    """The answer to a finish that did not apply: the status if it is a repeat, else None.

    ``status`` and ``finished_by`` are the job's as stored. A call is a
    repeat when the same token already moved the job to the very status
    this transition would: it changes nothing and writes no second event.
    Anything else is a stale lease.
    """
    mine = finished_by is not None and finished_by == transition.finished_by
    return status if mine and status is transition.status else None


def plan_reclaim(*, attempts: int, max_attempts: int, queue: str) -> Transition:
    """The transition for a running job whose lease expired on the store's clock.

    The attempt stays counted. With attempts left the job is queued again,
    due at once; otherwise it fails with :data:`LEASE_EXPIRED_ERROR` and an
    :data:`EVENT_FAILED` event.
    """
    if attempts_remain(attempts, max_attempts):
        return Transition(JobStatus.QUEUED)
    return Transition(
        JobStatus.FAILED,
        error=LEASE_EXPIRED_ERROR,
        finished=True,
        event_type=EVENT_FAILED,
        event_data=_reclaim_event_data(queue, attempts),
    )


def plan_cancel_queued(*, queue: str) -> Transition:
    """The transition for cancelling a queued job (a running one is only flagged)."""
    return Transition(
        JobStatus.CANCELLED,
        finished=True,
        event_type=EVENT_CANCELLED,
        event_data=f'{{"queue":"{queue}","reason":"{REASON_CANCELLED}"}}',
    )


def _reclaim_event_data(queue: str, attempts: int) -> str:
    # Queue names match a pattern with no character JSON must escape.
    return f'{{"queue":"{queue}","reason":"{REASON_LEASE_EXPIRED}","attempts":{attempts}}}'


class Keyed(Protocol):
    """What :func:`plan_enqueue` reads of a new job."""

    @property
    def id(self) -> str: ...

    @property
    def dedupe_key(self) -> str | None: ...


def plan_enqueue(
    jobs: Sequence[Keyed], live_keys: Mapping[str, str]
) -> tuple[list[Enqueued], list[int]]:
    """Answers for ``jobs`` and the indexes of those to insert, in order.

    ``live_keys`` maps dedupe keys to the live (queued or running) jobs
    holding them. A job whose key is held is not inserted and is answered
    with the holder's id; within the batch the first job with a key wins
    and later ones are answered with its id.
    """
    taken = dict(live_keys)
    answers: list[Enqueued] = []
    insert: list[int] = []
    for i, new in enumerate(jobs):
        key = new.dedupe_key
        if key is not None and key in taken:
            answers.append(Enqueued(taken[key], created=False))
            continue
        if key is not None:
            taken[key] = new.id
        answers.append(Enqueued(new.id, created=True))
        insert.append(i)
    return answers, insert
