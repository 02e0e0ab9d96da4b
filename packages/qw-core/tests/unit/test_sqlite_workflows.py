"""sqlite workflows, what the contract suite cannot see: plain jobs pay nothing,
a step's end and its settling are one transaction, purge batches, the stored layout."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import qw
from qw.backends.sqlite import SqliteBackend
from qw.backends.sqlite import backend as backend_module
from qw.backends.sqlite._db import Database
from qw.contract import Complete, Fail, Release
from qw.model import JobStatus, NewJob, ParentFailure, WorkflowState

WAITING, QUEUED, RUNNING = JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING
SUCCEEDED, FAILED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "qw.db"


@pytest.fixture
def client(path: Path) -> Iterator[qw.Client]:
    with qw.Client(SqliteBackend(path, namespace="a")) as c:
        yield c


def _chain(client: qw.Client, workflow: str = "wf") -> None:
    """wf.a -> wf.b (queue 'later') -> wf.c."""
    client.create_workflow(
        workflow,
        [
            NewJob("q", 1, id=f"{workflow}.a"),
            NewJob("later", 2, id=f"{workflow}.b", parents=(f"{workflow}.a",)),
            NewJob("q", 3, id=f"{workflow}.c", parents=(f"{workflow}.b",)),
        ],
    )


def _row(path: Path, job_id: str) -> tuple[Any, ...]:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT status, workflow, on_parent_failure, pending FROM qw_jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
    assert row is not None
    return tuple(row)


# -- plain jobs -----------------------------------------------------------------


def test_plain_jobs_run_no_workflow_statement(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statements: list[str] = []
    connect = Database.connect

    def traced(self: Database) -> sqlite3.Connection:
        conn = connect(self)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(Database, "connect", traced)
    with qw.Client(SqliteBackend(path, namespace="a")) as client:
        statements.clear()  # opening the file reads and creates the tables
        client.enqueue([NewJob("q", i, max_attempts=1 if i == 4 else 3) for i in range(7)])
        claims = client.claim(["q"], worker="w", lease_s=0.05, limit=7)
        assert all(not c.lease.token.startswith(backend_module.STEP_TOKEN_PREFIX) for c in claims)
        client.finish(
            [
                Complete(claims[0].lease, 1),
                Fail(claims[1].lease, "no"),
                Fail(claims[2].lease, "again", retry_in=0),
                Release(claims[3].lease),
            ]
        )
        client.abort(claims[5].lease)
        client.cancel(claims[6].job.id)  # running: flagged
        client.enqueue_one("q", "queued", id="to-cancel")
        client.cancel("to-cancel")
        time.sleep(0.1)
        assert client.reclaim_expired() == 2  # one requeued, one (no attempts left) failed
        client.get(claims[0].job.id)
        client.list_jobs(status="queued")
    assert statements
    for statement in statements:
        # Reads name the step columns; no statement reads or writes workflow state.
        for word in (
            "qw_workflows",
            "pending",
            "SELECT workflow",
            "workflow =",
            "workflow IN",
            "qw_edges",
            "qw_failed_parents",
        ):
            assert word not in statement, statement


def test_only_a_steps_lease_token_says_it_is_a_step(client: qw.Client) -> None:
    client.enqueue_one("q", "plain")
    _chain(client)
    tokens = {c.job.id: c.lease.token for c in client.claim(["q"], worker="w", limit=5)}
    assert len(tokens) == 2
    assert "wf.a" in tokens
    for job_id, token in tokens.items():
        assert token.startswith(backend_module.STEP_TOKEN_PREFIX) is (job_id == "wf.a")


# -- one transaction ----------------------------------------------------------------


class Boom(Exception):
    pass


def _explode(*_args: object) -> None:
    raise Boom


def test_a_failure_while_settling_rolls_back_the_finish_that_ended_the_step(
    client: qw.Client, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _chain(client)
    (claim,) = client.claim(["q"], worker="w")
    monkeypatch.setattr(backend_module._Steps, "apply_settled", _explode)
    with pytest.raises(Boom):
        client.complete(claim.lease, "done")
    assert client.get("wf.a").status is RUNNING
    assert _row(path, "wf.b")[0] == "waiting"
    assert _row(path, "wf.b")[-1] == 1
    assert client.fetch_events() == []
    monkeypatch.undo()
    assert client.complete(claim.lease, "done") is SUCCEEDED
    assert client.get("wf.b").status is QUEUED


def test_a_failure_while_settling_rolls_back_reclaim_and_cancel(
    client: qw.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.create_workflow(
        "wf",
        [
            NewJob("q", 1, id="wf.a", max_attempts=1),
            NewJob("other", 2, id="wf.b"),
            NewJob(
                "q", 3, id="wf.c", parents=("wf.a", "wf.b"), on_parent_failure=ParentFailure.RUN
            ),
        ],
    )
    client.claim(["q"], worker="w", lease_s=0.05)
    time.sleep(0.1)
    monkeypatch.setattr(backend_module, "settle", _explode)
    with pytest.raises(Boom):
        client.reclaim_expired()
    with pytest.raises(Boom):
        client.cancel("wf.b")
    assert [j.status for j in client.get_many(["wf.a", "wf.b", "wf.c"])] == [  # type: ignore[union-attr]
        RUNNING,
        QUEUED,
        WAITING,
    ]
    assert client.fetch_events() == []
    monkeypatch.undo()
    assert client.reclaim_expired() == 1
    assert client.cancel("wf.b") is CANCELLED
    assert client.get("wf.c").failed_parents == ("wf.a", "wf.b")
    assert [e.type for e in client.fetch_events()] == ["job.failed", "job.cancelled"]


def test_settling_bumps_the_queue_a_step_is_placed_on(client: qw.Client, path: Path) -> None:
    def version(queue: str) -> int:
        with sqlite3.connect(path) as conn:
            row = conn.execute(
                "SELECT version FROM qw_wakeups WHERE namespace = 'a' AND queue = ?", (queue,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    _chain(client)
    assert version("later") == 0  # wf.b was inserted waiting: nothing to claim there yet
    (claim,) = client.claim(["q"], worker="w")
    client.complete(claim.lease)
    assert version("later") == 1
    # A cancelled waiting step whose child runs anyway places the child too.
    client.create_workflow(
        "w2",
        [
            NewJob("q", 1, id="w2.a"),
            NewJob("q", 2, id="w2.b", parents=("w2.a",)),
            NewJob("last", 3, id="w2.c", parents=("w2.b",), on_parent_failure=ParentFailure.RUN),
        ],
    )
    assert client.cancel("w2.b") is CANCELLED
    assert version("last") == 1
    assert client.get("w2.c").failed_parents == ("w2.b",)


# -- wide graphs ------------------------------------------------------------------


def test_a_parent_with_more_children_than_one_in_list_settles_them_all(
    client: qw.Client, path: Path
) -> None:
    n = 1234  # past the 500 ids one statement binds
    steps = [NewJob("q", 0, id="wide.root", max_attempts=1)]
    steps += [
        NewJob(
            "q",
            i,
            id=f"wide.{i:04d}",
            parents=("wide.root",),
            on_parent_failure=ParentFailure.RUN if i % 2 else ParentFailure.CANCEL,
        )
        for i in range(n)
    ]
    client.create_workflow("wide", steps)
    root = client.get("wide.root")
    assert root.children == tuple(f"wide.{i:04d}" for i in range(n))
    (claim,) = client.claim(["q"], worker="w")
    assert client.fail(claim.lease, "no") is FAILED
    ids = [f"wide.{i:04d}" for i in range(n)]
    jobs = client.get_many(["nope", *ids, "wide.root"])
    assert jobs[0] is None
    assert jobs[-1] is not None
    assert jobs[-1].id == "wide.root"
    for i, job in enumerate(jobs[1:-1]):
        assert job is not None
        assert job.id == ids[i]
        assert job.failed_parents == ("wide.root",)
        assert job.status is (QUEUED if i % 2 else CANCELLED)
    events = client.fetch_events(10_000)
    assert [e.job_id for e in events] == [i for n_, i in enumerate(ids) if n_ % 2 == 0]
    assert client.get_workflow("wide").counts == {FAILED: 1, CANCELLED: n // 2, QUEUED: n // 2}


def test_failed_parents_are_stored_in_the_order_they_ended(client: qw.Client, path: Path) -> None:
    parents = [f"fan.p{i}" for i in range(6)]
    client.create_workflow(
        "fan",
        [NewJob("q", p, id=p, max_attempts=1) for p in parents]
        + [
            NewJob(
                "q", "c", id="fan.c", parents=tuple(parents), on_parent_failure=ParentFailure.RUN
            )
        ],
    )
    claims = {c.job.id: c for c in client.claim(["q"], worker="w", limit=10)}
    order = ["fan.p3", "fan.p0", "fan.p5", "fan.p1", "fan.p4", "fan.p2"]
    for i, step in enumerate(order):
        if i % 2:
            client.complete(claims[step].lease)
        else:
            client.fail(claims[step].lease, "no")
    child = client.get("fan.c")
    assert child.status is QUEUED
    assert child.failed_parents == ("fan.p3", "fan.p5", "fan.p4")
    assert _row(path, "fan.c") == ("queued", "fan", "run", 0)
    with sqlite3.connect(path) as conn:
        edges = conn.execute("SELECT parent, child FROM qw_edges ORDER BY seq").fetchall()
        failed = conn.execute("SELECT parent FROM qw_failed_parents ORDER BY seq").fetchall()
    assert edges == [(p, "fan.c") for p in parents]
    assert failed == [("fan.p3",), ("fan.p5",), ("fan.p4",)]


# -- purge ----------------------------------------------------------------------


def test_purge_takes_steps_only_with_their_ended_workflow_in_bounded_batches(
    client: qw.Client, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_module, "PURGE_BATCH", 7)
    # done.0 fails, which cancels its 19 children: edges and failed parents to purge.
    client.create_workflow(
        "done",
        [NewJob("q", 0, id="done.00", max_attempts=1)]
        + [NewJob("q", i, id=f"done.{i:02d}", parents=("done.00",)) for i in range(1, 20)],
    )
    client.create_workflow(
        "live", [NewJob("q", 0, id="live.0"), NewJob("q", 1, id="live.1", parents=("live.0",))]
    )
    client.enqueue_one("q", "plain", id="plain")
    claims = {c.job.id: c for c in client.claim(["q"], worker="w", limit=100)}
    assert set(claims) == {"done.00", "live.0", "plain"}
    client.fail(claims["done.00"].lease, "no")
    client.complete(claims["live.0"].lease)
    client.complete(claims["plain"].lease)
    assert client.get_workflow("done").state is WorkflowState.FAILED
    time.sleep(0.01)

    assert client.purge(0).jobs == 21
    assert client.find_workflow("done") is None
    assert client.get_many(["done.00", "done.19", "plain"]) == [None, None, None]
    # An old step of a running workflow stays, with its edges.
    assert client.get_workflow("live").counts == {SUCCEEDED: 1, QUEUED: 1}
    assert client.get("live.0").children == ("live.1",)
    with sqlite3.connect(path) as conn:
        for table, column in (
            ("qw_jobs", "id"),
            ("qw_edges", "child"),
            ("qw_failed_parents", "child"),
        ):
            left = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} LIKE 'done.%'")
            assert left.fetchone() == (0,), table
    # Another namespace's workflow of the same id is its own.
    with qw.Client(SqliteBackend(path, namespace="b")) as other:
        other.create_workflow("done", [NewJob("q", 1, id="done.00")])
        (claim,) = other.claim(["q"], worker="w")
        other.complete(claim.lease)
        assert client.purge(0).jobs == 0
        assert other.get_workflow("done").state is WorkflowState.SUCCEEDED


def test_workflow_statements_read_only_the_workflows_steps(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every statement selecting steps by workflow is planned on qw_jobs_workflow."""
    statements: list[str] = []
    connect = Database.connect

    def traced(self: Database) -> sqlite3.Connection:
        conn = connect(self)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(Database, "connect", traced)
    with qw.Client(SqliteBackend(path, namespace="a")) as client:
        client.enqueue([NewJob("q", i) for i in range(50)])
        _chain(client)
        _chain(client, "w2")
        statements.clear()
        client.get_workflow("wf")
        client.list_workflows()
        client.list_jobs(workflow="wf", status="waiting")
        client.steps("wf")
        client.cancel_workflow("w2")
        for claim in client.claim(["q"], worker="w", limit=100):
            client.complete(claim.lease)
        client.purge(0)
    chosen = [s for s in statements if "workflow = " in s or "workflow IN" in s]
    assert chosen
    with sqlite3.connect(path) as conn:
        for statement in chosen:
            plan = " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {statement}"))
            assert "qw_jobs_workflow" in plan, (statement, plan)
