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
- **retry** — :func:`plan_retry`: a ``failed`` or ``cancelled`` plain job
  back to ``queued``, given what the store read under its compare-and-set.
- **enqueue** — :func:`plan_enqueue`: which new jobs to insert, given the
  dedupe keys that live jobs hold.
- **workflows** — :func:`plan_settled` for a ``waiting`` step whose last
  parent just ended, :func:`settle` to carry that through a graph in one
  write, and :func:`plan_workflow_end` for the write that ends the last step.

Every transition takes the job off its lease: ``worker``, ``lease_expires_at``
and ``token`` become null and ``cancel_requested`` false. ``finished_by``
becomes :attr:`Transition.finished_by`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from qw.errors import DuplicateJob, NotRetryable
from qw.model import (
    Complete,
    Enqueued,
    Fail,
    JobStatus,
    Outcome,
    ParentFailure,
    Release,
    WorkflowState,
)

__all__ = [
    "EVENT_CANCELLED",
    "EVENT_FAILED",
    "EVENT_RETRIED",
    "EVENT_SUCCEEDED",
    "EVENT_TYPES",
    "EVENT_WORKFLOW_CANCELLED",
    "EVENT_WORKFLOW_FAILED",
    "EVENT_WORKFLOW_SUCCEEDED",
    "Keyed",
    "LEASE_EXPIRED_ERROR",
    "REASON_CANCELLED",
    "REASON_LEASE_EXPIRED",
    "REASON_PARENT_FAILED",
    "RETRYABLE",
    "Ready",
    "StepGraph",
    "Transition",
    "attempts_remain",
    "plan_cancel_queued",
    "plan_enqueue",
    "plan_finish",
    "plan_reclaim",
    "plan_retry",
    "plan_settled",
    "plan_workflow_end",
    "repeat_status",
    "settle",
    "workflow_event",
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
#: A failed or cancelled job was put back in its queue by an operator
#: (:func:`plan_retry`; data ``{"queue"}``).
EVENT_RETRIED = "job.retried"
#: A workflow's last step ended; one of these per workflow, ever. Its
#: ``job_id`` is the workflow's id, its data ``{"workflow", "state"}``.
EVENT_WORKFLOW_SUCCEEDED = "workflow.succeeded"
EVENT_WORKFLOW_FAILED = "workflow.failed"
EVENT_WORKFLOW_CANCELLED = "workflow.cancelled"

#: ``reason`` of the store's own events, and of the error it writes on expiry.
REASON_LEASE_EXPIRED = "lease_expired"
REASON_CANCELLED = "cancelled"
#: ``reason`` of a step cancelled because a parent ended failed or cancelled.
REASON_PARENT_FAILED = "parent_failed"
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
        max_attempts: the new ``max_attempts`` (None keeps it).
        reopened: ``started_at`` and ``finished_at`` become null: the job is
            live again (a retry).
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
    max_attempts: int | None = None
    reopened: bool = False


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


#: The statuses :func:`plan_retry` puts back in the queue.
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


def plan_retry(
    status: JobStatus,
    attempts: int,
    max_attempts: int,
    workflow: str | None,
    *,
    job_id: str,
    queue: str,
    holder: str | None = None,
) -> Transition | None:
    """The transition that retries a job, or None when its ``status`` makes a retry a no-op.

    The arguments are the job as the store read it under the compare-and-set
    that applies the answer; ``holder`` is the id of another live job that
    now holds the job's dedupe key (None: no key, or nobody holds it).

    A workflow step (``workflow`` not None) raises
    :class:`~qw.errors.NotRetryable`, whatever its status. A ``failed`` or
    ``cancelled`` job whose key ``holder`` holds raises
    :class:`~qw.errors.DuplicateJob` naming the holder. Any status but those
    two is None. Otherwise the job is ``queued``, due now; its attempts are
    kept and ``max_attempts`` becomes ``attempts + 1`` if that is more, so
    it gets one attempt at least; ``result`` is cleared, ``error`` and
    ``progress`` stay until the next attempt ends or reports;
    ``started_at``, ``finished_at`` and ``finished_by`` are cleared; and an
    :data:`EVENT_RETRIED` event is written with it.
    """
    if workflow is not None:
        raise NotRetryable(
            f"job {job_id!r} is a step of workflow {workflow!r}: the workflow has settled "
            "around the step's end (its children were cancelled or ran, the workflow may "
            "have ended), so the step cannot run again on its own"
        )
    if status not in RETRYABLE:
        return None
    if holder is not None:
        raise DuplicateJob(
            f"job {job_id!r} cannot be retried: live job {holder!r} now holds its dedupe key"
        )
    return Transition(
        JobStatus.QUEUED,
        run_in=0.0,
        result="null",
        event_type=EVENT_RETRIED,
        event_data=f'{{"queue":"{queue}"}}',
        max_attempts=max(max_attempts, attempts + 1),
        reopened=True,
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


# -- workflows -----------------------------------------------------------------
#
# A step with parents is inserted ``waiting`` with a count of parents that
# have not ended. Whenever a step ends (succeeded, failed or cancelled, by any
# path: a finish, a reclaim, a cancel), the same write counts it as ended for
# each of its waiting children, and each child whose count reaches zero gets
# plan_settled's transition; a child cancelled that way ends too, so the rule
# runs again for its children. settle() is that loop. Step and workflow ids
# match qw.validation's WORKFLOW_ID_PATTERN (no character JSON escapes), so
# the JSON below is built by hand, as a Lua script can build it too.


class Ready(NamedTuple):
    """A waiting step whose last pending parent has just ended."""

    id: str
    queue: str
    on_parent_failure: ParentFailure
    #: Its parents that ended failed or cancelled, in the order they ended.
    failed_parents: Sequence[str]


def plan_settled(ready: Ready) -> Transition:
    """The transition for a waiting step every parent of which has ended.

    It is queued (its ``run_at`` kept: a step's delay is its earliest
    start, usually long past), unless a parent failed or was cancelled and
    the step's policy is :attr:`~qw.model.ParentFailure.CANCEL`: then it
    ends ``cancelled``, its error and a ``job.cancelled`` event naming the
    first such parent.
    """
    if not ready.failed_parents or ready.on_parent_failure is ParentFailure.RUN:
        return Transition(JobStatus.QUEUED)
    parent = ready.failed_parents[0]
    return Transition(
        JobStatus.CANCELLED,
        error=f'{{"reason":"{REASON_PARENT_FAILED}","parent":"{parent}"}}',
        finished=True,
        event_type=EVENT_CANCELLED,
        event_data=(
            f'{{"queue":"{ready.queue}","reason":"{REASON_PARENT_FAILED}","parent":"{parent}"}}'
        ),
    )


class StepGraph(Protocol):
    """The two writes :func:`settle` asks of a store, inside the store's one atomic write."""

    def count_ended(self, parent: str, status: JobStatus) -> Sequence[Ready]:
        """Count ``parent`` (which just ended with ``status``) as ended for each waiting child.

        Decrements each waiting child's count of pending parents, records
        ``parent`` among its failed parents unless ``status`` is
        ``succeeded``, and returns the children whose count reached zero.
        Children not ``waiting`` are left alone.
        """
        ...

    def apply_settled(self, step: Ready, transition: Transition) -> None:
        """Apply ``transition`` (from :func:`plan_settled`) to the waiting ``step``."""
        ...


def settle(graph: StepGraph, ended: Sequence[tuple[str, JobStatus]]) -> None:
    """Carry the end of each ``(step id, status)`` through its descendants.

    Every step that a cancellation reaches is settled in turn, so a failure
    deep in a graph cancels all it should within the one write.
    """
    work = list(ended)
    while work:
        parent, status = work.pop()
        for ready in graph.count_ended(parent, status):
            transition = plan_settled(ready)
            graph.apply_settled(ready, transition)
            if transition.status is not JobStatus.QUEUED:
                work.append((ready.id, transition.status))


def plan_workflow_end(*, failed: int, cancelled: int, cancel_requested: bool) -> WorkflowState:
    """A workflow's state once its last step has ended.

    ``failed`` and ``cancelled`` count its steps in those statuses. A
    workflow an operator cancelled is ``cancelled``; otherwise any failed
    step makes it ``failed``, any cancelled one ``cancelled``, else it
    ``succeeded``.
    """
    if cancel_requested:
        return WorkflowState.CANCELLED
    if failed:
        return WorkflowState.FAILED
    return WorkflowState.CANCELLED if cancelled else WorkflowState.SUCCEEDED


def workflow_event(workflow_id: str, state: WorkflowState) -> tuple[str, str]:
    """The type and data (JSON text) of the event that ends a workflow in ``state``."""
    return f"workflow.{state.value}", f'{{"workflow":"{workflow_id}","state":"{state.value}"}}'
