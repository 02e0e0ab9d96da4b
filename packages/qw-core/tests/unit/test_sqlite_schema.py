"""The sqlite file: WAL, pragmas, a versioned schema created exactly once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qw
from qw.backends.sqlite import SqliteBackend, _schema
from qw.backends.sqlite._schema import SCHEMA_VERSION
from qw.errors import SchemaError

# Each child waits for a shared start instant, opens the fresh file, enqueues
# one job and says "ok": the opens collide as closely as processes can.
_CHILD = """
import sys, time
import qw
from qw.backends.sqlite import SqliteBackend
from qw.model import NewJob
path, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    pass
with qw.Client(SqliteBackend(path, namespace="race")) as client:
    client.enqueue([NewJob("q", sys.argv[3])])
print("ok")
"""


def _meta(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute("SELECT key, value FROM qw_meta ORDER BY key"))


def test_two_processes_opening_a_fresh_file_both_succeed(tmp_path: Path) -> None:
    for round_ in range(6):
        path = tmp_path / f"fresh-{round_}.db"
        start = time.time() + 1.5  # past both interpreters' start-up
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(path), repr(start), f"child-{i}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            assert out.strip() == "ok"
        assert _meta(path) == [("schema_version", str(SCHEMA_VERSION))]
        backend = SqliteBackend(path, namespace="race")
        try:
            assert sorted(j.payload for j in backend.list_jobs()) == ["child-0", "child-1"]  # type: ignore[type-var]
        finally:
            backend.close()


def test_a_fresh_file_is_wal_with_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    SqliteBackend(path, namespace="a").close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert _meta(path) == [("schema_version", str(SCHEMA_VERSION))]
    # Reopening an existing file neither fails nor rewrites it.
    SqliteBackend(path, namespace="b").close()
    assert _meta(path) == [("schema_version", str(SCHEMA_VERSION))]


@pytest.mark.parametrize(("option", "expected"), [("FULL", 2), ("NORMAL", 1), ("EXTRA", 3)])
def test_synchronous_is_applied_to_connections(tmp_path: Path, option: str, expected: int) -> None:
    backend = SqliteBackend(tmp_path / "x.db", namespace="a", synchronous=option)
    try:
        conn = backend._db.connect()
        try:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == expected
        finally:
            conn.close()
    finally:
        backend.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    SqliteBackend(path, namespace="a").close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE qw_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    with pytest.raises(SchemaError, match="newer"):
        SqliteBackend(path, namespace="a")


def test_a_meta_table_without_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE qw_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    with pytest.raises(SchemaError):
        SqliteBackend(path, namespace="a")


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(SchemaError, match="not a usable SQLite database"):
        SqliteBackend(path, namespace="a")


def test_dropped_tables_surface_as_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    backend = SqliteBackend(path, namespace="a")
    try:
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE qw_jobs")
        with pytest.raises(SchemaError):
            backend.counts()
    finally:
        backend.close()


# -- someone else's file ------------------------------------------------------


def _app_file(path: Path, *, wal: bool = False) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    if wal:
        # Outside the transaction above: the mode cannot change inside one.
        conn = sqlite3.connect(path, isolation_level=None)
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        conn.close()


def _state(path: Path) -> tuple[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    finally:
        conn.close()
    return mode, sorted(names)


def test_a_file_holding_other_tables_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _app_file(path)
    with pytest.raises(SchemaError, match=r"not qw's \(users\).*\?shared=true"):
        qw.open(f"sqlite:///{path}")
    assert _state(path) == ("delete", ["users"])


def test_shared_true_leaves_the_journal_mode_alone_and_needs_wal(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _app_file(path)
    with pytest.raises(qw.ConfigurationError, match="journal mode 'delete'"):
        qw.open(f"sqlite:///{path}?shared=true")
    assert _state(path) == ("delete", ["users"])


def test_shared_true_adds_qw_tables_beside_the_applications(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _app_file(path, wal=True)
    with qw.open(f"sqlite:///{path}?shared=true") as client:
        client.enqueue_one("q", {"x": 1})
    mode, tables = _state(path)
    assert mode == "wal"
    assert "users" in tables
    assert "qw_jobs" in tables
    with qw.open(f"sqlite:///{path}?shared=1") as client:
        assert client.counts()["q"][qw.JobStatus.QUEUED] == 1


def test_qws_own_file_is_still_switched_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "own.db"
    SqliteBackend(path, namespace="a").close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    SqliteBackend(path, namespace="a").close()
    assert _state(path)[0] == "wal"


# -- data written by 0.1.0 ----------------------------------------------------

# The tables exactly as 0.1.0 (2402c38, schema version 1) created them: a copy,
# not an import, so that a change to the migration's starting point shows here.
_DDL_0_1_0 = """
CREATE TABLE IF NOT EXISTS qw_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- seq is the store-side receive order (FIFO among equal priorities),
-- AUTOINCREMENT keeps it increasing even after purges free the top rows.
CREATE TABLE qw_jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace        TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    run_at           REAL    NOT NULL,
    max_attempts     INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    status           TEXT    NOT NULL,
    created_at       REAL    NOT NULL,
    dedupe_key       TEXT,
    result           TEXT    NOT NULL DEFAULT 'null',
    error            TEXT    NOT NULL DEFAULT 'null',
    started_at       REAL,
    finished_at      REAL,
    worker           TEXT,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    token            TEXT,
    finished_by      TEXT,
    UNIQUE (namespace, id)
);
-- Claim: due queued jobs of a queue in (priority, seq) order, and run_at rides
-- along so the due test needs no table lookup.
CREATE INDEX qw_jobs_claim ON qw_jobs (namespace, queue, priority, seq, run_at)
    WHERE status = 'queued';
