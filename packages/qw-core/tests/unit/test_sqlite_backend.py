"""What the contract suite cannot see: wake-up paths, locking, batching, errors."""

from __future__ import annotations

import os
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
from qw.backends.sqlite import backend as backend_module
from qw.contract import Complete
from qw.errors import BackendUnavailable
from qw.model import NewJob

# How soon a wake-up must arrive (generous: the machine is shared).
PROMPT = 1.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "qw.db"


@pytest.fixture
def client(path: Path) -> Iterator[qw.Client]:
    with qw.Client(SqliteBackend(path, namespace="a")) as c:
        yield c


def test_store_clock_is_sqlite_clock(client: qw.Client, path: Path) -> None:
    with sqlite3.connect(path) as conn:
        sql_now = conn.execute("SELECT (julianday('now') - 2440587.5) * 86400.0").fetchone()[0]
    assert abs(client.now().timestamp() - sql_now) < 1.0


def test_wait_after_an_empty_claim_sleeps_its_timeout(client: qw.Client) -> None:
    assert client.claim(["q"], worker="w") == []
    start = time.monotonic()
    assert client.wait(["q"], timeout=0.4) is False
    assert 0.35 <= time.monotonic() - start < 0.4 + PROMPT


def test_another_backend_object_in_process_wakes_wait_at_once(
    client: qw.Client, path: Path
) -> None:
    # poll_interval of a minute: only the shared in-process hub can wake it in time.
    waiter = qw.Client(SqliteBackend(path, namespace="a", poll_interval=60))
    with waiter, qw.Client(SqliteBackend(path, namespace="a")) as producer:
        assert waiter.claim(["q"], worker="w") == []
        threading.Timer(0.2, lambda: producer.enqueue_one("q", 1)).start()
        start = time.monotonic()
        assert waiter.wait(["q"], timeout=10) is True
        assert time.monotonic() - start < 0.2 + PROMPT
        assert len(waiter.claim(["q"], worker="w")) == 1


def test_another_namespace_in_process_does_not_wake_wait(client: qw.Client, path: Path) -> None:
    with qw.Client(SqliteBackend(path, namespace="b", poll_interval=60)) as other:
        assert other.claim(["q"], worker="w") == []
        client.enqueue_one("q", 1)
        start = time.monotonic()
        assert other.wait(["q"], timeout=0.5) is False
        assert time.monotonic() - start >= 0.45


def test_a_commit_from_another_process_wakes_wait_within_the_poll(
    client: qw.Client, path: Path
) -> None:
    assert client.claim(["q"], worker="w") == []
    script = (
        "import sys, time, qw\n"
        "c = qw.open(sys.argv[1], namespace='a')\n"
        "time.sleep(0.5)\n"
        "c.enqueue_one('q', 'from-child')\n"
        "print('enqueued', time.time(), flush=True)\n"
        "c.close()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, f"sqlite:///{path}"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.wait(["q"], timeout=30) is True
        woke = time.time()
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0
    enqueued = float(out.split()[1])
    assert woke - enqueued < PROMPT
    claims = client.claim(["q"], worker="w")
    assert [c.job.payload for c in claims] == ["from-child"]


def test_a_held_write_lock_times_out_as_backend_unavailable(path: Path) -> None:
    backend = SqliteBackend(path, namespace="a", busy_timeout_ms=200)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        start = time.monotonic()
        with pytest.raises(BackendUnavailable, match="busy_timeout"):
            qw.Client(backend).enqueue([NewJob("q", 1)])
        assert time.monotonic() - start < 5
        blocker.execute("ROLLBACK")
        # Reads still work under WAL while a writer holds the lock, and nothing was written.
        assert backend.counts() == {}
        qw.Client(backend).enqueue([NewJob("q", 1)])
        assert backend.counts() == {"q": {qw.JobStatus.QUEUED: 1}}
    finally:
        blocker.close()
        backend.close()


def test_purge_deletes_in_bounded_batches(
    client: qw.Client, monkeypatch: pytest.MonkeyPatch, path: Path
) -> None:
    monkeypatch.setattr(backend_module, "PURGE_BATCH", 7)
    ids = [a.id for a in client.enqueue([NewJob("q", i) for i in range(30)])]
    claims = client.claim(["q"], worker="w", limit=30)
    client.finish([Complete(c.lease) for c in claims[:25]])
    time.sleep(0.01)
    result = client.purge(0)
    assert result.jobs == 25
    assert [j.id for j in client.list_jobs()] == ids[25:]


def test_close_is_idempotent_and_later_calls_are_refused(path: Path) -> None:
    backend = SqliteBackend(path, namespace="a")
    backend.close()
    backend.close()
    with pytest.raises(BackendUnavailable, match="closed"):
        qw.Client(backend).enqueue([NewJob("q", 1)])
    with pytest.raises(BackendUnavailable, match="closed"):
        backend.wait(["q"], 0.1)


def test_many_threads_share_one_backend_without_double_claims(client: qw.Client) -> None:
    client.enqueue([NewJob("q", i) for i in range(400)])
    seen: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        while claims := client.claim(["q"], worker="w", limit=5):
            client.finish([Complete(c.lease) for c in claims])
            with lock:
                seen.extend(c.job.id for c in claims)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(seen) == len(set(seen)) == 400
    assert client.counts()["q"][qw.JobStatus.SUCCEEDED] == 400


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_opens_its_own_connections(client: qw.Client) -> None:
    client.enqueue([NewJob("q", i) for i in range(2)])
    assert client.counts()["q"][qw.JobStatus.QUEUED] == 2  # the pool now holds a connection
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            claim = client.claim(["q"], worker="child")[0]
            client.complete(claim.lease, "child")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    claim = client.claim(["q"], worker="parent")[0]
    client.complete(claim.lease, "parent")
    results = sorted(str(j.result) for j in client.list_jobs())
    assert results == ["child", "parent"]
