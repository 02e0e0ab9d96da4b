"""The bounds of qw.validation: named, total, checked before any I/O and cheap ones first."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal

import pytest
from unit_helpers import assert_refused

import qw
import qw.client
import qw.validation
from qw.errors import InvalidInput, InvalidPayload
from qw.model import JSONValue, NewJob
from qw.validation import (
    MAX_BATCH,
    MAX_CALL_BYTES,
    MAX_DELAY_S,
    MAX_JSON_DEPTH,
    MAX_SECONDS,
    decode_json,
    encode_json,
    is_seconds,
    validate_lease_seconds,
)


def nested(depth: int) -> object:
    """``depth`` levels of arrays and objects around a string."""
    value: object = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_the_bounds_have_their_documented_values() -> None:
    assert MAX_DELAY_S == 10 * 365.25 * 86_400 == MAX_SECONDS
    assert (MAX_BATCH, MAX_CALL_BYTES, MAX_JSON_DEPTH) == (10_000, 16 * 2**20, 64)
    assert qw.validation.MAX_ATTEMPTS == 1_000_000
    cursors = qw.validation.EVENT_CURSOR_RANGE
    assert (cursors.start, cursors.stop) == (1, 2**63)
    assert qw.validation.MAX_JOB_ID_CHARS == 64
    # Moved into qw.validation; still importable where it was.
    assert qw.client.MAX_BATCH is MAX_BATCH


# -- seconds -----------------------------------------------------------------


class HostileInt(int):
    def __le__(self, other: object) -> bool:
        raise RuntimeError("no comparisons")

    __ge__ = __le__


@pytest.mark.parametrize(
    "value",
    [10**400, -(10**400), 2**1024, MAX_SECONDS + 1, MAX_SECONDS + 0.5, 1e300, float("inf")],
)
def test_is_seconds_refuses_huge_numbers_without_raising(value: float) -> None:
    assert is_seconds(value) is False


@pytest.mark.parametrize(
    "value", [float("nan"), -1, -0.5, True, False, "1", None, Decimal(1), [1], HostileInt(5)]
)
def test_is_seconds_is_total(value: object) -> None:
    assert is_seconds(value) is False


@pytest.mark.parametrize("value", [0, 0.0, 1, 2.5, MAX_SECONDS, float(MAX_SECONDS)])
def test_is_seconds_accepts_zero_to_max_seconds(value: float) -> None:
    assert is_seconds(value) is True


def test_lease_seconds_refuses_huge_ints_with_a_typed_error() -> None:
    with pytest.raises(InvalidInput):
        validate_lease_seconds(10**400)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.wait(["q"], 10**400),
        lambda c: c.purge(10**400),
        lambda c: c.enqueue_one("q", delay=10**400),
    ],
)
def test_client_seconds_arguments_refuse_huge_ints(client: qw.Client, call: object) -> None:
    assert_refused(client, lambda: call(client))  # type: ignore[operator]


# -- times -------------------------------------------------------------------


class Unknown(tzinfo):
    """A tzinfo that does not know its offset: such a datetime is naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


def test_run_at_with_an_unknown_offset_is_naive(client: qw.Client) -> None:
    when = datetime(2030, 1, 1, tzinfo=Unknown())
    assert_refused(client, lambda: client.enqueue_one("q", run_at=when))


def test_run_at_bound_is_on_this_clock_and_inclusive(client: qw.Client) -> None:
    local = datetime.now(UTC)
    within = local + timedelta(seconds=MAX_DELAY_S - 60)
    beyond = local + timedelta(seconds=MAX_DELAY_S + 60)
    assert_refused(client, lambda: client.enqueue_one("q", run_at=beyond))
    assert client.get(client.enqueue_one("q", run_at=within).id).run_at == within
    # Any offset: the bound compares instants.
    epoch_elsewhere = datetime(1970, 1, 1, 1, tzinfo=qw.validation.MIN_RUN_AT.tzinfo)
    assert client.enqueue_one("q", run_at=epoch_elsewhere).created


# -- JSON --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["x\ud800", "\udfff", ["ok", "x\udc00"], {"k": {"x\ud83d": 1}}, {"a": "é\ud800"}],
    ids=repr,
)
def test_encode_json_refuses_text_without_utf8(value: object) -> None:
    with pytest.raises(InvalidPayload, match="UTF-8"):
        encode_json(value)  # type: ignore[arg-type]


def test_encode_json_keeps_valid_wide_text_and_counts_its_bytes() -> None:
    assert encode_json("\U0001f600") == '"\U0001f600"'
    assert encode_json("\U0001f600" * 2, limit=10) == '"\U0001f600\U0001f600"'  # 2 + 8 bytes
    with pytest.raises(InvalidPayload, match="14 bytes"):
        encode_json("\U0001f600" * 3, limit=13)


