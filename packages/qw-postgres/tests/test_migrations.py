"""The backend owns its schema: versioned, idempotent, safe to race."""

from __future__ import annotations

import multiprocessing
import threading
from contextlib import closing
from typing import Any

import psycopg
import pytest
from psycopg import sql

import qw
import qw_postgres
from qw.model import JobStatus, Limit, NewJob, ParentFailure, WorkflowState
from qw_postgres import PostgresBackend, schema
from qw_postgres.schema import LATEST_VERSION

from .conftest import with_query

EXPECTED_TABLES = {
    "jobs",
    "events",
    "workers",
    "switches",
    "workflows",
    "limits",
    "limit_starts",
    "fair_ranks",
    "fair_clocks",
    "parked_keys",
    "schedules",
    "result_listeners",
    "schema_version",
}
EXPECTED_INDEXES = {
    "jobs_pkey",
    "jobs_claim",
    "jobs_leases",
    "jobs_dedupe",
    "jobs_finished",
    "jobs_workflow",
    "jobs_key",
    "jobs_parked",
    "limits_pkey",
    "limit_starts_pkey",
    "fair_ranks_pkey",
    "fair_clocks_pkey",
    "parked_keys_pkey",
    "parked_keys_due",
    "schedules_pkey",
    "result_listeners_pkey",
    "workflows_pkey",
    "workflows_finished",
    "events_pkey",
    "events_pending",
    "events_acked",
    "workers_pkey",
    "switches_pkey",
    "schema_version_pkey",
}


def _migrate_at_barrier(url: str, barrier: Any, out: Any) -> None:
    barrier.wait(30)
    try:
        out.put(("ok", qw_postgres.migrate(url)))
    except Exception as exc:  # reported to the parent, which fails the test
        out.put(("error", repr(exc)))


def _schema_objects(pg_url: str, schema: str) -> tuple[set[str], set[str], list[int]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchall()
        }
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
            ).fetchall()
        }
        versions = [
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT version FROM {}.schema_version ORDER BY version").format(
                    sql.Identifier(schema)
                )
            ).fetchall()
        ]
    return tables, indexes, versions


