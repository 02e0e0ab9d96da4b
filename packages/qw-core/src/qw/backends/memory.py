"""The ``memory`` backend: in-process, thread-safe, lost when the process ends.

It is the reference for the contract's semantics and a test double for
applications. Every ``memory://NAME`` URL with the same NAME in one process
opens the same store (``memory://`` is the store named ``default``), so two
namespaces can share a store as they would on a server.

Every change a job goes through is one step under the store's lock. A job
reaching a terminal status (``_write``: finish, cancel, reclaim, workflow
cancel, settle) notifies its namespace's ``finished`` condition, which is
built on that same lock: :meth:`MemoryBackend.wait_finished` reads the job
and waits under the lock, so no end can slip in between the two.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Self
from urllib.parse import urlsplit

from qw.capabilities import Capabilities
from qw.contract import Finish, Insert, Switches, WorkflowInsert
from qw.errors import ConfigurationError, DuplicateJob, Unsupported
from qw.limits import Candidate, effective_limit, fair_rank, key_state, plan_claim
from qw.model import (
    PROGRESS_EVENT,
    Claim,
    Enqueued,
    Event,
    Job,
    JobStatus,
    KeyState,
    Lease,
    Limit,
    Progress,
    PurgeResult,
    Schedule,
    WorkerInfo,
    Workflow,
    WorkflowState,
)
from qw.plugin import hookimpl
from qw.transitions import (
    Ready,
    Transition,
    plan_cancel_queued,
    plan_enqueue,
    plan_reclaim,
    plan_retry,
    plan_workflow_end,
    repeat_status,
    settle,
    workflow_event,
)
from qw.validation import decode_json, validate_namespace
from qw.wakeup import WakeupHub

__all__ = ["MemoryBackend"]


@dataclass
class _Row:
    job: Job
    seq: int
    token: str | None = None
    # The token whose outcome last moved the job out of ``running``; a
    # repeat of that outcome with the same token is answered, not applied.
    finished_by: str | None = None
    # A waiting step's parents that have not ended yet.
    pending: int = 0
    # Claim order among equal priorities (0 unless the job is fair).
    rank: int = 0


@dataclass
class _Flow:
    """One workflow: its record, and how many of its steps have not ended."""

    id: str
    created_at: datetime
    output: str | None
    live: int = 0
    failed: int = 0
    cancelled: int = 0
    state: WorkflowState = WorkflowState.RUNNING
    finished_at: datetime | None = None
    cancel_requested: bool = False


@dataclass
class _Space:
    """One namespace's state; ``finished`` is notified (under the store's lock) when a job ends."""

    finished: threading.Condition

    rows: dict[str, _Row] = field(default_factory=dict)
    flows: dict[str, _Flow] = field(default_factory=dict)
    events: dict[int, tuple[Event, bool]] = field(default_factory=dict)
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    enabled: bool = True
    queue_switches: dict[str, bool] = field(default_factory=dict)
    limits: dict[str, Limit] = field(default_factory=dict)
    # Per limit key, the claim times of its recent rate-limited starts.
    starts: dict[str, list[datetime]] = field(default_factory=dict)
    # Fair claiming: the next rank per (queue, key), and each queue's fair clock.
    fair_next: dict[tuple[str, str], int] = field(default_factory=dict)
    fair_clock: dict[str, int] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    hub: WakeupHub = field(default_factory=lambda: WakeupHub(connected=True))


class _Store:
    """One in-process store; namespaces inside it are independent."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.spaces: dict[str, _Space] = {}
        self.seq = itertools.count(1)

    def space(self, namespace: str) -> _Space:
        with self.lock:
            space = self.spaces.get(namespace)
            if space is None:
                # On the store's lock: a waiter releases it while it waits.
                space = self.spaces[namespace] = _Space(threading.Condition(self.lock))
            return space


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


def _now() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)


