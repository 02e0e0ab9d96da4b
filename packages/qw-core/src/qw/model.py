"""The records that cross the storage contract: plain, frozen, driver-free."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from qw.ids import new_job_id

__all__ = [
    "Abort",
    "Claim",
    "Complete",
    "Enqueued",
    "Event",
    "EventSpec",
    "Fail",
    "Job",
    "JobStatus",
    "JSONValue",
    "KeyState",
    "Lease",
    "Limit",
    "NewJob",
    "Outcome",
    "ParentFailure",
    "PROGRESS_EVENT",
    "Progress",
    "PurgeResult",
    "Release",
    "Schedule",
    "WorkerInfo",
    "Workflow",
    "WorkflowState",
]

JSONValue: TypeAlias = (
    "bool | int | float | str | Sequence[JSONValue] | Mapping[str, JSONValue] | None"
)


class JobStatus(enum.StrEnum):
    """Where a job is in its life.

    ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``;
    ``running`` → ``queued`` again on retry, release, or reclaim. A workflow
    step with parents starts ``waiting``, which is never claimable, and
    leaves it when its last parent ends (see :func:`qw.transitions.plan_settled`).
    """

    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether nothing can leave this status."""
        return self in TERMINAL

    @property
    def is_live(self) -> bool:
        """Whether a dedupe key held by a job in this status is still taken."""
        return self in LIVE


LIVE = frozenset({JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING})
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class ParentFailure(enum.StrEnum):
    """What a workflow step does when a parent ends ``failed`` or ``cancelled``."""

    #: The step ends ``cancelled`` (and so, by the same rule, do its descendants).
    CANCEL = "cancel"
    #: The step runs once every parent has ended; it sees which ones failed.
    RUN = "run"


class WorkflowState(enum.StrEnum):
    """Where a workflow is: ``running`` until every step has ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class EventSpec:
    """An outbox event to commit together with a job's transition."""

    type: str
    data: JSONValue = None


@dataclass(frozen=True, slots=True)
class Limit:
    """Flow control on one limit key, enforced by the store at claim.

    At most ``concurrency`` jobs with the key are ``running`` at once, and at
    most ``rate`` of them start in any ``per`` seconds (a sliding window on
    the store's clock). None means no such limit; ``concurrency=0`` holds
    every job of the key back (a pause). ``rate`` and ``per`` go together.
    """

    concurrency: int | None = None
    rate: int | None = None
    per: float | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a producer asks to enqueue.

    ``run_at`` is an absolute time; ``delay`` is seconds from the *store's*
    clock at enqueue. Give at most one. Neither means "due now".
    """

    queue: str
    payload: JSONValue = None
    priority: int = 0
    run_at: datetime | None = None
    delay: float | None = None
    max_attempts: int = 3
    dedupe_key: str | None = None
    id: str = field(default_factory=new_job_id)
    #: Workflow steps only: the steps that must end first (ids in the same workflow).
    parents: tuple[str, ...] = ()
    on_parent_failure: ParentFailure = ParentFailure.CANCEL
    #: The key ``limit`` counts this job under (``"user:42"``); also the
    #: fairness key when ``fair`` is set.
    limit_key: str | None = None
    #: The key's limit as this job declares it; an operator's limit for the
    #: key (:meth:`qw.Client.set_limit`) overrides it.
    limit: Limit | None = None
    #: Claim round-robin across the limit keys of the queue: a key with a
    #: long backlog cannot starve one that has a few jobs.
    fair: bool = False


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The answer for one :class:`NewJob` (or one new workflow): its id, and whether it was created.

    ``created`` is False when a live job already held the dedupe key; ``id``
    is then that job's id. For a workflow, False means one with that id
    already existed and nothing was written.
    """

    id: str
    created: bool


