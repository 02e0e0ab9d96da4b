"""Stored rows to the contract's records."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from qw.model import (
    Event,
    Job,
    JobStatus,
    Limit,
    ParentFailure,
    Progress,
    Schedule,
    WorkerInfo,
    Workflow,
    WorkflowState,
)
from qw.validation import decode_json

__all__ = [
    "EVENT_COLUMNS",
    "JOB_COLUMNS",
    "SCHEDULE_COLUMNS",
    "WORKER_COLUMNS",
    "WORKFLOW_COLUMNS",
    "StepLists",
    "event",
    "job",
    "limit",
    "limit_values",
    "schedule",
    "tick",
    "ts",
    "worker",
    "workflow",
]

JOB_COLUMNS = (
    "id, queue, payload, priority, run_at, max_attempts, attempts, status, created_at, "
    "dedupe_key, result, error, started_at, finished_at, worker, lease_expires_at, "
    "cancel_requested, workflow, on_parent_failure, limit_key, concurrency, rate, rate_per, "
    "has_limit, fair, progress_fraction, progress_message, progress_at"
)
EVENT_COLUMNS = "cursor, job_id, type, data, created_at"
WORKER_COLUMNS = "id, queues, host, pid, concurrency, started_at, last_seen"
WORKFLOW_COLUMNS = "id, state, created_at, output, finished_at, cancel_requested"
SCHEDULE_COLUMNS = "name, spec, tz, queue, task, last_tick"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class StepLists(NamedTuple):
    """Steps' parents, children and failed parents, by step id, each list in order."""

    parents: Mapping[str, Sequence[str]]
    children: Mapping[str, Sequence[str]]
    failed_parents: Mapping[str, Sequence[str]]


def ts(value: float) -> datetime:
    """A stored time (Unix seconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(value, UTC)


def _opt_ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


@functools.lru_cache(maxsize=4096)
def limit(
    concurrency: int | None, rate: int | None, per: float | None, declared: int
) -> Limit | None:
    """A job's own limit from its columns (``declared`` is ``has_limit``).

    Cached: a claim builds one per candidate, and the jobs of a key mostly
    declare the same one (a Limit is frozen: sharing it is safe).
    """
    return Limit(concurrency, rate, per) if declared else None


def limit_values(lim: Limit | None) -> tuple[int | None, int | None, float | None, int]:
    """The columns ``concurrency, rate, rate_per, has_limit`` storing ``lim``."""
    if lim is None:
        return None, None, None, 0
    return lim.concurrency, lim.rate, lim.per, 1


def job(row: tuple[Any, ...], steps: StepLists | None = None) -> Job:
    """A :class:`Job` from a row selected as :data:`JOB_COLUMNS`.

    ``steps`` holds the lists of the workflow steps among the rows read.
    """
    job = Job(
        id=row[0],
        queue=row[1],
        payload=decode_json(row[2]),
        priority=row[3],
        run_at=ts(row[4]),
        max_attempts=row[5],
        attempts=row[6],
        status=JobStatus(row[7]),
        created_at=ts(row[8]),
        dedupe_key=row[9],
        result=decode_json(row[10]),
        error=decode_json(row[11]),
        started_at=_opt_ts(row[12]),
        finished_at=_opt_ts(row[13]),
        worker=row[14],
        lease_expires_at=_opt_ts(row[15]),
        cancel_requested=bool(row[16]),
        # In the constructor, not by replace(): that costs as much again as the job.
        limit_key=row[19],
        limit=None if row[19] is None else limit(*row[20:24]),
        fair=bool(row[24]),
        progress=None if row[27] is None else Progress(row[25], row[26], ts(row[27])),
    )
    if row[17] is None:
        return job
    assert steps is not None, "a step is read with its lists"
    step_id = row[0]
    return replace(
        job,
        workflow=row[17],
        parents=tuple(steps.parents.get(step_id, ())),
        children=tuple(steps.children.get(step_id, ())),
        on_parent_failure=ParentFailure(row[18]),
        failed_parents=tuple(steps.failed_parents.get(step_id, ())),
    )


def workflow(row: tuple[Any, ...], counts: Mapping[JobStatus, int]) -> Workflow:
    """A :class:`Workflow` from a row selected as :data:`WORKFLOW_COLUMNS`, and its counts."""
    return Workflow(
        id=row[0],
        state=WorkflowState(row[1]),
        created_at=ts(row[2]),
        output=row[3],
        finished_at=_opt_ts(row[4]),
        cancel_requested=bool(row[5]),
        counts=dict(counts),
    )


def tick(value: datetime) -> int:
    """A schedule tick as stored: whole microseconds since the epoch (exact)."""
    return (value - _EPOCH) // _MICROSECOND


def schedule(row: tuple[Any, ...]) -> Schedule:
    """A :class:`Schedule` from a row selected as :data:`SCHEDULE_COLUMNS`."""
    last = None if row[5] is None else _EPOCH + row[5] * _MICROSECOND
    return Schedule(row[0], row[1], row[2], row[3], row[4], last)


def event(row: tuple[Any, ...]) -> Event:
    """An :class:`Event` from a row selected as :data:`EVENT_COLUMNS`."""
    return Event(
        cursor=row[0], job_id=row[1], type=row[2], data=decode_json(row[3]), created_at=ts(row[4])
    )


def worker(row: tuple[Any, ...]) -> WorkerInfo:
    """A :class:`WorkerInfo` from a row selected as :data:`WORKER_COLUMNS`."""
    queues = decode_json(row[1])
    return WorkerInfo(
        id=row[0],
        queues=tuple(str(q) for q in queues) if isinstance(queues, list) else (),
        host=row[2],
        pid=row[3],
        concurrency=row[4],
        started_at=ts(row[5]),
        last_seen=ts(row[6]),
    )
