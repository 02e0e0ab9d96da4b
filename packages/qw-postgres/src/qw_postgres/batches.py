"""Batches sent as one JSON document per statement.

psycopg adapts Python lists to arrays in Python code, which costs more than
the whole INSERT for a thousand jobs; one ``jsonb`` parameter, split on the
server by ``jsonb_array_elements``, is several times faster (``jsonb``, not
``json``: a ``json`` value is parsed again by every ``->>`` taken from it,
which made a 500-outcome finish 28% slower). Each row is a JSON array.
Payloads, results, errors and event data arrive as JSON text, encoded once
by the Client (:class:`qw.contract.Insert`, :class:`qw.transitions.Transition`),
and ride as JSON *strings* holding that text, never encoded again, cast
back with ``::json`` on the server: spliced in as
values, PostgreSQL would have to de-escape them, and it refuses ``\u0000``
there although it is valid JSON that the ``json`` column keeps verbatim.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence

from qw.contract import Finish, Insert
from qw.model import Lease
from qw.transitions import Transition

__all__ = [
    "FINISH_DOC_MAX_CHARS",
    "enqueue_document",
    "enqueue_rows",
    "finish_documents",
    "flows_document",
    "limit_fields",
    "renew_document",
    "children_of",
    "step_document",
    "text_array",
    "transition_document",
]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def limit_fields(job: Insert) -> tuple[int | None, int | None, float | None, bool]:
    """The columns ``concurrency, rate, rate_per, has_limit`` that store ``job.limit``."""
    lim = job.limit
    if lim is None:
        return None, None, None, False
    return lim.concurrency, lim.rate, None if lim.per is None else float(lim.per), True


def _flow(job: Insert) -> list[object]:
    """``[limit_key, concurrency, rate, rate_per, has_limit, fair]``."""
    return [job.limit_key, *limit_fields(job), job.fair]


def enqueue_document(jobs: Iterable[Insert], *, keyed: bool = False) -> str:
    """``[id, queue, priority, run_at, delay, max_attempts, dedupe_key, payload]`` per job.

    The payload is the client's JSON text, written as it is. With ``keyed``,
    each row goes on with :func:`_flow`'s six fields (``ENQUEUE_KEYED``).
    """
    return _dumps(
        [
            [
                job.id,
                job.queue,
                job.priority,
                None if job.run_at is None else job.run_at.isoformat(),
                None if job.delay is None else float(job.delay),
                job.max_attempts,
                job.dedupe_key,
                job.payload,
                *(_flow(job) if keyed else ()),
            ]
            for job in jobs
        ]
    )


def text_array(ids: Iterable[str]) -> str:
    """A PostgreSQL ``text[]`` literal of step ids.

    Step ids match qw.validation.STEP_ID_PATTERN: no quote, backslash, comma,
    brace or space. Each is quoted all the same, so that an id such as
    ``NULL`` stays a string.
    """
    return "{" + ",".join(f'"{i}"' for i in ids) + "}"


def step_document(steps: Iterable[Insert], children: Mapping[str, Sequence[str]]) -> str:
    """A workflow's steps: :func:`enqueue_document`'s fields, then ``status``,
    ``parents`` and ``children`` (array literals), ``on_parent_failure``
    and :func:`_flow`'s six fields.

    ``children`` maps a step id to the steps of the batch that name it as a
    parent, in batch order.
    """
    return _dumps(
        [
            [
                step.id,
                step.queue,
                step.priority,
                None if step.run_at is None else step.run_at.isoformat(),
                None if step.delay is None else float(step.delay),
                step.max_attempts,
                step.dedupe_key,
                step.payload,
                step.status,
                text_array(step.parents),
                text_array(children.get(step.id, ())),
                step.on_parent_failure,
                *_flow(step),
            ]
            for step in steps
        ]
    )


def children_of(steps: Iterable[Insert]) -> dict[str, list[str]]:
    """Each parent's children among ``steps``, in batch order."""
    children: dict[str, list[str]] = {}
    for step in steps:
        for parent in step.parents:
            children.setdefault(parent, []).append(step.id)
    return children


def enqueue_rows(jobs: Iterable[Insert]) -> Iterator[tuple[object, ...]]:
    """The rows of ``qw_enqueue_in`` for a COPY, in :data:`ENQUEUE_COPY_TYPES` order."""
    for ord_, job in enumerate(jobs, 1):
        yield (
            job.id,
            job.queue,
            job.priority,
            job.run_at,
            None if job.delay is None else float(job.delay),
            job.max_attempts,
            job.dedupe_key,
            job.payload,
            ord_,
            job.limit_key,
            *limit_fields(job),
            job.fair,
        )


#: The most nested JSON text (results, errors, event data) one finish
#: statement carries: a batch of large results is split over several
#: statements, so a document stays far below jsonb's 256 MB limit.
FINISH_DOC_MAX_CHARS = 16 * 1024 * 1024


def _row(job_id: str, token: str | None, attempt: int | None, t: Transition) -> list[object]:
    """One job's row of a transition document (see ``qw_postgres.queries._apply``)."""
    return [
        job_id,
        token,
        attempt,
        t.status,
        t.attempts,
        t.run_in,
        t.result,
        t.error,
        t.finished,
        t.finished_by,
        t.event_type,
        t.event_data,
    ]


def transition_document(rows: Iterable[tuple[str, str | None, int | None, Transition]]) -> str:
    """A document of ``(job_id, token, attempt, transition)`` rows, in order."""
    return _dumps([_row(*row) for row in rows])


def finish_documents(finishes: Sequence[Finish]) -> Iterator[tuple[Sequence[Finish], str]]:
    """``(finishes, document)`` pairs covering ``finishes`` in order.

    Each finish is its lease's job, token and attempt with its transition;
    the next document starts once the JSON text (result, error, event data)
    of one reaches :data:`FINISH_DOC_MAX_CHARS`.
    """
    rows: list[list[object]] = []
    chars = 0
    start = 0
    for index, finish in enumerate(finishes):
        lease, t = finish.lease, finish.transition
        size = (
            (0 if t.result is None else len(t.result))
            + (0 if t.error is None else len(t.error))
            + (0 if t.event_data is None else len(t.event_data))
        )
        if rows and chars + size > FINISH_DOC_MAX_CHARS:
            yield finishes[start:index], _dumps(rows)
            rows, chars, start = [], 0, index
        chars += size
        rows.append(_row(lease.job_id, lease.token, lease.attempt, t))
    if rows:
        yield finishes[start:], _dumps(rows)


def flows_document(rows: Iterable[Sequence[object]]) -> str:
    """Workflow rows for ``ENDS``: ``[id, live, failed, cancelled, state,
    cancel_requested, finished, event_type, event_data]`` each."""
    return _dumps([list(row) for row in rows])


def renew_document(leases: Sequence[Lease]) -> str:
    """``[id, token, attempt]`` per lease."""
    return _dumps([[lease.job_id, lease.token, lease.attempt] for lease in leases])
