"""The sqlite file: WAL, pragmas, a versioned schema created exactly once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qw
from qw.backends.sqlite import SqliteBackend
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


def test_jobs_as_0_1_0_stored_them_are_moved_by_transitions(tmp_path: Path) -> None:
    """Schema version 1 is 2402c38's; the rows its code wrote need no migration."""
    path = tmp_path / "old.db"
    SqliteBackend(path, namespace="a").close()
    now = time.time()
    columns = (
        "namespace, id, queue, payload, priority, run_at, max_attempts, attempts, status, "
        "created_at, dedupe_key, started_at, worker, lease_expires_at, token"
    )
    with sqlite3.connect(path) as conn:
        conn.executemany(
            f"INSERT INTO qw_jobs ({columns}) VALUES ({', '.join('?' * 15)})",
            [  # as 0.1.0's enqueue and claim left them
                ("a", "expired", "q", '{"n":1}', 0, now, 3, 1, "running", now, None, now, "w",
                 now - 60, "t-expired"),
                ("a", "held", "q", "[1,2]", 0, now, 1, 1, "running", now, None, now, "w",
                 now + 600, "t-held"),
                ("a", "keyed", "q", "null", 0, now, 3, 0, "queued", now, "k", None, None,
                 None, None),
            ],
        )  # fmt: skip
    with qw.open(f"sqlite:///{path}", namespace="a") as client:
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
