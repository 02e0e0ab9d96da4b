"""Checks that run before any I/O, shared by every backend.

Every bound qw places on input is a constant here, applied by
:class:`qw.Client` before the backend sees the call, so that each backend
(and its tests, through ``qw_testkit``) receives the same well-formed input.
The table in docs/guide.md ("Limits") lists them.

Backends receive input that already passed these checks; they call
:func:`validate_namespace` themselves when opened, so that no backend can be
bound to a name that would change its key or table layout.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

from qw.errors import DuplicateJob, InvalidInput, InvalidName, InvalidPayload, InvalidWorkflow
from qw.model import EventSpec, JSONValue, Limit, NewJob, ParentFailure, Schedule, WorkerInfo

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "EVENT_CURSOR_RANGE",
    "EVENT_TYPE_PATTERN",
    "INT32_RANGE",
    "MAX_ATTEMPTS",
    "MAX_BATCH",
    "MAX_CALL_BYTES",
    "MAX_CLAIM_LIMIT",
    "MAX_DEDUPE_KEY_CHARS",
    "MAX_DELAY_S",
    "MAX_HOST_CHARS",
    "MAX_JOB_ID_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_LIMIT_KEY_CHARS",
    "MAX_CONCURRENCY_LIMIT",
    "MAX_LEASE_S",
    "MAX_LEASE_TOKEN_CHARS",
    "MAX_LIST_LIMIT",
    "MAX_SECONDS",
    "MAX_WORKER_ID_CHARS",
    "MAX_WORKFLOW_ID_CHARS",
    "MAX_WORKFLOW_STEPS",
    "STEP_ID_PATTERN",
    "SCHEDULE_NAME_PATTERN",
    "MIN_RUN_AT",
    "NAMESPACE_PATTERN",
    "PRIORITY_RANGE",
    "QUEUE_PATTERN",
    "check_job_id",
    "check_schedule",
    "check_schedule_name",
    "check_limit",
    "check_limit_key",
    "check_lease_token",
    "check_run_at",
    "check_worker",
    "check_worker_id",
    "decode_json",
    "encode_event",
    "encode_json",
    "encode_json_sized",
    "is_int_in",
    "is_seconds",
    "is_utf8",
    "split_new_jobs",
    "validate_event",
    "validate_event_cursors",
    "validate_lease_seconds",
    "validate_namespace",
    "validate_new_jobs",
    "validate_queue",
    "validate_queues",
    "validate_workflow_id",
    "validate_workflow_steps",
]

# -- the bounds ---------------------------------------------------------------

NAMESPACE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
QUEUE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Workflow ids, and the ids of workflow steps, which are derived from them;
#: no character of it needs escaping in JSON or in a key name.
STEP_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: A workflow id leaves room for the step suffixes derived from it.
MAX_WORKFLOW_ID_CHARS = 40
#: A schedule's jobs have ids ``NAME@TICK``; 40 characters leave room for the tick.
SCHEDULE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}")
MAX_SCHEDULE_SPEC_CHARS = 200
#: Steps in one workflow-creating (or step-adding) call: stored in one
#: atomic write, so bounded as a call is (MAX_CALL_BYTES applies too).
MAX_WORKFLOW_STEPS = 50_000
EVENT_TYPE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: Largest payload, result, error or event data, as UTF-8 JSON, unless the
#: backend's ``Capabilities.max_payload_bytes`` says otherwise.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
#: Most jobs per enqueue call, leases per renew call, outcomes per finish
#: call, cursors per ack_events call.
MAX_BATCH = 10_000
#: Most JSON bytes (payloads; results, errors and event data) in one enqueue
#: or finish call: a batch of MAX_BATCH full-size payloads would be 10 GB.
MAX_CALL_BYTES = 16 * 1024 * 1024
#: Deepest nesting of JSON arrays and objects. MongoDB refuses documents
#: nested deeper than 100 and a job document adds levels of its own.
MAX_JSON_DEPTH = 64
#: Ten years of 365.25 days: the furthest ahead a job may be scheduled.
#: Every store can represent it, and listing such a job stays possible.
MAX_DELAY_S = 315_576_000
#: The largest value of any seconds argument (delay, retry_in, wait
#: timeout, purge older_than); lease lengths have their own, smaller bound.
MAX_SECONDS = MAX_DELAY_S
MAX_LEASE_S = 86_400
#: The earliest run_at: stores keep times as offsets from the Unix epoch.
MIN_RUN_AT = datetime(1970, 1, 1, tzinfo=UTC)
#: A job's attempts counter stays far inside a 32-bit column.
MAX_ATTEMPTS = 1_000_000
#: Priorities, worker pids and concurrencies live in signed 32-bit columns.
INT32_RANGE = range(-(2**31), 2**31)
PRIORITY_RANGE = INT32_RANGE
#: Event cursors are positive signed 64-bit integers (bigint, SQLite INTEGER).
EVENT_CURSOR_RANGE = range(1, 2**63)
MAX_JOB_ID_CHARS = 64
MAX_DEDUPE_KEY_CHARS = 512
#: Limit keys are short labels (``"user:42"``), stored and indexed per job.
MAX_LIMIT_KEY_CHARS = 200
MAX_CONCURRENCY_LIMIT = 1_000_000
MAX_WORKER_ID_CHARS = 200
#: The longest progress message a task may report.
MAX_PROGRESS_MESSAGE_CHARS = 500
#: A host name is at most 253 characters; a little room for decoration.
MAX_HOST_CHARS = 255
#: Tokens are made by the store; the bound only refuses forged leases.
MAX_LEASE_TOKEN_CHARS = 256
MAX_CLAIM_LIMIT = 1000
#: Most jobs per list_jobs call and events per fetch_events call.
MAX_LIST_LIMIT = 10_000

# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _encoder_of_checked() -> Callable[[object], str]:
    """``_ENCODER.encode`` for values :func:`_check_json` passed, built once.

    ``JSONEncoder.encode`` builds its C encoder (and a cycle-marker dict)
    on every call, half its cost for a small value. A checked value has no
    cycle (its depth is bounded), so the C encoder is made once, without
    markers; the output is the same. Without the C accelerator (PyPy),
    ``_ENCODER.encode`` itself.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _ENCODER.encode
    basestring = json.encoder.encode_basestring
    # markers, default, encoder, indent, separators, sort_keys, skipkeys, allow_nan
    encode = make(None, _ENCODER.default, basestring, None, ":", ",", False, False, False)

    def encode_checked(value: object) -> str:
        return "".join(encode(value, 0))

    return encode_checked


