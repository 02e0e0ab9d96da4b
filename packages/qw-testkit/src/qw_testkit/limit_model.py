"""A plain-Python model of flow control: limits per key, fair ranks, claim order.

It states the rules again in its own words (``qw.contract``'s claim
docstring) and imports none of qw's own decisions (``qw.limits``): a mistake
there must show up as a disagreement with this model, not be shared by it.

Every rate in the model has a window far longer than an example lasts, so
that "starts inside the window" is simply "starts so far": the model needs
no clock. Rate windows sliding on the store's clock are tested with real
time in :mod:`qw_testkit.suite.limits`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from qw.model import JobStatus, Limit

__all__ = ["LimitJob", "LimitModel", "ModelKey", "max_overlap", "starts_within"]

QUEUED = JobStatus.QUEUED
RUNNING = JobStatus.RUNNING


@dataclass
class LimitJob:
    id: str
    queue: str
    priority: int
    seq: int
    key: str | None
    limit: Limit | None
    fair: bool
    rank: int
    max_attempts: int
    due: bool = True
    status: JobStatus = QUEUED
    attempts: int = 0
    cancel_requested: bool = False


@dataclass(frozen=True)
class ModelKey:
    """What ``keys()`` must report for one key (``KeyState``'s fields)."""

    key: str
    queued: int
    running: int
    limit: Limit | None
    overridden: bool
    started: int

    @property
    def throttled(self) -> bool:
        lim = self.limit
        if not self.queued or lim is None:
            return False
        if lim.concurrency is not None and self.running >= lim.concurrency:
            return True
        return lim.rate is not None and self.started >= lim.rate


@dataclass
class LimitModel:
    """One namespace's jobs under limits, as the contract says a claim must treat them."""

    jobs: dict[str, LimitJob] = field(default_factory=dict)
    #: The operators' limits, by key.
    overrides: dict[str, Limit] = field(default_factory=dict)
    #: Starts per key: claims of its jobs made while its limit had a rate.
    starts: Counter[str] = field(default_factory=Counter)
    #: The next fair rank of each (queue, key), and each queue's fair clock.
    next_rank: dict[tuple[str, str], int] = field(default_factory=dict)
    clock: dict[str, int] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def held_to(self, job: LimitJob) -> Limit | None:
        """The limit the job is held to now: the operators' for its key, else its own."""
        if job.key is None:
            return None
        return self.overrides.get(job.key, job.limit)

    def enqueue(
        self,
        job_id: str,
        queue: str,
        *,
        priority: int = 0,
        key: str | None = None,
        limit: Limit | None = None,
        fair: bool = False,
        max_attempts: int = 3,
        due: bool = True,
    ) -> LimitJob:
        rank = 0
        if fair and key is not None:
            # A key idle for a while starts where its queue's service is now.
            rank = max(self.next_rank.get((queue, key), 0), self.clock.get(queue, 0))
            self.next_rank[(queue, key)] = rank + 1
        job = LimitJob(
            job_id, queue, priority, next(self._seq), key, limit, fair, rank, max_attempts, due
        )
        self.jobs[job_id] = job
        return job

    def running(self, key: str) -> int:
        return sum(1 for j in self.jobs.values() if j.key == key and j.status is RUNNING)

    def claimable(self, queues: Iterable[str], limit: int) -> list[LimitJob]:
        """The jobs a claim of ``limit`` from ``queues`` must take now, in order."""
        names = set(queues)
        order = sorted(
            (j for j in self.jobs.values() if j.status is QUEUED and j.due and j.queue in names),
            key=lambda j: (j.priority, j.rank, j.seq),
        )
        taken: list[LimitJob] = []
        now_running = Counter(
            j.key for j in self.jobs.values() if j.key is not None and j.status is RUNNING
        )
        started = Counter(self.starts)
        for job in order:
            if len(taken) == limit:
                break
            lim = self.held_to(job)
            if job.key is not None and lim is not None:
                if lim.concurrency is not None and now_running[job.key] >= lim.concurrency:
                    continue  # held back; the claim goes on past it
                if lim.rate is not None and started[job.key] >= lim.rate:
                    continue
            if job.key is not None:
                now_running[job.key] += 1
                started[job.key] += 1
            taken.append(job)
        return taken

    def claimed(self, job: LimitJob) -> None:
        job.status = RUNNING
        job.attempts += 1
        job.cancel_requested = False
        lim = self.held_to(job)
        if job.key is not None and lim is not None and lim.rate is not None:
            self.starts[job.key] += 1
        if job.fair:
            self.clock[job.queue] = max(self.clock.get(job.queue, 0), job.rank)

    def finish(self, job_id: str, kind: str) -> JobStatus:
        """Apply a finish of kind complete, fail, retry, release or abort; return the status."""
        job = self.jobs[job_id]
        assert job.status is RUNNING
        if kind == "complete":
            job.status = JobStatus.SUCCEEDED
        elif kind == "fail":
            job.status = JobStatus.FAILED
        elif kind == "retry":
            job.status = QUEUED if job.attempts < job.max_attempts else JobStatus.FAILED
        elif kind == "release":
            job.status = QUEUED
            job.attempts -= 1
        else:
            assert kind == "abort"
            job.status = JobStatus.CANCELLED
        job.cancel_requested = False
        return job.status

    def cancel(self, job_id: str) -> JobStatus:
        job = self.jobs[job_id]
        if job.status is QUEUED:
            job.status = JobStatus.CANCELLED
        elif job.status is RUNNING:
            job.cancel_requested = True
        return job.status

    def set_limit(self, key: str, limit: Limit | None) -> None:
        if limit is None:
            self.overrides.pop(key, None)
        else:
            self.overrides[key] = limit

    def keys(self) -> list[ModelKey]:
        """Every key with queued or running jobs, or an operators' limit, by key.

        Callers keep one declared limit per key (see the module docstring of
        the suite): "the limit of one of its live jobs" is then that limit.
        """
        live = [
            j for j in self.jobs.values() if j.key is not None and j.status in (QUEUED, RUNNING)
        ]
        names = sorted({j.key for j in live if j.key is not None} | set(self.overrides))
        out = []
        for key in names:
            mine = [j for j in live if j.key == key]
            own = next((j.limit for j in mine if j.limit is not None), None)
            lim = self.overrides.get(key, own)
            started = self.starts[key] if lim is not None and lim.rate is not None else 0
            out.append(
                ModelKey(
                    key,
                    sum(1 for j in mine if j.status is QUEUED),
                    sum(1 for j in mine if j.status is RUNNING),
                    lim,
                    key in self.overrides,
                    started,
                )
            )
        return out


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most of ``intervals`` (start, end) that hold at one instant.

    An interval that ends when another starts does not overlap it: the
    intervals are times a job surely ran, so touching ones prove nothing.
    """
    points = sorted(
        itertools.chain.from_iterable(((s, 1), (e, -1)) for s, e in intervals),
        key=lambda p: (p[0], p[1]),
    )
    most = now = 0
    for _, step in points:
        now += step
        most = max(most, now)
    return most


def starts_within(starts: Sequence[datetime], per: float) -> int:
    """The most of ``starts`` inside any window ``(t - per, t]`` ending at one of them."""
    ordered = sorted(starts)
    most = 0
    for i, end in enumerate(ordered):
        inside = sum(1 for t in ordered[: i + 1] if (end - t).total_seconds() < per)
        most = max(most, inside)
    return most
