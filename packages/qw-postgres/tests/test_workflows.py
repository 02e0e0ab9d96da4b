"""Workflows on PostgreSQL: what the shared contract cannot see.

Settles by set-based statements (a fan-out of 10,000 in a few), plain jobs
paying nothing, promotion exactly once and no deadlock when many
connections end parents of the same children at once, and NOTIFY from the
settle itself.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

import qw
from qw.model import JobStatus, NewJob, ParentFailure, WorkflowState
from qw_postgres import PostgresBackend
from qw_postgres.listening import channel_name

from .conftest import with_query

SCHEMA = "qw_test"
S = JobStatus


def _namespace() -> str:
    return "wf" + uuid.uuid4().hex[:12]


@pytest.fixture
def url(pg_url: str) -> str:
    return with_query(pg_url, f"schema={SCHEMA}")


@pytest.fixture
def client(url: str) -> Iterator[qw.Client]:
    c = qw.Client(PostgresBackend.from_url(with_query(url, "pool_max=4"), namespace=_namespace()))
    yield c
    c.close()


@contextmanager
def counting_statements() -> Iterator[list[bytes | str]]:
    """Every statement this thread sends through ``Connection.execute`` meanwhile.

    BEGIN and COMMIT are not among them (psycopg sends those itself).
    """
    sent: list[bytes | str] = []
    me = threading.get_ident()
    original: Callable[..., Any] = psycopg.Connection.execute

    def execute(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == me:
            sent.append(query if isinstance(query, bytes | str) else repr(query))
        return original(self, query, *args, **kwargs)

    psycopg.Connection.execute = execute  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        psycopg.Connection.execute = original  # type: ignore[method-assign]


def _flow_row(pg_url: str, namespace: str, workflow: str) -> tuple[Any, ...]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT live, failed, cancelled, state FROM {}.workflows"
                " WHERE namespace = %s AND id = %s"
            ).format(sql.Identifier(SCHEMA)),
            (namespace, workflow),
        ).fetchone()
    assert row is not None
    return tuple(row)


def _drain(client: qw.Client, queue: str = "q") -> list[str]:
    done: list[str] = []
    while claims := client.claim([queue], worker="w", limit=500):
        client.finish([qw.Complete(c.lease) for c in claims])
        done.extend(c.job.id for c in claims)
    return done


def test_a_plain_finish_is_still_one_statement(client: qw.Client) -> None:
    client.enqueue([NewJob("q", i) for i in range(3)])
    a, b, c = client.claim(["q"], worker="w", limit=3)
    client.complete(a.lease)  # the pool's connection is warm
    with counting_statements() as sent:
        assert client.complete(b.lease) is S.SUCCEEDED
    assert len(sent) == 1
    with counting_statements() as sent:
        assert client.fail(c.lease, "x", retry_in=0) is S.QUEUED
    assert len(sent) == 1


def test_a_step_that_does_not_end_is_finished_by_the_plain_statement(client: qw.Client) -> None:
    client.create_workflow(
        "r", [NewJob("q", 1, id="r.a"), NewJob("q", 2, id="r.b", parents=("r.a",))]
    )
    [claim] = client.claim(["q"], worker="w")
    with counting_statements() as sent:
        assert client.fail(claim.lease, "again", retry_in=0) is S.QUEUED
    assert len(sent) == 1
    assert client.get("r.b").status is S.WAITING


def test_a_fan_out_of_ten_thousand_settles_in_a_few_statements(
    client: qw.Client, pg_url: str
) -> None:
    n = 10_000
    steps = [NewJob("q", "root", id="big.root")]
    steps += [NewJob("kids", i, id=f"big.k{i:05d}", parents=("big.root",)) for i in range(n)]
    assert client.create_workflow("big", steps).created
    assert client.counts()["kids"][S.WAITING] == n
    [root] = client.claim(["q"], worker="w")
    assert len(root.job.children) == n
    with counting_statements() as sent:
        assert client.complete(root.lease, "ok") is S.SUCCEEDED
    # FINISH (which leaves the step), the workflow's lock, FINISH_STEPS,
    # one COUNT_ENDED for the whole fan-out, and ENDS queueing all of it.
    assert len(sent) <= 5, [s[:60] for s in sent]
    assert client.counts()["kids"][S.QUEUED] == n
    assert _flow_row(pg_url, client.namespace, "big")[:3] == (n, 0, 0)
    first = client.claim(["kids"], worker="w", limit=3)
    assert [c.job.id for c in first] == ["big.k00000", "big.k00001", "big.k00002"]


def test_a_failure_cancels_a_deep_graph_in_one_write(client: qw.Client, pg_url: str) -> None:
    depth = 60
    steps = [NewJob("q", 0, id="deep.s00")]
    steps += [
        NewJob("q", i, id=f"deep.s{i:02d}", parents=(f"deep.s{i - 1:02d}",))
        for i in range(1, depth)
    ]
    # A step that runs whatever happens, and one waiting for it.
    steps.append(
        NewJob(
            "q", "run", id="deep.run", parents=("deep.s30",), on_parent_failure=ParentFailure.RUN
        )
    )
    assert client.create_workflow("deep", steps).created
    [head] = client.claim(["q"], worker="w")
    assert client.fail(head.lease, "boom") is S.FAILED
    jobs = client.steps("deep")
    by_id = {j.id: j for j in jobs}
    for i in range(1, depth):
        job = by_id[f"deep.s{i:02d}"]
        assert job.status is S.CANCELLED
        assert job.error == {"reason": "parent_failed", "parent": f"deep.s{i - 1:02d}"}
        assert job.failed_parents == (f"deep.s{i - 1:02d}",)
    assert by_id["deep.run"].status is S.QUEUED
    assert by_id["deep.run"].failed_parents == ("deep.s30",)
    cancelled = [e for e in client.fetch_events(1000) if e.type == "job.cancelled"]
    assert [e.job_id for e in cancelled] == [f"deep.s{i:02d}" for i in range(1, depth)]
    assert _flow_row(pg_url, client.namespace, "deep") == (1, 1, depth - 1, "running")
    [run] = client.claim(["q"], worker="w")
    client.complete(run.lease)
    assert client.get_workflow("deep").state is WorkflowState.FAILED


def test_a_thousand_parents_ended_by_many_connections_promote_the_child_once(
    url: str, pg_url: str
) -> None:
    namespace = _namespace()
    fan_in, connections = 1000, 12
    parents = [f"fan.p{i:04d}" for i in range(fan_in)]
    steps = [NewJob("q", i, id=p) for i, p in enumerate(parents)]
    steps.append(NewJob("child", "c", id="fan.child", parents=tuple(parents)))
    owner = qw.open(url, namespace=namespace)
    clients = [
        qw.open(with_query(url, "pool_max=1"), namespace=namespace) for _ in range(connections)
    ]
    try:
        assert owner.create_workflow("fan", steps).created
        leases = [c.lease for c in owner.claim(["q"], worker="w", limit=fan_in)]
        assert len(leases) == fan_in
        random.Random(7).shuffle(leases)
        start = threading.Barrier(connections)
        errors: list[BaseException] = []

        def work(index: int) -> None:
            mine = leases[index::connections]
            rnd = random.Random(index)
            try:
                start.wait()
                while mine:
                    # Single finishes and batches, as workers send them.
                    k = rnd.choice((1, 1, 3, 8))
                    batch, mine = mine[:k], mine[k:]
                    answers = clients[index].finish([qw.Complete(lease) for lease in batch])
                    assert answers == [S.SUCCEEDED] * len(batch)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert errors == []
        child = owner.get("fan.child")
        assert (child.status, child.failed_parents) == (S.QUEUED, ())
        assert _flow_row(pg_url, namespace, "fan") == (1, 0, 0, "running")
        [claim] = owner.claim(["child"], worker="w", limit=10)
        assert claim.job.id == "fan.child"
        owner.complete(claim.lease)
        events = [e for e in owner.fetch_events(10) if e.type.startswith("workflow.")]
        assert [(e.job_id, e.type) for e in events] == [("fan", "workflow.succeeded")]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            [(pending,)] = conn.execute(
                sql.SQL("SELECT pending FROM {}.jobs WHERE namespace = %s AND id = %s").format(
                    sql.Identifier(SCHEMA)
                ),
                (namespace, "fan.child"),
            ).fetchall()
        assert pending == 0
    finally:
        for c in (owner, *clients):
            c.close()


def test_batches_ending_parents_of_shared_children_in_any_order_never_deadlock(
    url: str, pg_url: str
) -> None:
    """Two workflows, children with random parent sets, finishes batched across both."""
    namespace = _namespace()
    rnd = random.Random(11)
    n_parents, n_children, connections = 40, 60, 8
    owner = qw.open(url, namespace=namespace)
    clients = [
        qw.open(with_query(url, "pool_max=1"), namespace=namespace) for _ in range(connections)
    ]
    try:
        for w in ("x", "y"):
            parents = [f"{w}.p{i:02d}" for i in range(n_parents)]
            steps = [NewJob("q", i, id=p) for i, p in enumerate(parents)]
            for i in range(n_children):
                chosen = tuple(rnd.sample(parents, rnd.randint(2, 12)))
                steps.append(NewJob("kids", i, id=f"{w}.c{i:02d}", parents=chosen))
            assert owner.create_workflow(w, steps).created
        leases = [c.lease for c in owner.claim(["q"], worker="w", limit=2 * n_parents)]
        assert len(leases) == 2 * n_parents
        rnd.shuffle(leases)
        chunks = [leases[i::connections] for i in range(connections)]
        start = threading.Barrier(connections)
        errors: list[BaseException] = []

        def work(index: int) -> None:
            mine = chunks[index]
            try:
                start.wait()
                while mine:
                    batch, mine = mine[:3], mine[3:]
                    # Some parents fail: their children run (policy run) or are cancelled.
                    outcomes: list[qw.Outcome] = [
                        qw.Fail(lease, "no") if lease.job_id.endswith("7") else qw.Complete(lease)
                        for lease in batch
                    ]
                    clients[index].finish(outcomes)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert errors == []
        for w in ("x", "y"):
            kids = [j for j in owner.steps(w) if ".c" in j.id]
            for job in kids:
                failed = tuple(p for p in job.parents if p.endswith("7"))
                assert sorted(job.failed_parents) == sorted(failed)
                assert job.status is (S.CANCELLED if failed else S.QUEUED), job.id
        ran = _drain(owner, "kids")
        assert len(ran) == len(set(ran))
        for w in ("x", "y"):
            live, failed, cancelled, state = _flow_row(pg_url, namespace, w)
            assert live == 0
            assert failed == sum(1 for i in range(n_parents) if f"{i:02d}".endswith("7"))
            assert state == "failed"
            counts = owner.get_workflow(w).counts
            assert counts.get(S.FAILED, 0) == failed
            assert counts.get(S.CANCELLED, 0) == cancelled
        ends = Counter(
            e.job_id for e in owner.fetch_events(10_000) if e.type.startswith("workflow.")
        )
        assert ends == {"x": 1, "y": 1}
    finally:
        for c in (owner, *clients):
            c.close()


def test_cancel_workflow_racing_workers_ends_it_once(url: str, pg_url: str) -> None:
    namespace = _namespace()
    owner = qw.open(url, namespace=namespace)
    workers = [qw.open(with_query(url, "pool_max=1"), namespace=namespace) for _ in range(4)]
    try:
        steps = [NewJob("q", i, id=f"c.s{i:03d}") for i in range(200)]
        steps += [
            NewJob("q", i, id=f"c.t{i:03d}", parents=(f"c.s{i:03d}", f"c.s{(i + 1) % 200:03d}"))
            for i in range(200)
        ]
        assert owner.create_workflow("c", steps).created
        stop = threading.Event()
        errors: list[BaseException] = []

        def work(c: qw.Client) -> None:
            try:
                while not stop.is_set():
                    claims = c.claim(["q"], worker="w", limit=5)
                    if claims:
                        c.finish([qw.Complete(cl.lease) for cl in claims])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(c,)) for c in workers]
        for t in threads:
            t.start()
        while owner.counts().get("q", {}).get(S.SUCCEEDED, 0) < 60:
            pass
        flow = owner.cancel_workflow("c")
        assert flow.cancel_requested
        stop.set()
        for t in threads:
            t.join(60)
        assert errors == []
        # What was running at the cancel finishes now, and the workflow ends with it.
        for job in owner.steps("c"):
            assert job.status is not S.WAITING
        leftover = _drain(owner)
        assert all(owner.get(i).status is S.SUCCEEDED for i in leftover)
        for c in workers:
            _drain(c)
        live, _, _, state = _flow_row(pg_url, namespace, "c")
        statuses = Counter(j.status for j in owner.steps("c"))
        assert statuses[S.QUEUED] == statuses[S.RUNNING] == statuses[S.WAITING] == 0
        assert (live, state) == (0, "cancelled")
        ends = [e for e in owner.fetch_events(10_000) if e.type.startswith("workflow.")]
        assert [(e.job_id, e.type) for e in ends] == [("c", "workflow.cancelled")]
    finally:
        for c in (owner, *workers):
            c.close()


def test_settled_steps_notify_their_queue(client: qw.Client, pg_url: str) -> None:
    client.create_workflow(
        "n", [NewJob("q", 1, id="n.a"), NewJob("later", 2, id="n.b", parents=("n.a",))]
    )
    [claim] = client.claim(["q"], worker="w")
    channel = channel_name(SCHEMA, client.namespace)
    with closing(psycopg.connect(pg_url, autocommit=True)) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        client.complete(claim.lease)
        payloads = [n.payload for n in conn.notifies(timeout=5, stop_after=1)]
    assert payloads == ["later"]


def test_a_workflow_write_chosen_to_break_a_deadlock_is_run_again(client: qw.Client) -> None:
    backend = client.backend
    assert isinstance(backend, PostgresBackend)
    tries: list[int] = []

    def write(conn: psycopg.Connection[Any], woken: set[str]) -> str:
        tries.append(1)
        conn.execute("SELECT 1").fetchall()
        if len(tries) == 1:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        woken.add("q")
        return "done"

    assert backend._in_workflows(backend._pooled, "test", write) == "done"
    assert len(tries) == 2

    def always(conn: psycopg.Connection[Any], woken: set[str]) -> str:
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    with pytest.raises(qw.BackendError, match="deadlock"):
        backend._in_workflows(backend._pooled, "test", always)
