"""The flow-control rules of qw.limits and qw.taskflow, and the client's checks, on their own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import qw
from qw.backends.memory import MemoryBackend
from qw.capabilities import Capabilities
from qw.limits import Candidate, effective_limit, fair_rank, in_window, key_state, plan_claim
from qw.model import Limit, NewJob, Schedule
from qw.taskflow import TaskFlow, parse_rate

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _plan(
    cands: list[Candidate],
    *,
    running: dict[str, int] | None = None,
    starts: dict[str, list[datetime]] | None = None,
    overrides: dict[str, Limit] | None = None,
    limit: int = 10,
) -> list[int]:
    return plan_claim(
        cands,
        running=running or {},
        starts=starts or {},
        overrides=overrides or {},
        now=NOW,
        limit=limit,
    )


def test_unkeyed_jobs_are_taken_in_order_up_to_the_limit() -> None:
    assert _plan([Candidate(None, None)] * 5, limit=3) == [0, 1, 2]


def test_concurrency_counts_running_and_what_this_claim_takes() -> None:
    two = Limit(concurrency=2)
    cands = [Candidate("a", two), Candidate("a", two), Candidate("b", two), Candidate("a", two)]
    assert _plan(cands) == [0, 1, 2]
    assert _plan(cands, running={"a": 1}) == [0, 2]
    assert _plan(cands, running={"a": 2, "b": 2}) == []


def test_a_held_back_job_never_stops_the_ones_after_it() -> None:
    cands = [Candidate("a", Limit(concurrency=0))] * 100 + [Candidate(None, None)]
    assert _plan(cands) == [100]


def test_rate_counts_starts_inside_the_window_only() -> None:
    rate = Limit(rate=2, per=10.0)
    cands = [Candidate("a", rate)] * 3
    inside, edge = NOW - timedelta(seconds=5), NOW - timedelta(seconds=10)
    assert _plan(cands) == [0, 1]
    assert _plan(cands, starts={"a": [inside]}) == [0]
    # Exactly ``per`` seconds ago is outside the window (it is open at its old end).
    assert _plan(cands, starts={"a": [edge, edge]}) == [0, 1]
    assert in_window([inside, edge], NOW, 10.0) == 1


def test_the_operators_limit_replaces_the_jobs_own() -> None:
    cands = [Candidate("a", Limit(concurrency=1))] * 3
    assert _plan(cands, overrides={"a": Limit(concurrency=3)}) == [0, 1, 2]
    assert _plan(cands, overrides={"a": Limit()}) == [0, 1, 2]
    assert _plan(cands, overrides={"b": Limit(concurrency=0)}) == [0]
    assert effective_limit(None, Limit(concurrency=1), {}) is None


def test_fair_rank_starts_an_idle_key_at_the_queues_clock() -> None:
    assert fair_rank(0, 0) == 0
    assert fair_rank(5, 2) == 5
    assert fair_rank(1, 40) == 40


def test_key_state_reports_throttling() -> None:
    full = key_state(
        "a", queued=3, running=2, own=Limit(concurrency=2), overrides={}, starts=[], now=NOW
    )
    assert full.throttled
    assert not full.overridden
    free = key_state(
        "a", queued=3, running=1, own=Limit(concurrency=2), overrides={}, starts=[], now=NOW
    )
    assert not free.throttled
    rated = key_state(
        "a",
        queued=1,
        running=0,
        own=None,
        overrides={"a": Limit(rate=1, per=60.0)},
        starts=[NOW - timedelta(seconds=1)],
        now=NOW,
    )
    assert (rated.started, rated.throttled, rated.overridden) == (1, True, True)
    assert not key_state(
        "a", queued=0, running=9, own=Limit(concurrency=1), overrides={}, starts=[], now=NOW
    ).throttled


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/min", (10, 60.0)),
        ("3/s", (3, 1.0)),
        ("100/h", (100, 3600.0)),
        ("5/30s", (5, 30.0)),
        ("1 / d", (1, 86400.0)),
    ],
)
def test_parse_rate(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("bad", ["10/week", "ten/min", "10", "/min", 10])
def test_parse_rate_refuses_what_it_cannot_read(bad: object) -> None:
    with pytest.raises(qw.InvalidInput):
        parse_rate(bad)  # type: ignore[arg-type]


def _send(user_id: int, region: str = "eu") -> None: ...


def test_a_key_template_is_filled_from_the_calls_arguments_and_defaults() -> None:
    flow = TaskFlow.declare(
        _send, limit_key="user:{user_id}:{region}", concurrency=2, rate=None, fair=True
    )
    assert flow is not None
    assert flow.limit == Limit(concurrency=2)
    assert flow.key_for(_send, (42,), {}) == "user:42:eu"
    assert flow.key_for(_send, (), {"user_id": 7, "region": "us"}) == "user:7:us"
    by_fn = TaskFlow.declare(
        _send,
        limit_key=lambda user_id, **_: f"u{user_id}",
        concurrency=None,
        rate="1/s",
        fair=False,
    )
    assert by_fn is not None
    assert by_fn.key_for(_send, (3,), {}) == "u3"
    assert by_fn.limit == Limit(rate=1, per=1.0)


@pytest.mark.parametrize(
    "declaration",
    [
        {"limit_key": "user:{nobody}"},
        {"limit_key": "user:{0}"},
        {"limit_key": "user:{"},
        {"limit_key": None, "concurrency": 1},
        {"limit_key": None, "fair": True},
        {"limit_key": "k", "concurrency": -1},
        {"limit_key": "k", "concurrency": True},
        {"limit_key": "k", "rate": (0, 1.0)},
        {"limit_key": "k", "rate": (1, 0)},
        {"limit_key": 5},
        {"limit_key": "k", "fair": "yes"},
    ],
)
def test_a_bad_declaration_is_refused_at_registration(declaration: dict[str, object]) -> None:
    args: dict[str, object] = {"limit_key": None, "concurrency": None, "rate": None, "fair": False}
    args.update(declaration)
    with pytest.raises(qw.InvalidInput):
        TaskFlow.declare(_send, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "job",
    [
        NewJob("q", limit=Limit(concurrency=1)),
        NewJob("q", fair=True),
        NewJob("q", limit_key=""),
        NewJob("q", limit_key="x" * 201),
        NewJob("q", limit_key="bell\x07"),
        NewJob("q", limit_key="k", limit=Limit(rate=5)),
        NewJob("q", limit_key="k", limit=Limit(per=5.0)),
        NewJob("q", limit_key="k", limit=Limit(concurrency=1.5)),  # type: ignore[arg-type]
        NewJob("q", limit_key="k", limit=Limit(rate=1, per=float("inf"))),
    ],
)
def test_the_client_refuses_bad_flow_fields_before_any_write(job: NewJob) -> None:
    with qw.open("memory://limit-rules", namespace="bad") as client:
        with pytest.raises(qw.InvalidInput):
            client.enqueue([NewJob("q", "fine"), job])
        assert client.list_jobs() == []


class _NoLimits(MemoryBackend):
    capabilities = Capabilities(limits=False, schedules=False)


def test_a_backend_without_the_capability_refuses_keyed_jobs_and_schedules() -> None:
    client = qw.Client(_NoLimits("nolimits", namespace="n"))
    with pytest.raises(qw.Unsupported, match="limits"):
        client.enqueue([NewJob("q", limit_key="k")])
    with pytest.raises(qw.Unsupported, match="limits"):
        client.set_limit("k", Limit(concurrency=1))
    with pytest.raises(qw.Unsupported, match="schedules"):
        client.save_schedule(Schedule("s", "* * * * *", "UTC", "q", "t"))
    assert client.list_jobs() == []
    client.enqueue([NewJob("q")])  # plain jobs still work
