"""The ``toyfile`` backend: each namespace in one journal file, one lock per call.

A store is a directory; namespace ``acme`` lives in ``acme.jsonl`` inside it
(see :mod:`qw_toyfile.journal`). Every method is one transaction under an
exclusive ``flock``, so readers and writers in any thread or process on the
machine are serialised: a claim is exactly-once, and a transition and its
outbox event are one journal line, written both or neither. No status is
decided here: :mod:`qw.transitions` decides each transition, this applies it.

Workflows: a step is a job row with a few more fields (``workflow``,
``parents``, ``children``, ``on_parent_failure``, ``failed_parents`` and
``pending``, its count of parents not ended); a plain job's row has none of
them. A workflow is a row of the ``workflows`` table. When a step ends, the
same transaction counts it in its workflow (ending the workflow with its last
step) and settles its waiting children with :func:`qw.transitions.settle`,
so the whole cascade is one journal line.

Flow control: a job with a limit key gets ``limit_key``, ``limit`` (its own,
or None), ``fair`` and ``rank`` fields. The claim sorts due jobs by
``(priority, rank, seq)`` and lets :func:`qw.limits.plan_claim` choose,
counting running jobs per key from the rows themselves; the operators'
limits, recent starts and fair ranks are small tables of their own.

Progress: a running job's report is a ``progress`` field of its row
(``{"fraction", "message", "at"}``), written with its ``job.progress``
event in the one transaction, so one journal line. The toy declares neither
``result_wakeup`` nor ``transactional``: it has no push channel between
processes and no transaction an application could hold, so
:meth:`qw.Client.wait_finished` polls ``get`` and ``connection=`` is
refused by the client, before any of this runs.

The store's clock is this machine's clock: the files are only reachable from
here, so every process reads the same clock.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit

from qw import (
    Capabilities,
    Claim,
    ConfigurationError,
    DuplicateJob,
    Enqueued,
    Event,
    Job,
    JobStatus,
    Lease,
    PurgeResult,
    Switches,
    Unsupported,
    WorkerInfo,
)
from qw.contract import Finish, Insert, WorkflowInsert
from qw.limits import Candidate, effective_limit, fair_rank, key_state, plan_claim
from qw.model import (
    PROGRESS_EVENT,
    KeyState,
    Limit,
    ParentFailure,
    Progress,
    Schedule,
    Workflow,
    WorkflowState,
)
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
from qw_toyfile.journal import Journal, State

__all__ = ["ToyFileBackend"]

T = TypeVar("T")


def _copy(value: Any) -> Any:
    # The replayed state is shared by every caller in this process: hand out
    # and keep private copies of anything a caller could mutate.
    return json.loads(json.dumps(value))


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _utc(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _own(row: State) -> Limit | None:
    """The limit a stored job declares (None for a row without one)."""
    own = row.get("limit")
    return None if own is None else Limit(**own)


def _job(row: State) -> Job:
    """The record for a stored job row."""
    job = Job(
        id=row["id"],
        queue=row["queue"],
        payload=_copy(row["payload"]),
        priority=row["priority"],
        run_at=datetime.fromtimestamp(row["run_at"], UTC),
        max_attempts=row["max_attempts"],
        attempts=row["attempts"],
        status=JobStatus(row["status"]),
        created_at=datetime.fromtimestamp(row["created_at"], UTC),
        dedupe_key=row["dedupe_key"],
        result=_copy(row["result"]),
        error=_copy(row["error"]),
        started_at=_ts(row["started_at"]),
        finished_at=_ts(row["finished_at"]),
        worker=row["worker"],
        lease_expires_at=_ts(row["lease_expires_at"]),
        cancel_requested=row["cancel_requested"],
        # A row that never reported, or written before progress existed: None.
        progress=_progress(row.get("progress")),
    )
    if row.get("limit_key") is not None:
        job = replace(job, limit_key=row["limit_key"], limit=_own(row), fair=row["fair"])
    if row.get("workflow") is None:
        return job
    return replace(
        job,
        workflow=row["workflow"],
        parents=tuple(row["parents"]),
        children=tuple(row["children"]),
        on_parent_failure=ParentFailure(row["on_parent_failure"]),
        failed_parents=tuple(row["failed_parents"]),
    )


def _progress(stored: State | None) -> Progress | None:
    if stored is None:
        return None
    return Progress(stored["fraction"], stored["message"], _utc(stored["at"]))


def _workflows(space: State, flows: Sequence[State]) -> list[Workflow]:
    """The records for stored workflow rows, their steps counted by status (one pass)."""
    counts: dict[str, dict[JobStatus, int]] = {f["id"]: {} for f in flows}
    for row in space["jobs"].values():
        if (by_status := counts.get(row.get("workflow"))) is not None:
            status = JobStatus(row["status"])
            by_status[status] = by_status.get(status, 0) + 1
    return [
        Workflow(
            id=f["id"],
            state=WorkflowState(f["state"]),
            created_at=datetime.fromtimestamp(f["created_at"], UTC),
            output=f["output"],
            finished_at=_ts(f["finished_at"]),
            cancel_requested=f["cancel_requested"],
            counts=counts[f["id"]],
        )
        for f in flows
    ]


def _holds(row: State | None, lease: Lease) -> bool:
    """Whether ``lease`` holds the job in ``row``: running under its token and attempt."""
    if row is None:
        return False
    held = (row["status"], row["token"], row["attempts"])
    return held == ("running", lease.token, lease.attempt)


class ToyFileBackend:
    """A qw backend over JSON files in a directory; URL ``toyfile:///path/to/dir``."""

    name: ClassVar[str] = "toyfile"
    capabilities = Capabilities(
        thread_safe=True,
        multi_process=True,
        native_wakeup=False,
        durable=True,
        limits=True,
        schedules=True,
        progress=True,
        retry=True,
        max_payload_bytes=64 * 1024,
    )

    def __init__(self, directory: Path, *, namespace: str) -> None:
        self._namespace = validate_namespace(namespace)
        if not directory.is_dir():
            raise ConfigurationError(f"toyfile store {directory} is not a directory")
        # The validated namespace cannot contain "/" or "..": safe as a file name.
        self._journal = Journal(directory / f"{self._namespace}.jsonl")
        # No push channel between processes: wait() polls, and wakes at
        # once for work enqueued through this object.
        self._hub = WakeupHub(poll_interval=0.05)

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> Self:
        parts = urlsplit(url)
        if parts.scheme != "toyfile" or parts.netloc or not parts.path or parts.query:
            raise ConfigurationError(f"toyfile URLs look like toyfile:///path/to/dir: {url!r}")
        return cls(Path(parts.path), namespace=namespace)

    @property
    def namespace(self) -> str:
        return self._namespace

    def close(self) -> None:
        pass

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time(), UTC)

    # -- the one transaction -------------------------------------------------

    def _tx(self, change: Callable[[State], T], *, write: bool = True) -> T:
        """Run ``change(state)`` on the namespace's state as one transaction.

        An exception inside ``change`` skips the write: nothing of the call lands.
        """
        with self._journal.transaction(write=write) as state:
            return change(state)

    def _read(self, read: Callable[[State], T]) -> T:
        return self._tx(read, write=False)

    @staticmethod
    def _next(space: State) -> int:
        space["seq"] += 1
        return int(space["seq"])

    def _apply(
        self, space: State, row: State, t: Transition, now: float, woken: set[str]
    ) -> JobStatus:
        """Apply ``t`` to ``row`` (see :meth:`_write`); if a step ended, settle its children."""
        self._write(space, row, t, now, woken)
        if t.status.is_terminal and row.get("workflow") is not None:
            settle(_Graph(self, space, now, woken), [(row["id"], t.status)])
        return t.status

    def _write(self, space: State, row: State, t: Transition, now: float, woken: set[str]) -> None:
        """Apply every field of the decided transition ``t`` to ``row``, with its event.

        A job that is queued afterwards adds its queue to ``woken``; a step
        that ended is counted in its workflow.
        """
        if t.attempts is not None:
            row["attempts"] = t.attempts
        if t.run_in is not None:
            row["run_at"] = now + t.run_in
        if t.result is not None:
            row["result"] = decode_json(t.result)
        if t.error is not None:
            row["error"] = decode_json(t.error)
        if t.finished:
            row["finished_at"] = now
        if t.max_attempts is not None:
            row["max_attempts"] = t.max_attempts
        if t.reopened:
            row.update(started_at=None, finished_at=None)
        row.update(
            status=t.status.value, finished_by=t.finished_by,
            worker=None, lease_expires_at=None, cancel_requested=False, token=None,
        )  # fmt: skip
        if t.event_type is not None:
            self._emit(space, row["id"], t.event_type, t.event_data, now)
        if t.status is JobStatus.QUEUED or row.get("limit_key") is not None:
            # Queued again, or its key's slot freed: held-back jobs may go.
            woken.add(row["queue"])
        if t.status.is_terminal and row.get("workflow") is not None:
            self._step_ended(space, space["workflows"][row["workflow"]], t.status, now)

    def _step_ended(self, space: State, flow: State, status: JobStatus, now: float) -> None:
        """Count one ended step of ``flow``; its last one ends the workflow, with its event."""
        flow["live"] -= 1
        flow["failed"] += status is JobStatus.FAILED
        flow["cancelled"] += status is JobStatus.CANCELLED
        if flow["live"] == 0 and flow["state"] == WorkflowState.RUNNING.value:
            state = plan_workflow_end(
                failed=flow["failed"],
                cancelled=flow["cancelled"],
                cancel_requested=flow["cancel_requested"],
            )
            flow.update(state=state.value, finished_at=now)
            self._emit(space, flow["id"], *workflow_event(flow["id"], state), now)

    def _emit(self, space: State, job_id: str, type_: str, data: str | None, now: float) -> None:
        cursor = self._next(space)
        space["events"][str(cursor)] = {
            "cursor": cursor, "job_id": job_id, "type": type_,
            "data": decode_json(data), "created_at": now, "acked": False,
        }  # fmt: skip

    # -- producing and working ---------------------------------------------

    def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        def change(space: State) -> list[Enqueued]:
            answers, insert = self._plan_inserts(space, jobs)
            self._insert(space, [jobs[i] for i in insert], time.time())
            return answers

        answers = self._tx(change)
        self._hub.notify({j.queue for j in jobs})
        return answers

    @staticmethod
    def _plan_inserts(space: State, jobs: Sequence[Insert]) -> tuple[list[Enqueued], list[int]]:
        """Refuse an existing id; else :func:`qw.transitions.plan_enqueue` on the live keys."""
        rows = space["jobs"]
        if clash := next((j.id for j in jobs if j.id in rows), None):
            raise DuplicateJob(f"job id {clash!r} already exists")
        live = {
            r["dedupe_key"]: r["id"]
            for r in rows.values()
            if r["dedupe_key"] is not None and JobStatus(r["status"]).is_live
        }
        return plan_enqueue(jobs, live)

    def _insert(self, space: State, jobs: Sequence[Insert], now: float) -> None:
        """Store new rows for ``jobs``; a step gets its workflow fields and joins its parents."""
        rows = space["jobs"]
        for new in jobs:
            rows[new.id] = row = {
                "id": new.id, "queue": new.queue, "payload": decode_json(new.payload),
                "priority": new.priority,
                "run_at": new.run_at.timestamp() if new.run_at else now + (new.delay or 0.0),
                "max_attempts": new.max_attempts, "attempts": 0, "status": new.status.value,
                "created_at": now, "dedupe_key": new.dedupe_key, "result": None,
                "error": None, "started_at": None, "finished_at": None, "worker": None,
                "lease_expires_at": None, "cancel_requested": False,
                "seq": self._next(space), "token": None, "finished_by": None,
            }  # fmt: skip
            if new.workflow is not None:
                row.update(
                    workflow=new.workflow, parents=list(new.parents), children=[],
                    on_parent_failure=new.on_parent_failure.value, failed_parents=[],
                    pending=len(new.parents),
                )  # fmt: skip
            if new.limit_key is not None:
                row.update(
                    limit_key=new.limit_key, fair=new.fair, rank=self._rank(space, new),
                    limit=None if new.limit is None else asdict(new.limit),
                )  # fmt: skip
        # Linked once every row exists: a parent may come later in the batch.
        for new in jobs:
            for parent in new.parents:
                prow = rows[parent]
                # A new list, never append: the journal diffs rows by value
                # against a shallow copy, which shares the old list.
                prow["children"] = [*prow["children"], new.id]

    @staticmethod
    def _rank(space: State, new: Insert) -> int:
        """A new job's fair rank (0 unless fair); its (queue, key)'s next rank moves past it."""
        if not new.fair:
            return 0
        slot = f"{new.queue} {new.limit_key}"  # a queue name has no space
        clock = space["clocks"].get(new.queue, {"clock": 0})["clock"]
        rank = fair_rank(space["ranks"].get(slot, {"next": 0})["next"], clock)
        space["ranks"][slot] = {"next": rank + 1}
        return rank

    def _insert_steps(self, space: State, steps: Sequence[Insert], now: float) -> set[str]:
        """Insert workflow steps, all or none; return the queues of those inserted queued."""
        answers, _ = self._plan_inserts(space, steps)
        held = [a.id for a in answers if not a.created]
        if held:
            raise DuplicateJob(f"a live job already holds the dedupe key of step(s) {held}")
        self._insert(space, steps, now)
        return {s.queue for s in steps if s.status is JobStatus.QUEUED}

    def claim(
        self, queues: Sequence[str], *, worker: str, lease_s: float, limit: int
    ) -> list[Claim]:
        self._hub.arm(queues)

        def change(space: State) -> list[Claim]:
            switches = Switches(space["enabled"], space["queues"])
            now = time.time()
            due = sorted(
                (
                    r
                    for r in space["jobs"].values()
                    if r["status"] == "queued"
                    and r["run_at"] <= now
                    and r["queue"] in queues
                    and switches.queue_enabled(r["queue"])
                ),
                key=lambda r: (r["priority"], r.get("rank", 0), r["seq"]),
            )
            due = self._within_limits(space, due, now, limit)
            for row in due:
                row.update(
                    status="running", attempts=row["attempts"] + 1, started_at=now,
                    worker=worker, lease_expires_at=now + lease_s, cancel_requested=False,
                    token=secrets.token_hex(16),
                )  # fmt: skip
            expires = datetime.fromtimestamp(now + lease_s, UTC)
            return [Claim(_job(r), Lease(r["id"], r["token"], expires)) for r in due]

        return self._tx(change)

    @staticmethod
    def _within_limits(space: State, due: list[State], now: float, limit: int) -> list[State]:
        """The rows of ``due`` a claim takes: :func:`qw.limits.plan_claim` decides.

        Records the starts of the jobs taken under a rate (dropping those
        that left the window) and moves the fair clocks of their queues.
        """
        if not any(r.get("limit_key") is not None for r in due):
            return due[:limit]
        running: dict[str, int] = {}
        for r in space["jobs"].values():
            if r["status"] == "running" and (key := r.get("limit_key")) is not None:
                running[key] = running.get(key, 0) + 1
        overrides = {key: Limit(**lim) for key, lim in space["limits"].items()}
        starts = {key: [_utc(t) for t in s["at"]] for key, s in space["starts"].items()}
        picks = plan_claim(
            [Candidate(r.get("limit_key"), _own(r)) for r in due],
            running=running,
            starts=starts,
            overrides=overrides,
            now=_utc(now),
            limit=limit,
        )
        chosen = [due[i] for i in picks]
        for r in chosen:
            key = r.get("limit_key")
            lim = effective_limit(key, _own(r), overrides)
            if key is not None and lim is not None and lim.per is not None:
                since = now - lim.per
                kept = [t for t in space["starts"].get(key, {"at": []})["at"] if t > since]
                space["starts"][key] = {"at": [*kept, now]}  # a new list, see _insert
            if r.get("fair"):
                clock = space["clocks"].get(r["queue"], {"clock": 0})["clock"]
                space["clocks"][r["queue"]] = {"clock": max(clock, r["rank"])}
        return chosen

    def renew(self, leases: Sequence[Lease], lease_s: float) -> list[Lease | None]:
        def change(space: State) -> list[Lease | None]:
            answers: list[Lease | None] = []
            for lease in leases:
                row = space["jobs"].get(lease.job_id)
                if not _holds(row, lease):
                    answers.append(None)
                    continue
                row["lease_expires_at"] = time.time() + lease_s
                expires = datetime.fromtimestamp(row["lease_expires_at"], UTC)
                answers.append(
                    replace(lease, expires_at=expires, cancel_requested=row["cancel_requested"])
                )
            return answers

        return self._tx(change)

    def finish(self, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        woken: set[str] = set()

        def one(space: State, lease: Lease, t: Transition, now: float) -> JobStatus | None:
            row = space["jobs"].get(lease.job_id)
            if _holds(row, lease):
                return self._apply(space, row, t, now, woken)
            if row is None:
                return None
            return repeat_status(t, JobStatus(row["status"]), row["finished_by"])

        def change(space: State) -> list[JobStatus | None]:
            now = time.time()
            return [one(space, f.lease, f.transition, now) for f in finishes]

        answers = self._tx(change)
        # A retry, a release or a settled step may be due at once: let local waiters look.
        self._hub.notify(woken)
        return answers

    def reclaim_expired(self) -> int:
        woken: set[str] = set()

        def change(space: State) -> int:
            now = time.time()
            expired = [
                r
                for r in space["jobs"].values()
                if r["status"] == "running" and r["lease_expires_at"] <= now
            ]
            for row in expired:
                plan = plan_reclaim(
                    attempts=row["attempts"], max_attempts=row["max_attempts"], queue=row["queue"]
                )
                self._apply(space, row, plan, now, woken)
            return len(expired)

        count = self._tx(change)
        self._hub.notify(woken)
        return count

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self._hub.wait(queues, timeout)

    # -- progress and results ----------------------------------------------

    def set_progress(
        self, lease: Lease, fraction: float | None, message: str | None, event_data: str
    ) -> bool:
        def change(space: State) -> bool:
            row = space["jobs"].get(lease.job_id)
            if not _holds(row, lease):
                return False
            now = time.time()
            row["progress"] = {"fraction": fraction, "message": message, "at": now}
            # The same transaction, so the same journal line: both or neither.
            self._emit(space, row["id"], PROGRESS_EVENT, event_data, now)
            return True

        return self._tx(change)

    def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        # No result_wakeup: the client polls get() and never calls this.
        raise Unsupported("toyfile has no result wake-ups; qw.Client.wait_finished polls")

    # -- the application's transaction (not offered: no ``transactional``) ---

    def enqueue_in(self, connection: object, jobs: Sequence[Insert]) -> list[Enqueued]:
        raise Unsupported("toyfile has no transaction an application could share")

    def create_workflow_in(
        self, connection: object, workflow: WorkflowInsert, steps: Sequence[Insert]
    ) -> bool:
        raise Unsupported("toyfile has no transaction an application could share")

    def finish_in(self, connection: object, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        raise Unsupported("toyfile has no transaction an application could share")

    # -- workers and switches ----------------------------------------------

    def heartbeat(self, worker: WorkerInfo) -> None:
        def change(space: State) -> None:
            now = time.time()
            known = space["workers"].get(worker.id, {})
            started = worker.started_at.timestamp() if worker.started_at else now
            space["workers"][worker.id] = {
                "id": worker.id, "queues": list(worker.queues), "host": worker.host,
                "pid": worker.pid, "concurrency": worker.concurrency,
                "started_at": known.get("started_at", started), "last_seen": now,
            }  # fmt: skip

        self._tx(change)

    def remove_worker(self, worker_id: str) -> None:
        self._tx(lambda space: space["workers"].pop(worker_id, None))

    def workers(self) -> list[WorkerInfo]:
        def read(space: State) -> list[WorkerInfo]:
            return [
                WorkerInfo(
                    id=w["id"],
                    queues=tuple(w["queues"]),
                    host=w["host"],
                    pid=w["pid"],
                    concurrency=w["concurrency"],
                    started_at=_ts(w["started_at"]),
                    last_seen=_ts(w["last_seen"]),
                )
                for _, w in sorted(space["workers"].items())
            ]

        return self._read(read)

    def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        def change(space: State) -> None:
            if queue is None:
                space["enabled"] = enabled
            else:
                space["queues"][queue] = enabled

        self._tx(change)
        if enabled:
            self._hub.notify_all()

    def switches(self) -> Switches:
        return self._read(lambda space: Switches(space["enabled"], dict(space["queues"])))

    # -- inspection and operations -----------------------------------------

    def get(self, job_id: str) -> Job | None:
        row = self._read(lambda space: space["jobs"].get(job_id))
        return None if row is None else _job(row)

    def counts(self) -> dict[str, dict[JobStatus, int]]:
        def read(space: State) -> dict[str, dict[JobStatus, int]]:
            counts: dict[str, dict[JobStatus, int]] = {}
            for row in space["jobs"].values():
                by_status = counts.setdefault(row["queue"], {})
                status = JobStatus(row["status"])
                by_status[status] = by_status.get(status, 0) + 1
            return counts

        return self._read(read)

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
        def read(space: State) -> list[Job]:
            rows = sorted(
                (
                    r
                    for r in space["jobs"].values()
                    if (queue is None or r["queue"] == queue)
                    and (workflow is None or r.get("workflow") == workflow)
                    and (key is None or r.get("limit_key") == key)
                    and (status is None or r["status"] == status.value)
                    and (after is None or r["id"] > after)
                ),
                key=lambda r: str(r["id"]),
            )
            return [_job(r) for r in rows[:limit]]

        return self._read(read)

    def cancel(self, job_id: str) -> JobStatus | None:
        woken: set[str] = set()  # a cancelled step's children may be queued (RUN policy)

        def change(space: State) -> JobStatus | None:
            row = space["jobs"].get(job_id)
            if row is None:
                return None
            if row["status"] in ("queued", "waiting"):
                cancel = plan_cancel_queued(queue=row["queue"])
                self._apply(space, row, cancel, time.time(), woken)
            elif row["status"] == "running":
                row["cancel_requested"] = True
            return JobStatus(row["status"])

        status = self._tx(change)
        self._hub.notify(woken)
        return status

    def retry(self, job_id: str) -> JobStatus | None:
        woken: set[str] = set()

        def change(space: State) -> JobStatus | None:
            row = space["jobs"].get(job_id)
            if row is None:
                return None
            key = row["dedupe_key"]
            holder = next(
                (
                    r["id"]
                    for r in space["jobs"].values()
                    if key is not None
                    and r["dedupe_key"] == key
                    and r["id"] != job_id
                    and JobStatus(r["status"]).is_live
                ),
                None,
            )
            t = plan_retry(
                JobStatus(row["status"]), row["attempts"], row["max_attempts"],
                row.get("workflow"), job_id=job_id, queue=row["queue"], holder=holder,
            )  # fmt: skip
            if t is None:
                return JobStatus(row["status"])
            return self._apply(space, row, t, time.time(), woken)

        status = self._tx(change)
        self._hub.notify(woken)
        return status

    def fetch_events(self, limit: int = 100) -> list[Event]:
        def read(space: State) -> list[Event]:
            events = sorted(space["events"].values(), key=lambda e: int(e["cursor"]))
            pending = [e for e in events if not e["acked"]][:limit]
            return [
                Event(
                    e["cursor"],
                    e["job_id"],
                    e["type"],
                    _copy(e["data"]),
                    datetime.fromtimestamp(e["created_at"], UTC),
                )
                for e in pending
            ]

        return self._read(read)

    def ack_events(self, cursors: Sequence[int]) -> int:
        wanted = set(cursors)

        def change(space: State) -> int:
            newly = [
                e for e in space["events"].values() if e["cursor"] in wanted and not e["acked"]
            ]
            for event in newly:
                event["acked"] = True
            return len(newly)

        return self._tx(change)

    def purge(self, older_than: float) -> PurgeResult:
        def change(space: State) -> PurgeResult:
            cutoff = time.time() - older_than
            # A step goes only with its workflow, once that ended before the cutoff.
            old_flows = {
                flow_id
                for flow_id, f in space["workflows"].items()
                if f["finished_at"] is not None and f["finished_at"] < cutoff
            }
            old = [
                job_id
                for job_id, r in space["jobs"].items()
                if (step := r.get("workflow")) in old_flows
                or (
                    step is None
                    and JobStatus(r["status"]).is_terminal
                    and r["finished_at"] < cutoff
                )
            ]
            for job_id in old:
                del space["jobs"][job_id]
            for flow_id in old_flows:
                del space["workflows"][flow_id]
            old_events = [
                key for key, e in space["events"].items() if e["acked"] and e["created_at"] < cutoff
            ]
            for key in old_events:
                del space["events"][key]
            return PurgeResult(jobs=len(old), events=len(old_events))

        return self._tx(change)

    # -- workflows ---------------------------------------------------------

    def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        woken: set[str] = set()

        def change(space: State) -> bool:
            if workflow.id in space["workflows"]:
                return False
            now = time.time()
            # Raising here (DuplicateJob) aborts the transaction: nothing lands.
            woken.update(self._insert_steps(space, steps, now))
            space["workflows"][workflow.id] = {
                "id": workflow.id, "created_at": now, "output": workflow.output,
                "state": WorkflowState.RUNNING.value, "finished_at": None,
                "cancel_requested": False, "live": len(steps), "failed": 0, "cancelled": 0,
            }  # fmt: skip
            return True

        created = self._tx(change)
        self._hub.notify(woken)
        return created

    def add_steps(self, lease: Lease, steps: Sequence[Insert]) -> bool | None:
        woken: set[str] = set()

        def change(space: State) -> bool | None:
            row = space["jobs"].get(lease.job_id)
            if not _holds(row, lease) or row.get("workflow") is None:
                return None
            flow = space["workflows"][row["workflow"]]
            if flow["cancel_requested"] or any(s.workflow != flow["id"] for s in steps):
                return None
            if steps[0].id in space["jobs"]:
                return False  # an earlier attempt of this job added the batch
            woken.update(self._insert_steps(space, steps, time.time()))
            flow["live"] += len(steps)
            return True

        added = self._tx(change)
        self._hub.notify(woken)
        return added

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        def read(space: State) -> Workflow | None:
            flow = space["workflows"].get(workflow_id)
            return None if flow is None else _workflows(space, [flow])[0]

        return self._read(read)

    def list_workflows(
        self, *, state: WorkflowState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Workflow]:
        def read(space: State) -> list[Workflow]:
            flows = sorted(
                (
                    f
                    for f in space["workflows"].values()
                    if (state is None or f["state"] == state.value)
                    and (after is None or f["id"] > after)
                ),
                key=lambda f: str(f["id"]),
            )
            return _workflows(space, flows[:limit])

        return self._read(read)

    def cancel_workflow(self, workflow_id: str) -> Workflow | None:
        def change(space: State) -> Workflow | None:
            flow = space["workflows"].get(workflow_id)
            if flow is None:
                return None
            if flow["state"] == WorkflowState.RUNNING.value:
                flow["cancel_requested"] = True
                now = time.time()
                for row in space["jobs"].values():
                    if row.get("workflow") != workflow_id:
                        continue
                    if row["status"] in ("queued", "waiting"):
                        # Every waiting step is cancelled here: nothing is left to
                        # settle. The last live step's end ends the workflow.
                        self._write(space, row, plan_cancel_queued(queue=row["queue"]), now, set())
                    elif row["status"] == "running":
                        row["cancel_requested"] = True
            return _workflows(space, [flow])[0]

        return self._tx(change)

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        def read(space: State) -> list[Job | None]:
            rows = space["jobs"]
            return [None if (row := rows.get(i)) is None else _job(row) for i in job_ids]

        return self._read(read)

    # -- limits ------------------------------------------------------------

    def set_limit(self, key: str, limit: Limit | None) -> None:
        def change(space: State) -> None:
            if limit is None:
                space["limits"].pop(key, None)
            else:
                space["limits"][key] = asdict(limit)

        self._tx(change)
        self._hub.notify_all()  # a raised limit may let held-back jobs go

    def limits(self) -> dict[str, Limit]:
        def read(space: State) -> dict[str, Limit]:
            return {key: Limit(**lim) for key, lim in sorted(space["limits"].items())}

        return self._read(read)

    def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        def read(space: State) -> list[KeyState]:
            live: dict[str, State] = {}
            for r in space["jobs"].values():
                key = r.get("limit_key")
                if key is None or r["status"] not in ("queued", "running"):
                    continue
                seen = live.setdefault(key, {"queued": 0, "running": 0, "own": None})
                seen[r["status"]] += 1
                seen["own"] = seen["own"] or _own(r)
            overrides = {key: Limit(**lim) for key, lim in space["limits"].items()}
            names = sorted(k for k in live.keys() | overrides.keys() if after is None or k > after)
            now = _utc(time.time())
            states = []
            for key in names[:limit]:
                seen = live.get(key, {"queued": 0, "running": 0, "own": None})
                starts = space["starts"].get(key, {"at": []})["at"]
                states.append(
                    key_state(
                        key,
                        queued=seen["queued"],
                        running=seen["running"],
                        own=seen["own"],
                        overrides=overrides,
                        starts=[_utc(t) for t in starts],
                        now=now,
                    )
                )
            return states

        return self._read(read)

    # -- schedules -----------------------------------------------------------
    # A tick is stored as ISO 8601 text: exact to the microsecond.

    def save_schedule(self, schedule: Schedule) -> None:
        def change(space: State) -> None:
            known = space["schedules"].get(schedule.name, {})
            space["schedules"][schedule.name] = {
                "name": schedule.name, "spec": schedule.spec, "tz": schedule.tz,
                "queue": schedule.queue, "task": schedule.task,
                "last_tick": known.get("last_tick"),
            }  # fmt: skip

        self._tx(change)

    def advance_schedule(self, name: str, tick: datetime) -> bool:
        def change(space: State) -> bool:
            row = space["schedules"].get(name)
            if row is None:
                return False
            if row["last_tick"] is not None and tick <= datetime.fromisoformat(row["last_tick"]):
                return False
            row["last_tick"] = tick.astimezone(UTC).isoformat()
            return True

        return self._tx(change)

    def schedules(self) -> list[Schedule]:
        def read(space: State) -> list[Schedule]:
            return [
                Schedule(
                    **{k: v for k, v in row.items() if k != "last_tick"},
                    last_tick=None
                    if row["last_tick"] is None
                    else datetime.fromisoformat(row["last_tick"]),
                )
                for _, row in sorted(space["schedules"].items())
            ]

        return self._read(read)

    def remove_schedule(self, name: str) -> bool:
        return self._tx(lambda space: space["schedules"].pop(name, None) is not None)


class _Graph:
    """This store's side of :func:`qw.transitions.settle`, inside the open transaction."""

    def __init__(self, backend: ToyFileBackend, space: State, now: float, woken: set[str]) -> None:
        self._backend = backend
        self._space = space
        self._rows: State = space["jobs"]
        self._now = now
        self._woken = woken

    def count_ended(self, parent: str, status: JobStatus) -> list[Ready]:
        ready: list[Ready] = []
        for child_id in self._rows[parent]["children"]:
            row = self._rows[child_id]
            if row["status"] != "waiting":
                continue
            row["pending"] -= 1
            if status is not JobStatus.SUCCEEDED:
                row["failed_parents"] = [*row["failed_parents"], parent]  # a new list, see _insert
            if row["pending"] == 0:
                policy = ParentFailure(row["on_parent_failure"])
                ready.append(Ready(child_id, row["queue"], policy, tuple(row["failed_parents"])))
        return ready

    def apply_settled(self, step: Ready, transition: Transition) -> None:
        self._backend._write(self._space, self._rows[step.id], transition, self._now, self._woken)