def test_processes_racing_to_migrate_a_fresh_schema_all_succeed(
    pg_url: str, fresh_schema: str
) -> None:
    url = with_query(pg_url, f"schema={fresh_schema}")
    ctx = multiprocessing.get_context("spawn")
    n = 3
    barrier = ctx.Barrier(n)
    out = ctx.Queue()
    procs = [ctx.Process(target=_migrate_at_barrier, args=(url, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
    results = [out.get(timeout=5) for _ in range(n)]
    assert all(p.exitcode == 0 for p in procs)
    assert results == [("ok", LATEST_VERSION)] * n
    tables, indexes, versions = _schema_objects(pg_url, fresh_schema)
    assert tables == EXPECTED_TABLES
    assert indexes == EXPECTED_INDEXES
    assert versions == list(range(1, LATEST_VERSION + 1))


def test_backends_opened_at_once_on_a_fresh_schema_all_work(pg_url: str, fresh_schema: str) -> None:
    # First use migrates: threads opening together must not trip over each other.
    url = with_query(pg_url, f"schema={fresh_schema}&pool_max=2")
    opened: list[qw.Client] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(qw.open(url, namespace="ns"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        opened[0].enqueue_one("q", 1)
        assert opened[-1].counts()["q"][qw.JobStatus.QUEUED] == 1
    finally:
        for client in opened:
            client.close()


def test_migrate_is_idempotent(pg_url: str, fresh_schema: str) -> None:
    url = with_query(pg_url, f"schema={fresh_schema}")
    assert qw_postgres.migrate(url) == LATEST_VERSION
    assert qw_postgres.migrate(url) == LATEST_VERSION
    with closing(PostgresBackend.from_url(url, namespace="a")) as backend:
        assert backend.migrate() == LATEST_VERSION
    assert _schema_objects(pg_url, fresh_schema)[2] == list(range(1, LATEST_VERSION + 1))


def test_a_schema_newer_than_the_code_is_refused(pg_url: str, fresh_schema: str) -> None:
    url = with_query(pg_url, f"schema={fresh_schema}")
    qw_postgres.migrate(url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {}.schema_version (version) VALUES (%s)").format(
                sql.Identifier(fresh_schema)
            ),
            (LATEST_VERSION + 1,),
        )
    with pytest.raises(qw.SchemaError, match="newer"):
        qw.open(url, namespace="a")
    with pytest.raises(qw.SchemaError, match="newer"):
        qw_postgres.migrate(url)


def test_without_auto_migrate_a_missing_schema_is_a_schema_error(
    pg_url: str, fresh_schema: str
) -> None:
    url = with_query(pg_url, f"schema={fresh_schema}&auto_migrate=false")
    client = qw.open(url, namespace="a")
    try:
        with pytest.raises(qw.SchemaError, match="migrate"):
            client.enqueue_one("q", 1)
        assert client.backend.migrate() == LATEST_VERSION  # type: ignore[attr-defined]
        assert client.enqueue_one("q", 1).created
    finally:
        client.close()


def test_the_schema_name_is_chosen_by_the_url(pg_url: str, fresh_schema: str) -> None:
    url = with_query(pg_url, f"schema={fresh_schema}")
    with closing(qw.open(url, namespace="a")) as client:
        client.enqueue_one("q", {"x": 1})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        [(n,)] = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.jobs").format(sql.Identifier(fresh_schema))
        ).fetchall()
    assert n == 1


def _indexdef(pg_url: str, schema_name: str, index: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        [(indexdef,)] = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = %s",
            (schema_name, index),
        ).fetchall()
    return str(indexdef)


def test_a_0_1_0_store_is_upgraded_and_its_jobs_become_plain_jobs(
    pg_url: str, fresh_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = with_query(pg_url, f"schema={fresh_schema}")
    # A schema exactly as qw-postgres 0.1.0 left it: migration 1 only.
    with monkeypatch.context() as m:
        m.setattr(schema, "LATEST_VERSION", 1)
        assert qw_postgres.migrate(url) == 1
    tables, indexes, versions = _schema_objects(pg_url, fresh_schema)
    assert "workflows" not in tables
    assert versions == [1]
    assert "'waiting'" not in _indexdef(pg_url, fresh_schema, "jobs_dedupe")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # Rows written by 0.1.0: a queued job holding a key, a running one, a finished one.
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.jobs (namespace, id, queue, status, priority, run_at,"
                " max_attempts, payload, dedupe_key, result, finished_at) VALUES"
                " ('ns', 'old-1', 'q', 'queued', 0, now(), 3, '1', 'k', NULL, NULL),"
                " ('ns', 'old-2', 'q', 'succeeded', 0, now(), 3, '2', NULL, '\"r\"', now())"
            ).format(sql.Identifier(fresh_schema))
        )

    # Opening the backend migrates (auto_migrate) through the same mechanism.
    with closing(qw.open(url, namespace="ns")) as client:
        tables, indexes, versions = _schema_objects(pg_url, fresh_schema)
        assert tables == EXPECTED_TABLES
        assert indexes == EXPECTED_INDEXES
        assert versions == list(range(1, LATEST_VERSION + 1))
        assert "'waiting'" in _indexdef(pg_url, fresh_schema, "jobs_dedupe")
        old = client.get("old-1")
        assert (old.workflow, old.parents, old.children, old.failed_parents) == (None, (), (), ())
        assert old.on_parent_failure is ParentFailure.CANCEL
        assert client.get("old-2").result == "r"
        # The old job keeps its key; a step cannot take it.
        assert client.enqueue_one("q", 3, dedupe_key="k").id == "old-1"
        with pytest.raises(qw.DuplicateJob):
            client.create_workflow("w", [NewJob("q", 1, id="w.1", dedupe_key="k")])
        # Workflows work on the upgraded store, beside the old jobs.
        assert client.create_workflow(
            "w", [NewJob("q", 1, id="w.1"), NewJob("q", 2, id="w.2", parents=("w.1",))]
        ).created
        assert client.get("w.2").status is JobStatus.WAITING
        # A waiting step's key is live: the migrated jobs_dedupe index says so.
        assert client.create_workflow(
            "v",
            [NewJob("q", 1, id="v.1"), NewJob("q", 2, id="v.2", parents=("v.1",), dedupe_key="d")],
        ).created
        assert client.enqueue_one("q", 4, dedupe_key="d").id == "v.2"
        done = 0
        while claims := client.claim(["q"], worker="w", limit=10):
            for c in claims:
                client.complete(c.lease)
                done += 1
        assert done == 5
        assert client.get_workflow("w").state is WorkflowState.SUCCEEDED
        assert client.get("old-1").status is JobStatus.SUCCEEDED
    assert qw_postgres.migrate(url) == LATEST_VERSION


def test_a_status_outside_the_check_is_refused_after_the_upgrade(
    pg_url: str, fresh_schema: str
) -> None:
    url = with_query(pg_url, f"schema={fresh_schema}")
    qw_postgres.migrate(url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        insert = sql.SQL(
            "INSERT INTO {}.jobs (namespace, id, queue, status, priority, run_at, max_attempts)"
            " VALUES ('ns', %s, 'q', %s, 0, now(), 1)"
        ).format(sql.Identifier(fresh_schema))
        conn.execute(insert, ("a", "waiting"))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(insert, ("b", "sleeping"))


def test_an_0_2_store_is_upgraded_and_its_jobs_read_as_unlimited(
    pg_url: str, fresh_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = with_query(pg_url, f"schema={fresh_schema}")
    # A schema exactly as qw-postgres 0.2.0 left it: migrations 1 and 2.
    with monkeypatch.context() as m:
        m.setattr(schema, "LATEST_VERSION", 2)
        assert qw_postgres.migrate(url) == 2
    tables, _, versions = _schema_objects(pg_url, fresh_schema)
    assert "limits" not in tables
    assert versions == [1, 2]
    ident = sql.Identifier(fresh_schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # Rows as qw-postgres 0.2.0 wrote them: two plain jobs, and a
        # workflow with a queued step and a waiting one.
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.jobs (namespace, id, queue, status, priority, run_at,"
                " max_attempts, payload) VALUES"
                " ('ns', 'old-1', 'q', 'queued', 0, now(), 3, '1'),"
                " ('ns', 'old-2', 'q', 'queued', 0, now(), 3, '2')"
            ).format(ident)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.workflows (namespace, id, state, live)"
                " VALUES ('ns', 'w', 'running', 2)"
            ).format(ident)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.jobs (namespace, id, queue, status, priority, run_at,"
                " max_attempts, payload, workflow, parents, children, on_parent_failure,"
                " failed_parents, pending) VALUES"
                " ('ns', 'w.a', 'q', 'queued', 0, now(), 3, '3', 'w', '{{}}', '{{w.b}}', 'cancel',"
                "  '{{}}', 0),"
                " ('ns', 'w.b', 'q', 'waiting', 0, now(), 3, '4', 'w', '{{w.a}}', '{{}}', 'cancel',"
                "  '{{}}', 1)"
            ).format(ident)
        )
    with closing(qw.open(url, namespace="ns")) as client:
        [(version,)] = _schema_rows(
            pg_url, fresh_schema, "SELECT max(version) FROM {}.schema_version"
        )
        assert version == schema.LATEST_VERSION
        for job in client.get_many(["old-1", "w.a", "w.b"]):
            assert job is not None
            assert (job.limit_key, job.limit, job.fair) == (None, None, False)
        assert _schema_rows(
            pg_url,
            fresh_schema,
            "SELECT DISTINCT fair_rank, parked, has_limit FROM {}.jobs",
        ) == [(0, False, False)]
        # Keyed jobs beside the old ones, held to their limits.
        keyed = [NewJob("q", i, limit_key="k", limit=Limit(concurrency=1)) for i in range(3)]
        new = [a.id for a in client.enqueue(keyed)]
        claims = client.claim(["q"], worker="w", limit=10)
        assert [c.job.id for c in claims] == ["old-1", "old-2", "w.a", new[0]]
        for c in claims:
            client.complete(c.lease)
        [step] = client.claim(["q"], worker="w", limit=10)[:1]
        assert step.job.id in ("w.b", new[1])
        assert client.keys()[0].key == "k"


def test_an_0_3_store_is_upgraded_and_its_jobs_read_without_progress(
    pg_url: str, fresh_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = with_query(pg_url, f"schema={fresh_schema}")
    # A schema exactly as qw-postgres 0.3.0 left it: migrations 1 to 3.
    with monkeypatch.context() as m:
        m.setattr(schema, "LATEST_VERSION", 3)
        assert qw_postgres.migrate(url) == 3
    ident = sql.Identifier(fresh_schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'jobs'",
            (fresh_schema,),
        ).fetchall()
        assert columns
        assert not any(c.startswith("progress") for (c,) in columns)
        # Rows as qw-postgres 0.3.0 wrote them: queued, running, succeeded, keyed.
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.jobs (namespace, id, queue, status, priority, run_at,"
                " max_attempts, payload, result, finished_at, limit_key, has_limit, concurrency)"
                " VALUES"
                " ('ns', 'old-1', 'q', 'queued', 0, now(), 3, '1', NULL, NULL, NULL, false, NULL),"
                " ('ns', 'old-2', 'q', 'succeeded', 0, now(), 3, '2', '\"r\"', now(), NULL,"
                "  false, NULL),"
                " ('ns', 'old-3', 'q', 'queued', 0, now(), 3, '3', NULL, NULL, 'k', true, 1)"
            ).format(ident)
        )
    with closing(qw.open(url, namespace="ns")) as client:
        [(version,)] = _schema_rows(
            pg_url, fresh_schema, "SELECT max(version) FROM {}.schema_version"
        )
        assert version == schema.LATEST_VERSION
        jobs = client.get_many(["old-1", "old-2", "old-3"])
        assert [j.progress if j else "missing" for j in jobs] == [None, None, None]
        assert jobs[1] is not None
        assert jobs[1].result == "r"
        assert jobs[2] is not None
        assert jobs[2].limit == Limit(concurrency=1)
        # An old job reports progress once claimed, like any other.
        claims = client.claim(["q"], worker="w", limit=10)
        assert sorted(c.job.id for c in claims) == ["old-1", "old-3"]
        assert all(c.job.progress is None for c in claims)
        client.set_progress(claims[0].lease, 0.5, "half")
        got = client.get(claims[0].job.id).progress
        assert got is not None
        assert (got.fraction, got.message) == (0.5, "half")


def _schema_rows(pg_url: str, schema_name: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute(sql.SQL(query).format(sql.Identifier(schema_name))).fetchall()
