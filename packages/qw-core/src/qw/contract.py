"""The storage contract: what every queue store must do, and guarantee.

A backend is one object bound to one namespace. It implements
:class:`Backend`; the :class:`qw.Client` facade in front of it validates every
argument first (see :mod:`qw.validation`), so a backend only ever sees
well-formed names, JSON-able payloads and positive lease lengths.

Times are the **store's** clock: lease expiry, ``run_at`` from a ``delay``,
retry times and ``last_seen`` are computed where the data lives, never from
the client's clock. All records are immutable: the frozen dataclasses of
:mod:`qw.model`, and the named tuples made per job (:class:`Insert`,
:class:`Finish`, :class:`qw.transitions.Transition`); no driver object ever
crosses this interface. A backend
raises only :mod:`qw.errors` exceptions (driver errors become
:class:`~qw.errors.BackendUnavailable` or another documented error).

``qw_testkit.BackendContractTests`` checks every promise made here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Protocol, Self, runtime_checkable

from qw.model import (
    Abort,
    Claim,
    Complete,
    Enqueued,
    Event,
    Fail,
    Job,
    JobStatus,
    KeyState,
    Lease,
    Limit,
    Outcome,
    ParentFailure,
    PurgeResult,
    Release,
    Schedule,
    WorkerInfo,
    Workflow,
    WorkflowState,
)
from qw.transitions import EVENT_CANCELLED, EVENT_FAILED, Transition

if TYPE_CHECKING:
    from qw.capabilities import Capabilities

__all__ = [
    "Abort",
    "Backend",
    "Complete",
    "Fail",
    "Finish",
    "Insert",
    "Outcome",
    "Release",
    "STORE_EVENT_CANCELLED",
    "STORE_EVENT_EXPIRED",
    "Switches",
    "WorkflowInsert",
]

#: Event type a store writes when :meth:`Backend.cancel` cancels a queued job.
STORE_EVENT_CANCELLED = EVENT_CANCELLED
#: Event type a store writes when :meth:`Backend.reclaim_expired` fails a job
#: whose attempts are used up.
STORE_EVENT_EXPIRED = EVENT_FAILED


class Insert(NamedTuple):
    """A new job as the client hands it to :meth:`Backend.enqueue`: checked, payload encoded.

    The fields are :class:`~qw.model.NewJob`'s, except that ``payload`` is
    its JSON text, encoded once by the client, and ``run_at`` is UTC. (Named
    tuples, this and :class:`Finish`: one is made per job, and they cost a
    fraction of a frozen dataclass.)
    """

    id: str
    queue: str
    payload: str
    priority: int
    run_at: datetime | None
    delay: float | None
    max_attempts: int
    dedupe_key: str | None
    #: ``waiting`` for a workflow step with parents, else ``queued``.
    status: JobStatus = JobStatus.QUEUED
    #: The workflow the job is a step of (None: a plain job).
    workflow: str | None = None
    #: Ids of the steps that must end first; none of them has ended yet, so
    #: the step's count of pending parents starts at ``len(parents)``.
    parents: tuple[str, ...] = ()
    on_parent_failure: ParentFailure = ParentFailure.CANCEL
    #: The key the job's ``limit`` (and fairness) counts it under.
    limit_key: str | None = None
    #: The job's own limit for ``limit_key``; see :meth:`Backend.claim`.
    limit: Limit | None = None
    #: Claim it round-robin across the limit keys of its queue.
    fair: bool = False


class WorkflowInsert(NamedTuple):
    """A new workflow as :meth:`Backend.create_workflow` gets it (its steps come apart)."""

    id: str
    #: The step whose result is the workflow's result.
    output: str | None


class Finish(NamedTuple):
    """A decided transition for the job ``lease`` holds, as :meth:`Backend.finish` gets it.

    The backend applies ``transition`` if and only if the job is
    ``running`` under ``lease.token`` with ``attempts == lease.attempt``.
    """

    lease: Lease
    transition: Transition


@dataclass(frozen=True, slots=True)
class Switches:
    """The operator switches: the namespace's, and each queue's that was set."""

    enabled: bool = True
    queues: Mapping[str, bool] = field(default_factory=dict)

    def queue_enabled(self, queue: str) -> bool:
        """Whether ``queue`` may be claimed from (both switches ON)."""
        return self.enabled and self.queues.get(queue, True)


@runtime_checkable
class Backend(Protocol):
    """A queue store bound to one namespace.

    Nothing a backend does may read or change another namespace's jobs,
    events, workers or switches.
    """

    #: The name the backend is registered under (``"redis"``); URL schemes
    #: map to it.
    name: ClassVar[str]
    #: What this backend promises; see :class:`qw.capabilities.Capabilities`.
    capabilities: Capabilities

    @property
    def namespace(self) -> str:
        """The namespace this object is bound to, fixed at open."""
        ...

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> Self:
        """Open the store at ``url`` bound to ``namespace``.

        Calls :func:`qw.validation.validate_namespace` before any I/O.
        Options ride in the URL's query string; unknown ones raise
        :class:`~qw.errors.ConfigurationError`. An unreachable store raises
        :class:`~qw.errors.BackendUnavailable`.
        """
        ...

    def close(self) -> None:
        """Release connections and threads. Idempotent."""
        ...

    def now(self) -> datetime:
        """The store's clock, as a timezone-aware UTC datetime."""
        ...

    # -- producing ---------------------------------------------------------

    def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        """Insert ``jobs``, all or nothing, and return one answer per job, in order.

        A job id already in the namespace raises
        :class:`~qw.errors.DuplicateJob` and writes nothing. Which jobs are
        inserted, and every answer, is :func:`qw.transitions.plan_enqueue`
        given the dedupe keys that live (queued or running) jobs of the
        namespace hold at the moment of the write.

        ``delay`` is resolved against the store's clock; FIFO order among
        equal priorities is the order the store received the jobs in. Wakes
        waiters on each queue that got a job (once per queue per call).
        """
        ...

    # -- working -----------------------------------------------------------

    def claim(
        self, queues: Sequence[str], *, worker: str, lease_s: float, limit: int
    ) -> list[Claim]:
        """Lease up to ``limit`` due, queued jobs from ``queues``.

        Order: lowest ``priority`` first, then FIFO. A job whose ``run_at``
        is later than the store's clock is never returned. Each returned job
        is ``running``, its ``attempts`` incremented, held by a lease with a
        fresh unique token expiring ``lease_s`` seconds from now.

        **A job is held by at most one live lease**: no two claims, from any
        thread or process, return the same job unless the first lease
        expired and the job was reclaimed. Returns ``[]`` while the
        namespace, or a queue, is switched OFF (for the queues that are).

        **Limits** (backends declaring ``limits``): which of the due jobs,
        taken in claim order, a claim returns is
        :func:`qw.limits.plan_claim` given, per limit key, the jobs
        ``running`` with it, its starts (claims) inside the rate window,
        and the operators' limits (:meth:`set_limit`) at the moment of the
        write, atomically with respect to every other claim: no claim from
        any thread or process ever makes a key exceed its limit. A job held
        back stays ``queued``, untouched; the claim goes on past it to other
        keys. Once it has taken a job, a claim may stop reading after a
        bounded run of held-back ones (answering ``plan_claim`` of what it
        read); with nothing taken it reads on while any job is due. Claim
        order is then ``(priority, fair rank, FIFO)``: a job's fair rank
        is 0 unless it is ``fair``, in which case it is fixed at insert as
        ``max(next rank of its (queue, key), the queue's fair clock)``, the
        key's next rank becoming one more; each claim of a fair job moves
        the queue's fair clock up to its rank (never down).
        """
        ...

    def renew(self, leases: Sequence[Lease], lease_s: float) -> list[Lease | None]:
        """Extend each lease to ``lease_s`` seconds from now.

        Returns, per lease, the renewed lease (``cancel_requested`` set if an
        operator cancelled the job meanwhile), or None where the token is
        not the job's current one (the lease was lost). A lost lease is
        never revived.
        """
        ...

    def finish(self, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        """Apply decided transitions; return each job's status after its own.

        **Fenced**: a :class:`Finish` applies only while the job is
        ``running`` under its lease's token and attempt; it then applies
        every field of its :class:`~qw.transitions.Transition`, and its
        event, in one atomic write (**both or neither**), and answers the
        transition's status. Otherwise nothing changes, no event is written,
        and the answer is :func:`qw.transitions.repeat_status` of the job as
        stored (None for a stale lease). Finishes in one call are
        independent: one stale lease does not undo the others.
        """
        ...

    def reclaim_expired(self) -> int:
        """Return jobs whose lease expired (store clock) and say how many.

        Each such job gets :func:`qw.transitions.plan_reclaim`'s transition,
        applied by compare-and-set on (status, token, expiry): a job
        finished or renewed meanwhile is never overwritten. Safe to run from
        many workers at once.
        """
        ...

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until work may be available on ``queues`` or ``timeout`` passes.

        True means "claim again"; False means the timeout passed quietly.
        A signal sent after the last :meth:`claim` on these queues is never
        missed. Without a live notification channel (never had one, or it
        dropped and is reconnecting) it degrades to a bounded poll; it never
        sleeps past ``timeout``.
        """
        ...

    # -- workers and switches ----------------------------------------------

    def heartbeat(self, worker: WorkerInfo) -> None:
        """Register ``worker`` or refresh it; ``last_seen`` becomes the store's now."""
        ...

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped. Unknown ids are ignored."""
        ...

    def workers(self) -> list[WorkerInfo]:
        """Registered workers of this namespace, by id."""
        ...

    def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        """Switch the namespace (``queue=None``) or one queue ON or OFF, persistently."""
        ...

    def switches(self) -> Switches:
        """The namespace's switch and every queue switch that was set."""
        ...

    # -- inspection and operations -----------------------------------------

    def get(self, job_id: str) -> Job | None:
        """The job with ``job_id``, or None."""
        ...

    def counts(self) -> dict[str, dict[JobStatus, int]]:
        """Jobs per queue and status, derived from live state (never drifts).

        Queues with no jobs may be absent; statuses with no jobs may be absent.
        """
        ...

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        workflow: str | None = None,
        key: str | None = None,
    ) -> list[Job]:
        """Jobs by ascending id, optionally filtered; ``after`` pages by id.

        ``workflow`` keeps the steps of that workflow, ``key`` the jobs of
        that limit key.
        """
        ...

    def cancel(self, job_id: str) -> JobStatus | None:
        """Cancel a job; return its status after the call, or None if unknown.

        A queued or waiting job gets :func:`qw.transitions.plan_cancel_queued`'s
        transition (by compare-and-set on its status); a running job is
        flagged (``cancel_requested``) and stays ``running`` until its worker
        finishes it; a terminal job is left as it is.
        """
        ...

    def retry(self, job_id: str) -> JobStatus | None:
        """Put a failed or cancelled job back in its queue; return its status after the call.

        None if the job is unknown. Capability ``retry``. The store reads the
        job's status, attempts, ``max_attempts``, workflow and the live
        holder of its dedupe key, and applies
        :func:`qw.transitions.plan_retry`'s answer by compare-and-set on
        what it read (its status and attempts), reading again when the job
        moved meanwhile: so of any number of racing retries of one job,
        exactly one requeues it and writes its ``job.retried`` event; the
        others answer ``queued`` (or whatever the job is by then). The
        transition and its event commit in one atomic write, as a finish's
        do, which also makes the job hold its dedupe key again; it wakes
        the waiters on the job's queue as :meth:`enqueue` does. A status
        ``plan_retry`` answers None for is left as it is and answered. A
        workflow step raises :class:`~qw.errors.NotRetryable`, and a key
        another live job holds :class:`~qw.errors.DuplicateJob`; neither
        writes anything.
        """
        ...

    # -- the outbox --------------------------------------------------------

    def fetch_events(self, limit: int = 100) -> list[Event]:
        """Up to ``limit`` unacknowledged events, in cursor order (at-least-once)."""
        ...

    def ack_events(self, cursors: Sequence[int]) -> int:
        """Acknowledge events so they are not fetched again; return how many were new."""
        ...

    def purge(self, older_than: float) -> PurgeResult:
        """Delete terminal jobs and acked events older than ``older_than`` seconds.

        A workflow's steps go only with their workflow: an ended workflow
        whose ``finished_at`` is older goes, with all its steps (counted in
        ``jobs``); steps of a running workflow stay, whatever their age.
        """
        ...

    # -- workflows ---------------------------------------------------------
    #
    # Whenever a step ends (succeeded, failed or cancelled), by any path —
    # finish, reclaim_expired, cancel, cancel_workflow — the same write must
    # (a) settle its waiting children with qw.transitions.settle, and (b)
    # when it was the workflow's last live step, set the workflow's state to
    # qw.transitions.plan_workflow_end, its finished_at to now, and write
    # qw.transitions.workflow_event. A backend whose capabilities say
    # atomic_settle=False may do (a) and (b) after the step's write, by an
    # idempotent path, provided reclaim_expired completes any that a crash
    # left undone (no step waits forever, no event is written twice).

    def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        """Store ``workflow`` and all its ``steps`` in one atomic write, or nothing.

        Returns False, writing nothing, when a workflow with that id exists.
        Every step's ``workflow`` is ``workflow.id`` and its parents are
        steps of the batch. A step id that exists raises
        :class:`~qw.errors.DuplicateJob`, and so does a dedupe key held by
        a live job (:func:`qw.transitions.plan_enqueue` answering
        ``created=False``); nothing is written. Wakes the queues of the
        steps inserted ``queued``.
        """
        ...

    def add_steps(self, lease: Lease, steps: Sequence[Insert]) -> bool | None:
        """Add ``steps`` to the workflow of the job ``lease`` holds, all or nothing.

        Fenced like :meth:`finish`: None, writing nothing, unless that job
        is ``running`` under the lease's token and attempt; None too when
        its workflow was cancelled (``cancel_requested``). False, writing
        nothing, when ``steps[0].id`` exists (an earlier attempt of the job
        added this very batch). Otherwise True. Each step's parents are the
        leased job or steps of the batch; the leased job's ``children`` and
        the workflow's live steps grow accordingly. Ids and dedupe keys as
        in :meth:`create_workflow`.
        """
        ...

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        """The workflow, with its steps counted by status now, or None."""
        ...

    def list_workflows(
        self, *, state: WorkflowState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Workflow]:
        """Workflows by ascending id, optionally of one state; ``after`` pages by id."""
        ...

    def cancel_workflow(self, workflow_id: str) -> Workflow | None:
        """Cancel a workflow in one write; return it afterwards, or None if unknown.

        Sets ``cancel_requested``; every ``waiting`` and ``queued`` step gets
        :func:`qw.transitions.plan_cancel_queued`'s transition, every running
        step is flagged as by :meth:`cancel`. An ended workflow is left as
        it is.
        """
        ...

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """The jobs with these ids (at most MAX_BATCH), in order; None for an unknown id."""
        ...

    # -- limits (capability ``limits``) ------------------------------------

    def set_limit(self, key: str, limit: Limit | None) -> None:
        """Set the operators' limit for ``key``, persistently; None removes it.

        It replaces the limit every job of the key declares, from the next
        claim on; it never touches a job.
        """
        ...

    def limits(self) -> dict[str, Limit]:
        """The operators' limits, by key."""
        ...

    def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        """Limit keys with live jobs or an operators' limit, by ascending key; ``after`` pages."""
        ...

    # -- schedules (capability ``schedules``) ------------------------------

    def save_schedule(self, schedule: Schedule) -> None:
        """Record ``schedule``'s definition, creating it or replacing it.

        ``schedule.last_tick`` is ignored: a stored tick is kept as it is.
        """
        ...

    def advance_schedule(self, name: str, tick: datetime) -> bool:
        """Move the schedule's ``last_tick`` to ``tick`` if that is later; say whether it moved.

        One atomic compare-and-set: of any number of callers racing with
        the same tick, exactly one gets True. False for an unknown name.
        """
        ...

    def schedules(self) -> list[Schedule]:
        """Every recorded schedule, by name."""
        ...

    def remove_schedule(self, name: str) -> bool:
        """Forget a schedule; say whether it existed."""
        ...

    # -- progress (capability ``progress``) --------------------------------

    def set_progress(
        self, lease: Lease, fraction: float | None, message: str | None, event_data: str
    ) -> bool:
        """Record a running job's progress, fenced like :meth:`finish`; say whether it applied.

        Only while the job is ``running`` under the lease's token and
        attempt: sets the job's ``progress`` to (``fraction``, ``message``,
        the store's now) and writes an outbox event of type
        :data:`qw.model.PROGRESS_EVENT` whose data is ``event_data`` (JSON
        text, written as it is), both in one atomic write. Otherwise
        nothing changes and the answer is False. ``progress`` stays on the
        job after it ends; a retry's first report replaces it.
        """
        ...

    # -- results (capability ``result_wakeup``) ----------------------------

    def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        """The job as soon as its status is terminal, else as it is after ``timeout`` s.

        None if there is no such job. Woken by the store when a job of the
        namespace ends (a notification, not a poll of the job), and never
        returns a terminal job later than a bounded poll would: a signal
        sent between reading the job and waiting is not lost.
        """
        ...

    # -- the application's transaction (capability ``transactional``) -----

    def enqueue_in(self, connection: object, jobs: Sequence[Insert]) -> list[Enqueued]:
        """:meth:`enqueue` inside the application's open transaction on ``connection``.

        ``connection`` is a DB-API connection of the store's driver (what
        :func:`qw.transaction.dbapi_connection` unwrapped), on the store's
        database; anything else raises :class:`~qw.errors.InvalidInput`
        before any I/O. The writes join the connection's current
        transaction (one it opens when none is open, as the driver does for
        any statement); the backend never commits nor rolls it back, except
        to a savepoint of its own when its write fails. So the jobs exist if
        and only if the application commits. Waiters are woken only once
        the transaction commits.
        """
        ...

    def create_workflow_in(
        self, connection: object, workflow: WorkflowInsert, steps: Sequence[Insert]
    ) -> bool:
        """:meth:`create_workflow` inside the application's transaction, as :meth:`enqueue_in`."""
        ...

    def finish_in(self, connection: object, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        """:meth:`finish` inside the application's transaction, as :meth:`enqueue_in`.

        Fenced as :meth:`finish`: a stale lease answers None and writes
        nothing, and the client then raises so that the application rolls
        its own writes back with it. A step's children are settled in the
        same transaction.
        """
        ...
