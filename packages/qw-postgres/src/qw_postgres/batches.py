"""Batches sent as one JSON document per statement.

psycopg adapts Python lists to arrays in Python code, which costs more than
the whole INSERT for a thousand jobs; one ``jsonb`` parameter, split on the
server by ``jsonb_array_elements``, is several times faster (``jsonb``, not
``json``: a ``json`` value is parsed again by every ``->>`` taken from it,
which made a 500-outcome finish 28% slower). Each row is a JSON array.
Payloads, results and event data ride as JSON *strings* holding their
encoded text, cast back with ``::json`` on the server: spliced in as
values, PostgreSQL would have to de-escape them, and it refuses ``\u0000``
there although it is valid JSON that the ``json`` column keeps verbatim.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from qw.contract import Abort, Complete, Fail, Outcome, Release
from qw.model import JSONValue, Lease, NewJob
from qw.validation import encode_json

__all__ = [
    "FINISH_DOC_MAX_CHARS",
    "enqueue_document",
    "enqueue_rows",
    "finish_documents",
    "renew_document",
]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_KINDS: dict[type, str] = {Complete: "c", Fail: "f", Release: "r", Abort: "a"}


def enqueue_document(jobs: Sequence[NewJob]) -> str:
    """``[id, queue, priority, run_at, delay, max_attempts, dedupe_key, payload]`` per job."""
    rows: list[list[object]] = []
    for job in jobs:
        rows.append(
            [
                job.id,
                job.queue,
                job.priority,
                None if job.run_at is None else job.run_at.isoformat(),
                None if job.delay is None else float(job.delay),
                job.max_attempts,
                job.dedupe_key,
                encode_json(job.payload),
            ]
        )
    return _dumps(rows)


def enqueue_rows(jobs: Sequence[NewJob]) -> Iterator[tuple[object, ...]]:
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
            encode_json(job.payload),
            ord_,
        )


#: The most nested JSON text (results, errors, event data) one finish
#: statement carries: a batch of large results is split over several
#: statements, so a document stays far below jsonb's 256 MB limit.
FINISH_DOC_MAX_CHARS = 16 * 1024 * 1024


def finish_documents(outcomes: Sequence[Outcome]) -> Iterator[tuple[Sequence[Outcome], str]]:
    """``(outcomes, document)`` pairs covering ``outcomes`` in order.

    A document holds ``[id, token, kind, retry_in, event_type, body,
    event_data]`` per outcome; the next starts once the nested text of one
    reaches :data:`FINISH_DOC_MAX_CHARS`.
    """
    rows: list[list[object]] = []
    chars = 0
    start = 0
    for index, outcome in enumerate(outcomes):
        retry_in = None
        if isinstance(outcome, Complete):
            body = _encode(outcome.result, "result")
        elif isinstance(outcome, (Fail, Abort)):
            body = _encode(outcome.error, "error")
            if isinstance(outcome, Fail) and outcome.retry_in is not None:
                retry_in = float(outcome.retry_in)
        else:
            body = None
        event = None if isinstance(outcome, Release) else outcome.event
        event_type = None if event is None else event.type
        event_data = None if event is None else _encode(event.data, "event data")
        size = (0 if body is None else len(body)) + (0 if event_data is None else len(event_data))
        if rows and chars + size > FINISH_DOC_MAX_CHARS:
            yield outcomes[start:index], _dumps(rows)
            rows, chars, start = [], 0, index
        chars += size
        rows.append(
            [
                outcome.lease.job_id,
                outcome.lease.token,
                _KINDS[type(outcome)],
                retry_in,
                event_type,
                body,
                event_data,
            ]
        )
    if rows:
        yield outcomes[start:], _dumps(rows)


def _encode(value: JSONValue, what: str) -> str:
    """``value`` as :func:`qw.validation.encode_json` writes it.

    The Client checked the value already (that walk is most of the cost of
    encoding a small value), so it is not walked again; only a value that
    ``json`` cannot encode at all (no Client in front) goes through
    :func:`~qw.validation.encode_json`, for its typed error.
    """
    if value is None:
        return "null"
    try:
        return _dumps(value)
    except (TypeError, ValueError, RecursionError):
        return encode_json(value, what=what)


def renew_document(leases: Sequence[Lease]) -> str:
    """``[id, token]`` per lease."""
    return _dumps([[lease.job_id, lease.token] for lease in leases])