def test_json_depth_bound_is_inclusive() -> None:
    assert decode_json(encode_json(nested(MAX_JSON_DEPTH))) == nested(MAX_JSON_DEPTH)  # type: ignore[arg-type]
    for value in (nested(MAX_JSON_DEPTH + 1), [nested(MAX_JSON_DEPTH)]):
        with pytest.raises(InvalidPayload, match="nested too deeply"):
            encode_json(value)  # type: ignore[arg-type]


def test_a_cycle_is_refused_as_too_deep() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(InvalidPayload):
        encode_json(loop)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1"])
def test_decode_json_of_too_deep_text_is_invalid_payload(text: str) -> None:
    with pytest.raises(InvalidPayload):
        decode_json(text)


def test_decode_json_reads_deeper_text_than_it_would_write() -> None:
    # Rows written before the bound existed stay readable.
    assert decode_json("[" * 200 + "]" * 200) is not None


def test_decode_json_of_broken_text_is_invalid_payload() -> None:
    with pytest.raises(InvalidPayload):
        decode_json("{not json")


# -- batch sizes: counted first, bytes while encoding ---------------------------


def test_the_job_count_is_checked_before_any_payload_is_encoded(client: qw.Client) -> None:
    # A NaN first: were the jobs encoded before counting, NaN would be the error.
    jobs = [NewJob("q", float("nan"))] + [NewJob("q", id=f"j{i}") for i in range(MAX_BATCH)]
    with pytest.raises(InvalidInput, match=f"at most {MAX_BATCH} jobs"):
        client.enqueue(jobs)


def test_a_million_jobs_are_refused_at_once(client: qw.Client) -> None:
    payload: JSONValue = {"some": ["payload", 1, 2.5]}
    jobs = [NewJob("q", payload, id=str(i)) for i in range(1_000_000)]
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match="at most"):
        client.enqueue(jobs)
    # Encoding them all took seconds; copying the list takes milliseconds.
    assert time.perf_counter() - started < 0.5


def test_call_bytes_are_checked_as_payloads_are_encoded(client: qw.Client) -> None:
    limit = client.capabilities.max_payload_bytes
    full = "x" * (limit - 2)
    count = MAX_CALL_BYTES // limit
    # Exactly MAX_CALL_BYTES is accepted.
    answers = client.enqueue([NewJob("q", full) for _ in range(count)])
    assert len(answers) == count
    # One byte more is refused, before the NaN further on is looked at.
    over = [NewJob("q", full) for _ in range(count)] + [NewJob("q", 1), NewJob("q", float("nan"))]
    assert_refused(client, lambda: client.enqueue(over), InvalidPayload)
    with pytest.raises(InvalidPayload, match="MAX_CALL_BYTES"):
        client.enqueue(over)


def test_finish_call_bytes_are_bounded(client: qw.Client) -> None:
    limit = client.capabilities.max_payload_bytes
    count = MAX_CALL_BYTES // limit + 1
    client.enqueue([NewJob("q", i) for i in range(count)])
    leases = [c.lease for c in client.claim(["q"], worker="w", limit=count)]
    full = "x" * (limit - 2)
    outcomes = [qw.Complete(lease, full) for lease in leases]
    assert_refused(client, lambda: client.finish(outcomes), InvalidPayload)
    # Events count too: half the bytes in results, half in event data.
    half = "x" * (limit // 2 - 2)
    mixed = [qw.Complete(lease, half, event=qw.EventSpec("e", half)) for lease in leases]
    assert_refused(client, lambda: client.finish(mixed), InvalidPayload)
    assert client.finish(outcomes[:-1]) == [qw.JobStatus.SUCCEEDED] * (count - 1)


def test_renew_and_finish_take_at_most_max_batch(client: qw.Client) -> None:
    client.enqueue_one("q")
    (claim,) = client.claim(["q"], worker="w")
    assert_refused(client, lambda: client.renew_many([claim.lease] * (MAX_BATCH + 1)))
    assert_refused(client, lambda: client.finish([qw.Release(claim.lease)] * (MAX_BATCH + 1)))
    assert_refused(client, lambda: client.ack_events([1] * (MAX_BATCH + 1)))
    assert client.renew_many([claim.lease] * 2)[0] is not None


def test_renew_many_and_finish_take_any_iterable_once(client: qw.Client) -> None:
    client.enqueue_one("q")
    (claim,) = client.claim(["q"], worker="w")
    renewed = client.renew_many(iter([claim.lease]))  # type: ignore[arg-type]
    assert renewed[0] is not None
    assert client.finish(iter([qw.Complete(claim.lease)])) == [qw.JobStatus.SUCCEEDED]  # type: ignore[arg-type]
