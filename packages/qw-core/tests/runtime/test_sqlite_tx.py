"""The sqlite backend in the application's transaction, on real files.

``client.enqueue(jobs, connection=conn)`` and ``client.complete(lease,
connection=conn)`` write through the application's own ``sqlite3``
connection, inside its transaction: the jobs and the job's end exist if and
only if the application commits. Every test here opens the file as an
application would, beside qw (``shared=True``: the application has its own
tables in it).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import qw
from qw.backends.sqlite import SqliteBackend
from qw.model import NewJob

#: The backends' poll interval here, and the longest a foreign commit may take to be seen.
POLL_S = 0.05
SEEN_WITHIN_S = 1.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


def _client(path: Path, namespace: str = "app") -> qw.Client:
    return qw.Client(SqliteBackend(path, namespace=namespace, shared=True, poll_interval=POLL_S))


@pytest.fixture
def client(path: Path) -> Iterator[qw.Client]:
    with _client(path) as c:
        yield c


@pytest.fixture
def other(path: Path, client: qw.Client) -> Iterator[qw.Client]:
    """A second backend object on the same file and namespace (as another worker holds)."""
    with _client(path) as c:
        yield c


@pytest.fixture
def app(path: Path, client: qw.Client) -> Iterator[sqlite3.Connection]:
    """The application's connection, in Python's default (legacy implicit) mode."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, state TEXT)")
    try:
        yield conn
    finally:
        conn.close()


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """What a fresh connection sees: only committed data."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _jobs(path: Path) -> list[tuple[object, ...]]:
    return _rows(path, "SELECT id, status FROM qw_jobs ORDER BY id")


def _waiter(client: qw.Client, timeout: float) -> tuple[threading.Thread, list[float]]:
    """A thread that claims nothing from ``q``, then waits for work; when it woke, if it did."""
    ready = threading.Event()
    woke: list[float] = []

    def run() -> None:
        # A claim marks the versions this thread saw (marks are per thread).
        assert client.claim(["q"], worker="w", limit=1) == []
        ready.set()
        if client.backend.wait(["q"], timeout):
            woke.append(time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    assert ready.wait(10)
    return thread, woke


def _missing(client: qw.Client, job_id: str) -> bool:
    try:
        client.get(job_id)
    except qw.JobNotFound:
        return True
    return False


# -- enqueue ---------------------------------------------------------------------


def test_committed_jobs_are_claimable_and_invisible_until_then(
    path: Path, client: qw.Client, other: qw.Client, app: sqlite3.Connection
) -> None:
    app.execute("INSERT INTO orders (id, state) VALUES ('o1', 'new')")
    answers = client.enqueue([NewJob("q", {"order": "o1"}, id="j1")], connection=app)
    assert answers == [qw.Enqueued("j1", created=True)]
    assert app.in_transaction
    # Not committed: no other connection sees it, not even qw's own.
    assert _jobs(path) == []
    assert _missing(other, "j1")
    assert _missing(client, "j1")
    assert other.counts() == {}
    app.commit()
    assert _jobs(path) == [("j1", "queued")]
    assert _rows(path, "SELECT id FROM orders") == [("o1",)]
    claims = other.claim(["q"], worker="w", limit=5)
    assert [c.job.id for c in claims] == ["j1"]
    assert claims[0].job.payload == {"order": "o1"}


def test_a_rolled_back_enqueue_leaves_nothing_and_wakes_no_one(
    path: Path, client: qw.Client, other: qw.Client, app: sqlite3.Connection
) -> None:
    waiter, woke = _waiter(other, 1.0)
    app.execute("INSERT INTO orders (id, state) VALUES ('o1', 'new')")
    client.enqueue([NewJob("q", 1, id="j1")], connection=app)
    app.rollback()
    waiter.join(5)
    assert woke == []
    assert _jobs(path) == []
    assert _rows(path, "SELECT id FROM orders") == []
    assert _rows(path, "SELECT queue, version FROM qw_wakeups") == []
    assert _missing(client, "j1")


def test_a_waiter_in_this_process_sees_a_commit_made_by_the_apps_connection(
    client: qw.Client, other: qw.Client, app: sqlite3.Connection
) -> None:
    waiter, woke = _waiter(other, 10.0)
    client.enqueue([NewJob("q", 1, id="j1")], connection=app)
    time.sleep(0.3)  # no in-process signal: the waiter must still be waiting
    assert not woke
    committed = time.monotonic()
    app.commit()
    waiter.join(15)
    assert woke, "the waiter never saw the commit"
    assert woke[0] - committed < SEEN_WITHIN_S
    assert [c.job.id for c in other.claim(["q"], worker="w", limit=1)] == ["j1"]


def test_a_failed_enqueue_undoes_only_its_own_writes(
    path: Path, client: qw.Client, app: sqlite3.Connection
) -> None:
    client.enqueue([NewJob("q", 1, id="taken")])
    app.execute("INSERT INTO orders (id, state) VALUES ('o1', 'new')")
    client.enqueue([NewJob("q", 1, id="j0")], connection=app)
    with pytest.raises(qw.DuplicateJob):
        client.enqueue([NewJob("q", 2, id="j1"), NewJob("q", 3, id="taken")], connection=app)
    # The app's transaction goes on with what it had written before.
    assert app.in_transaction
    app.commit()
    assert _jobs(path) == [("j0", "queued"), ("taken", "queued")]
    assert _rows(path, "SELECT id FROM orders") == [("o1",)]


def test_a_dedupe_key_held_answers_created_false_in_the_transaction(
    client: qw.Client, app: sqlite3.Connection
) -> None:
    first = client.enqueue([NewJob("q", 1, dedupe_key="k")])[0]
    again = client.enqueue([NewJob("q", 2, dedupe_key="k")], connection=app)[0]
    app.commit()
    assert again == qw.Enqueued(first.id, created=False)


def test_an_autocommit_connection_commits_each_call_as_any_statement_there(
    path: Path, client: qw.Client, app: sqlite3.Connection
) -> None:
    # Django's connections run in autocommit mode (isolation_level=None)
    # outside transaction.atomic(); atomic() issues BEGIN or SAVEPOINT itself.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        client.enqueue([NewJob("q", 1, id="now")], connection=conn)
        assert not conn.in_transaction
        assert _jobs(path) == [("now", "queued")]
        conn.execute("BEGIN")
        conn.execute("INSERT INTO orders (id, state) VALUES ('o1', 'new')")
        client.enqueue([NewJob("q", 1, id="later")], connection=conn)
        assert _jobs(path) == [("now", "queued")]
        conn.execute("ROLLBACK")
        assert _jobs(path) == [("now", "queued")]
        conn.execute("BEGIN")
        client.enqueue([NewJob("q", 1, id="later")], connection=conn)
        conn.execute("COMMIT")
        assert _jobs(path) == [("later", "queued"), ("now", "queued")]
    finally:
        conn.close()


def test_a_connection_without_writes_yet_joins_the_transaction_the_app_commits(
    path: Path, client: qw.Client, app: sqlite3.Connection
) -> None:
    # Legacy mode opens a transaction only before the app's own DML: qw's
    # enqueue comes first here, and still waits for the app's commit().
    assert not app.in_transaction
    client.enqueue([NewJob("q", 1, id="j1")], connection=app)
    assert app.in_transaction
    assert _jobs(path) == []
    app.execute("INSERT INTO orders (id, state) VALUES ('o1', 'new')")
    app.commit()
    assert _jobs(path) == [("j1", "queued")]
    assert _rows(path, "SELECT id FROM orders") == [("o1",)]


def test_a_failed_first_write_leaves_no_transaction_open(
    path: Path, client: qw.Client, app: sqlite3.Connection
) -> None:
    client.enqueue([NewJob("q", 1, id="taken")])
    with pytest.raises(qw.DuplicateJob):
        client.enqueue([NewJob("q", 1, id="taken")], connection=app)
    # The transaction qw began held nothing else: it does not keep the write lock.
    assert not app.in_transaction
    client.enqueue([NewJob("q", 1, id="next")])
    assert _jobs(path) == [("next", "queued"), ("taken", "queued")]


# -- workflows ---------------------------------------------------------------------


def _flow() -> list[NewJob]:
    return [NewJob("q", 1, id="a"), NewJob("q", 2, id="b", parents=("a",))]


def test_a_workflow_exists_only_if_the_app_commits(
    path: Path, client: qw.Client, other: qw.Client, app: sqlite3.Connection
) -> None:
    assert client.create_workflow("wf", _flow(), connection=app).created
    with pytest.raises(qw.WorkflowNotFound):
        other.get_workflow("wf")
    app.rollback()
    with pytest.raises(qw.WorkflowNotFound):
        client.get_workflow("wf")
    assert _jobs(path) == []
    assert _rows(path, "SELECT count(*) FROM qw_edges") == [(0,)]
    assert client.create_workflow("wf", _flow(), connection=app).created
    app.commit()
    assert other.get_workflow("wf").state is qw.WorkflowState.RUNNING
    assert [c.job.id for c in other.claim(["q"], worker="w", limit=5)] == ["a"]


def test_finishing_a_step_in_the_transaction_settles_its_children_with_it(
    path: Path, client: qw.Client, other: qw.Client, app: sqlite3.Connection
) -> None:
    client.create_workflow("wf", _flow())
    claim = client.claim(["q"], worker="w", limit=1)[0]
    app.execute("INSERT INTO orders (id, state) VALUES ('o1', 'paid')")
    assert client.complete(claim.lease, "done", connection=app) is qw.JobStatus.SUCCEEDED
    # Before the commit: the step runs, its child waits, as everyone else sees it.
    assert other.get("a").status is qw.JobStatus.RUNNING
    assert other.get("b").status is qw.JobStatus.WAITING
    app.rollback()
    assert other.get("b").status is qw.JobStatus.WAITING
    assert client.complete(claim.lease, "done", connection=app) is qw.JobStatus.SUCCEEDED
    app.commit()
    assert other.get("a").status is qw.JobStatus.SUCCEEDED
    assert other.get("b").status is qw.JobStatus.QUEUED
    child = other.claim(["q"], worker="w", limit=1)[0]
    other.complete(child.lease)
    assert other.get_workflow("wf").state is qw.WorkflowState.SUCCEEDED


# -- finishing ---------------------------------------------------------------------


def test_complete_in_the_transaction_commits_with_the_apps_rows(
    path: Path, client: qw.Client, other: qw.Client, app: sqlite3.Connection
) -> None:
    client.enqueue([NewJob("q", {"order": "o1"}, id="j1")])
    claim = client.claim(["q"], worker="w", limit=1)[0]
    app.execute("INSERT INTO orders (id, state) VALUES ('o1', 'shipped')")
    assert client.complete(claim.lease, {"shipped": True}, connection=app) is (
        qw.JobStatus.SUCCEEDED
    )
    assert other.get("j1").status is qw.JobStatus.RUNNING
    assert _rows(path, "SELECT id FROM orders") == []
    app.commit()
    job = other.get("j1")
    assert (job.status, job.result) == (qw.JobStatus.SUCCEEDED, {"shipped": True})
    assert _rows(path, "SELECT id, state FROM orders") == [("o1", "shipped")]
    assert [e.type for e in other.fetch_events()] == []  # complete without event= writes none


def test_a_stale_lease_raises_lease_lost_and_the_app_rolls_its_rows_back(
    path: Path, client: qw.Client, app: sqlite3.Connection
) -> None:
    client.enqueue([NewJob("q", 1, id="j1", max_attempts=3)])
    claim = client.claim(["q"], worker="w", limit=1)[0]
    client.fail(claim.lease, "boom", retry_in=0)  # the attempt ended: the lease is stale
    app.execute("INSERT INTO orders (id, state) VALUES ('o1', 'shipped')")
    with pytest.raises(qw.LeaseLost):
        client.complete(claim.lease, "late", connection=app)
    app.rollback()
    assert _rows(path, "SELECT id FROM orders") == []
    job = client.get("j1")
    assert (job.status, job.result, job.attempts) == (qw.JobStatus.QUEUED, None, 1)


def test_a_job_completed_in_the_apps_transaction_wakes_wait_finished_at_commit(
    client: qw.Client, other: qw.Client, app: sqlite3.Connection
) -> None:
    client.enqueue([NewJob("q", 1, id="j1")])
    claim = client.claim(["q"], worker="w", limit=1)[0]
    ended: list[tuple[qw.JobStatus, float]] = []

    def wait() -> None:
        job = other.wait_finished("j1", 10.0)
        ended.append((job.status, time.monotonic()))

    waiter = threading.Thread(target=wait)
    waiter.start()
    client.complete(claim.lease, "ok", connection=app)
    time.sleep(0.3)
    assert not ended  # not committed yet
    committed = time.monotonic()
    app.commit()
    waiter.join(15)
    assert ended, "wait_finished never saw the commit"
    assert ended[0][0] is qw.JobStatus.SUCCEEDED
    assert ended[0][1] - committed < SEEN_WITHIN_S


# -- what the connection must be -------------------------------------------------------


def test_a_connection_to_another_file_is_refused_before_any_write(
    path: Path, tmp_path: Path, client: qw.Client
) -> None:
    elsewhere = sqlite3.connect(tmp_path / "other.db")
    memory = sqlite3.connect(":memory:")
    try:
        for conn in (elsewhere, memory):
            with pytest.raises(qw.InvalidInput, match="not on this backend's file"):
                client.enqueue([NewJob("q", 1)], connection=conn)
            assert not conn.in_transaction
        assert elsewhere.execute("SELECT name FROM sqlite_master").fetchall() == []
    finally:
        elsewhere.close()
        memory.close()
    assert _jobs(path) == []


def test_the_same_file_by_another_path_is_accepted(
    path: Path, tmp_path: Path, client: qw.Client
) -> None:
    link = tmp_path / "link.db"
    link.symlink_to(path)
    conn = sqlite3.connect(link)
    try:
        client.enqueue([NewJob("q", 1, id="j1")], connection=conn)
        conn.commit()
    finally:
        conn.close()
    assert _jobs(path) == [("j1", "queued")]


@pytest.mark.parametrize("bad", [object(), "sqlite:///app.db", 42], ids=["object", "url", "number"])
def test_what_is_no_sqlite3_connection_is_refused(
    path: Path, client: qw.Client, bad: object
) -> None:
    with pytest.raises(qw.InvalidInput, match=r"sqlite3\.Connection"):
        client.enqueue([NewJob("q", 1)], connection=bad)
    assert _jobs(path) == []


def test_a_closed_connection_is_refused(path: Path, client: qw.Client) -> None:
    conn = sqlite3.connect(path)
    conn.close()
    with pytest.raises(qw.InvalidInput, match="cannot be used"):
        client.enqueue([NewJob("q", 1)], connection=conn)


def test_a_busy_file_raises_the_qw_error_at_once_and_the_app_may_try_again(
    path: Path, client: qw.Client, app: sqlite3.Connection
) -> None:
    holder = sqlite3.connect(path, isolation_level=None)
    conn = sqlite3.connect(path, timeout=0.1)
    try:
        conn.execute("SELECT count(*) FROM orders").fetchall()
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        started = time.monotonic()
        with pytest.raises(qw.BackendUnavailable, match="locked"):
            client.enqueue([NewJob("q", 1, id="j1")], connection=conn)
        # One try on the app's busy handler (0.1 s), not qw's busy_timeout of retries.
        assert time.monotonic() - started < 2.0
        holder.execute("ROLLBACK")
        client.enqueue([NewJob("q", 1, id="j1")], connection=conn)
        conn.commit()
    finally:
        holder.close()
        conn.close()
    assert _jobs(path) == [("j1", "queued")]


# -- a crash before the commit ------------------------------------------------------

_CRASHING_APP = """
import sqlite3, sys, time
import qw
from qw.backends.sqlite import SqliteBackend
from qw.model import NewJob

