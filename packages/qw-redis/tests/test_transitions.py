"""The scripts apply transitions that qw.transitions decided; they decide none.

The contract suite checks the behaviour; this checks the Redis side of the
split: the Lua spells no status, event or reason of its own, the statuses
it needs are generated from :class:`~qw.model.JobStatus`, and the
optimistic enqueue plans again when the live dedupe keys are not what it
planned with. The one rule that runs in Lua, the settle of workflow steps
(it must run inside the write that ends a step), writes exactly what
qw.transitions' plan_settled and workflow_event return, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from importlib.resources import files
from typing import Any

import pytest

import qw
from qw import transitions
from qw.errors import DuplicateJob, LeaseLost
from qw.model import JobStatus, NewJob, ParentFailure, WorkflowState
from qw.transitions import Ready, plan_settled, workflow_event
from qw_redis import RedisBackend
from qw_redis.keys import COMMON, FLOW_COMMON, Keyspace, lua_prelude
from qw_testkit.base import new_namespace

from .servers import drop_namespaces


def _lua_sources() -> dict[str, str]:
    folder = files("qw_redis").joinpath("lua")
    return {
        p.name: p.read_text(encoding="utf-8") for p in folder.iterdir() if p.name.endswith(".lua")
    }


def test_the_prelude_spells_every_status_from_the_model() -> None:
    prelude = lua_prelude("PUBLISH")
    for status in JobStatus:
        assert f"{status.name} = '{status.value}'" in prelude
    terminal = re.search(r"local TERMINAL = \{(.*)\}", prelude)
    assert terminal is not None
    assert set(re.findall(r"(\w+) = true", terminal.group(1))) == {
        s.value for s in JobStatus if s.is_terminal
    }
    assert {n[3:] for n in COMMON if n.startswith("st_")} == {s.value for s in JobStatus}
    assert {n[3:] for n in FLOW_COMMON if n.startswith("ws_")} == {s.value for s in WorkflowState}
    prelude = lua_prelude("PUBLISH", flows=True)
    for state in WorkflowState:
        assert f"{state.name} = '{state.value}'" in prelude
        assert f"{state.value} = '{workflow_event('w', state)[0]}'" in prelude
    for policy in ParentFailure:
        assert f"{policy.name} = '{policy.value}'" in prelude
    assert f"local EV_CANCELLED = '{transitions.EVENT_CANCELLED}'" in prelude
    assert f"local REASON_PARENT_FAILED = '{transitions.REASON_PARENT_FAILED}'" in prelude


def test_no_script_spells_a_status_an_event_or_a_reason() -> None:
    words = [s.value for s in JobStatus]
    words += [*transitions.EVENT_TYPES, transitions.REASON_CANCELLED]
    words += [transitions.REASON_LEASE_EXPIRED, transitions.LEASE_EXPIRED_ERROR]
    words += [transitions.REASON_PARENT_FAILED, ParentFailure.RUN.value]
    words += [workflow_event("w", s)[0] for s in WorkflowState]
    # (ParentFailure.CANCEL is 'cancel', which is also a column's name.)
    for name, text in _lua_sources().items():
        code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
        for word in words:
            assert f"'{word}'" not in code, (name, word)
            assert f'"{word}"' not in code, (name, word)
        # No attempt rule either: plan_finish and plan_reclaim decide retries.
        assert not re.search(r"[<>]=?\s*tonumber\(get\('max'", code), name


@pytest.fixture(params=["single", "cluster"])
def backend(request: pytest.FixtureRequest) -> Iterator[RedisBackend]:
    url = str(request.getfixturevalue("redis_url" if request.param == "single" else "cluster_url"))
    namespace = new_namespace()
    backend = RedisBackend.from_url(url, namespace=namespace)
    try:
        yield backend
    finally:
        backend.close()
        if request.param == "single":
            drop_namespaces(url, {namespace})


def _count_scripts(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    run = backend._run

    def counted(name: str, *args: Any) -> Any:
        calls.append(name)
        return run(name, *args)

    monkeypatch.setattr(backend, "_run", counted)
    return calls


def test_enqueue_is_one_script_unless_a_live_job_holds_a_key(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = qw.Client(backend)
    calls = _count_scripts(backend, monkeypatch)
    client.enqueue([NewJob("q", 1), NewJob("q", 2)])
    held = client.enqueue_one("q", 3, dedupe_key="k")
    assert calls == ["enqueue", "enqueue"]
    calls.clear()
    answers = client.enqueue(
        [
            NewJob("q", 4, dedupe_key="k"),
            NewJob("r", 5, dedupe_key="k2"),
            NewJob("q", 6, dedupe_key="k"),
        ]
    )
    # The first plan assumed no live holder; the script found one and said so.
    assert calls == ["enqueue", "enqueue"]
    assert [(a.id, a.created) for a in answers] == [
        (held.id, False),
        (answers[1].id, True),
        (held.id, False),
    ]
    assert client.get(answers[1].id) is not None
    counts = client.counts()
    assert (counts["q"][JobStatus.QUEUED], counts["r"][JobStatus.QUEUED]) == (3, 1)


def test_enqueue_plans_again_when_a_holder_finished_meanwhile(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = qw.Client(backend)
    held = client.enqueue_one("q", 1, dedupe_key="k")
    claim = client.claim(["q"], worker="w")[0]
    calls: list[str] = []
    run = backend._run

    def finishing_after_the_first_plan(name: str, *args: Any) -> Any:
        calls.append(name)
        reply = run(name, *args)
        if name == "enqueue" and calls.count("enqueue") == 1:
            client.complete(claim.lease)  # the key is free again before the retry
        return reply

    monkeypatch.setattr(backend, "_run", finishing_after_the_first_plan)
    new = client.enqueue_one("q", 2, dedupe_key="k")
    # Planned with no holder (found k held), then with k held (found it free).
    assert calls.count("enqueue") == 3
    assert new.created
    assert new.id != held.id
    assert client.get(new.id) is not None


def test_a_duplicate_id_is_refused_even_when_dedupe_answers_it(backend: RedisBackend) -> None:
    client = qw.Client(backend)
    held = client.enqueue_one("q", 1, dedupe_key="k")
    with pytest.raises(DuplicateJob):
        client.enqueue([NewJob("q", 2, id=held.id, dedupe_key="k")])


def test_renew_is_fenced_by_the_attempt_too(backend: RedisBackend) -> None:
    client = qw.Client(backend)
    client.enqueue_one("q", 1, max_attempts=3)
    lease = client.claim(["q"], worker="w")[0].lease
    with pytest.raises(LeaseLost):
        client.renew(replace(lease, attempt=2))
    assert client.renew(lease).attempt == 1


def _raw_events(backend: RedisBackend) -> list[tuple[str, str, str]]:
    entries = backend._client.xrange(backend._keys.key("events"))
    return [(f["job"], f["type"], f["data"]) for _, f in entries]


def test_a_settle_writes_what_plan_settled_and_workflow_event_return(
    backend: RedisBackend,
) -> None:
    client = qw.Client(backend)
    steps = [
        NewJob("a", 1, id="w.p"),
        NewJob("b", 2, id="w.c", parents=("w.p",)),
        NewJob("c", 3, id="w.r", parents=("w.p",), on_parent_failure=ParentFailure.RUN),
    ]
    client.create_workflow("w", steps)
    client.fail(client.claim(["a"], worker="w")[0].lease, "no")
    cancelled = plan_settled(Ready("w.c", "b", ParentFailure.CANCEL, ["w.p"]))
    raw_error = backend._client.hget(backend._keys.column("error"), "w.c")
    assert raw_error == cancelled.error
    assert _raw_events(backend)[-1] == ("w.c", cancelled.event_type, cancelled.event_data)
    # The RUN step is queued, and sees which parent failed.
    ran = client.claim(["c"], worker="w")[0]
    assert ran.job.failed_parents == ("w.p",)
    assert plan_settled(Ready("w.r", "c", ParentFailure.RUN, ["w.p"])).status is JobStatus.QUEUED
    client.complete(ran.lease)
    assert _raw_events(backend)[-1] == ("w", *workflow_event("w", WorkflowState.FAILED))


def test_a_step_finishes_in_one_script_where_it_was_claimed(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = qw.Client(backend)
    client.create_workflow(
        "w", [NewJob("a", 1, id="w.1"), NewJob("b", 2, id="w.2", parents=("w.1",))]
    )
    client.enqueue_one("a", 3)
    claims = client.claim(["a"], worker="w", limit=2)
    calls = _count_scripts(backend, monkeypatch)
    client.finish([qw.Complete(c.lease) for c in claims])
    assert calls == ["finish"]
    assert [c.job.id for c in client.claim(["b"], worker="w")] == ["w.2"]


def test_a_step_finished_elsewhere_declares_its_workflows_queues_on_a_second_call(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = qw.Client(backend)
    client.create_workflow(
        "w", [NewJob("a", 1, id="w.1"), NewJob("b", 2, id="w.2", parents=("w.1",))]
    )
    lease = client.claim(["a"], worker="w")[0].lease
    other = RedisBackend.from_url(_url_of(backend), namespace=backend.namespace)
    try:
        calls = _count_scripts(other, monkeypatch)
        before = _snapshot(backend)
        reply = other._run("finish", ["a"], (*_finish_args(lease),))
        # The first call wrote nothing: it named the queue it lacked.
        assert reply == ["N", "b"]
        assert _snapshot(backend) == before
        calls.clear()
        assert qw.Client(other).finish([qw.Complete(lease)]) == [JobStatus.SUCCEEDED]
        assert calls == ["finish", "finish"]
    finally:
        other.close()
    assert [c.job.id for c in client.claim(["b"], worker="w")] == ["w.2"]


def _url_of(backend: RedisBackend) -> str:
    conn = backend._client
    if hasattr(conn, "get_default_node"):
        node = conn.get_default_node()
        return f"redis+cluster://{node.host}:{node.port}"
    kw = conn.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def _finish_args(lease: qw.Lease) -> tuple[object, ...]:
    from qw_redis.backend import _transition_args

    transition = transitions.plan_finish(qw.Complete(lease), body="null")
    return (lease.job_id, lease.token, 1, lease.attempt, *_transition_args(transition))


def _snapshot(backend: RedisBackend) -> dict[str, Any]:
    keys: Keyspace = backend._keys
    r = backend._client
    out: dict[str, Any] = {}
    for name in ("wnum", "wcounts", "counts", "wrec"):
        out[name] = r.hgetall(keys.key(name))
    for col in ("status", "pending", "fparents", "token"):
        out[col] = r.hgetall(keys.column(col))
    out["events"] = r.xlen(keys.key("events"))
    out["ready"] = [r.zrange(k, 0, -1) for k in keys.queue_keys(["a", "b"])]
    return out
