"""Rows as psycopg returns them, turned into qw's frozen records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from qw.model import Event, Job, JobStatus, WorkerInfo

__all__ = ["STATUSES", "to_event", "to_job", "to_worker"]


#: Each stored status text's JobStatus, by dict (cheaper than ``JobStatus(text)``).
STATUSES = {status.value: status for status in JobStatus}


def to_job(row: Sequence[Any]) -> Job:
    """A row in :data:`qw_postgres.queries.JOB_FIELDS` order (extra columns ignored)."""
    # Positional, in Job's field order (the same as JOB_FIELDS), and the
    # status by dict: a claim builds one Job per row, and this is its cost.
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
