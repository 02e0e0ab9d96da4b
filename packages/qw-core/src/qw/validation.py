"""Checks that run before any I/O, shared by every backend.

Backends receive input that already passed these checks; they call
:func:`validate_namespace` themselves when opened, so that no backend can be
bound to a name that would change its key or table layout.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from qw.errors import DuplicateJob, InvalidInput, InvalidName, InvalidPayload
from qw.model import EventSpec, JSONValue, NewJob

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "NAMESPACE_PATTERN",
    "QUEUE_PATTERN",
    "decode_json",
    "encode_json",
    "is_int_in",
    "is_seconds",
    "validate_event",
    "validate_lease_seconds",
    "validate_new_jobs",
    "validate_namespace",
    "validate_queue",
    "validate_queues",
]

NAMESPACE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
QUEUE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
EVENT_TYPE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
MAX_DEDUPE_KEY_CHARS = 512
# Priorities are stored in a signed 32-bit column on some stores.
PRIORITY_RANGE = range(-(2**31), 2**31)


def is_seconds(value: object) -> bool:
    """Whether ``value`` is a finite number of seconds >= 0 (an int or float, not a bool)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def is_int_in(value: object, low: int, high: int) -> bool:
    """Whether ``value`` is an int (not a bool) in ``[low, high]``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def validate_namespace(name: object) -> str:
    """Return ``name`` if it is a valid namespace, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not NAMESPACE_PATTERN.fullmatch(name):
        raise InvalidName(f"invalid namespace {name!r}: must match {NAMESPACE_PATTERN.pattern}")
    return name


def validate_queue(name: object) -> str:
    """Return ``name`` if it is a valid queue name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not QUEUE_PATTERN.fullmatch(name):
        raise InvalidName(f"invalid queue name {name!r}: must match {QUEUE_PATTERN.pattern}")
    return name


def validate_queues(names: Iterable[str]) -> tuple[str, ...]:
    """Validate a non-empty collection of queue names; a lone string is refused."""
    if isinstance(names, str):
        raise InvalidInput("queues must be a collection of names, not a single string")
    queues = tuple(dict.fromkeys(validate_queue(q) for q in names))
    if not queues:
        raise InvalidInput("at least one queue name is required")
    return queues


def encode_json(value: JSONValue, *, what: str = "payload", limit: int | None = None) -> str:
    """Encode ``value`` as compact JSON text, refusing what JSON cannot carry.

    NaN and infinities are refused (they are not JSON); so are non-string
    mapping keys, which ``json`` would silently turn into strings.
    """
    _check_json(value, what)
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(f"{what} is not JSON: {exc}") from None
    # A character is at most 4 bytes of UTF-8: short text needs no encoding to check.
    if limit is not None and len(text) * 4 > limit and len(text.encode()) > limit:
        raise InvalidPayload(f"{what} is {len(text.encode())} bytes as JSON; the limit is {limit}")
    return text


def decode_json(text: str | bytes | None) -> JSONValue:
    """Decode JSON text written by :func:`encode_json` (``None`` stays ``None``)."""
    if text is None:
        return None
    return json.loads(text)  # type: ignore[no-any-return]


def _check_json(value: object, what: str, depth: int = 0) -> None:
    # json.dumps accepts tuples and str-coerces int keys; refuse both so that
    # what a consumer reads back is exactly what the producer sent.
    if depth > 200:
        raise InvalidPayload(f"{what} is nested too deeply")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(f"{what} contains {value!r}, which JSON cannot carry")
        return
    if isinstance(value, list):
        for item in value:
            _check_json(item, what, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPayload(f"{what} has a non-string key {key!r}")
            _check_json(item, what, depth + 1)
        return
    raise InvalidPayload(f"{what} contains a {type(value).__name__}, which is not JSON")


def validate_event(event: EventSpec | None, *, limit: int) -> EventSpec | None:
    """Check an outbox event's type and data before a transition is attempted."""
    if event is None:
        return None
    if not isinstance(event, EventSpec):
        raise InvalidInput(f"event must be an EventSpec, not {type(event).__name__}")
    if not isinstance(event.type, str) or not EVENT_TYPE_PATTERN.fullmatch(event.type):
        raise InvalidInput(
            f"invalid event type {event.type!r}: must match {EVENT_TYPE_PATTERN.pattern}"
        )
    encode_json(event.data, what="event data", limit=limit)
    return event


def validate_new_jobs(jobs: Sequence[NewJob], *, limit: int) -> list[str]:
    """Check a batch of jobs; return each payload encoded as JSON text.

    Raises before anything is written: an invalid job anywhere in the batch
    fails the whole call.
    """
    if isinstance(jobs, NewJob):
        raise InvalidInput("enqueue takes a sequence of NewJob; wrap a single job in a list")
    encoded: list[str] = []
    seen: set[str] = set()
    for job in jobs:
        if not isinstance(job, NewJob):
            raise InvalidInput(f"expected NewJob, got {type(job).__name__}")
        validate_queue(job.queue)
        if not isinstance(job.id, str) or not 0 < len(job.id) <= 64:
            raise InvalidInput(f"invalid job id {job.id!r}: a string of 1 to 64 characters")
        if job.id in seen:
            raise DuplicateJob(f"job id {job.id!r} appears twice in one batch")
        seen.add(job.id)
        if (
            isinstance(job.priority, bool)
            or not isinstance(job.priority, int)
            or (job.priority not in PRIORITY_RANGE)
        ):
            raise InvalidInput(f"priority must be a 32-bit int, not {job.priority!r}")
        if (
            isinstance(job.max_attempts, bool)
            or not isinstance(job.max_attempts, int)
            or (job.max_attempts < 1)
        ):
            raise InvalidInput(f"max_attempts must be an int >= 1, not {job.max_attempts!r}")
        if job.run_at is not None and job.delay is not None:
            raise InvalidInput("give run_at or delay, not both")
        if job.run_at is not None and (
            not isinstance(job.run_at, datetime) or job.run_at.tzinfo is None
        ):
            raise InvalidInput("run_at must be a timezone-aware datetime")
        if job.delay is not None and not is_seconds(job.delay):
            raise InvalidInput(f"delay must be a finite number of seconds >= 0, not {job.delay!r}")
        if job.dedupe_key is not None and (
            not isinstance(job.dedupe_key, str)
            or not 0 < len(job.dedupe_key) <= MAX_DEDUPE_KEY_CHARS
        ):
            raise InvalidInput(
                f"dedupe_key must be a string of 1 to {MAX_DEDUPE_KEY_CHARS} characters"
            )
        encoded.append(encode_json(job.payload, limit=limit))
    return encoded


def validate_lease_seconds(lease_s: float) -> float:
    """A lease length must be a positive, finite number of seconds."""
    if not (is_seconds(lease_s) and 0 < lease_s <= 86_400):
        raise InvalidInput(f"lease_s must be seconds in (0, 86400], not {lease_s!r}")
    return float(lease_s)