class MemoryBackend:
    """In-process store; see the module docstring."""

    name: ClassVar[str] = "memory"
    capabilities = Capabilities(
        thread_safe=True,
        multi_process=False,
        native_wakeup=True,
        durable=False,
        limits=True,
        schedules=True,
        progress=True,
        result_wakeup=True,
        retry=True,
    )

    def __init__(self, store_name: str = "default", *, namespace: str) -> None:
        self._namespace = validate_namespace(namespace)
        with _stores_lock:
            self._store = _stores.setdefault(store_name, _Store())
        self._space = self._store.space(self._namespace)

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> Self:
        parts = urlsplit(url)
        if parts.scheme != "memory" or parts.path not in ("", "/") or parts.query:
            raise ConfigurationError(
                f"memory URLs look like memory:// or memory://NAME, not {url!r}"
            )
        return cls(parts.netloc or "default", namespace=namespace)

    @property
    def namespace(self) -> str:
        return self._namespace

    def close(self) -> None:
        pass

    def now(self) -> datetime:
        return _now()

    def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        with self._store.lock:
            answers, insert = self._plan_inserts(jobs)
            self._insert([jobs[i] for i in insert], _now())
        self._space.hub.notify({jobs[i].queue for i in insert})
        return answers

    def _plan_inserts(self, jobs: Sequence[Insert]) -> tuple[list[Enqueued], list[int]]:
        rows = self._space.rows
        for new in jobs:
            if new.id in rows:
                raise DuplicateJob(f"job id {new.id!r} already exists")
        live = {
            r.job.dedupe_key: r.job.id
            for r in rows.values()
            if r.job.dedupe_key is not None and r.job.status.is_live
        }
        return plan_enqueue(jobs, live)

    def _insert(self, jobs: Sequence[Insert], now: datetime) -> None:
        rows = self._space.rows
        for new in jobs:
            run_at = new.run_at or now + timedelta(seconds=new.delay or 0)
            rows[new.id] = _Row(
                Job(
                    id=new.id,
                    queue=new.queue,
                    # Decoding the client's text gives the store a private copy.
                    payload=decode_json(new.payload),
                    priority=new.priority,
                    run_at=run_at,
                    max_attempts=new.max_attempts,
                    attempts=0,
                    status=new.status,
                    created_at=now,
                    dedupe_key=new.dedupe_key,
                    workflow=new.workflow,
                    parents=new.parents,
                    on_parent_failure=new.on_parent_failure,
                    limit_key=new.limit_key,
                    limit=new.limit,
                    fair=new.fair,
                ),
                next(self._store.seq),
                pending=len(new.parents),
                rank=self._rank(new),
            )
        # Only once every row exists: a parent may come after its child in the batch.
        for new in jobs:
            for parent in new.parents:
                prow = rows[parent]
                prow.job = replace(prow.job, children=(*prow.job.children, new.id))
        if jobs and jobs[0].workflow is not None:
            self._space.flows[jobs[0].workflow].live += len(jobs)

    def _rank(self, new: Insert) -> int:
        if not new.fair or new.limit_key is None:
            return 0
        space, slot = self._space, (new.queue, new.limit_key)
        rank = fair_rank(space.fair_next.get(slot, 0), space.fair_clock.get(new.queue, 0))
        space.fair_next[slot] = rank + 1
        return rank

    def _insert_steps(self, steps: Sequence[Insert]) -> set[str]:
        """Insert workflow steps (their workflow exists); return the queues to wake."""
        answers, _ = self._plan_inserts(steps)
        held = [a.id for a, new in zip(answers, steps, strict=True) if not a.created]
        if held:
            raise DuplicateJob(f"a live job already holds the dedupe key of step(s) {held}")
        self._insert(steps, _now())
        return {s.queue for s in steps if s.status is JobStatus.QUEUED}

    def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        with self._store.lock:
            if workflow.id in self._space.flows:
                return False
            flow = _Flow(workflow.id, _now(), workflow.output)
            self._space.flows[workflow.id] = flow
            try:
                woken = self._insert_steps(steps)
            except DuplicateJob:
                del self._space.flows[workflow.id]
                raise
        self._space.hub.notify(woken)
        return True

    def add_steps(self, lease: Lease, steps: Sequence[Insert]) -> bool | None:
        with self._store.lock:
            row = self._held(lease)
            if row is None or row.job.workflow is None:
                return None
            flow = self._space.flows[row.job.workflow]
            if flow.cancel_requested or any(s.workflow != flow.id for s in steps):
                return None
            if steps[0].id in self._space.rows:
                return False
            woken = self._insert_steps(steps)
        self._space.hub.notify(woken)
        return True

    def claim(
        self, queues: Sequence[str], *, worker: str, lease_s: float, limit: int
    ) -> list[Claim]:
        self._space.hub.arm(queues)
        with self._store.lock:
            switches = self.switches()
            open_queues = {q for q in queues if switches.queue_enabled(q)}
            now = _now()
            due = sorted(
                (
                    r
                    for r in self._space.rows.values()
                    if r.job.status is JobStatus.QUEUED
                    and r.job.queue in open_queues
                    and r.job.run_at <= now
                ),
                key=lambda r: (r.job.priority, r.rank, r.seq),
            )
            due = self._within_limits(due, now, limit)
            claims = []
            expires = now + timedelta(seconds=lease_s)
            for row in due:
                row.token = secrets.token_hex(16)
                row.job = replace(
                    row.job,
                    status=JobStatus.RUNNING,
                    attempts=row.job.attempts + 1,
                    started_at=now,
                    worker=worker,
                    lease_expires_at=expires,
                    cancel_requested=False,
                )
                claims.append(Claim(row.job, Lease(row.job.id, row.token, expires)))
            return claims

    def _within_limits(self, due: list[_Row], now: datetime, limit: int) -> list[_Row]:
        """The rows of ``due`` this claim may take under their keys' limits; counts their starts."""
        space = self._space
        keys = {r.job.limit_key for r in due if r.job.limit_key is not None}
        if not keys:
            return due[:limit]
        running: dict[str, int] = {}
        for r in space.rows.values():
            key = r.job.limit_key
            if key in keys and r.job.status is JobStatus.RUNNING:
                running[key] = running.get(key, 0) + 1
        chosen = [
            due[i]
            for i in plan_claim(
                [Candidate(r.job.limit_key, r.job.limit) for r in due],
                running=running,
                starts=space.starts,
                overrides=space.limits,
                now=now,
                limit=limit,
            )
        ]
        for r in chosen:
            key = r.job.limit_key
            lim = effective_limit(key, r.job.limit, space.limits)
            if key is not None and lim is not None and lim.per is not None:
                since = now - timedelta(seconds=lim.per)
                space.starts[key] = [t for t in space.starts.get(key, ()) if t > since] + [now]
            if r.job.fair:
                space.fair_clock[r.job.queue] = max(space.fair_clock.get(r.job.queue, 0), r.rank)
        return chosen

    def renew(self, leases: Sequence[Lease], lease_s: float) -> list[Lease | None]:
        with self._store.lock:
            now = _now()
            answers: list[Lease | None] = []
            for lease in leases:
                row = self._held(lease)
                if row is None:
                    answers.append(None)
                    continue
                expires = now + timedelta(seconds=lease_s)
                row.job = replace(row.job, lease_expires_at=expires)
                answers.append(
                    replace(lease, expires_at=expires, cancel_requested=row.job.cancel_requested)
                )
            return answers

    def finish(self, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        requeued: set[str] = set()
        with self._store.lock:
            now = _now()
            answers: list[JobStatus | None] = []
            for finish in finishes:
                lease, transition = finish.lease, finish.transition
                row = self._space.rows.get(lease.job_id)
                if row is None:
                    answers.append(None)
                elif self._held(lease) is None:
                    answers.append(repeat_status(transition, row.job.status, row.finished_by))
                else:
                    answers.append(self._apply(row, transition, now, requeued))
        if requeued:
            self._space.hub.notify(requeued)
        return answers

    def _held(self, lease: Lease) -> _Row | None:
        row = self._space.rows.get(lease.job_id)
        if (
            row is None
            or row.token != lease.token
            or row.job.status is not JobStatus.RUNNING
            or row.job.attempts != lease.attempt
        ):
            return None
        return row

    def _apply(
        self, row: _Row, transition: Transition, now: datetime, requeued: set[str]
    ) -> JobStatus:
        """Apply ``transition`` to ``row`` and, if the job is a step that ended, settle it."""
        self._write(row, transition, now, requeued)
        if row.job.workflow is not None and transition.status.is_terminal:
            settle(_Graph(self, now, requeued), [(row.job.id, transition.status)])
        return transition.status

    def _write(self, row: _Row, transition: Transition, now: datetime, requeued: set[str]) -> None:
        """Apply every field of ``transition`` to ``row``, write its event, count its workflow."""
        t, job = transition, row.job
        row.job = replace(
            job,
            status=t.status,
            attempts=job.attempts if t.attempts is None else t.attempts,
            run_at=job.run_at if t.run_in is None else now + timedelta(seconds=t.run_in),
            result=job.result if t.result is None else decode_json(t.result),
            error=job.error if t.error is None else decode_json(t.error),
            finished_at=now if t.finished else None if t.reopened else job.finished_at,
            started_at=None if t.reopened else job.started_at,
            max_attempts=job.max_attempts if t.max_attempts is None else t.max_attempts,
            worker=None,
            lease_expires_at=None,
            cancel_requested=False,
        )
        row.token = None
        row.finished_by = t.finished_by
        if t.event_type is not None:
            self._emit(job.id, t.event_type, t.event_data, now)
        # A key's slot freed may let its held-back jobs be claimed.
        if t.status is JobStatus.QUEUED or job.limit_key is not None:
            requeued.add(job.queue)
        if t.status.is_terminal:
            if job.workflow is not None:
                self._step_ended(self._space.flows[job.workflow], t.status, now)
            # Every path to a terminal status comes through here, under the lock.
            self._space.finished.notify_all()

    def _step_ended(self, flow: _Flow, status: JobStatus, now: datetime) -> None:
        flow.live -= 1
        flow.failed += status is JobStatus.FAILED
        flow.cancelled += status is JobStatus.CANCELLED
        if flow.live == 0 and flow.state is WorkflowState.RUNNING:
            flow.state = plan_workflow_end(
                failed=flow.failed, cancelled=flow.cancelled, cancel_requested=flow.cancel_requested
            )
            flow.finished_at = now
            self._emit(flow.id, *workflow_event(flow.id, flow.state), now)

    def _emit(self, job_id: str, type_: str, data: str | None, now: datetime) -> None:
        cursor = next(self._store.seq)
        event = Event(cursor, job_id, type_, decode_json(data), now)
        self._space.events[cursor] = (event, False)

    def reclaim_expired(self) -> int:
        requeued: set[str] = set()
        count = 0
        with self._store.lock:
            now = _now()
            for row in self._space.rows.values():
                job = row.job
                if job.status is not JobStatus.RUNNING or job.lease_expires_at is None:
                    continue
                if job.lease_expires_at > now:
                    continue
                count += 1
                transition = plan_reclaim(
                    attempts=job.attempts, max_attempts=job.max_attempts, queue=job.queue
                )
                self._apply(row, transition, now, requeued)
        if requeued:
            self._space.hub.notify(requeued)
        return count

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self._space.hub.wait(queues, timeout)

    # -- the application's transaction ----------------------------------------

    # Not ``transactional``: an in-process store has no transaction of the
    # application's to join. The client refuses ``connection=`` before these.

    def enqueue_in(self, connection: object, jobs: Sequence[Insert]) -> list[Enqueued]:
        raise _no_transaction()

    def create_workflow_in(
        self, connection: object, workflow: WorkflowInsert, steps: Sequence[Insert]
    ) -> bool:
        raise _no_transaction()

    def finish_in(self, connection: object, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        raise _no_transaction()

    # -- progress and results ------------------------------------------------

    def set_progress(
        self, lease: Lease, fraction: float | None, message: str | None, event_data: str
    ) -> bool:
        with self._store.lock:
            row = self._held(lease)
            if row is None:
                return False
            now = _now()
            row.job = replace(row.job, progress=Progress(fraction, message, now))
            self._emit(row.job.id, PROGRESS_EVENT, event_data, now)
            return True

    def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        deadline = time.monotonic() + timeout
        with self._store.lock:
            while True:
                row = self._space.rows.get(job_id)
                if row is None:
                    return None
                left = deadline - time.monotonic()
                if row.job.status.is_terminal or left <= 0:
                    return row.job
                # Releases the store's lock while waiting: no end is missed in between.
                self._space.finished.wait(left)

    def heartbeat(self, worker: WorkerInfo) -> None:
        with self._store.lock:
            now = _now()
            known = self._space.workers.get(worker.id)
            started = (known.started_at if known else None) or worker.started_at or now
            self._space.workers[worker.id] = replace(worker, started_at=started, last_seen=now)

    def remove_worker(self, worker_id: str) -> None:
        with self._store.lock:
            self._space.workers.pop(worker_id, None)

    def workers(self) -> list[WorkerInfo]:
        with self._store.lock:
            return [self._space.workers[k] for k in sorted(self._space.workers)]

    def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        with self._store.lock:
            if queue is None:
                self._space.enabled = enabled
            else:
                self._space.queue_switches[queue] = enabled
        if enabled:
            self._space.hub.notify_all()

    def switches(self) -> Switches:
        with self._store.lock:
            return Switches(self._space.enabled, dict(self._space.queue_switches))

    def get(self, job_id: str) -> Job | None:
        with self._store.lock:
            row = self._space.rows.get(job_id)
            return row.job if row else None

    def counts(self) -> dict[str, dict[JobStatus, int]]:
        with self._store.lock:
            counts: dict[str, dict[JobStatus, int]] = {}
            for row in self._space.rows.values():
                by_status = counts.setdefault(row.job.queue, {})
                by_status[row.job.status] = by_status.get(row.job.status, 0) + 1
            return counts

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
        with self._store.lock:
            jobs = sorted(
                (
                    r.job
                    for r in self._space.rows.values()
                    if (queue is None or r.job.queue == queue)
                    and (workflow is None or r.job.workflow == workflow)
                    and (key is None or r.job.limit_key == key)
                    and (status is None or r.job.status is status)
                    and (after is None or r.job.id > after)
                ),
                key=lambda j: j.id,
            )
            return jobs[:limit]

    def cancel(self, job_id: str) -> JobStatus | None:
        with self._store.lock:
            row = self._space.rows.get(job_id)
            if row is None:
                return None
            job = row.job
            requeued: set[str] = set()
            if job.status in (JobStatus.QUEUED, JobStatus.WAITING):
                self._apply(row, plan_cancel_queued(queue=job.queue), _now(), requeued)
            elif job.status is JobStatus.RUNNING:
                row.job = replace(job, cancel_requested=True)
            status = row.job.status
        if requeued:
            self._space.hub.notify(requeued)
        return status

    def retry(self, job_id: str) -> JobStatus | None:
        requeued: set[str] = set()
        with self._store.lock:
            row = self._space.rows.get(job_id)
            if row is None:
                return None
            job = row.job
            holder = next(
                (
                    r.job.id
                    for r in self._space.rows.values()
                    if job.dedupe_key is not None
                    and r.job.dedupe_key == job.dedupe_key
                    and r.job.status.is_live
                    and r.job.id != job.id
                ),
                None,
            )
            t = plan_retry(
                job.status,
                job.attempts,
                job.max_attempts,
                job.workflow,
                job_id=job.id,
                queue=job.queue,
                holder=holder,
            )
            if t is None:
                return job.status
            self._write(row, t, _now(), requeued)
        self._space.hub.notify(requeued)
        return t.status

    def fetch_events(self, limit: int = 100) -> list[Event]:
        with self._store.lock:
            pending = (e for c, (e, acked) in sorted(self._space.events.items()) if not acked)
            return list(itertools.islice(pending, limit))

    def ack_events(self, cursors: Sequence[int]) -> int:
        with self._store.lock:
            newly = 0
            for cursor in set(cursors):
                entry = self._space.events.get(cursor)
                if entry is not None and not entry[1]:
                    self._space.events[cursor] = (entry[0], True)
                    newly += 1
            return newly

    def purge(self, older_than: float) -> PurgeResult:
        with self._store.lock:
            cutoff = _now() - timedelta(seconds=older_than)
            flows = self._space.flows
            old_flows = {
                f.id for f in flows.values() if f.finished_at is not None and f.finished_at < cutoff
            }
            old_jobs = [
                job_id
                for job_id, row in self._space.rows.items()
                if (row.job.workflow in old_flows)
                or (
                    row.job.workflow is None
                    and row.job.status.is_terminal
                    and row.job.finished_at is not None
                    and row.job.finished_at < cutoff
                )
            ]
            for flow_id in old_flows:
                del flows[flow_id]
            for job_id in old_jobs:
                del self._space.rows[job_id]
            old_events = [
                c for c, (e, acked) in self._space.events.items() if acked and e.created_at < cutoff
            ]
            for c in old_events:
                del self._space.events[c]
            return PurgeResult(jobs=len(old_jobs), events=len(old_events))

    # -- workflows ---------------------------------------------------------

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        with self._store.lock:
            flow = self._space.flows.get(workflow_id)
            return None if flow is None else self._workflow(flow)

    def _workflow(self, flow: _Flow) -> Workflow:
        counts: dict[JobStatus, int] = {}
        for row in self._space.rows.values():
            if row.job.workflow == flow.id:
                counts[row.job.status] = counts.get(row.job.status, 0) + 1
        return Workflow(
            id=flow.id,
            state=flow.state,
            created_at=flow.created_at,
            output=flow.output,
            finished_at=flow.finished_at,
            cancel_requested=flow.cancel_requested,
            counts=counts,
        )

    def list_workflows(
        self, *, state: WorkflowState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Workflow]:
        with self._store.lock:
            flows = sorted(
                (
                    f
                    for f in self._space.flows.values()
                    if (state is None or f.state is state) and (after is None or f.id > after)
                ),
                key=lambda f: f.id,
            )[:limit]
            return [self._workflow(f) for f in flows]

    def cancel_workflow(self, workflow_id: str) -> Workflow | None:
        with self._store.lock:
            flow = self._space.flows.get(workflow_id)
            if flow is None:
                return None
            if flow.state is WorkflowState.RUNNING:
                flow.cancel_requested = True
                now = _now()
                for row in self._space.rows.values():
                    job = row.job
                    if job.workflow != workflow_id:
                        continue
                    if job.status in (JobStatus.QUEUED, JobStatus.WAITING):
                        # Every waiting step is cancelled here: nothing is left to settle.
                        self._write(row, plan_cancel_queued(queue=job.queue), now, set())
                    elif job.status is JobStatus.RUNNING:
                        row.job = replace(job, cancel_requested=True)
            return self._workflow(flow)

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        with self._store.lock:
            rows = self._space.rows
            return [row.job if (row := rows.get(i)) is not None else None for i in job_ids]

    # -- limits ------------------------------------------------------------

    def set_limit(self, key: str, limit: Limit | None) -> None:
        with self._store.lock:
            if limit is None:
                self._space.limits.pop(key, None)
            else:
                self._space.limits[key] = limit
        # A raised limit may free held-back jobs: idle workers claim again.
        self._space.hub.notify_all()

    def limits(self) -> dict[str, Limit]:
        with self._store.lock:
            return dict(sorted(self._space.limits.items()))

    def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        with self._store.lock:
            space, now = self._space, _now()
            live: dict[str, tuple[int, int, Limit | None]] = {}
            for r in space.rows.values():
                key, job = r.job.limit_key, r.job
                if key is None or job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                    continue
                queued, running, own = live.get(key, (0, 0, None))
                live[key] = (
                    queued + (job.status is JobStatus.QUEUED),
                    running + (job.status is JobStatus.RUNNING),
                    own or job.limit,
                )
            known = live.keys() | space.limits.keys()
            names = sorted(k for k in known if after is None or k > after)
            states = []
            for key in names[:limit]:
                queued, running, own = live.get(key, (0, 0, None))
                states.append(
                    key_state(
                        key,
                        queued=queued,
                        running=running,
                        own=own,
                        overrides=space.limits,
                        starts=space.starts.get(key, ()),
                        now=now,
                    )
                )
            return states

    # -- schedules -----------------------------------------------------------

    def save_schedule(self, schedule: Schedule) -> None:
        with self._store.lock:
            known = self._space.schedules.get(schedule.name)
            tick = None if known is None else known.last_tick
            self._space.schedules[schedule.name] = replace(schedule, last_tick=tick)

    def advance_schedule(self, name: str, tick: datetime) -> bool:
        with self._store.lock:
            known = self._space.schedules.get(name)
            if known is None or (known.last_tick is not None and tick <= known.last_tick):
                return False
            self._space.schedules[name] = replace(known, last_tick=tick)
            return True

    def schedules(self) -> list[Schedule]:
        with self._store.lock:
            return [self._space.schedules[n] for n in sorted(self._space.schedules)]

    def remove_schedule(self, name: str) -> bool:
        with self._store.lock:
            return self._space.schedules.pop(name, None) is not None


def _no_transaction() -> Unsupported:
    return Unsupported("backend 'memory' does not declare capability 'transactional'")


class _Graph:
    """The memory store's side of :func:`qw.transitions.settle`, under its lock."""

    def __init__(self, backend: MemoryBackend, now: datetime, requeued: set[str]) -> None:
        self._backend = backend
        self._rows = backend._space.rows
        self._now = now
        self._requeued = requeued

    def count_ended(self, parent: str, status: JobStatus) -> list[Ready]:
        ready: list[Ready] = []
        for child_id in self._rows[parent].job.children:
            row = self._rows[child_id]
            job = row.job
            if job.status is not JobStatus.WAITING:
                continue
            row.pending -= 1
            if status is not JobStatus.SUCCEEDED:
                row.job = job = replace(job, failed_parents=(*job.failed_parents, parent))
            if row.pending == 0:
                ready.append(Ready(job.id, job.queue, job.on_parent_failure, job.failed_parents))
        return ready

    def apply_settled(self, step: Ready, transition: Transition) -> None:
        self._backend._write(self._rows[step.id], transition, self._now, self._requeued)


@hookimpl
def qw_register_backends() -> list[type[MemoryBackend]]:
    return [MemoryBackend]
