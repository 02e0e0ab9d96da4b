"""Names, JSON and job checks that run before any I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from qw.errors import DuplicateJob, InvalidInput, InvalidName, InvalidPayload
from qw.model import EventSpec, NewJob
from qw.validation import (
    MAX_DEDUPE_KEY_CHARS,
    decode_json,
    encode_json,
    validate_event,
    validate_lease_seconds,
    validate_namespace,
    validate_new_jobs,
    validate_queue,
    validate_queues,
)

INJECTION_LOOKING = [
    "x'; DROP TABLE qw_jobs;--",
    'x"; DROP TABLE qw_jobs;--',
    "x OR 1=1",
    "ns:*",
    "ns:{jobs}",
    "{ns}",
    "a\nb",
    "a\x00b",
    "../etc",
    "a/b",
    "a\\b",
    "$where",
    "a b",
    "a;b",
    "a%b",
    "ns\u0131",  # dotless i: not ASCII
    "\uff4e\uff53",  # full-width letters
]


@pytest.mark.parametrize("name", ["a", "0", "tenant-1", "a_b", "x" * 63, "9abc"])
def test_valid_namespaces(name: str) -> None:
    assert validate_namespace(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A",
        "Tenant",
        "-a",
        "_a",
        "a.b",
        "x" * 64,
        "a\n",
        "\na",
        " a",
        *INJECTION_LOOKING,
        None,
        1,
        b"abc",
        ["a"],
    ],
)
def test_invalid_namespaces(name: object) -> None:
    with pytest.raises(InvalidName):
        validate_namespace(name)


@pytest.mark.parametrize("name", ["emails", "Emails.v2", "q_1-x", "0", "x" * 128, "a.b.c"])
def test_valid_queue_names(name: str) -> None:
    assert validate_queue(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".a", "-a", "_a", "x" * 129, "a*", "a{b}", "a\n", *INJECTION_LOOKING, None, 3],
)
def test_invalid_queue_names(name: object) -> None:
    with pytest.raises(InvalidName):
        validate_queue(name)


def test_invalid_name_is_invalid_input_and_value_error() -> None:
    with pytest.raises(InvalidInput):
        validate_queue("a b")
    with pytest.raises(ValueError, match="invalid queue name"):
        validate_queue("a b")


def test_validate_queues_dedupes_in_order() -> None:
    assert validate_queues(["b", "a", "b"]) == ("b", "a")


@pytest.mark.parametrize("bad", ["emails", [], ()])
def test_validate_queues_refuses_a_string_or_nothing(bad: object) -> None:
    with pytest.raises(InvalidInput):
        validate_queues(bad)  # type: ignore[arg-type]


def test_validate_queues_checks_every_name() -> None:
    with pytest.raises(InvalidName):
        validate_queues(["ok", "not ok"])


# -- JSON --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**70),
        1.5,
        "",
        "héllo ✓",
        [],
        {},
        {"a": [1, {"b": None}], "c": "d"},
        [[[[["deep"]]]]],
    ],
)
def test_json_round_trip(value: object) -> None:
    text = encode_json(value)  # type: ignore[arg-type]
    assert decode_json(text) == value
    assert decode_json(text.encode()) == value
    assert json.loads(text) == value


def test_encode_json_is_compact_and_keeps_unicode() -> None:
    assert encode_json({"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'


def test_decode_json_none_stays_none() -> None:
    assert decode_json(None) is None


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        {"x": [float("nan")]},
        {1: "int key"},
        {None: "none key"},
        {("a",): 1},
        (1, 2),
        {"t": (1,)},
        {1, 2},
        b"bytes",
        datetime(2026, 1, 1, tzinfo=UTC),
        object(),
        {"nested": {"bad": object()}},
    ],
)
def test_encode_json_refuses_what_json_cannot_carry(value: object) -> None:
    with pytest.raises(InvalidPayload):
        encode_json(value)  # type: ignore[arg-type]


def test_encode_json_refuses_too_deep_nesting() -> None:
    value: list[object] = []
    for _ in range(300):
        value = [value]
    with pytest.raises(InvalidPayload, match="nested too deeply"):
        encode_json(value)  # type: ignore[arg-type]


def test_encode_json_limit_counts_utf8_bytes() -> None:
    assert encode_json("é" * 4, limit=10) == '"éééé"'  # 2 quotes + 8 bytes
    with pytest.raises(InvalidPayload, match="11 bytes"):
        encode_json("é" * 4 + "x", limit=10)


def test_encode_json_names_what_it_checked() -> None:
    with pytest.raises(InvalidPayload, match=r"^result "):
        encode_json(float("nan"), what="result")


def test_invalid_payload_is_invalid_input() -> None:
    assert issubclass(InvalidPayload, InvalidInput)


# -- jobs, events, leases ----------------------------------------------------


def test_validate_new_jobs_returns_encoded_payloads() -> None:
    jobs = [NewJob("q", {"a": 1}, id="1"), NewJob("q", None, id="2")]
    assert validate_new_jobs(jobs, limit=100) == ['{"a":1}', "null"]


@pytest.mark.parametrize(
    "job",
    [
        NewJob("bad queue"),
        NewJob("q", id=""),
        NewJob("q", id="x" * 65),
        NewJob("q", priority=True),
        NewJob("q", priority=2**31),
        NewJob("q", priority=-(2**31) - 1),
        NewJob("q", priority=1.0),  # type: ignore[arg-type]
        NewJob("q", max_attempts=0),
        NewJob("q", max_attempts=True),
        NewJob("q", run_at=datetime(2026, 1, 1)),
        NewJob("q", run_at=datetime(2026, 1, 1, tzinfo=UTC), delay=1),
        NewJob("q", delay=-1),
        NewJob("q", delay=float("nan")),
        NewJob("q", delay=float("inf")),
        NewJob("q", delay=True),
        NewJob("q", dedupe_key=""),
        NewJob("q", dedupe_key="k" * (MAX_DEDUPE_KEY_CHARS + 1)),
        NewJob("q", payload=float("nan")),
        NewJob("q", payload="x" * 200),
    ],
)
def test_validate_new_jobs_refuses_bad_jobs(job: NewJob) -> None:
    with pytest.raises(InvalidInput):
        validate_new_jobs([NewJob("q"), job], limit=100)


def test_priority_limits_are_inclusive() -> None:
    jobs = [NewJob("q", priority=2**31 - 1), NewJob("q", priority=-(2**31))]
    assert len(validate_new_jobs(jobs, limit=100)) == 2


def test_a_repeated_id_in_one_batch_is_a_duplicate() -> None:
    with pytest.raises(DuplicateJob):
        validate_new_jobs([NewJob("q", id="same"), NewJob("q", id="same")], limit=100)


def test_a_single_new_job_must_be_wrapped() -> None:
    with pytest.raises(InvalidInput, match="wrap a single job"):
        validate_new_jobs(NewJob("q"), limit=100)  # type: ignore[arg-type]


def test_anything_but_new_jobs_is_refused() -> None:
    with pytest.raises(InvalidInput, match="expected NewJob"):
        validate_new_jobs([{"queue": "q"}], limit=100)  # type: ignore[list-item]


def test_validate_event() -> None:
    assert validate_event(None, limit=10) is None
    event = EventSpec("order.paid", {"id": 1})
    assert validate_event(event, limit=100) is event
    for bad_type in ["", "has space", ".x", "x" * 129, "a'b"]:
        with pytest.raises(InvalidInput):
            validate_event(EventSpec(bad_type), limit=100)
    with pytest.raises(InvalidPayload):
        validate_event(EventSpec("ok", {"x": float("nan")}), limit=100)
    with pytest.raises(InvalidPayload):
        validate_event(EventSpec("ok", "x" * 200), limit=100)
    with pytest.raises(InvalidInput):
        validate_event(("ok", None), limit=100)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", [0.001, 1, 30.0, 86_400])
def test_lease_seconds_accepted(good: float) -> None:
    assert validate_lease_seconds(good) == float(good)
    assert isinstance(validate_lease_seconds(good), float)


@pytest.mark.parametrize("bad", [0, -1, 86_400.5, float("nan"), float("inf"), True, "30", None])
def test_lease_seconds_refused(bad: object) -> None:
    with pytest.raises(InvalidInput):
        validate_lease_seconds(bad)  # type: ignore[arg-type]