_encode_checked = _encoder_of_checked()

# -- predicates ---------------------------------------------------------------


def is_seconds(value: object) -> bool:
    """Whether ``value`` is an int or float (not a bool) in ``[0, MAX_SECONDS]``.

    Total: never raises, whatever ``value`` is (NaN, 10**400, a str...).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        # NaN compares False; an int is compared exactly, never converted to float.
        return 0 <= value <= MAX_SECONDS
    except Exception:  # an int or float subclass with a hostile __le__
        return False


def is_int_in(value: object, low: int, high: int) -> bool:
    """Whether ``value`` is an int (not a bool) in ``[low, high]``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be encoded as UTF-8 (it holds no lone surrogate)."""
    # isascii() is O(1) in CPython: only non-ASCII text pays for an encode.
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_text(value: object, max_chars: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_chars and is_utf8(value)


# -- names --------------------------------------------------------------------


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


def check_job_id(job_id: object) -> str:
    """Return ``job_id`` if it is 1 to MAX_JOB_ID_CHARS characters of UTF-8 text."""
    if not _is_text(job_id, MAX_JOB_ID_CHARS):
        raise InvalidInput(
            f"invalid job id {job_id!r}: a string of 1 to {MAX_JOB_ID_CHARS} characters"
        )
    return job_id  # type: ignore[return-value]


def check_worker_id(worker: object) -> str:
    """Return ``worker`` if it is 1 to MAX_WORKER_ID_CHARS characters of UTF-8 text."""
    if not _is_text(worker, MAX_WORKER_ID_CHARS):
        raise InvalidInput(
            f"worker id must be a string of 1 to {MAX_WORKER_ID_CHARS} characters, not {worker!r}"
        )
    return worker  # type: ignore[return-value]


def check_lease_token(token: object) -> str:
    """Return ``token`` if it could be a store-made lease token."""
    if not _is_text(token, MAX_LEASE_TOKEN_CHARS):
        raise InvalidInput(f"invalid lease token {token!r}")
    return token  # type: ignore[return-value]


def check_worker(worker: object) -> WorkerInfo:
    """Check every field of a :class:`~qw.model.WorkerInfo` a store keeps."""
    if not isinstance(worker, WorkerInfo):
        raise InvalidInput(f"expected a WorkerInfo, got {type(worker).__name__}")
    check_worker_id(worker.id)
    if worker.queues:
        validate_queues(worker.queues)
    if not isinstance(worker.host, str) or len(worker.host) > MAX_HOST_CHARS:
        raise InvalidInput(f"host must be a string of at most {MAX_HOST_CHARS} characters")
    if not is_utf8(worker.host):
        raise InvalidInput(f"host {worker.host!r} is not valid UTF-8 text")
    for field in ("pid", "concurrency"):
        value = getattr(worker, field)
        if not is_int_in(value, 0, INT32_RANGE.stop - 1):
            raise InvalidInput(f"{field} must be an int in [0, 2**31 - 1], not {value!r}")
    if worker.started_at is not None:
        check_run_at(worker.started_at, what="started_at")
    return worker


# -- times --------------------------------------------------------------------


def check_run_at(when: object, *, what: str = "run_at", now: datetime | None = None) -> datetime:
    """Return ``when`` if it is aware and in ``[MIN_RUN_AT, now + MAX_DELAY_S]``.

    ``now`` defaults to this process's clock: it only bounds the value (the
    store's clock decides when a job is due), so skew of minutes is harmless.
    """
    if not isinstance(when, datetime) or when.utcoffset() is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime, not {when!r}")
    latest = (now or datetime.now(UTC)) + timedelta(seconds=MAX_DELAY_S)
    if not MIN_RUN_AT <= when <= latest:
        raise InvalidInput(
            f"{what} {when.isoformat()} is out of range: from 1970-01-01 UTC"
            f" to {MAX_DELAY_S} s from now"
        )
    return when


def validate_lease_seconds(lease_s: float) -> float:
    """A lease length must be seconds in ``(0, MAX_LEASE_S]``."""
    if not (is_seconds(lease_s) and 0 < lease_s <= MAX_LEASE_S):
        raise InvalidInput(f"lease_s must be seconds in (0, {MAX_LEASE_S}], not {lease_s!r}")
    return float(lease_s)


# -- JSON ---------------------------------------------------------------------


def encode_json(value: JSONValue, *, what: str = "payload", limit: int | None = None) -> str:
    """Encode ``value`` as compact JSON text, refusing what JSON cannot carry.

    NaN and infinities are refused (they are not JSON); so are non-string
    mapping keys, which ``json`` would silently turn into strings, nesting
    deeper than MAX_JSON_DEPTH, and text that is not valid UTF-8 (a lone
    surrogate). ``limit`` bounds the UTF-8 size in bytes.
    """
    return encode_json_sized(value, what, limit)[0]


def encode_json_sized(value: JSONValue, what: str, limit: int | None) -> tuple[str, int]:
    """:func:`encode_json`, and the size of the text in UTF-8 bytes."""
    if value is None and (limit is None or limit >= 4):
        # A no-op task's result: the common case, per job.
        return "null", 4
    _check_json(value, what, 0)
    try:
        text = _encode_checked(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(f"{what} is not JSON: {exc}") from None
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode())
        except UnicodeEncodeError:
            raise InvalidPayload(
                f"{what} holds text that is not valid UTF-8 (a lone surrogate)"
            ) from None
    if limit is not None and size > limit:
        raise InvalidPayload(f"{what} is {size} bytes as JSON; the limit is {limit}")
    return text, size


def decode_json(text: str | bytes | None) -> JSONValue:
    """Decode JSON text written by :func:`encode_json` (``None`` stays ``None``).

    Raises :class:`InvalidPayload` for text that is not JSON or that nests
    too deeply to parse. Depth is not bounded here, only when writing, so
    that data stored before a bound existed stays readable.
    """
    if text is None:
        return None
    try:
        return json.loads(text)  # type: ignore[no-any-return]
    except RecursionError:
        raise InvalidPayload("stored JSON is nested too deeply to decode") from None
    except ValueError as exc:
        raise InvalidPayload(f"stored text is not JSON: {exc}") from None


# Exact types that need no check at all (subclasses take the isinstance path).
_PLAIN = frozenset({type(None), bool, int, str})


def _check_json(value: object, what: str, depth: int) -> None:
    # json.dumps accepts tuples and str-coerces int keys; refuse both so that
    # what a consumer reads back is exactly what the producer sent.
    if type(value) in _PLAIN or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(f"{what} contains {value!r}, which JSON cannot carry")
        return
    if isinstance(value, (list, dict)) and depth >= MAX_JSON_DEPTH:
        raise InvalidPayload(f"{what} is nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    # Plain scalar items are skipped here, not in a call each: a job's
    # payload, result and event data are mostly flat, and checked per job.
    if isinstance(value, list):
        for item in value:
            if type(item) not in _PLAIN:
                _check_json(item, what, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPayload(f"{what} has a non-string key {key!r}")
            if type(item) not in _PLAIN:
                _check_json(item, what, depth + 1)
        return
    raise InvalidPayload(f"{what} contains a {type(value).__name__}, which is not JSON")


# -- calls --------------------------------------------------------------------


def validate_event(event: EventSpec | None, *, limit: int) -> EventSpec | None:
    """Check an outbox event's type and data before a transition is attempted."""
    if event is None:
        return None
    encode_event(event, limit)
    return event