-- A dedupe key is held by at most one live job per namespace.
CREATE UNIQUE INDEX qw_jobs_dedupe ON qw_jobs (namespace, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX qw_jobs_leases ON qw_jobs (namespace, lease_expires_at)
    WHERE status = 'running';
CREATE INDEX qw_jobs_queue_status ON qw_jobs (namespace, queue, status);
CREATE INDEX qw_jobs_status_id ON qw_jobs (namespace, status, id);
CREATE INDEX qw_jobs_finished ON qw_jobs (namespace, finished_at)
    WHERE finished_at IS NOT NULL;

-- cursor increases within the file, hence within every namespace.
CREATE TABLE qw_events (
    cursor     INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace  TEXT    NOT NULL,
    job_id     TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    acked      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX qw_events_pending ON qw_events (namespace, cursor) WHERE acked = 0;
CREATE INDEX qw_events_acked ON qw_events (namespace, created_at) WHERE acked = 1;

CREATE TABLE qw_workers (
    namespace   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    queues      TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at  REAL    NOT NULL,
    last_seen   REAL    NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;

-- Bumped in the transaction that makes work claimable on a queue, so a
-- waiter in another process can tell "new work" from any other commit.
-- queue '' is the whole namespace (a switch turned ON).
CREATE TABLE qw_wakeups (
    namespace TEXT    NOT NULL,
    queue     TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (namespace, queue)
) WITHOUT ROWID;

-- queue '' is the namespace's own switch (no queue name is empty).
CREATE TABLE qw_switches (
    namespace TEXT    NOT NULL,
    queue     TEXT    NOT NULL,
    enabled   INTEGER NOT NULL,
    PRIMARY KEY (namespace, queue)
) WITHOUT ROWID;
"""


def _file_0_1_0(path: Path) -> None:
    """A file as 0.1.0 left it: WAL, its tables, version 1."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        for statement in _DDL_0_1_0.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO qw_meta (key, value) VALUES ('schema_version', '1')")
    finally:
        conn.close()


def _layout(path: Path) -> list[tuple[str, str, str]]:
    """Every schema object of the file, and each table's columns, comparable across files."""
    conn = sqlite3.connect(path)
    try:
        objects = conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
            "ORDER BY type, name"
        ).fetchall()
        tables = [name for kind, name, _ in objects if kind == "table"]
        columns = [
            ("column", f"{table}.{c[1]}", f"{c[2]} notnull={c[3]} default={c[4]} pk={c[5]}")
            for table in tables
            for c in conn.execute(f"PRAGMA table_info({table})")
        ]
        indexes = [
            ("index-sql", name, " ".join(str(sql).split()))
            for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        ]
    finally:
        conn.close()
    return sorted([*objects, *columns, *indexes])


def test_a_0_1_0_file_is_migrated_to_the_layout_of_a_fresh_one(tmp_path: Path) -> None:
    old, fresh = tmp_path / "old.db", tmp_path / "fresh.db"
    _file_0_1_0(old)
    SqliteBackend(old, namespace="a").close()
    SqliteBackend(fresh, namespace="a").close()
    assert _meta(old) == [("schema_version", str(SCHEMA_VERSION))]
    assert _layout(old) == _layout(fresh)
    # The dedupe index now counts a waiting step's key as held.
    with sqlite3.connect(old) as conn:
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'qw_jobs_dedupe'"
        ).fetchone()
    assert "'waiting'" in sql
    # Reopening a migrated file changes nothing.
    SqliteBackend(old, namespace="b").close()
    assert _layout(old) == _layout(fresh)


