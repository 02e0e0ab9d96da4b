"""A plain-Python model of one namespace, for the state-machine test.

It states the contract's rules again, in its own words, and imports none of
qw's own decisions (``qw.transitions``): a mistake there must show up as a
disagreement with this model, not be shared by it. No store, no clock beyond
"due now" or "due in an hour".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from qw.model import Abort, Complete, Fail, JobStatus, JSONValue, Outcome, Release

__all__ = ["ModelEvent", "ModelJob", "NamespaceModel"]


@dataclass
class ModelJob:
    id: str
    queue: str
    priority: int
    seq: int
    max_attempts: int
    due: bool = True
    attempts: int = 0
    status: JobStatus = JobStatus.QUEUED
    dedupe_key: str | None = None
    token: str | None = None
    finished_by: str | None = None
    cancel_requested: bool = False
    short_lease: bool = False


@dataclass(frozen=True)
class ModelEvent:
    job_id: str
    type: str
    data: JSONValue
    #: Events written by one call share a group; their order within it is the store's.
    group: int = 0


@dataclass
class NamespaceModel:
    jobs: dict[str, ModelJob] = field(default_factory=dict)
    events: list[ModelEvent] = field(default_factory=list)
    enabled: bool = True
    queue_switches: dict[str, bool] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _groups: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def enqueue(
        self, jobs: list[tuple[str, str, int, int, str | None, bool]]
    ) -> list[tuple[str, bool]]:
        """(id, queue, priority, max_attempts, dedupe_key, due) each → (id, created)."""
        live = {j.dedupe_key: j.id for j in self.jobs.values() if j.dedupe_key and j.status.is_live}
        answers = []
        for job_id, queue, priority, max_attempts, key, due in jobs:
            if key is not None and key in live:
                answers.append((live[key], False))
                continue
            self.jobs[job_id] = ModelJob(
                job_id, queue, priority, next(self._seq), max_attempts, due, dedupe_key=key
            )
            if key is not None:
                live[key] = job_id
            answers.append((job_id, True))
        return answers

    def open(self, queue: str) -> bool:
        return self.enabled and self.queue_switches.get(queue, True)

    def claimable(self, queues: list[str], limit: int) -> list[ModelJob]:
        due = [
            j
            for j in self.jobs.values()
            if j.status is JobStatus.QUEUED and j.due and j.queue in queues and self.open(j.queue)
        ]
        return sorted(due, key=lambda j: (j.priority, j.seq))[:limit]

    def claimed(self, job: ModelJob, token: str, short: bool) -> None:
        job.status = JobStatus.RUNNING
        job.attempts += 1
        job.token = token
        job.cancel_requested = False
        job.short_lease = short

    def finish(self, outcome: Outcome) -> JobStatus | None:
        """Apply ``outcome`` as the reference does; return the answer it gets."""
        job = self.jobs.get(outcome.lease.job_id)
        token = outcome.lease.token
        if job is None:
            return None
        if job.token != token or job.status is not JobStatus.RUNNING:
            # A repeat: the token that moved the job, to the status this outcome gives.
            if job.finished_by == token and job.status is status_after(outcome):
                return job.status
            return None
        event = None
        if isinstance(outcome, Complete):
            job.status = JobStatus.SUCCEEDED
            event = outcome.event
        elif isinstance(outcome, Fail):
            if outcome.retry_in is not None and job.attempts < job.max_attempts:
                job.status = JobStatus.QUEUED
                job.due = outcome.retry_in == 0
            else:
                job.status = JobStatus.FAILED
            event = outcome.event
        elif isinstance(outcome, Abort):
            job.status = JobStatus.CANCELLED
            event = outcome.event
        else:
            assert isinstance(outcome, Release)
            job.status = JobStatus.QUEUED
            job.attempts -= 1
        job.token = None
        job.finished_by = token
        job.cancel_requested = False
        if event is not None:
            self.events.append(ModelEvent(job.id, event.type, event.data, next(self._groups)))
        return job.status

    def cancel(self, job_id: str) -> JobStatus:
        job = self.jobs[job_id]
        if job.status is JobStatus.QUEUED:
            job.status = JobStatus.CANCELLED
            job.finished_by = None
            self.events.append(
                ModelEvent(
                    job.id,
                    "job.cancelled",
                    {"queue": job.queue, "reason": "cancelled"},
                    next(self._groups),
                )
            )
        elif job.status is JobStatus.RUNNING:
            job.cancel_requested = True
        return job.status

    def expire_short_leases(self) -> int:
        """Reclaim every running job that holds a short lease; return how many."""
        expired = [j for j in self.jobs.values() if j.status is JobStatus.RUNNING and j.short_lease]
        group = next(self._groups)
        for job in sorted(expired, key=lambda j: j.seq):
            if job.attempts < job.max_attempts:
                job.status = JobStatus.QUEUED
            else:
                job.status = JobStatus.FAILED
                self.events.append(
                    ModelEvent(
                        job.id,
                        "job.failed",
                        {"queue": job.queue, "reason": "lease_expired", "attempts": job.attempts},
                        group,
                    )
                )
            job.token = None
            job.finished_by = None
            job.cancel_requested = False
            job.short_lease = False
        return len(expired)

    def counts(self) -> dict[str, dict[JobStatus, int]]:
        out: dict[str, dict[JobStatus, int]] = {}
        for job in self.jobs.values():
            out.setdefault(job.queue, dict.fromkeys(JobStatus, 0))[job.status] += 1
        return dict(sorted(out.items()))


def status_after(outcome: Outcome) -> JobStatus:
    """The status ``outcome`` leaves its job in, judged by the attempt its lease holds."""
    if isinstance(outcome, Complete):
        return JobStatus.SUCCEEDED
    if isinstance(outcome, Abort):
        return JobStatus.CANCELLED
    if isinstance(outcome, Fail):
        lease = outcome.lease
        retried = outcome.retry_in is not None and lease.attempt < lease.max_attempts
        return JobStatus.QUEUED if retried else JobStatus.FAILED
    return JobStatus.QUEUED