def encode_event(event: object, limit: int) -> tuple[str, int]:
    """Check an event; its data as JSON text, and that text's size in UTF-8 bytes."""
    if not isinstance(event, EventSpec):
        raise InvalidInput(f"event must be an EventSpec, not {type(event).__name__}")
    if not isinstance(event.type, str) or not EVENT_TYPE_PATTERN.fullmatch(event.type):
        raise InvalidInput(
            f"invalid event type {event.type!r}: must match {EVENT_TYPE_PATTERN.pattern}"
        )
    return encode_json_sized(event.data, "event data", limit)


def validate_new_jobs(jobs: Sequence[NewJob], *, limit: int) -> list[str]:
    """Check one enqueue call's batch; return each payload encoded as JSON text.

    Raises before anything is written: an invalid job anywhere in the batch
    fails the whole call. The count (MAX_BATCH) is checked before any job is
    looked at, the total size (MAX_CALL_BYTES) as the payloads are encoded.
    """
    if isinstance(jobs, NewJob):
        raise InvalidInput("enqueue takes a sequence of NewJob; wrap a single job in a list")
    if len(jobs) > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} jobs per enqueue call, not {len(jobs)}")
    encoded, _ = _check_new_jobs(jobs, limit, MAX_CALL_BYTES)
    return encoded