@dataclass(frozen=True, slots=True)
class Job:
    """A job as the store holds it."""

    id: str
    queue: str
    payload: JSONValue
    priority: int
    run_at: datetime
    max_attempts: int
    attempts: int
    status: JobStatus
    created_at: datetime
    dedupe_key: str | None = None
    result: JSONValue = None
    error: JSONValue = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    lease_expires_at: datetime | None = None
    cancel_requested: bool = False
    #: The workflow the job is a step of, or None for a plain job.
    workflow: str | None = None
    #: Steps that must end before this one leaves ``waiting``.
    parents: tuple[str, ...] = ()
    #: Steps that have this one among their parents, in the order they were added.
    children: tuple[str, ...] = ()
    on_parent_failure: ParentFailure = ParentFailure.CANCEL
    #: Parents that ended ``failed`` or ``cancelled``, in the order they ended.
    failed_parents: tuple[str, ...] = ()
    limit_key: str | None = None
    limit: Limit | None = None
    fair: bool = False
    #: What the running task last reported (:meth:`qw.Client.set_progress`), or None.
    progress: Progress | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a job's task says it is: a ``fraction`` in [0, 1] and/or a ``message``.

    ``at`` is when the store recorded it (the store's clock). Kept after the
    job ends, so that a finished job shows how far it got.
    """

    fraction: float | None
    message: str | None
    at: datetime


#: The type of the outbox event every progress report commits with it.
PROGRESS_EVENT = "job.progress"


@dataclass(frozen=True, slots=True)
class KeyState:
    """One limit key as the store sees it now (derived from live jobs).

    ``limit`` is the operator's limit for the key when one is set
    (``overridden``), else the limit of one of its live jobs. ``started``
    counts the starts inside the current rate window (0 without a rate).
    """

    key: str
    queued: int
    running: int
    limit: Limit | None
    overridden: bool = False
    started: int = 0

    @property
    def throttled(self) -> bool:
        """Whether queued jobs of the key are held back by its limit now."""
        if not self.queued or self.limit is None:
            return False
        lim = self.limit
        full = lim.concurrency is not None and self.running >= lim.concurrency
        return full or (lim.rate is not None and self.started >= lim.rate)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A periodic schedule as the store records it.

    ``spec`` is the schedule's definition (a cron expression, or
    ``"every 30s"``), ``tz`` its IANA time zone. ``last_tick`` is the latest
    tick a job was enqueued for, on the store's clock; only
    :meth:`~qw.contract.Backend.advance_schedule` moves it, and only forward.
    """

    name: str
    spec: str
    tz: str
    queue: str
    task: str
    last_tick: datetime | None = None


@dataclass(frozen=True, slots=True)
class Workflow:
    """A workflow as the store holds it; ``counts`` is derived from its steps.

    ``output`` is the step whose result is the workflow's result.
    ``finished_at`` is set when ``state`` stops being ``running``.
    """

    id: str
    state: WorkflowState
    created_at: datetime
    output: str | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    counts: Mapping[JobStatus, int] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """How many steps the workflow has."""
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to finish one job, handed out by one claim.

    ``token`` is new for every claim; only the current token can renew or
    finish the job (fencing). ``expires_at`` is on the store's clock.
    ``cancel_requested`` turns True on renewal once an operator cancelled
    the running job. ``attempt`` and ``max_attempts`` are the job's as the
    claim handed it out (fixed while the token is current): what
    :mod:`qw.transitions` decides a finish by. The client sets them on every
    lease it returns; a lease with ``attempt`` 0 was not handed out by a claim.
    """

    job_id: str
    token: str
    expires_at: datetime
    cancel_requested: bool = False
    attempt: int = 0
    max_attempts: int = 0


@dataclass(frozen=True, slots=True)
class Complete:
    """Finish the leased job as ``succeeded`` with ``result``."""

    lease: Lease
    result: JSONValue = None
    event: EventSpec | None = None


@dataclass(frozen=True, slots=True)
class Fail:
    """Record a failed attempt.

    With attempts left and ``retry_in`` given, the job goes back to
    ``queued``, due ``retry_in`` seconds from now on the store's clock;
    otherwise it ends ``failed``.
    """

    lease: Lease
    error: JSONValue = None
    retry_in: float | None = None
    event: EventSpec | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """Give the job back to ``queued`` without counting the attempt."""

    lease: Lease


@dataclass(frozen=True, slots=True)
class Abort:
    """Finish the leased job as ``cancelled`` (its worker honouring a cancel)."""

    lease: Lease
    error: JSONValue = None
    event: EventSpec | None = None


#: What a worker did with a job it holds; :mod:`qw.transitions` decides what it does to the job.
Outcome: TypeAlias = Complete | Fail | Release | Abort


@dataclass(frozen=True, slots=True)
class Claim:
    """One claimed job and the lease that holds it."""

    job: Job
    lease: Lease


@dataclass(frozen=True, slots=True)
class Event:
    """An outbox record.

    ``cursor`` is unique in the namespace and grows with each event written
    after it (on a store that shards queues, each event of the same shard:
    a busy shard's cursors run ahead of a quiet one's). Fetch order is
    cursor order.
    """

    cursor: int
    job_id: str
    type: str
    data: JSONValue
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as the registry knows it. ``last_seen`` is on the store's clock."""

    id: str
    queues: tuple[str, ...] = ()
    host: str = ""
    pid: int = 0
    concurrency: int = 1
    started_at: datetime | None = None
    last_seen: datetime | None = None


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """How many terminal jobs and acked events a purge removed."""

    jobs: int
    events: int
