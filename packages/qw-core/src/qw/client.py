"""The facade users hold: validation first, then one call to the backend.

Every argument is checked here before the backend sees it, so that bad input
raises a typed error and leaves the store unchanged on every backend alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING

from qw import calls
from qw.calls import RESULT_POLL_FIRST_S, RESULT_POLL_MAX_S, batch, check_lease
from qw.capabilities import Capabilities
from qw.contract import Backend, Finish, Insert, Switches, WorkflowInsert
from qw.errors import (
    InvalidInput,
    InvalidPayload,
    JobNotFound,
    LeaseLost,
    WorkflowNotFound,
)
from qw.model import (
    PROGRESS_EVENT,
    Abort,
    Claim,
    Complete,
    Enqueued,
    Event,
    EventSpec,
    Fail,
    Job,
    JobStatus,
    JSONValue,
    KeyState,
    Lease,
    Limit,
    NewJob,
    Outcome,
    PurgeResult,
    Release,
    Schedule,
    WorkerInfo,
    Workflow,
    WorkflowState,
)
from qw.transitions import plan_finish
from qw.validation import (
    MAX_BATCH,
    MAX_CALL_BYTES,
    MAX_CLAIM_LIMIT,
    MAX_LIST_LIMIT,
    MAX_SECONDS,
    check_job_id,
    check_progress,
    check_run_at,
    check_schedule,
    check_schedule_name,
    check_worker,
    check_worker_id,
    encode_event,
    encode_json_sized,
    is_int_in,
    is_seconds,
    validate_event_cursors,
    validate_lease_seconds,
    validate_queue,
    validate_queues,
    validate_workflow_id,
)

if TYPE_CHECKING:
    from qw.calls import EnqueueHooks

# MAX_BATCH lives in qw.validation with the other bounds, the result poll's
# pauses in qw.calls (both clients poll alike); importable here as before.
__all__ = ["MAX_BATCH", "RESULT_POLL_FIRST_S", "RESULT_POLL_MAX_S", "Client"]


class Client:
    """A namespace on a store: enqueue, claim, finish, inspect, operate.

    Open one with :func:`qw.open`. Thread-safe when the backend declares
    ``thread_safe``. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, backend: Backend, *, plugins: EnqueueHooks | None = None) -> None:
        self._backend = backend
        self._plugin_manager = plugins

    @property
    def plugins(self) -> EnqueueHooks:
        """The plugins whose enqueue hooks this client calls (default: every installed one)."""
        if self._plugin_manager is None:
            # Imported here: pluggy and the plugins load on the first enqueue, not at import.
            from qw.plugin.manager import installed

            self._plugin_manager = installed()
        return self._plugin_manager

    @property
    def backend(self) -> Backend:
        """The backend object behind this client."""
        return self._backend

    @property
    def namespace(self) -> str:
        return self._backend.namespace

    @property
    def capabilities(self) -> Capabilities:
        return self._backend.capabilities

    @property
    def _limit(self) -> int:
        return self._backend.capabilities.max_payload_bytes

    def __repr__(self) -> str:
        return f"<qw.Client {self._backend.name} namespace={self.namespace!r}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the backend's connections. Idempotent."""
        self._backend.close()

    def now(self) -> datetime:
        """The store's clock."""
        return self._backend.now()

    # -- producing ---------------------------------------------------------

    def enqueue(
        self, jobs: Sequence[NewJob], *, connection: object | None = None
    ) -> list[Enqueued]:
        """Enqueue a batch, all or nothing; see :meth:`qw.contract.Backend.enqueue`.

        With ``connection`` (the application's open connection on the store:
        see :mod:`qw.transaction`), the jobs are written in its current
        transaction and exist only if it commits (capability ``transactional``).
        """
        checked, payloads = calls.job_batch(jobs, self.capabilities)
        return self._enqueue_checked(checked, payloads, connection)

    def _enqueue_checked(
        self, jobs: list[NewJob], payloads: list[str], connection: object | None = None
    ) -> list[Enqueued]:
        """Enqueue a batch that passed :func:`~qw.validation.validate_new_jobs`.

        ``payloads`` are the jobs' payloads as that check encoded them: the
        backend writes them as they are, never encoding again.
        """
        tx = None if connection is None else self._app_connection(connection)
        if not jobs:
            return []
        plugins = self.plugins
        payloads = calls.with_plugin_headers(plugins, jobs, payloads, None, self._limit)
        inserts = calls.checked_inserts(jobs, payloads, self.capabilities, self._backend.name)
        if tx is not None:
            answers = self._backend.enqueue_in(tx, inserts)
        else:
            answers = self._backend.enqueue(inserts)
        plugins.jobs_enqueued(jobs, answers, None)
        return answers

    def _app_connection(self, connection: object) -> object:
        """The driver connection behind the app's ``connection``, if the store can use it."""
        from qw.transaction import dbapi_connection

        self._require("transactional")
        return dbapi_connection(connection)

    def enqueue_one(self, queue: str, payload: JSONValue = None, **options: object) -> Enqueued:
        """Enqueue one job; ``options`` are :class:`~qw.model.NewJob` fields."""
        return self.enqueue([NewJob(queue, payload, **options)])[0]  # type: ignore[arg-type]

    # -- workflows -----------------------------------------------------------

    def create_workflow(
        self,
        workflow_id: str,
        steps: Sequence[NewJob],
        *,
        output: str | None = None,
        connection: object | None = None,
    ) -> Enqueued:
        """Store a workflow and all its steps in one atomic write.

        ``steps`` are jobs whose ``parents`` name other steps of the call
        (checked: no cycle, no unknown parent, at most MAX_WORKFLOW_STEPS).
        ``output`` is the step whose result is the workflow's result. When a
        workflow with that id exists, nothing is written and the answer has
        ``created=False``: a retried request is safe. ``connection`` writes
        it in the application's transaction, as in :meth:`enqueue`.
        """
        tx = None if connection is None else self._app_connection(connection)
        inserts = self._step_inserts(workflow_id, steps, frozenset())
        calls.check_output(output, inserts)
        record = WorkflowInsert(workflow_id, output)
        if tx is not None:
            created = self._backend.create_workflow_in(tx, record, inserts)
        else:
            created = self._backend.create_workflow(record, inserts)
        self.plugins.jobs_enqueued(
            steps, [Enqueued(step.id, created) for step in steps], workflow_id
        )
        return Enqueued(workflow_id, created=created)

    def add_steps(self, lease: Lease, workflow_id: str, steps: Sequence[NewJob]) -> bool:
        """Add steps to ``workflow_id`` from the running step ``lease`` holds, all or nothing.

        A step's parents are the leased step or steps of the call. Returns
        False when an earlier attempt already added this batch (its first
        id exists). Raises :class:`~qw.errors.LeaseLost` when the lease is
        not current, or the workflow was cancelled.
        """
        check_lease(lease)
        inserts = self._step_inserts(workflow_id, steps, frozenset({lease.job_id}))
        added = self._backend.add_steps(lease, inserts)
        if added is None:
            raise LeaseLost(
                lease.job_id,
                f"cannot add steps from job {lease.job_id}: its lease is no longer held, "
                "or its workflow was cancelled",
            )
        self.plugins.jobs_enqueued(steps, [Enqueued(step.id, added) for step in steps], workflow_id)
        return added

    def _step_inserts(
        self, workflow_id: str, steps: Sequence[NewJob], outside: frozenset[str]
    ) -> list[Insert]:
        """The checked steps of one create or add call, as ``Insert``s of ``workflow_id``."""
        return calls.step_inserts(
            workflow_id, steps, outside, self.capabilities, self._backend.name, self.plugins
        )

    def get_workflow(self, workflow_id: str) -> Workflow:
        """The workflow; raise :class:`~qw.errors.WorkflowNotFound` if there is none."""
        workflow = self._backend.get_workflow(validate_workflow_id(workflow_id))
        if workflow is None:
            raise WorkflowNotFound(workflow_id)
        return workflow

    def find_workflow(self, workflow_id: str) -> Workflow | None:
        """The workflow, or None."""
        return self._backend.get_workflow(validate_workflow_id(workflow_id))

    def list_workflows(
        self,
        *,
        state: WorkflowState | str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Workflow]:
        """Workflows by ascending id, optionally of one ``state``."""
        return self._backend.list_workflows(**calls.list_workflows_args(state, limit, after))

    def cancel_workflow(self, workflow_id: str) -> Workflow:
        """Cancel every step not yet running; flag the running ones. Returns the workflow."""
        workflow = self._backend.cancel_workflow(validate_workflow_id(workflow_id))
        if workflow is None:
            raise WorkflowNotFound(workflow_id)
        return workflow

    def get_many(self, job_ids: Iterable[str]) -> list[Job | None]:
        """The jobs with these ids, in order (None for an unknown id), in calls of MAX_BATCH."""
        jobs: list[Job | None] = []
        for chunk in calls.get_many_ids(job_ids):
            jobs.extend(self._backend.get_many(chunk))
        return jobs

    def steps(self, workflow_id: str) -> list[Job]:
        """Every step of the workflow, by id."""
        validate_workflow_id(workflow_id)
        out: list[Job] = []
        after: str | None = None
        while True:
            page = self._backend.list_jobs(limit=MAX_LIST_LIMIT, after=after, workflow=workflow_id)
            out.extend(page)
            if len(page) < MAX_LIST_LIMIT:
                return out
            after = page[-1].id

    # -- working -----------------------------------------------------------

    def claim(
        self, queues: Iterable[str], *, worker: str, lease_s: float = 30.0, limit: int = 1
    ) -> list[Claim]:
        """Lease up to ``limit`` due jobs; see :meth:`qw.contract.Backend.claim`."""
        names = validate_queues(queues)
        check_worker_id(worker)
        if not is_int_in(limit, 1, MAX_CLAIM_LIMIT):
            raise InvalidInput(f"limit must be an int in [1, {MAX_CLAIM_LIMIT}], not {limit!r}")
        claims = self._backend.claim(
            names, worker=worker, lease_s=validate_lease_seconds(lease_s), limit=limit
        )
        # The lease carries what plan_finish decides by; stamped here from the
        # claimed job, unless the backend already did (a claim made per job:
        # a frozen Lease and Claim cost ~2 µs to build again). (Built directly:
        # dataclasses.replace costs several times as much, once per job.)
        return [
            c
            if c.lease.attempt == c.job.attempts and c.lease.max_attempts == c.job.max_attempts
            else Claim(
                c.job,
                Lease(
                    c.lease.job_id,
                    c.lease.token,
                    c.lease.expires_at,
                    c.lease.cancel_requested,
                    c.job.attempts,
                    c.job.max_attempts,
                ),
            )
            for c in claims
        ]

    def renew(self, lease: Lease, lease_s: float = 30.0) -> Lease:
        """Extend one lease; raise :class:`~qw.errors.LeaseLost` if it is stale."""
        renewed = self.renew_many([lease], lease_s)[0]
        if renewed is None:
            raise LeaseLost(lease.job_id)
        return renewed

    def renew_many(self, leases: Sequence[Lease], lease_s: float = 30.0) -> list[Lease | None]:
        """Extend many leases (at most MAX_BATCH) in one call; None marks a lost one."""
        leases = batch(leases, "leases per renew")
        for lease in leases:
            check_lease(lease)
        lease_s = validate_lease_seconds(lease_s)
        if not leases:
            return []
        answers = self._backend.renew(leases, lease_s)
        # Only the expiry and the cancel flag are the store's to change.
        return [
            None
            if answer is None
            else Lease(
                lease.job_id,
                lease.token,
                answer.expires_at,
                answer.cancel_requested,
                lease.attempt,
                lease.max_attempts,
            )
            for lease, answer in zip(leases, answers, strict=True)
        ]

    def complete(
        self,
        lease: Lease,
        result: JSONValue = None,
        *,
        event: EventSpec | None = None,
        connection: object | None = None,
    ) -> JobStatus:
        """Finish as ``succeeded``; with ``event``, both commit or neither.

        With ``connection`` the finish joins the application's transaction
        (see :meth:`finish`): its own writes and the job's end commit together.
        """
        return self._finish_one(Complete(lease, result, event), connection)

    def fail(
        self,
        lease: Lease,
        error: JSONValue = None,
        *,
        retry_in: float | None = None,
        event: EventSpec | None = None,
        connection: object | None = None,
    ) -> JobStatus:
        """Record a failed attempt; retried after ``retry_in`` s if attempts remain."""
        return self._finish_one(Fail(lease, error, retry_in, event), connection)

    def release(self, lease: Lease) -> JobStatus:
        """Give the job back without counting the attempt."""
        return self._finish_one(Release(lease))

    def abort(
        self,
        lease: Lease,
        error: JSONValue = None,
        *,
        event: EventSpec | None = None,
        connection: object | None = None,
    ) -> JobStatus:
        """Finish a running job as ``cancelled``."""
        return self._finish_one(Abort(lease, error, event), connection)

    def finish(
        self, outcomes: Sequence[Outcome], *, connection: object | None = None
    ) -> list[JobStatus | None]:
        """Apply many outcomes (at most MAX_BATCH) in one call; None marks a stale lease.

        Each outcome is checked and decided here (:func:`qw.transitions.plan_finish`);
        the backend only applies the decided transitions. With ``connection``
        (capability ``transactional``) they are applied in the application's
        open transaction, which commits or rolls them back with its own writes.
        """
        outcomes = batch(outcomes, "outcomes per finish")
        finishes: list[Finish] = []
        total = 0
        for outcome in outcomes:
            finish, size = self._plan(outcome)
            total += size
            if total > MAX_CALL_BYTES:
                raise InvalidPayload(
                    "the results, errors and event data of one finish call exceed"
                    f" {MAX_CALL_BYTES} bytes (MAX_CALL_BYTES)"
                )
            finishes.append(finish)
        tx = None if connection is None else self._app_connection(connection)
        if not finishes:
            return []
        if tx is not None:
            return self._backend.finish_in(tx, finishes)
        return self._backend.finish(finishes)

    def _finish_one(self, outcome: Outcome, connection: object | None = None) -> JobStatus:
        status = self.finish([outcome], connection=connection)[0]
        if status is None:
            # Raised inside the application's transaction, this rolls its writes back too.
            raise LeaseLost(outcome.lease.job_id)
        return status

    # -- progress and results --------------------------------------------------

    def set_progress(
        self, lease: Lease, fraction: float | None = None, message: str | None = None
    ) -> None:
        """Report how far the job ``lease`` holds has got (capability ``progress``).

        Stored on the job (``Job.progress``) and committed with an outbox
        event of type ``job.progress``. Raises :class:`~qw.errors.LeaseLost`
        when the lease is no longer held.
        """
        check_lease(lease)
        fraction, message = check_progress(fraction, message)
        data, _ = encode_event(
            EventSpec(PROGRESS_EVENT, {"fraction": fraction, "message": message}), self._limit
        )
        self._require("progress")
        if not self._backend.set_progress(lease, fraction, message, data):
            raise LeaseLost(lease.job_id)

    def wait_finished(self, job_id: str, timeout: float) -> Job:
        """The job once it has ended, else as it is after ``timeout`` seconds.

        Woken by the store where the backend declares ``result_wakeup``;
        otherwise a bounded poll (10 ms, doubling to 250 ms). Raises
        :class:`~qw.errors.JobNotFound` for an unknown job.
        """
        check_job_id(job_id)
        seconds = calls.check_timeout(timeout)
        if self.capabilities.result_wakeup:
            job = self._backend.wait_finished(job_id, seconds)
            if job is None:
                raise JobNotFound(job_id)
            return job
        deadline = time.monotonic() + seconds
        for pause in calls.poll_pauses():
            job = self.get(job_id)
            left = deadline - time.monotonic()
            if job.status.is_terminal or left <= 0:
                return job
            time.sleep(min(pause, left))
        raise AssertionError("unreachable: poll_pauses never ends")

    def _plan(self, outcome: Outcome) -> tuple[Finish, int]:
        """Check and decide one outcome; also the UTF-8 bytes of the JSON it carries."""
        if not isinstance(outcome, (Complete, Fail, Release, Abort)):
            raise InvalidInput(f"not an outcome: {outcome!r}")
        check_lease(outcome.lease)
        if isinstance(outcome, Release):
            return Finish(outcome.lease, plan_finish(outcome)), 0
        retry_in = outcome.retry_in if isinstance(outcome, Fail) else None
        if retry_in is not None and not is_seconds(retry_in):
            raise InvalidInput(f"retry_in must be seconds in [0, {MAX_SECONDS}], not {retry_in!r}")
        if isinstance(outcome, Complete):
            body, size = encode_json_sized(outcome.result, "result", self._limit)
        else:
            body, size = encode_json_sized(outcome.error, "error", self._limit)
        event_data = None
        if outcome.event is not None:
            event_data, event_size = encode_event(outcome.event, self._limit)
            size += event_size
        transition = plan_finish(outcome, body=body, event_data=event_data)
        return Finish(outcome.lease, transition), size

    def reclaim_expired(self) -> int:
        """Requeue (or fail) jobs whose leases expired; return how many."""
        return self._backend.reclaim_expired()

    def wait(self, queues: Iterable[str], timeout: float) -> bool:
        """Block until work may be available, or ``timeout`` seconds pass."""
        seconds = calls.check_timeout(timeout)
        return self._backend.wait(validate_queues(queues), seconds)

    # -- workers and switches ----------------------------------------------

    def heartbeat(self, worker: WorkerInfo) -> None:
        self._backend.heartbeat(check_worker(worker))

    def remove_worker(self, worker_id: str) -> None:
        self._backend.remove_worker(check_worker_id(worker_id))

    def workers(self) -> list[WorkerInfo]:
        return self._backend.workers()

    def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        """The operator switch: the namespace (no ``queue``) or one queue."""
        self._backend.set_enabled(enabled, calls.check_enabled(enabled, queue))

    def is_enabled(self, queue: str | None = None) -> bool:
        """Whether the namespace, or ``queue`` within it, may be claimed from."""
        switches = self._backend.switches()
        return switches.enabled if queue is None else switches.queue_enabled(validate_queue(queue))

    def switches(self) -> Switches:
        return self._backend.switches()

    # -- inspection and operations -----------------------------------------

    def get(self, job_id: str) -> Job:
        """The job; raise :class:`~qw.errors.JobNotFound` if there is none."""
        job = self._backend.get(check_job_id(job_id))
        if job is None:
            raise JobNotFound(job_id)
        return job

    def find(self, job_id: str) -> Job | None:
        """The job, or None."""
        return self._backend.get(check_job_id(job_id))

    def counts(self) -> dict[str, dict[JobStatus, int]]:
        """Jobs per queue and status, every status present (zeros included)."""
        return calls.full_counts(self._backend.counts())

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | str | None = None,
        limit: int = 100,
        after: str | None = None,
        workflow: str | None = None,
        key: str | None = None,
    ) -> list[Job]:
        """Jobs by ascending id, optionally of one queue, status, workflow or limit key."""
        args = calls.list_jobs_args(queue, status, limit, after, workflow, key)
        return self._backend.list_jobs(**args)

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel; raise :class:`~qw.errors.JobNotFound` if there is no such job."""
        status = self._backend.cancel(check_job_id(job_id))
        if status is None:
            raise JobNotFound(job_id)
        return status

    def retry(self, job_id: str) -> JobStatus:
        """Put a ``failed`` or ``cancelled`` job back in its queue, due now (capability ``retry``).

        Its attempts are kept and ``max_attempts`` raised to ``attempts + 1``
        if it had none left; answers ``queued``. A job in any other status
        is left alone and its status answered. Raises
        :class:`~qw.errors.JobNotFound`, :class:`~qw.errors.NotRetryable`
        for a workflow step, :class:`~qw.errors.DuplicateJob` when another
        live job holds its dedupe key, and :class:`~qw.errors.Unsupported`
        (before any I/O) on a store without the capability.
        """
        job_id = check_job_id(job_id)
        self._require("retry")
        status = self._backend.retry(job_id)
        if status is None:
            raise JobNotFound(job_id)
        return status

    def fetch_events(self, limit: int = 100) -> list[Event]:
        calls.check_list_limit(limit)
        return self._backend.fetch_events(limit)

    def ack_events(self, cursors: Iterable[int]) -> int:
        values = validate_event_cursors(cursors)
        return self._backend.ack_events(values) if values else 0

    def purge(self, older_than: float) -> PurgeResult:
        """Remove terminal jobs and acked events older than ``older_than`` seconds."""
        return self._backend.purge(calls.check_older_than(older_than))

    # -- limits --------------------------------------------------------------

    def set_limit(self, key: str, limit: Limit | None) -> None:
        """Set the operators' limit for ``key`` (None removes it), overriding what jobs declare."""
        calls.check_set_limit(key, limit, self.capabilities, self._backend.name)
        self._backend.set_limit(key, limit)

    def limits(self) -> dict[str, Limit]:
        """The operators' limits, by key."""
        self._require("limits")
        return self._backend.limits()

    def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        """Limit keys with live jobs or an operators' limit, by key; ``after`` pages."""
        calls.check_keys(limit, after, self.capabilities, self._backend.name)
        return self._backend.keys(limit=limit, after=after)

    # -- schedules -------------------------------------------------------------

    def save_schedule(self, schedule: Schedule) -> None:
        """Record a periodic schedule's definition (its stored tick is kept)."""
        check_schedule(schedule)
        self._require("schedules")
        self._backend.save_schedule(schedule)

    def advance_schedule(self, name: str, tick: datetime) -> bool:
        """Move ``name``'s last tick forward to ``tick``; True for exactly one racer."""
        check_schedule_name(name)
        tick = check_run_at(tick, what="tick").astimezone(UTC)
        self._require("schedules")
        return self._backend.advance_schedule(name, tick)

    def schedules(self) -> list[Schedule]:
        """Every recorded schedule, by name."""
        self._require("schedules")
        return self._backend.schedules()

    def remove_schedule(self, name: str) -> bool:
        """Forget a schedule; say whether it existed."""
        check_schedule_name(name)
        self._require("schedules")
        return self._backend.remove_schedule(name)

    def _require(self, capability: str) -> None:
        calls.require(self.capabilities, self._backend.name, capability)
