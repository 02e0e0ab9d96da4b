"""Between Redis replies and qw records: times are integer µs since the epoch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from qw.model import (
    Job,
    JobStatus,
    JSONValue,
    Limit,
    ParentFailure,
    Progress,
    WorkerInfo,
    Workflow,
    WorkflowState,
)

__all__ = [
    "CLAIM_WIDTH",
    "ROW_WIDTH",
    "WORKFLOW_WIDTH",
    "StepFields",
    "decode_limit",
    "encode_limit",
    "flow_fields",
    "from_us",
    "job_from_row",
    "loads",
    "progress_args",
    "progress_from",
    "step_fields",
    "to_us",
    "worker_from",
    "worker_info_json",
    "workflow_from_row",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
#: id followed by the 16 columns read.lua returns, the step fields, 'lim' and 'prog'.
ROW_WIDTH = 20
#: Fields per job of claim.lua's reply.
CLAIM_WIDTH = 15
#: workflow id, record, and its steps per status (common.lua's workflow_row).
WORKFLOW_WIDTH = 2 + len(JobStatus)
_STATUSES = tuple(JobStatus)
_PLAIN: dict[str, Any] = {}


class StepFields(dict[str, Any]):
    """A step's :class:`~qw.model.Job` fields, plus the queues of its workflow."""

    queues: tuple[str, ...] = ()


def _ids(text: str) -> tuple[str, ...]:
    return tuple(text.split(" ")) if text else ()


def step_fields(value: object) -> dict[str, Any]:
    """The Job keyword arguments of common.lua's ``step_info`` (none for a plain job)."""
    if value is None:
        return _PLAIN
    parts = str(value).split("\n")
    fields = StepFields(
        workflow=parts[0],
        parents=_ids(parts[1]),
        children=_ids(parts[2]),
        on_parent_failure=ParentFailure(parts[3]) if parts[3] else ParentFailure.CANCEL,
        failed_parents=_ids(parts[4]),
    )
    if len(parts) > 5:
        fields.queues = _ids(parts[5])
    return fields


def encode_limit(limit: Limit | None) -> str:
    """``limit`` as the Lua reads it (common.lua's parse_limit): ``c,rate,per``, ``-`` for None.

    ``per`` is kept as the float's repr, so it reads back exactly.
    """
    if limit is None:
        return "-"
    c, rate, per = limit.concurrency, limit.rate, limit.per
    return ",".join(
        (
            "" if c is None else str(c),
            "" if rate is None else str(rate),
            "" if per is None else repr(float(per)),
        )
    )


def decode_limit(text: str) -> Limit | None:
    """The :class:`Limit` :func:`encode_limit` wrote."""
    if text == "-":
        return None
    c, rate, per = text.split(",")
    return Limit(int(c) if c else None, int(rate) if rate else None, float(per) if per else None)


def flow_fields(value: object) -> dict[str, Any]:
    """The Job keyword arguments of a ``lim`` column (none for a job without a limit key)."""
    if value is None:
        return _PLAIN
    fair, _rank, limit, key = str(value).split(" ", 3)
    return {"limit_key": key, "limit": decode_limit(limit), "fair": fair == "1"}


def progress_args(fraction: float | None, message: str | None) -> tuple[str, str]:
    """``fraction`` and ``message`` as lua/set_progress.lua reads them.

    The fraction is the float's repr (no spaces, reads back exactly), ``-``
    for None; the message comes last with a marker, so that None and ``""``
    differ and the text may hold anything.
    """
    return (
        "-" if fraction is None else repr(float(fraction)),
        "n" if message is None else "m" + message,
    )


def progress_from(value: object) -> Progress | None:
    """The :class:`Progress` of a ``prog`` column (None: the job reported none)."""
    if value is None:
        return None
    at, fraction, message = str(value).split(" ", 2)
    return Progress(
        fraction=None if fraction == "-" else float(fraction),
        message=message[1:] if message.startswith("m") else None,
        at=from_us(at),
    )


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
    """A :class:`Job` from ``read.lua``'s row (id + 16 columns, step fields, ``lim``, ``prog``)."""
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
        step,
        lim,
        prog,
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
        **step_fields(step),
        **flow_fields(lim),
        progress=progress_from(prog),
    )


def workflow_from_row(row: Sequence[Any]) -> Workflow:
    """A :class:`Workflow` from common.lua's ``workflow_row``."""
    id_, rec, *counts = row
    state, cancel, created, finished, output = str(rec).split(" ")
    return Workflow(
        id=id_,
        state=WorkflowState(state),
        created_at=from_us(created),
        output=None if output == "-" else output,
        finished_at=None if finished == "-" else from_us(finished),
        cancel_requested=cancel == "1",
        counts={s: int(n) for s, n in zip(_STATUSES, counts, strict=True) if int(n)},
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