path = sys.argv[1]
client = qw.Client(SqliteBackend(path, namespace="app", shared=True))
conn = sqlite3.connect(path)
conn.execute("INSERT INTO orders (id, state) VALUES ('o1', 'new')")
client.enqueue([NewJob("q", 1, id="doomed")], connection=conn)
print("holding", flush=True)
time.sleep(60)
"""


def test_a_process_killed_before_its_commit_leaves_no_job_and_a_sound_file(
    path: Path, client: qw.Client, app: sqlite3.Connection
) -> None:
    app.commit()  # the orders table exists for the child
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_APP, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "holding"
        # The child holds the write transaction: its job is not there.
        assert _missing(client, "doomed")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert child.returncode == -signal.SIGKILL
    assert _missing(client, "doomed")
    assert _jobs(path) == []
    assert _rows(path, "SELECT id FROM orders") == []
    assert _rows(path, "PRAGMA integrity_check") == [("ok",)]
    # The lock died with the process: writers go on.
    client.enqueue([NewJob("q", 1, id="after")])
    assert [c.job.id for c in client.claim(["q"], worker="w", limit=5)] == ["after"]


def test_a_transaction_that_read_before_another_commit_cannot_write_and_is_told_so(
    path: Path, client: qw.Client, app: sqlite3.Connection
) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")  # deferred: a read snapshot first
        assert conn.execute("SELECT count(*) FROM qw_jobs").fetchone() == (0,)
        client.enqueue([NewJob("q", 1, id="meanwhile")])
        # SQLite cannot turn the stale snapshot into a write transaction.
        with pytest.raises(qw.BackendUnavailable, match="roll it back and run it again"):
            client.enqueue([NewJob("q", 2, id="stale")], connection=conn)
        assert conn.in_transaction  # still the app's, to roll back
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert _jobs(path) == [("meanwhile", "queued")]


_DOCS = Path(__file__).resolve().parents[4] / "docs" / "transactions.md"
_PROGRAM = re.compile(
    r"```python\n(# (?P<name>\w+\.py)\n.*?)```\s*```console\n\$ python (?P=name)\n(?P<out>.*?)```",
    re.S,
)


def test_the_chapters_sqlite_program_prints_what_it_shows(tmp_path: Path) -> None:
    # As tests/runtime/test_docs_examples.py runs the other chapters' programs.
    (program,) = _PROGRAM.finditer(_DOCS.read_text())
    (tmp_path / program["name"]).write_text(program[1])
    run = subprocess.run(
        [sys.executable, program["name"]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == program["out"]


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="sqlite3's autocommit attribute is new in Python 3.12"
)
@pytest.mark.parametrize("autocommit", [True, False])
def test_python_3_12s_autocommit_modes(
    path: Path, client: qw.Client, app: sqlite3.Connection, autocommit: bool
) -> None:
    app.commit()
    conn = sqlite3.connect(path, autocommit=autocommit)  # type: ignore[call-arg,unused-ignore]
    try:
        client.enqueue([NewJob("q", 1, id="j1")], connection=conn)
        if autocommit:
            # No transaction at all: the savepoint's release committed.
            assert not conn.in_transaction
            assert _jobs(path) == [("j1", "queued")]
            return
        # A transaction is always open in this mode: qw joined it.
        assert conn.in_transaction
        assert _jobs(path) == []
        conn.rollback()
        assert _jobs(path) == []
        client.enqueue([NewJob("q", 1, id="j1")], connection=conn)
        conn.commit()
        assert _jobs(path) == [("j1", "queued")]
    finally:
        conn.close()
