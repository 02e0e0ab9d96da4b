"""Between Redis replies and qw records: times are integer µs since the epoch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from qw.model import Job, JobStatus, JSONValue, WorkerInfo

__all__ = [
    "ROW_WIDTH",
    "from_us",
    "job_from_row",
    "loads",
    "to_us",
    "worker_from",
    "worker_info_json",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
#: id followed by the 16 columns read.lua returns.
ROW_WIDTH = 17


def to_us(when: datetime) -> int:
    """A timezone-aware datetime as integer µs since the epoch (exact)."""
    return (when - EPOCH) // _US


def from_us(value: object) -> datetime:
    return EPOCH + timedelta(microseconds=int(str(value)))


def _opt_us(value: object) -> datetime | None:
    return None if value is None else from_us(value)


def loads(text: object) -> JSONValue:
    return None if text is None else json.loads(text)  # type: ignore[arg-type]


def job_from_row(row: Sequence[Any]) -> Job:
    """A :class:`Job` from ``read.lua``'s row (id + 16 columns)."""
    (
        id_,
        queue,
        payload,
        prio,
        run_at,
        max_attempts,
        attempts,
        status,
        created,
        dedupe,
        result,
        error,
        started,
        finished,
        worker,
        lease,
        cancel,
    ) = row
    return Job(
        id=id_,
        queue=queue,
        payload=loads(payload),
        priority=int(prio),
        run_at=from_us(run_at),
        max_attempts=int(max_attempts),
        attempts=int(attempts),
        status=JobStatus(status),
        created_at=from_us(created),
        dedupe_key=dedupe,
        result=loads(result),
        error=loads(error),
        started_at=_opt_us(started),
        finished_at=_opt_us(finished),
        worker=worker,
        lease_expires_at=_opt_us(lease),
        cancel_requested=cancel == "1",
    )


def worker_from(id_: str, info: str, started: object, seen: object) -> WorkerInfo:
    data = json.loads(info)
    return WorkerInfo(
        id=id_,
        queues=tuple(data.get("queues", ())),
        host=data.get("host", ""),
        pid=int(data.get("pid", 0)),
        concurrency=int(data.get("concurrency", 1)),
        started_at=_opt_us(started),
        last_seen=_opt_us(seen),
    )


def worker_info_json(worker: WorkerInfo) -> str:
    return json.dumps(
        {
            "queues": list(worker.queues),
            "host": worker.host,
            "pid": worker.pid,
            "concurrency": worker.concurrency,
        },
        separators=(",", ":"),
    )