def split_new_jobs(jobs: Sequence[NewJob], *, limit: int) -> list[tuple[list[NewJob], list[str]]]:
    """Check every job of any number, then cut them into calls within the bounds.

    Each returned chunk holds at most MAX_BATCH jobs, with their payloads
    encoded, of at most MAX_CALL_BYTES, keeping the jobs' order. Ids are
    unique across all the chunks.
    """
    if isinstance(jobs, NewJob):
        raise InvalidInput("enqueue takes a sequence of NewJob; wrap a single job in a list")
    encoded, sizes = _check_new_jobs(jobs, limit, None)
    chunks: list[tuple[list[NewJob], list[str]]] = []
    chunk: list[NewJob] = []
    texts: list[str] = []
    total = 0
    for job, text, size in zip(jobs, encoded, sizes, strict=True):
        if chunk and (len(chunk) == MAX_BATCH or total + size > MAX_CALL_BYTES):
            chunks.append((chunk, texts))
            chunk, texts, total = [], [], 0
        chunk.append(job)
        texts.append(text)
        total += size
    if chunk:
        chunks.append((chunk, texts))
    return chunks


def _check_new_jobs(
    jobs: Sequence[NewJob], limit: int, max_bytes: int | None
) -> tuple[list[str], list[int]]:
    encoded: list[str] = []
    sizes: list[int] = []
    seen: set[str] = set()
    total = 0
    now: datetime | None = None
    for job in jobs:
        if not isinstance(job, NewJob):
            raise InvalidInput(f"expected NewJob, got {type(job).__name__}")
        validate_queue(job.queue)
        check_job_id(job.id)
        if job.id in seen:
            raise DuplicateJob(f"job id {job.id!r} appears twice in one batch")
        seen.add(job.id)
        if not is_int_in(job.priority, PRIORITY_RANGE.start, PRIORITY_RANGE.stop - 1):
            raise InvalidInput(f"priority must be a 32-bit int, not {job.priority!r}")
        if not is_int_in(job.max_attempts, 1, MAX_ATTEMPTS):
            raise InvalidInput(
                f"max_attempts must be an int in [1, {MAX_ATTEMPTS}], not {job.max_attempts!r}"
            )
        if job.run_at is not None:
            if job.delay is not None:
                raise InvalidInput("give run_at or delay, not both")
            # One reading of the clock per batch bounds all its run_at values.
            now = now or datetime.now(UTC)
            check_run_at(job.run_at, now=now)
        elif job.delay is not None and not is_seconds(job.delay):
            raise InvalidInput(f"delay must be seconds in [0, {MAX_DELAY_S}], not {job.delay!r}")
        if job.dedupe_key is not None and not _is_text(job.dedupe_key, MAX_DEDUPE_KEY_CHARS):
            raise InvalidInput(
                f"dedupe_key must be a string of 1 to {MAX_DEDUPE_KEY_CHARS} characters"
            )
        _check_flow(job)
        text, size = encode_json_sized(job.payload, "payload", limit)
        total += size
        if max_bytes is not None and total > max_bytes:
            raise InvalidPayload(
                f"the payloads of one call exceed {max_bytes} bytes (MAX_CALL_BYTES);"
                " split the batch"
            )
        encoded.append(text)
        sizes.append(size)
    return encoded, sizes


