"""Jobs written in the application's own transaction (capability ``transactional``).

Every test runs against the real server: the application's connection is a
plain psycopg connection (or SQLAlchemy's, or one set up as Django sets
its own), and what another session sees is read through a second client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader

import qw
from qw.model import JobStatus, NewJob, WorkflowState
from qw_postgres import PostgresBackend

from .conftest import with_query

SCHEMA = "qw_test"


@dataclass
class Env:
    """A namespace of the shared test schema, two clients on it, and an app table."""

    pg_url: str
    url: str
    namespace: str
    client: qw.Client
    other: qw.Client
    table_name: str

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.table_name)

    def queued(self) -> int:
        return self.other.counts().get("q", {}).get(JobStatus.QUEUED, 0)

    def connect(self, **kwargs: object) -> psycopg.Connection[object]:
        conn: psycopg.Connection[object] = psycopg.connect(self.pg_url, **kwargs)  # type: ignore[arg-type]
        return conn

    def app_rows(self) -> list[str]:
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            query = sql.SQL("SELECT note FROM {} ORDER BY note").format(self.table)
            return [r[0] for r in conn.execute(query).fetchall()]

    def insert(self, conn: psycopg.Connection[object], note: str) -> None:
        conn.execute(sql.SQL("INSERT INTO {} (note) VALUES (%s)").format(self.table), (note,))


@pytest.fixture
def env(pg_url: str) -> Iterator[Env]:
    url = with_query(pg_url, f"schema={SCHEMA}&pool_max=4&poll_interval=5")
    namespace = "t" + uuid.uuid4().hex[:12]
    name = f"qw_app_{uuid.uuid4().hex[:12]}"
    table = sql.Identifier(name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (note text PRIMARY KEY)").format(table))
    client = qw.Client(PostgresBackend.from_url(url, namespace=namespace))
    other = qw.Client(PostgresBackend.from_url(url, namespace=namespace))
    try:
        yield Env(pg_url, url, namespace, client, other, name)
    finally:
        client.close()
        other.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))


def _missing(client: qw.Client, job_id: str) -> bool:
    try:
        client.get(job_id)
    except qw.JobNotFound:
        return True
    return False


def test_the_capability_is_declared() -> None:
    caps = PostgresBackend.capabilities
    assert (caps.transactional, caps.progress, caps.result_wakeup) == (True, True, True)


def test_jobs_exist_only_once_the_application_commits(env: Env) -> None:
    with env.connect() as conn:
        env.insert(conn, "order-1")
        [job] = env.client.enqueue([NewJob("q", {"order": 1})], connection=conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        # Not committed: no other session sees or claims it.
        assert _missing(env.other, job.id)
        assert env.other.claim(["q"], worker="w") == []
        conn.commit()
    assert env.app_rows() == ["order-1"]
    [claim] = env.other.claim(["q"], worker="w")
    assert claim.job.id == job.id
    assert claim.job.payload == {"order": 1}


def test_a_rollback_leaves_no_job(env: Env) -> None:
    with env.connect() as conn:
        env.insert(conn, "order-1")
        [job] = env.client.enqueue([NewJob("q", 1), NewJob("q", 2)], connection=conn)[:1]
        conn.rollback()
        assert _missing(env.client, job.id)
    assert env.app_rows() == []
    assert env.other.claim(["q"], worker="w", limit=10) == []
    assert env.queued() == 0


def test_a_waiting_worker_is_woken_only_by_the_commit(env: Env) -> None:
    returned: list[float] = []
    armed = threading.Event()

    def worker() -> None:
        # A worker's loop: a claim that finds nothing arms the wake-up, then waits.
        assert env.other.claim(["q"], worker="w") == []
        armed.set()
        env.other.wait(["q"], 10)
        returned.append(time.monotonic())

    thread = threading.Thread(target=worker)
    thread.start()
    assert armed.wait(10)
    with env.connect() as conn:
        env.client.enqueue([NewJob("q", 1)], connection=conn)
        time.sleep(0.5)
        assert returned == [], "woken before the commit"
        committed = time.monotonic()
        conn.commit()
    thread.join(10)
    assert returned, "not woken by the commit"
    # poll_interval is 5 s and the wait 10 s: only the NOTIFY explains this.
    assert committed <= returned[0] < committed + 2.0
    assert len(env.other.claim(["q"], worker="w")) == 1


_CHILD = textwrap.dedent(
    """
    import sys, time, psycopg, qw
    from qw_postgres import PostgresBackend
    url, pg_url, namespace, job_id = sys.argv[1:5]
    client = qw.Client(PostgresBackend.from_url(url, namespace=namespace))
    conn = psycopg.connect(pg_url, application_name="qw-crash-" + job_id)
    client.enqueue([qw.NewJob("q", 1, id=job_id)], connection=conn)
    print("enqueued", flush=True)
    time.sleep(60)
    """
)


def test_a_process_killed_before_its_commit_leaves_no_job(env: Env) -> None:
    job_id = "crash-" + uuid.uuid4().hex[:8]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, env.url, env.pg_url, env.namespace, job_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "enqueued"
        # The row is written, in an open transaction nobody else can see.
        assert _missing(env.other, job_id)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    # The server rolls the dead session back; its job never appears.
    deadline = time.monotonic() + 10
    with psycopg.connect(env.pg_url, autocommit=True) as conn:
        while True:
            sessions = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                ("qw-crash-" + job_id,),
            ).fetchone()
            if sessions == (0,):
                break
            assert time.monotonic() < deadline, "the killed session is still there"
            time.sleep(0.05)
    assert _missing(env.other, job_id)
    assert env.other.claim(["q"], worker="w") == []
    # The id was never taken: it can be enqueued now.
    assert env.other.enqueue([NewJob("q", 1, id=job_id)])[0].created


def test_complete_commits_with_the_applications_rows(env: Env) -> None:
    env.client.enqueue([NewJob("q", 1)])
    [claim] = env.client.claim(["q"], worker="w")
    with env.connect() as conn, conn.transaction():
        env.insert(conn, "shipped")
        assert env.client.complete(claim.lease, {"ok": True}, connection=conn) is (
            JobStatus.SUCCEEDED
        )
        # Inside the transaction, the job still runs for everyone else.
        assert env.other.get(claim.job.id).status is JobStatus.RUNNING
        assert env.app_rows() == []
    job = env.other.get(claim.job.id)
    assert (job.status, job.result) == (JobStatus.SUCCEEDED, {"ok": True})
    assert env.app_rows() == ["shipped"]


def test_a_result_waiter_is_woken_by_the_commit_of_the_finish(env: Env) -> None:
    [job] = env.client.enqueue([NewJob("q", 1)])
    [claim] = env.client.claim(["q"], worker="w")
    # The results listener registered first (a finish that ran before the
    # registration is only seen by a later poll, see the postgres page).
    assert env.other.wait_finished(job.id, 0.01).status is JobStatus.RUNNING
    got: list[tuple[float, JobStatus]] = []

    def waiter() -> None:
        status = env.other.wait_finished(job.id, 10).status
        got.append((time.monotonic(), status))

    thread = threading.Thread(target=waiter)
    thread.start()
    with env.connect() as conn:
        env.client.complete(claim.lease, connection=conn)
        time.sleep(0.5)
        assert got == [], "woken before the commit"
        committed = time.monotonic()
        conn.commit()
    thread.join(10)
    [(at, status)] = got
    assert status is JobStatus.SUCCEEDED
    # poll_interval is 5 s: the done NOTIFY, delivered at the commit, woke it.
    assert committed <= at < committed + 2.0


def test_a_stale_lease_raises_and_rolls_the_applications_rows_back(env: Env) -> None:
    env.client.enqueue([NewJob("q", 1, max_attempts=3)])
    [stale] = env.client.claim(["q"], worker="w", lease_s=0.05)
    time.sleep(0.2)
    assert env.other.reclaim_expired() == 1
    [fresh] = env.other.claim(["q"], worker="w2")
    with env.connect() as conn:
        with pytest.raises(qw.LeaseLost), conn.transaction():  # noqa: PT012 (the app's block)
            env.insert(conn, "shipped")
            env.client.complete(stale.lease, "late", connection=conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert env.app_rows() == []
    job = env.other.get(fresh.job.id)
    assert (job.status, job.attempts) == (JobStatus.RUNNING, 2)
    assert env.other.complete(fresh.lease, "on time") is JobStatus.SUCCEEDED


def test_a_failed_write_leaves_the_applications_transaction_usable(env: Env) -> None:
    env.client.enqueue([NewJob("q", 1, id="taken")])
    with env.connect() as conn:
        env.insert(conn, "before")
        with pytest.raises(qw.DuplicateJob):
            env.client.enqueue([NewJob("q", 2), NewJob("q", 3, id="taken")], connection=conn)
        # Rolled back to the backend's own savepoint only: the app goes on.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        env.insert(conn, "after")
        env.client.enqueue([NewJob("q", 4, id="fresh")], connection=conn)
        conn.commit()
    assert env.app_rows() == ["after", "before"]
    assert env.queued() == 2


def test_dedupe_keys_in_the_applications_transaction(env: Env) -> None:
    with env.connect() as conn:
        first = env.client.enqueue([NewJob("q", 1, dedupe_key="k")], connection=conn)[0]
        again = env.client.enqueue([NewJob("q", 2, dedupe_key="k")], connection=conn)[0]
        # The transaction sees its own uncommitted holder of the key.
        assert (first.created, again.created, again.id) == (True, False, first.id)
        conn.commit()
    assert env.other.enqueue([NewJob("q", 3, dedupe_key="k")])[0].id == first.id


def test_an_autocommit_connection_gets_a_transaction_of_its_own(env: Env) -> None:
    with env.connect(autocommit=True) as conn:
        jobs = [NewJob("q", i, dedupe_key=f"k{i % 2}") for i in range(4)]
        answers = env.client.enqueue(jobs, connection=conn)
        assert [a.created for a in answers] == [True, True, False, False]
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # Committed at once: there is no transaction of the application's.
        assert env.other.get(answers[0].id) is not None
        [claim] = env.other.claim(["q"], worker="w")
        assert env.client.complete(claim.lease, connection=conn) is JobStatus.SUCCEEDED
        assert env.other.get(claim.job.id).status is JobStatus.SUCCEEDED


def test_a_transaction_with_earlier_statements_keeps_them(env: Env) -> None:
    with env.connect() as conn:
        env.insert(conn, "a")
        env.insert(conn, "b")
        env.client.enqueue([NewJob("q", 1)], connection=conn)
        env.insert(conn, "c")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()
        env.insert(conn, "d")
        env.client.enqueue([NewJob("q", 2)], connection=conn)
        conn.commit()
    assert env.app_rows() == ["d"]
    [claim] = env.other.claim(["q"], worker="w")
    assert claim.job.payload == 2


def test_a_django_like_connection_is_left_as_it_was(env: Env) -> None:
    # Django's psycopg 3 connection: client-side binding cursors, jsonb
    # loaded as text, and here dict rows too.
    with env.connect(cursor_factory=psycopg.ClientCursor, row_factory=dict_row) as conn:
        conn.adapters.register_loader("jsonb", TextLoader)
        conn.adapters.register_loader("json", TextLoader)
        env.client.enqueue([NewJob("q", {"a": 1}, dedupe_key="dj")], connection=conn)
        [again] = env.client.enqueue([NewJob("q", 2, dedupe_key="dj")], connection=conn)
        assert again.created is False
        conn.commit()
        [claim] = env.client.claim(["q"], worker="w")
        assert claim.job.payload == {"a": 1}
        env.client.complete(claim.lease, {"r": [1]}, connection=conn)
        conn.commit()
        # The application's settings are untouched.
        assert conn.cursor_factory is psycopg.ClientCursor
        row = conn.execute("SELECT '{\"x\": 1}'::jsonb AS j").fetchone()
        assert row == {"j": '{"x": 1}'}
    assert env.other.get(claim.job.id).result == {"r": [1]}


def test_sqlalchemy_connection_and_session(env: Env) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy", reason="sqlalchemy is in the test extra")
    from sqlalchemy.orm import Session

    sa_url = env.pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sqlalchemy.create_engine(sa_url)
    insert = sqlalchemy.text(f'INSERT INTO "{env.table_name}" (note) VALUES (:n)')
    try:
        with engine.connect() as sa:
            sa.execute(insert, {"n": "core"})
            [a] = env.client.enqueue([NewJob("q", "core")], connection=sa)
            assert _missing(env.other, a.id)
            sa.commit()
        with Session(engine) as session:
            session.execute(insert, {"n": "orm-rolled-back"})
            [b] = env.client.enqueue([NewJob("q", "orm-no")], connection=session)
            session.rollback()
        with Session(engine) as session, session.begin():
            session.execute(insert, {"n": "orm"})
            [c] = env.client.enqueue([NewJob("q", "orm")], connection=session)
    finally:
        engine.dispose()
    assert env.app_rows() == ["core", "orm"]
    assert _missing(env.other, b.id)
    assert {env.other.get(a.id).payload, env.other.get(c.id).payload} == {"core", "orm"}


def test_a_workflow_and_its_settles_join_the_transaction(env: Env) -> None:
    steps = [NewJob("q", "a", id="w.a"), NewJob("q", "b", id="w.b", parents=("w.a",))]
    with env.connect() as conn:
        assert env.client.create_workflow("w", steps, connection=conn).created
        with pytest.raises(qw.WorkflowNotFound):
            env.other.get_workflow("w")
        conn.rollback()
        assert env.client.create_workflow("w", steps, connection=conn).created
        conn.commit()
        [claim] = env.client.claim(["q"], worker="w")
        assert claim.job.id == "w.a"
        env.insert(conn, "a-done")
        env.client.complete(claim.lease, "A", connection=conn)
        # The child's settle is in the same, uncommitted, transaction.
        assert env.other.get("w.b").status is JobStatus.WAITING
        assert env.other.get("w.a").status is JobStatus.RUNNING
        conn.commit()
    assert env.other.get("w.b").status is JobStatus.QUEUED
    [step] = env.other.claim(["q"], worker="w")
    env.other.complete(step.lease, "B")
    assert env.other.get_workflow("w").state is WorkflowState.SUCCEEDED
    assert env.app_rows() == ["a-done"]


def test_bulk_enqueues_twice_in_one_transaction(env: Env) -> None:
    # Past COPY_MIN_JOBS the rows are staged in a temp table, which only the
    # commit would empty: each call must read its own rows alone.
    with env.connect() as conn:
        for batch in range(2):
            jobs = [NewJob("q", i, id=f"b{batch}-{i}") for i in range(5000)]
            assert all(a.created for a in env.client.enqueue(jobs, connection=conn))
        conn.commit()
    assert env.queued() == 10_000


def test_anything_but_a_sync_psycopg_connection_is_refused(env: Env) -> None:
    async def open_async() -> psycopg.AsyncConnection[object]:
        return await psycopg.AsyncConnection.connect(env.pg_url)  # type: ignore[return-value]

    import asyncio

    aconn = asyncio.run(open_async())
    try:
        with pytest.raises(qw.InvalidInput, match=r"sync psycopg\.Connection"):
            env.client.enqueue([NewJob("q", 1)], connection=aconn)
    finally:
        asyncio.run(aconn.close())
    for bad in (object(), "postgresql://", 3):
        with pytest.raises(qw.InvalidInput):
            env.client.enqueue([NewJob("q", 1)], connection=bad)
    closed = env.connect()
    closed.close()
    with pytest.raises(qw.InvalidInput, match="closed"):
        env.client.enqueue([NewJob("q", 1)], connection=closed)
    with env.connect() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(qw.InvalidInput, match="roll it back"):
            env.client.enqueue([NewJob("q", 1)], connection=conn)
    assert env.queued() == 0
