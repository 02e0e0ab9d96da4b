"""Rows as psycopg returns them, turned into qw's frozen records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from qw.model import Event, Job, JobStatus, WorkerInfo

__all__ = ["to_event", "to_job", "to_worker"]


def to_job(row: Sequence[Any]) -> Job:
    """A row in :data:`qw_postgres.queries.JOB_FIELDS` order (extra columns ignored)."""
    return Job(
        id=row[0],
        queue=row[1],
        payload=row[2],
        priority=row[3],
        run_at=row[4],
        max_attempts=row[5],
        attempts=row[6],
        status=JobStatus(row[7]),
        created_at=row[8],
        dedupe_key=row[9],
        result=row[10],
        error=row[11],
        started_at=row[12],
        finished_at=row[13],
        worker=row[14],
        lease_expires_at=row[15],
        cancel_requested=row[16],
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