def test_a_migration_that_fails_leaves_the_file_as_0_1_0_left_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, reference = tmp_path / "old.db", tmp_path / "reference.db"
    _file_0_1_0(path)
    _file_0_1_0(reference)
    broken = _schema._MIGRATIONS[2] + ";\nCREATE TABLE qw_jobs (x INTEGER)"
    monkeypatch.setitem(_schema._MIGRATIONS, 2, broken)
    with pytest.raises(SchemaError, match=r"cannot migrate .* to schema version 2"):
        SqliteBackend(path, namespace="a")
    assert _meta(path) == [("schema_version", "1")]
    assert _layout(path) == _layout(reference)
    monkeypatch.undo()
    SqliteBackend(path, namespace="a").close()
    assert _meta(path) == [("schema_version", str(SCHEMA_VERSION))]


def test_two_processes_migrating_a_0_1_0_file_both_succeed(tmp_path: Path) -> None:
    for round_ in range(2):
        path = tmp_path / f"old-{round_}.db"
        _file_0_1_0(path)
        start = time.time() + 1.5
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(path), repr(start), f"child-{i}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            assert out.strip() == "ok"
        assert _meta(path) == [("schema_version", str(SCHEMA_VERSION))]
        with qw.open(f"sqlite:///{path}", namespace="race") as client:
            assert sorted(str(j.payload) for j in client.list_jobs()) == ["child-0", "child-1"]


