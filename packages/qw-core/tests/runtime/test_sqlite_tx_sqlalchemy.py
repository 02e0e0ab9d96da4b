"""The application's transaction held through SQLAlchemy (its sqlite driver), on a real file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import qw
from qw.backends.sqlite import SqliteBackend
from qw.model import NewJob

sqlalchemy = pytest.importorskip(
    "sqlalchemy", reason="SQLAlchemy is not installed (qw-core's test extra installs it)"
)
from sqlalchemy import text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


@pytest.fixture
def client(path: Path) -> Iterator[qw.Client]:
    with qw.Client(SqliteBackend(path, namespace="app", shared=True)) as c:
        yield c


@pytest.fixture
def engine(path: Path, client: qw.Client) -> Iterator[Any]:
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE orders (id TEXT PRIMARY KEY)"))
    yield engine
    engine.dispose()


def _committed(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_connection_commits_the_jobs_with_its_rows(
    path: Path, client: qw.Client, engine: Any
) -> None:
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO orders (id) VALUES ('o1')"))
        client.enqueue([NewJob("q", 1, id="j1")], connection=conn)
        assert _committed(path, "SELECT id FROM qw_jobs") == []
        conn.commit()
    assert _committed(path, "SELECT id FROM qw_jobs") == [("j1",)]
    assert _committed(path, "SELECT id FROM orders") == [("o1",)]


def test_a_connection_rolls_them_back_with_its_rows(
    path: Path, client: qw.Client, engine: Any
) -> None:
    with engine.connect() as conn:
        client.enqueue([NewJob("q", 1, id="j1")], connection=conn)
        conn.execute(text("INSERT INTO orders (id) VALUES ('o1')"))
        conn.rollback()
    assert _committed(path, "SELECT id FROM qw_jobs") == []
    assert _committed(path, "SELECT id FROM orders") == []


def test_a_session_commits_the_jobs_and_the_jobs_end_with_its_rows(
    path: Path, client: qw.Client, engine: Any
) -> None:
    with Session(engine) as session:
        session.execute(text("INSERT INTO orders (id) VALUES ('o1')"))
        client.enqueue([NewJob("q", 1, id="j1")], connection=session)
        session.commit()
    claim = client.claim(["q"], worker="w", limit=1)[0]
    with Session(engine) as session:
        session.execute(text("INSERT INTO orders (id) VALUES ('o2')"))
        client.complete(claim.lease, {"ok": True}, connection=session)
        assert client.get("j1").status is qw.JobStatus.RUNNING
        session.commit()
    job = client.get("j1")
    assert (job.status, job.result) == (qw.JobStatus.SUCCEEDED, {"ok": True})
    assert _committed(path, "SELECT id FROM orders ORDER BY id") == [("o1",), ("o2",)]


def test_a_session_rolled_back_after_lease_lost_keeps_none_of_its_rows(
    path: Path, client: qw.Client, engine: Any
) -> None:
    client.enqueue([NewJob("q", 1, id="j1")])
    claim = client.claim(["q"], worker="w", limit=1)[0]
    client.abort(claim.lease, "operator")  # the lease is now stale
    with Session(engine) as session:
        session.execute(text("INSERT INTO orders (id) VALUES ('o1')"))
        with pytest.raises(qw.LeaseLost):
            client.complete(claim.lease, "late", connection=session)
        session.rollback()
    assert _committed(path, "SELECT id FROM orders") == []
    assert client.get("j1").status is qw.JobStatus.CANCELLED


def test_an_engine_on_another_file_is_refused(
    tmp_path: Path, client: qw.Client, path: Path
) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        with engine.connect() as conn, pytest.raises(qw.InvalidInput):
            client.enqueue([NewJob("q", 1)], connection=conn)
    finally:
        engine.dispose()
    assert _committed(path, "SELECT id FROM qw_jobs") == []