def check_schedule_name(name: object) -> str:
    """Return ``name`` if it matches SCHEDULE_NAME_PATTERN."""
    if not (isinstance(name, str) and SCHEDULE_NAME_PATTERN.fullmatch(name)):
        raise InvalidName(
            f"invalid schedule name {name!r}: up to 40 of A-Z a-z 0-9 _ . : -, "
            "starting with a letter or digit"
        )
    return name


def check_schedule(schedule: object) -> Schedule:
    """Return ``schedule`` if its name, spec, zone, queue and task are well-formed text."""
    if not isinstance(schedule, Schedule):
        raise InvalidInput(f"expected a qw.Schedule, got {type(schedule).__name__}")
    check_schedule_name(schedule.name)
    for what in ("spec", "tz", "task"):
        value = getattr(schedule, what)
        if not (_is_text(value, MAX_SCHEDULE_SPEC_CHARS) and value.isprintable()):
            raise InvalidInput(
                f"schedule {what} must be printable text of 1 to "
                f"{MAX_SCHEDULE_SPEC_CHARS} characters, not {value!r}"
            )
    validate_queue(schedule.queue)
    if schedule.last_tick is not None:
        check_run_at(schedule.last_tick, what="last_tick")
    return schedule


def check_limit_key(key: object) -> str:
    """Return ``key`` if it is printable text of 1 to MAX_LIMIT_KEY_CHARS characters."""
    if not (_is_text(key, MAX_LIMIT_KEY_CHARS) and str(key).isprintable()):
        raise InvalidInput(
            f"a limit key must be printable text of 1 to {MAX_LIMIT_KEY_CHARS} characters,"
            f" not {key!r}"
        )
    return str(key)