def test_jobs_as_0_1_0_stored_them_are_moved_by_transitions(tmp_path: Path) -> None:
    """Rows 0.1.0's code wrote become plain jobs of the migrated file."""
    path = tmp_path / "old.db"
    _file_0_1_0(path)
    now = time.time()
    columns = (
        "namespace, id, queue, payload, priority, run_at, max_attempts, attempts, status, "
        "created_at, dedupe_key, started_at, finished_at, worker, lease_expires_at, token"
    )
    with sqlite3.connect(path) as conn:
        conn.executemany(
            f"INSERT INTO qw_jobs ({columns}) VALUES ({', '.join('?' * 16)})",
            [  # as 0.1.0's enqueue, claim and complete left them
                ("a", "expired", "q", '{"n":1}', 0, now, 3, 1, "running", now, None, now, None,
                 "w", now - 60, "t-expired"),
                ("a", "held", "q", "[1,2]", 0, now, 1, 1, "running", now, None, now, None, "w",
                 now + 600, "t-held"),
                ("a", "keyed", "q", "null", 0, now, 3, 0, "queued", now, "k", None, None, None,
                 None, None),
                ("a", "done", "q", "null", 0, now - 90, 3, 1, "succeeded", now - 90, None,
                 now - 90, now - 60, None, None, None),
            ],
        )  # fmt: skip
    with qw.open(f"sqlite:///{path}", namespace="a") as client:
        jobs = client.list_jobs()
        assert [j.id for j in jobs] == ["done", "expired", "held", "keyed"]
        for job in jobs:
            assert (job.workflow, job.parents, job.children, job.failed_parents) == (
                None,
                (),
                (),
                (),
            )
            assert job.on_parent_failure is qw.ParentFailure.CANCEL
        assert client.reclaim_expired() == 1
        assert client.get("expired").status is qw.JobStatus.QUEUED
        lease = qw.Lease("held", "t-held", client.now(), attempt=1, max_attempts=1)
        with pytest.raises(qw.LeaseLost):
            client.complete(qw.Lease("held", "t-held", client.now(), attempt=2, max_attempts=2))
        assert client.fail(lease, {"boom": True}, retry_in=0) is qw.JobStatus.FAILED
        assert client.fail(lease, {"boom": True}, retry_in=0) is qw.JobStatus.FAILED  # a repeat
        held = client.get("held")
        assert (held.payload, held.error, held.finished_at is not None) == (
            [1, 2],
            {"boom": True},
            True,
        )
        answer = client.enqueue_one("q", 2, dedupe_key="k")
        assert (answer.id, answer.created) == ("keyed", False)
        assert client.cancel("keyed") is qw.JobStatus.CANCELLED
        assert [e.type for e in client.fetch_events()] == ["job.cancelled"]
        assert client.purge(30).jobs == 1
        assert client.find("done") is None
        # Workflows work in the migrated file, beside the old jobs.
        client.create_workflow("wf", [qw.NewJob("q", 1, id="wf.a", dedupe_key="k")])
        (claim,) = client.claim(["q"], worker="w", limit=1)
        assert claim.job.id == "expired"
        assert client.get("wf.a").status is qw.JobStatus.QUEUED


# -- data written by 0.2.0 ----------------------------------------------------


def _file_0_2_0(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file as 0.2.0 left it (schema version 2): 0.1.0's, migrated by the released step."""
    _file_0_1_0(path)
    with monkeypatch.context() as patch:
        patch.setattr(_schema, "SCHEMA_VERSION", 2)
        SqliteBackend(path, namespace="a").close()
    assert _meta(path) == [("schema_version", "2")]


def test_a_0_2_0_file_is_migrated_to_the_layout_of_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, fresh = tmp_path / "old.db", tmp_path / "fresh.db"
    _file_0_2_0(old, monkeypatch)
    with sqlite3.connect(old) as conn:
        assert "limit_key" not in [c[1] for c in conn.execute("PRAGMA table_info(qw_jobs)")]
    SqliteBackend(old, namespace="a").close()
    SqliteBackend(fresh, namespace="a").close()
    assert _meta(old) == [("schema_version", str(SCHEMA_VERSION))]
    assert _layout(old) == _layout(fresh)
    # The claim index orders fair jobs among equal priorities.
    with sqlite3.connect(old) as conn:
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'qw_jobs_claim'"
        ).fetchone()
    assert "priority, fair_rank, seq" in sql


