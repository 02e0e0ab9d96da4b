"""Rows as psycopg returns them, turned into qw's frozen records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

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

__all__ = [
    "PARENT_FAILURES",
    "STATES",
    "STATUSES",
    "to_event",
    "to_job",
    "to_limit",
    "to_schedule",
    "to_worker",
    "to_workflow",
]


#: Each stored status text's JobStatus, by dict (cheaper than ``JobStatus(text)``).
STATUSES = {status.value: status for status in JobStatus}
PARENT_FAILURES = {policy.value: policy for policy in ParentFailure}
STATES = {state.value: state for state in WorkflowState}


def to_job(row: Sequence[Any]) -> Job:
    """A row in :data:`qw_postgres.queries.JOB_FIELDS` order (extra columns ignored)."""
    # Positional, in Job's field order (the same as JOB_FIELDS), and the
    # status by dict: a claim builds one Job per row, and this is its cost.
    # A plain job (workflow NULL, no limit key, no progress) leaves the
    # step, flow and progress fields at their defaults.
    if row[17] is not None or row[22] is not None or row[27] is not None:
        return _step(row)
    return Job(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        STATUSES[row[7]],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
        row[15],
        row[16],
    )


def to_limit(fields: Sequence[float | None] | None) -> Limit | None:
    """A job's own limit from its ``float8[]`` (NULL: it declared none)."""
    if fields is None:
        return None
    c, r, per = fields
    return Limit(None if c is None else int(c), None if r is None else int(r), per)


def _step(row: Sequence[Any]) -> Job:
    workflow = row[17]
    return Job(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        STATUSES[row[7]],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
        row[15],
        row[16],
        workflow,
        () if workflow is None else tuple(row[18]),
        () if workflow is None else tuple(row[19]),
        ParentFailure.CANCEL if workflow is None else PARENT_FAILURES[row[20]],
        () if workflow is None else tuple(row[21]),
        row[22],
        to_limit(row[23]),
        row[24],
        None if row[27] is None else Progress(row[25], row[26], row[27]),
    )


def to_schedule(row: Sequence[Any]) -> Schedule:
    """A row of ``SCHEDULES``."""
    return Schedule(row[0], row[1], row[2], row[3], row[4], row[5])


def to_workflow(row: Sequence[Any]) -> Workflow:
    """A row of ``GET_WORKFLOW`` / ``LIST_WORKFLOWS``."""
    statuses, counts = row[6] or (), row[7] or ()
    return Workflow(
        id=row[0],
        state=STATES[row[1]],
        created_at=row[2],
        output=row[3],
        finished_at=row[4],
        cancel_requested=row[5],
        counts={STATUSES[s]: int(n) for s, n in zip(statuses, counts, strict=True)},
    )


def to_event(row: Sequence[Any]) -> Event:
    cursor: int = row[0]
    created_at: datetime = row[4]
    return Event(cursor=cursor, job_id=row[1], type=row[2], data=row[3], created_at=created_at)


def to_worker(row: Sequence[Any]) -> WorkerInfo:
    return WorkerInfo(
        id=row[0],
        queues=tuple(row[1]),
        host=row[2],
        pid=row[3],
        concurrency=row[4],
        started_at=row[5],
        last_seen=row[6],
    )
