"""The App's side of the bounds: all jobs checked before any write, task payloads well-formed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

import qw
from qw.app import task_payload
from qw.errors import DuplicateJob, InvalidInput, InvalidPayload
from qw.model import JSONValue, NewJob
from qw.payload import decode_task_payload
from qw.validation import MAX_ATTEMPTS, MAX_BATCH, MAX_CALL_BYTES


@pytest.fixture
def app(memory_url: str) -> Iterator[qw.App]:
    with qw.App(memory_url, namespace="bounds") as app:
        yield app


def stored(app: qw.App) -> int:
    return sum(sum(by_status.values()) for by_status in app.client.counts().values())


def test_enqueue_many_checks_every_job_before_writing_any(app: qw.App) -> None:
    good = [NewJob("q", i) for i in range(2 * MAX_BATCH + 5000)]
    with pytest.raises(InvalidPayload):
        app.enqueue_many([*good, NewJob("q", float("nan"))])
    assert stored(app) == 0


def test_enqueue_many_refuses_an_id_repeated_across_chunks(app: qw.App) -> None:
    jobs = [NewJob("q", i, id=f"j{i}") for i in range(MAX_BATCH + 1)]
    with pytest.raises(DuplicateJob):
        app.enqueue_many([*jobs, NewJob("q", id="j0")])
    assert stored(app) == 0


def test_enqueue_many_writes_large_batches_in_order(app: qw.App) -> None:
    jobs = [NewJob("q", i) for i in range(MAX_BATCH + 7)]
    answers = app.enqueue_many(iter(jobs))
    assert [a.id for a in answers] == [j.id for j in jobs]
    assert stored(app) == len(jobs)


def test_enqueue_many_splits_by_bytes_as_well_as_count(app: qw.App) -> None:
    limit = app.client.capabilities.max_payload_bytes
    full = "x" * (limit - 2)
    count = MAX_CALL_BYTES // limit + 3  # too many bytes for one call, few jobs
    answers = app.enqueue_many(NewJob("q", full) for _ in range(count))
    assert len(answers) == count
    assert stored(app) == count


def test_enqueue_many_of_nothing(app: qw.App) -> None:
    assert app.enqueue_many([]) == []


# -- task payloads ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [
        ("t.greet", "bob", None),
        ("t.greet", b"bob", None),
        ("t.greet", bytearray(b"bob"), None),
        ("t.greet", {"who": "bob"}, None),
        ("t.greet", 7, None),
        ("t.greet", (), ["bob"]),
        ("t.greet", (), [("who", "bob")]),
        ("t.greet", (), "who"),
        ("t.greet", (), []),
        ("t.greet", (), {1: "bob"}),
        ("", (), None),
        (None, (), None),
    ],
    ids=repr,
)
def test_task_payload_refuses_a_malformed_call(name: Any, args: Any, kwargs: Any) -> None:
    with pytest.raises(InvalidPayload):
        task_payload(name, args, kwargs)


def test_task_payload_builds_what_the_worker_reads() -> None:
    payload = task_payload("t.greet", ["bob"], {"loud": True})
    assert payload == {"task": "t.greet", "args": ["bob"], "kwargs": {"loud": True}}
    invocation = decode_task_payload(payload)
    assert (invocation.name, invocation.args, invocation.kwargs) == (
        "t.greet",
        ["bob"],
        {"loud": True},
    )
    assert task_payload("t.x") == {"task": "t.x", "args": [], "kwargs": {}}


class Pairs(Mapping[str, JSONValue]):
    """A mapping that is not a dict: kwargs may be any Mapping."""

    def __getitem__(self, key: str) -> JSONValue:
        return {"a": 1}[key]

    def __iter__(self) -> Iterator[str]:
        return iter(["a"])

    def __len__(self) -> int:
        return 1


def test_task_payload_takes_any_sequence_and_mapping() -> None:
    args: Sequence[JSONValue] = (1, 2)
    assert task_payload("t", args, Pairs()) == {"task": "t", "args": [1, 2], "kwargs": {"a": 1}}


@pytest.mark.parametrize(
    "payload",
    [
        {"task": "t.greet", "args": "bob"},
        {"task": "t.greet", "kwargs": ["bob"]},
        {"task": "", "args": []},
        {"args": []},
        ["t.greet"],
    ],
    ids=repr,
)
def test_decode_task_payload_refuses_a_malformed_payload(payload: JSONValue) -> None:
    with pytest.raises(InvalidPayload):
        decode_task_payload(payload)


def test_a_task_call_with_non_json_arguments_writes_nothing(app: qw.App) -> None:
    @app.task(queue="q")
    def greet(who: object) -> None: ...

    with pytest.raises(InvalidPayload):
        greet.enqueue({1, 2})
    with pytest.raises(InvalidPayload):
        greet.options(delay=1).enqueue(who=float("nan"))
    assert stored(app) == 0


# -- task defaults ------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": MAX_ATTEMPTS + 1},
        {"max_attempts": 2**63},
        {"priority": 2**31},
        {"priority": 1.5},
        {"timeout": float("inf")},
        {"timeout": 10**400},
        {"timeout": 0},
        {"name": 7},
    ],
    ids=repr,
)
def test_task_defaults_are_bounded_at_registration(app: qw.App, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        app.task(**options)


def test_task_options_are_bounded_at_enqueue(app: qw.App) -> None:
    @app.task(queue="q", max_attempts=MAX_ATTEMPTS)
    def work() -> None: ...

    with pytest.raises(InvalidInput):
        work.options(delay=1e12).enqueue()
    with pytest.raises(InvalidInput):
        work.options(max_attempts=MAX_ATTEMPTS + 1).enqueue()
    assert stored(app) == 0
    assert app.client.get(work.enqueue().id).max_attempts == MAX_ATTEMPTS
