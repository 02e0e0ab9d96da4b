"""The ``toyfile`` backend: each namespace in one journal file, one lock per call.

A store is a directory; namespace ``acme`` lives in ``acme.jsonl`` inside it
(see :mod:`qw_toyfile.journal`). Every method is one transaction under an
exclusive ``flock``, so readers and writers in any thread or process on the
machine are serialised: a claim is exactly-once, and a transition and its
outbox event are one journal line, written both or neither. No status is
decided here: :mod:`qw.transitions` decides each transition, this applies it.

The store's clock is this machine's clock: the files are only reachable from
here, so every process reads the same clock.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
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
    WorkerInfo,
)
from qw.contract import Finish, Insert
from qw.transitions import (
    Transition,
    plan_cancel_queued,
    plan_enqueue,
    plan_reclaim,
    repeat_status,
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


def _job(row: State) -> Job:
    """The record for a stored job row."""
    return Job(
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
    )


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

    def _apply(self, space: State, row: State, t: Transition, now: float) -> JobStatus:
        """Apply every field of the decided transition ``t`` to ``row``, with its event."""
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
        row.update(
            status=t.status.value, finished_by=t.finished_by,
            worker=None, lease_expires_at=None, cancel_requested=False, token=None,
        )  # fmt: skip
        if t.event_type is not None:
            cursor = self._next(space)
            space["events"][str(cursor)] = {
                "cursor": cursor, "job_id": row["id"], "type": t.event_type,
                "data": decode_json(t.event_data), "created_at": now, "acked": False,
            }  # fmt: skip
        return t.status

    # -- producing and working ---------------------------------------------

    def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        def change(space: State) -> list[Enqueued]:
            rows = space["jobs"]
            if clash := next((j.id for j in jobs if j.id in rows), None):
                raise DuplicateJob(f"job id {clash!r} already exists")
            live = {
                r["dedupe_key"]: r["id"]
                for r in rows.values()
                if r["dedupe_key"] is not None and JobStatus(r["status"]).is_live
            }
            answers, insert = plan_enqueue(jobs, live)
            now = time.time()
            for new in (jobs[i] for i in insert):
                rows[new.id] = {
                    "id": new.id, "queue": new.queue, "payload": decode_json(new.payload),
                    "priority": new.priority,
                    "run_at": new.run_at.timestamp() if new.run_at else now + (new.delay or 0.0),
                    "max_attempts": new.max_attempts, "attempts": 0, "status": "queued",
                    "created_at": now, "dedupe_key": new.dedupe_key, "result": None,
                    "error": None, "started_at": None, "finished_at": None, "worker": None,
                    "lease_expires_at": None, "cancel_requested": False,
                    "seq": self._next(space), "token": None, "finished_by": None,
                }  # fmt: skip
            return answers

        answers = self._tx(change)
        self._hub.notify({j.queue for j in jobs})
        return answers

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
                key=lambda r: (r["priority"], r["seq"]),
            )[:limit]
            for row in due:
                row.update(
                    status="running", attempts=row["attempts"] + 1, started_at=now,
                    worker=worker, lease_expires_at=now + lease_s, cancel_requested=False,
                    token=secrets.token_hex(16),
                )  # fmt: skip
            expires = datetime.fromtimestamp(now + lease_s, UTC)
            return [Claim(_job(r), Lease(r["id"], r["token"], expires)) for r in due]

        return self._tx(change)

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
        def one(space: State, lease: Lease, t: Transition, now: float) -> JobStatus | None:
            row = space["jobs"].get(lease.job_id)
            if _holds(row, lease):
                return self._apply(space, row, t, now)
            if row is None:
                return None
            return repeat_status(t, JobStatus(row["status"]), row["finished_by"])

        def change(space: State) -> list[JobStatus | None]:
            now = time.time()
            return [one(space, f.lease, f.transition, now) for f in finishes]

        answers = self._tx(change)
        if JobStatus.QUEUED in answers:
            # A retry or release may be due at once: let local waiters look.
            self._hub.notify_all()
        return answers

    def reclaim_expired(self) -> int:
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
                self._apply(space, row, plan, now)
            return len(expired)

        count = self._tx(change)
        if count:
            self._hub.notify_all()
        return count

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self._hub.wait(queues, timeout)

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
    ) -> list[Job]:
        def read(space: State) -> list[Job]:
            rows = sorted(
                (
                    r
                    for r in space["jobs"].values()
                    if (queue is None or r["queue"] == queue)
                    and (status is None or r["status"] == status.value)
                    and (after is None or r["id"] > after)
                ),
                key=lambda r: str(r["id"]),
            )
            return [_job(r) for r in rows[:limit]]

        return self._read(read)

    def cancel(self, job_id: str) -> JobStatus | None:
        def change(space: State) -> JobStatus | None:
            row = space["jobs"].get(job_id)
            if row is None:
                return None
            if row["status"] == "queued":
                self._apply(space, row, plan_cancel_queued(queue=row["queue"]), time.time())
            elif row["status"] == "running":
                row["cancel_requested"] = True
            return JobStatus(row["status"])

        return self._tx(change)

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
            old = [
                job_id
                for job_id, r in space["jobs"].items()
                if JobStatus(r["status"]).is_terminal and r["finished_at"] < cutoff
            ]
            for job_id in old:
                del space["jobs"][job_id]
            old_events = [
                key for key, e in space["events"].items() if e["acked"] and e["created_at"] < cutoff
            ]
            for key in old_events:
                del space["events"][key]
            return PurgeResult(jobs=len(old), events=len(old_events))

        return self._tx(change)