def test_jobs_as_0_2_0_stored_them_read_back_unlimited_and_are_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    _file_0_2_0(path, monkeypatch)
    now = time.time()
    columns = (
        "namespace, id, queue, payload, priority, run_at, max_attempts, attempts, status, "
        "created_at, worker, lease_expires_at, token, workflow, on_parent_failure, pending"
    )
    with sqlite3.connect(path) as conn:
        conn.executemany(
            f"INSERT INTO qw_jobs ({columns}) VALUES ({', '.join('?' * 16)})",
            [  # as 0.2.0's enqueue, create_workflow and claim left them
                ("a", "late", "q", "1", 5, now, 3, 0, "queued", now, None, None, None, None,
                 None, 0),
                ("a", "first", "q", "2", 0, now, 3, 0, "queued", now, None, None, None, None,
                 None, 0),
                ("a", "step", "q", "3", 0, now, 3, 0, "queued", now, None, None, None, "wf",
                 "cancel", 0),
                ("a", "held", "q", "4", 0, now, 3, 1, "running", now, "w", now + 600,
                 "t-held", None, None, 0),
            ],
        )  # fmt: skip
        conn.execute(
            "INSERT INTO qw_workflows (namespace, id, created_at, live) VALUES ('a', 'wf', ?, 1)",
            (now,),
        )
    with qw.open(f"sqlite:///{path}", namespace="a") as client:
        jobs = client.list_jobs()
        assert [j.id for j in jobs] == ["first", "held", "late", "step"]
        for job in jobs:
            assert (job.limit_key, job.limit, job.fair) == (None, None, False)
        assert client.keys() == []
        assert client.list_jobs(key="k") == []
        with sqlite3.connect(path) as conn:
            assert {r[0] for r in conn.execute("SELECT fair_rank FROM qw_jobs")} == {0}
        # New keyed jobs sit beside the old ones; claim order is (priority, rank, seq).
        client.enqueue_one("q", 5, id="keyed", limit_key="k", limit=qw.Limit(concurrency=0))
        claims = client.claim(["q"], worker="w", limit=10)
        assert [c.job.id for c in claims] == ["first", "step", "late"]
        assert client.get("keyed").status is qw.JobStatus.QUEUED
        (state,) = client.keys()
        assert (state.key, state.queued, state.throttled) == ("k", 1, True)
        assert client.complete(claims[1].lease) is qw.JobStatus.SUCCEEDED
        assert client.get_workflow("wf").state is qw.WorkflowState.SUCCEEDED


# -- data written by 0.3.0 ----------------------------------------------------


def _file_0_3_0(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file as 0.3.0 left it (schema version 3): 0.2.0's, migrated by the released step."""
    _file_0_2_0(path, monkeypatch)
    with monkeypatch.context() as patch:
        patch.setattr(_schema, "SCHEMA_VERSION", 3)
        SqliteBackend(path, namespace="a").close()
    assert _meta(path) == [("schema_version", "3")]


def test_a_0_3_0_file_is_migrated_to_the_layout_of_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, fresh = tmp_path / "old.db", tmp_path / "fresh.db"
    _file_0_3_0(old, monkeypatch)
    with sqlite3.connect(old) as conn:
        assert "progress_at" not in [c[1] for c in conn.execute("PRAGMA table_info(qw_jobs)")]
    SqliteBackend(old, namespace="a").close()
    SqliteBackend(fresh, namespace="a").close()
    assert _meta(old) == [("schema_version", str(SCHEMA_VERSION))]
    assert _layout(old) == _layout(fresh)


def test_jobs_as_0_3_0_stored_them_read_back_without_progress_and_take_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    _file_0_3_0(path, monkeypatch)
    now = time.time()
    columns = (
        "namespace, id, queue, payload, priority, run_at, max_attempts, attempts, status, "
        "created_at, finished_at, result"
    )
    with sqlite3.connect(path) as conn:
        conn.executemany(
            f"INSERT INTO qw_jobs ({columns}) VALUES ({', '.join('?' * 12)})",
            [  # as 0.3.0's enqueue and complete left them
                ("a", "waiting", "q", "1", 0, now, 3, 0, "queued", now, None, "null"),
                ("a", "done", "q", "2", 0, now, 3, 1, "succeeded", now, now, '{"ok": 1}'),
            ],
        )
    with qw.open(f"sqlite:///{path}", namespace="a") as client:
        assert [(j.id, j.progress) for j in client.list_jobs()] == [
            ("done", None),
            ("waiting", None),
        ]
        assert client.get("done").result == {"ok": 1}
        claim = client.claim(["q"], worker="w", limit=1)[0]
        assert claim.job.progress is None
        client.set_progress(claim.lease, 0.5, "half")
        progress = client.get("waiting").progress
        assert progress is not None
        assert (progress.fraction, progress.message) == (0.5, "half")
        assert [e.type for e in client.fetch_events()] == ["job.progress"]