def check_progress(fraction: object, message: object) -> tuple[float | None, str | None]:
    """``(fraction, message)`` if the fraction is a number in [0, 1] and the message short text.

    At least one of them is given; the fraction comes back as a float.
    """
    if fraction is None and message is None:
        raise InvalidInput("progress needs a fraction, a message, or both")
    if fraction is not None:
        if not (isinstance(fraction, int | float) and not isinstance(fraction, bool)):
            raise InvalidInput(f"a progress fraction is a number in [0, 1], not {fraction!r}")
        if not 0.0 <= fraction <= 1.0:  # NaN fails this too
            raise InvalidInput(f"a progress fraction is a number in [0, 1], not {fraction!r}")
    if message is not None and not (
        isinstance(message, str) and len(message) <= MAX_PROGRESS_MESSAGE_CHARS and is_utf8(message)
    ):
        raise InvalidInput(
            f"a progress message is text of at most {MAX_PROGRESS_MESSAGE_CHARS} characters,"
            f" not {message!r:.80}"
        )
    return (None if fraction is None else float(fraction)), message


def check_limit(limit: object) -> Limit:
    """Return ``limit`` if its fields are in range, with ``rate`` and ``per`` together."""
    if not isinstance(limit, Limit):
        raise InvalidInput(f"expected a qw.Limit, got {type(limit).__name__}")
    c, rate, per = limit.concurrency, limit.rate, limit.per
    if c is not None and not is_int_in(c, 0, MAX_CONCURRENCY_LIMIT):
        raise InvalidInput(f"concurrency must be an int in [0, {MAX_CONCURRENCY_LIMIT}], not {c!r}")
    if (rate is None) != (per is None):
        raise InvalidInput("a rate limit needs both rate (starts) and per (seconds)")
    if rate is not None and not is_int_in(rate, 1, MAX_CONCURRENCY_LIMIT):
        raise InvalidInput(f"rate must be an int in [1, {MAX_CONCURRENCY_LIMIT}], not {rate!r}")
    if per is not None and not (is_seconds(per) and per > 0):
        raise InvalidInput(f"per must be seconds in (0, {MAX_SECONDS}], not {per!r}")
    return limit


def _check_flow(job: NewJob) -> None:
    if job.limit_key is None:
        if job.limit is not None or job.fair:
            raise InvalidInput(f"job {job.id!r}: a limit or fair claiming needs a limit_key")
        return
    check_limit_key(job.limit_key)
    if job.limit is not None:
        check_limit(job.limit)
    if not isinstance(job.fair, bool):
        raise InvalidInput(f"fair must be a bool, not {job.fair!r}")


def validate_workflow_id(workflow_id: object) -> str:
    """Return ``workflow_id`` if it matches STEP_ID_PATTERN within MAX_WORKFLOW_ID_CHARS."""
    if not (
        isinstance(workflow_id, str)
        and len(workflow_id) <= MAX_WORKFLOW_ID_CHARS
        and STEP_ID_PATTERN.fullmatch(workflow_id)
    ):
        raise InvalidWorkflow(
            f"invalid workflow id {workflow_id!r}: 1 to {MAX_WORKFLOW_ID_CHARS} characters "
            "of letters, digits and _.:- (starting with a letter or digit)"
        )
    return workflow_id


def validate_workflow_steps(
    steps: Sequence[NewJob], *, limit: int, outside: frozenset[str] = frozenset()
) -> list[str]:
    """Check the steps of one create or add call; return their payloads as JSON text.

    Each step is checked as a job (see :func:`validate_new_jobs`), and its
    id must match STEP_ID_PATTERN. Parents must be steps of the call, or in
    ``outside`` (the running step that adds them); the parents of the call
    must form no cycle. Raises :class:`~qw.errors.InvalidWorkflow` (or the
    job's own error) before anything is written.
    """
    if isinstance(steps, NewJob):
        raise InvalidInput("a workflow takes a sequence of steps (NewJob)")
    if not steps:
        raise InvalidWorkflow("a workflow needs at least one step")
    if len(steps) > MAX_WORKFLOW_STEPS:
        raise InvalidWorkflow(
            f"at most {MAX_WORKFLOW_STEPS} steps per workflow call (MAX_WORKFLOW_STEPS), "
            f"not {len(steps)}"
        )
    encoded, _ = _check_new_jobs(steps, limit, MAX_CALL_BYTES)
    ids = {step.id for step in steps}
    for step in steps:
        if not STEP_ID_PATTERN.fullmatch(step.id):
            raise InvalidWorkflow(f"step id {step.id!r} does not match {STEP_ID_PATTERN.pattern}")
        if not isinstance(step.on_parent_failure, ParentFailure):
            raise InvalidWorkflow(
                f"on_parent_failure is a qw.ParentFailure, not {step.on_parent_failure!r}"
            )
        parents = step.parents
        if not isinstance(parents, tuple) or len(set(parents)) != len(parents):
            raise InvalidWorkflow(f"step {step.id!r}: parents must be a tuple of distinct ids")
        for parent in parents:
            if parent not in ids and parent not in outside:
                raise InvalidWorkflow(
                    f"step {step.id!r} has unknown parent {parent!r}: a parent must be a "
                    "step of the same workflow call"
                )
    _refuse_cycles(steps)
    return encoded


def _refuse_cycles(steps: Sequence[NewJob]) -> None:
    # Kahn's algorithm over the call's own edges: what it cannot order is a cycle.
    children: dict[str, list[str]] = {step.id: [] for step in steps}
    pending = {step.id: 0 for step in steps}
    for step in steps:
        for parent in step.parents:
            if parent in children:
                children[parent].append(step.id)
                pending[step.id] += 1
    ready = [i for i, n in pending.items() if n == 0]
    ordered = 0
    while ready:
        ordered += 1
        for child in children[ready.pop()]:
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
    if ordered < len(steps):
        stuck = sorted(i for i, n in pending.items() if n)[:5]
        raise InvalidWorkflow(f"the steps' parents form a cycle (through {', '.join(stuck)})")


def validate_event_cursors(cursors: Iterable[int]) -> list[int]:
    """Check one ack_events call: at most MAX_BATCH ints in EVENT_CURSOR_RANGE."""
    if isinstance(cursors, (str, bytes)):
        raise InvalidInput("cursors must be a collection of ints, not a string")
    values = list(cursors)
    if len(values) > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} cursors per ack_events call, not {len(values)}")
    low, high = EVENT_CURSOR_RANGE.start, EVENT_CURSOR_RANGE.stop - 1
    for cursor in values:
        if not is_int_in(cursor, low, high):
            raise InvalidInput(f"event cursors are ints in [1, 2**63 - 1], not {cursor!r}")
    return values
