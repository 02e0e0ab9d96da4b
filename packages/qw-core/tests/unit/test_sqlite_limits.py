"""sqlite flow control, what the contract suite cannot see: limits held across
processes, the claim reading past a long throttled backlog, plain jobs paying
nothing, and the bookkeeping tables staying small."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import qw
from qw.backends import memory as memory_module
from qw.backends.sqlite import SqliteBackend, _db, _flow, _rows
from qw.backends.sqlite import backend as backend_module
from qw.backends.sqlite._db import Database
from qw.contract import Complete, Fail
from qw.model import JobStatus, Limit, NewJob


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "qw.db"


@pytest.fixture
def client(path: Path) -> Iterator[qw.Client]:
    with qw.Client(SqliteBackend(path, namespace="a")) as c:
        yield c


# -- many processes -------------------------------------------------------------

# Each child waits for a shared start instant, then claims and completes until
# nothing is queued or running; every job is held a few milliseconds.
_WORKER = """
import sys, time
import qw
from qw.contract import Complete
path, start, name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
while time.time() < start:
    pass
with qw.open(f"sqlite:///{path}", namespace="a") as client:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        claims = client.claim(["q", "other"], worker=name, limit=3)
        if not claims:
            live = sum(
                n for by in client.counts().values()
                for s, n in by.items() if s in ("queued", "running")
            )
            if live == 0:
                break
            client.wait(["q", "other"], timeout=0.02)
            continue
        time.sleep(0.004)
        client.finish([Complete(c.lease, None) for c in claims])
print("ok")
"""

#: Aborts any claim that would make a key exceed its concurrency: the check
#: runs inside the claim's own write, so it sees exactly what the claim did.
_GUARD = """
CREATE TRIGGER qw_test_guard AFTER UPDATE OF status ON qw_jobs
WHEN new.status = 'running' AND new.limit_key IN ('k', 'o')
BEGIN
    SELECT RAISE(ABORT, 'concurrency exceeded')
    WHERE (SELECT count(*) FROM qw_jobs WHERE namespace = new.namespace
           AND limit_key = new.limit_key AND status = 'running')
        > CASE new.limit_key WHEN 'k' THEN 2 ELSE 1 END;
END
"""


def test_processes_claiming_at_once_never_exceed_a_limit(path: Path) -> None:
    with qw.open(f"sqlite:///{path}", namespace="a") as client:
        # The operators' limit on 'o' overrides the 5 its jobs declare.
        client.set_limit("o", Limit(concurrency=1))
        jobs = [NewJob("q", i, limit_key="k", limit=Limit(concurrency=2)) for i in range(40)]
        jobs += [NewJob("other", i, limit_key="o", limit=Limit(concurrency=5)) for i in range(15)]
        jobs += [NewJob("q", i, limit_key="r", limit=Limit(rate=3, per=0.3)) for i in range(12)]
        jobs += [NewJob("q", i) for i in range(30)]
        # Interleaved, so that every claim meets held-back jobs among free ones.
        client.enqueue(sorted(jobs, key=lambda j: hash(j.id)))
    with sqlite3.connect(path) as conn:
        conn.execute(_GUARD)
    start = time.time() + 1.5  # past the interpreters' start-up
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), repr(start), f"w{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err
        assert out.strip() == "ok"
    with qw.open(f"sqlite:///{path}", namespace="a") as client:
        done = client.list_jobs(limit=1000)
        assert len(done) == 97
        assert {j.status for j in done} == {JobStatus.SUCCEEDED}
        assert len({j.worker for j in done} - {None}) <= 3
        for key, most in (("k", 2), ("o", 1)):
            assert _most_at_once(client.list_jobs(key=key, limit=1000)) <= most
        # No 3 starts of 'r' inside any 0.3 s (1 ms of slack for the float round trip).
        starts = sorted(j.started_at.timestamp() for j in client.list_jobs(key="r"))  # type: ignore[union-attr]
        assert len(starts) == 12
        assert all(b - a >= 0.3 - 0.001 for a, b in zip(starts, starts[3:], strict=False))


def _most_at_once(jobs: list[qw.Job]) -> int:
    """The most jobs running at one instant, from their store-clock start and finish."""
    # A finish and a claim in the same millisecond: the finish came first (the
    # guard trigger is what proves it exactly; this is the figure for humans).
    edges = sorted(
        [(j.finished_at.timestamp(), -1) for j in jobs if j.finished_at]
        + [(j.started_at.timestamp(), 1) for j in jobs if j.started_at]
    )
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


# -- the claim's scan -------------------------------------------------------------


def test_a_throttled_backlog_longer_than_the_scan_budget_does_not_hide_free_jobs(
    client: qw.Client,
) -> None:
    backlog, one = _flow.SCAN_BUDGET + 1500, Limit(concurrency=1)
    client.enqueue([NewJob("q", i, limit_key="full", limit=one) for i in range(2)])
    (first,) = client.claim(["q"], worker="w", limit=1)
    for start in range(0, backlog, 5000):
        count = min(5000, backlog - start)
        client.enqueue([NewJob("q", i, limit_key="full", limit=one) for i in range(count)])
    client.enqueue_one("q", "free", id="free")
    client.enqueue_one("q", "free 2", id="free-2", limit_key="other")
    # Nothing taken yet: the claim reads on, past the budget, to the free jobs.
    claims = client.claim(["q"], worker="w", limit=5)
    assert [c.job.id for c in claims] == ["free", "free-2"]
    assert client.claim(["q"], worker="w", limit=5) == []
    client.complete(first.lease)
    (next_,) = client.claim(["q"], worker="w", limit=5)
    assert next_.job.limit_key == "full"


def test_a_claim_that_took_a_job_stops_reading_at_the_budget(
    client: qw.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_flow, "SCAN_BUDGET", 50)
    client.enqueue_one("q", "first", id="first")
    # 200 keys, each paused by its one job's own limit: 200 groups to park.
    paused = Limit(concurrency=0)
    client.enqueue([NewJob("q", i, limit_key=f"k{i}", limit=paused) for i in range(200)])
    client.enqueue_one("q", "far", id="far")
    assert [c.job.id for c in client.claim(["q"], worker="w", limit=5)] == ["first"]
    # Nothing taken yet: this claim reads on past the budget.
    assert [c.job.id for c in client.claim(["q"], worker="w", limit=5)] == ["far"]
    assert client.claim(["q"], worker="w", limit=5) == []


# -- parking ----------------------------------------------------------------------


def _parked(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT id FROM qw_jobs WHERE status = 'queued' AND parked = 1 ORDER BY seq"
            )
        ]


def test_a_full_keys_backlog_is_parked_and_comes_back_a_slot_at_a_time(
    client: qw.Client, path: Path
) -> None:
    two = Limit(concurrency=2)
    client.enqueue([NewJob("q", i, id=f"k{i}", limit_key="k", limit=two) for i in range(6)])
    assert [c.job.id for c in client.claim(["q"], worker="w", limit=1)] == ["k0"]
    assert _parked(path) == []  # nothing held back yet
    held = client.claim(["q"], worker="w", limit=5)
    assert [c.job.id for c in held] == ["k1"]
    assert _parked(path) == ["k2", "k3", "k4", "k5"]
    # The claim does not read them any more: free jobs behind them come at once.
    client.enqueue_one("q", id="free")
    assert [c.job.id for c in client.claim(["q"], worker="w", limit=5)] == ["free"]
    # A slot frees: the first parked job comes back, and only it.
    client.complete(held[0].lease)
    assert [c.job.id for c in client.claim(["q"], worker="w", limit=5)] == ["k2"]
    assert _parked(path) == ["k3", "k4", "k5"]


def test_a_later_job_with_a_higher_priority_comes_back_first(client: qw.Client, path: Path) -> None:
    one = Limit(concurrency=1)
    client.enqueue([NewJob("q", i, id=f"k{i}", limit_key="k", limit=one) for i in range(3)])
    (first,) = client.claim(["q"], worker="w", limit=3)
    client.enqueue_one("q", id="urgent", priority=-5, limit_key="k", limit=one)
    assert client.claim(["q"], worker="w", limit=3) == []
    assert _parked(path) == ["k1", "k2", "urgent"]
    client.complete(first.lease)
    assert [c.job.id for c in client.claim(["q"], worker="w", limit=3)] == ["urgent"]


def test_set_limit_and_cancel_bring_parked_jobs_back(client: qw.Client, path: Path) -> None:
    client.set_limit("k", Limit(concurrency=0))
    client.enqueue([NewJob("q", i, id=f"k{i}", limit_key="k") for i in range(3)])
    assert client.claim(["q"], worker="w", limit=3) == []
    assert _parked(path) == ["k0", "k1", "k2"]
    client.set_limit("k", Limit(concurrency=1))
    assert _parked(path) == []
    (running,) = client.claim(["q"], worker="w", limit=3)
    assert client.claim(["q"], worker="w", limit=3) == []
    assert _parked(path) == ["k1", "k2"]
    # Cancelling a parked job takes it out; the others stay parked until a slot frees.
    client.cancel("k1")
    assert client.claim(["q"], worker="w", limit=3) == []
    client.release(running.lease)
    assert [c.job.id for c in client.claim(["q"], worker="w", limit=3)] == ["k0"]


def test_a_rate_limited_backlog_comes_back_when_its_window_reopens(
    client: qw.Client, path: Path
) -> None:
    rate = Limit(rate=1, per=0.3)
    client.enqueue([NewJob("q", i, id=f"r{i}", limit_key="r", limit=rate) for i in range(3)])
    assert [c.job.id for c in client.claim(["q"], worker="w", limit=3)] == ["r0"]
    assert _parked(path) == ["r1", "r2"]
    assert client.claim(["q"], worker="w", limit=3) == []  # nothing ran or left: still parked
    time.sleep(0.35)
    assert [c.job.id for c in client.claim(["q"], worker="w", limit=3)] == ["r1"]


def test_another_process_finishing_a_job_brings_a_parked_one_back(path: Path) -> None:
    one = Limit(concurrency=1)
    with qw.Client(SqliteBackend(path, namespace="a")) as client:
        client.enqueue([NewJob("q", i, id=f"k{i}", limit_key="k", limit=one) for i in range(2)])
        (running,) = client.claim(["q"], worker="w", limit=2)
        assert _parked(path) == ["k1"]
        script = (
            "import sys, qw\n"
            "c = qw.open(sys.argv[1], namespace='a')\n"
            "lease = qw.Lease('k0', sys.argv[2], c.now(), attempt=1, max_attempts=3)\n"
            "print(c.complete(lease))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, f"sqlite:///{path}", running.lease.token],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == "succeeded"
        assert [c.job.id for c in client.claim(["q"], worker="w", limit=2)] == ["k1"]


# -- plain jobs pay nothing ---------------------------------------------------------


def test_plain_jobs_run_no_flow_control_statement(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []
    connect = Database.connect

    def traced(self: Database) -> sqlite3.Connection:
        conn = connect(self)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(Database, "connect", traced)
    with qw.Client(SqliteBackend(path, namespace="a")) as client:
        statements.clear()  # opening the file reads and creates the tables
        client.enqueue([NewJob("q", i) for i in range(4)])
        claims = client.claim(["q"], worker="w", lease_s=0.05, limit=4)
        assert all("k" not in c.lease.token for c in claims)
        client.finish([Complete(claims[0].lease, 1), Fail(claims[1].lease, "x", retry_in=0)])
        time.sleep(0.1)
        assert client.reclaim_expired() == 2
    assert statements
    # A claim looks for parked jobs of its queues to bring back: one indexed read.
    parked = [s for s in statements if "qw_parked" in s]
    assert len(parked) == 1
    assert parked[0].startswith("SELECT queue, key, kind")
    for statement in statements:
        for word in (
            "qw_limits",
            "qw_starts",
            "qw_fair",
            "limit_key,",
            "limit_key =",
            "fair_rank,",
        ):
            # The claim's candidate read and RETURNING name the columns; nothing else may.
            if word in statement and not statement.startswith(("SELECT seq,", "UPDATE qw_jobs")):
                raise AssertionError(statement)


def test_only_a_keyed_jobs_lease_token_says_it_has_a_key(client: qw.Client) -> None:
    client.enqueue([NewJob("q", 1, limit_key="k"), NewJob("q", 2)])
    client.create_workflow("wf", [NewJob("q", 3, id="wf.a", limit_key="k")])
    tokens = {c.job.payload: c.lease.token for c in client.claim(["q"], worker="w", limit=3)}
    assert tokens[1].startswith("k")
    assert tokens[3].startswith(backend_module.STEP_TOKEN_PREFIX + "k")
    assert "k" not in tokens[2]


# -- bookkeeping --------------------------------------------------------------------


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_rate_starts_older_than_the_window_are_deleted(client: qw.Client, path: Path) -> None:
    client.enqueue([NewJob("q", i, limit_key="r", limit=Limit(rate=2, per=0.2)) for i in range(8)])
    claimed = 0
    deadline = time.monotonic() + 10
    while claimed < 8 and time.monotonic() < deadline:
        claimed += len(client.claim(["q"], worker="w", limit=8))
        assert _count(path, "qw_starts") <= 2
        time.sleep(0.05)
    assert claimed == 8


def test_fair_ranks_at_or_below_the_clock_are_deleted(client: qw.Client, path: Path) -> None:
    client.enqueue([NewJob("q", i, limit_key=f"user-{i}", fair=True) for i in range(300)])
    assert _count(path, "qw_fair_ranks") == 300
    assert len(client.claim(["q"], worker="w", limit=300)) == 300
    # Every key's next rank is 1 and the clock is 0: the rows still count.
    assert _count(path, "qw_fair_ranks") == 300
    client.enqueue([NewJob("q", i, limit_key="user-0", fair=True) for i in range(3)])
    client.claim(["q"], worker="w", limit=1)  # rank 1: the clock moves to 1
    assert _count(path, "qw_fair_ranks") == 1  # user-0's next rank, 4
    client.enqueue_one("q", "new", limit_key="user-7", fair=True)
    ranks = dict(_ranks(path))
    # It starts at the clock, ahead of user-0's backlog (ranks 2 and 3).
    assert ranks["user-7"] == 1
    assert [c.job.limit_key for c in client.claim(["q"], worker="w", limit=3)] == [
        "user-7",
        "user-0",
        "user-0",
    ]


def _ranks(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        return list(
            conn.execute(
                "SELECT limit_key, fair_rank FROM qw_jobs WHERE status = 'queued' ORDER BY seq"
            )
        )


# -- wake-ups -----------------------------------------------------------------------


def test_a_keyed_finish_wakes_a_waiter_held_back_by_its_key(client: qw.Client, path: Path) -> None:
    client.enqueue([NewJob("q", i, limit_key="k", limit=Limit(concurrency=1)) for i in range(2)])
    (running,) = client.claim(["q"], worker="w", limit=2)
    with qw.Client(SqliteBackend(path, namespace="a", poll_interval=60)) as waiter:
        assert waiter.claim(["q"], worker="w2") == []
        with sqlite3.connect(path) as conn:
            (before,) = conn.execute(
                "SELECT version FROM qw_wakeups WHERE namespace = 'a' AND queue = 'q'"
            ).fetchone()
        threading.Timer(0.2, lambda: client.complete(running.lease)).start()
        start = time.monotonic()
        assert waiter.wait(["q"], timeout=10) is True
        assert time.monotonic() - start < 5
        # Other processes see it too: the finish bumped the queue's version.
        with sqlite3.connect(path) as conn:
            (after,) = conn.execute(
                "SELECT version FROM qw_wakeups WHERE namespace = 'a' AND queue = 'q'"
            ).fetchone()
        assert after == before + 1
        assert len(waiter.claim(["q"], worker="w2")) == 1


# -- the same claims as the reference -------------------------------------------------


class _Clock:
    """One simulated store clock for the memory and sqlite stores, in whole milliseconds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._patch = monkeypatch
        self.ms = 1_800_000_000_000
        monkeypatch.setattr(memory_module, "_now", lambda: _rows.ts(self.ms / 1000))
        self.advance(0)

    def advance(self, ms: int) -> None:
        self.ms += ms
        for module in (_db, backend_module):
            self._patch.setattr(module, "NOW_SQL", repr(self.ms / 1000))


@pytest.mark.parametrize("seed", range(8))
def test_random_operations_claim_what_the_memory_backend_claims(
    path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Enqueues, workflows, claims, finishes, reclaims, cancels, operators' limits, in lockstep.

    Both stores read one simulated clock that only the test moves, so rate
    windows reopen, delayed jobs fall due and leases expire at the same
    instants in both: they must hand out the very same jobs in the same
    order, and report the same keys.
    """
    rng = random.Random(seed)
    clock = _Clock(monkeypatch)
    memory = qw.open(f"memory://limits-{uuid.uuid4().hex}", namespace="a")
    sqlite = qw.Client(SqliteBackend(path, namespace="a"))
    limits = [None, Limit(), Limit(concurrency=0), Limit(concurrency=1), Limit(concurrency=3),
              Limit(rate=2, per=1.0), Limit(concurrency=2, rate=4, per=2.5)]  # fmt: skip
    held: dict[str, tuple[qw.Lease, qw.Lease]] = {}
    with memory, sqlite:
        for step in range(500):
            op = rng.random()
            if op < 0.25:
                jobs = []
                for i in range(rng.randint(1, 30)):
                    key = rng.choice([None, "a", "b", "c", "d"])
                    jobs.append(
                        NewJob(
                            rng.choice(["q", "r"]),
                            i,
                            id=f"{step}-{i}",
                            priority=rng.choice([0, 0, 0, 1, -1]),
                            delay=rng.choice([None, None, None, 0.5, 2.0]),
                            max_attempts=2,
                            limit_key=key,
                            limit=None if key is None else rng.choice(limits),
                            fair=key is not None and rng.random() < 0.5,
                        )
                    )
                memory.enqueue(jobs)
                sqlite.enqueue(jobs)
            elif op < 0.55:
                queues = rng.choice([["q"], ["r"], ["q", "r"]])
                n, lease_s = rng.choice([1, 2, 5, 20]), rng.choice([1.0, 3.0])
                got_m = memory.claim(queues, worker="w", limit=n, lease_s=lease_s)
                got_s = sqlite.claim(queues, worker="w", limit=n, lease_s=lease_s)
                assert [c.job.id for c in got_s] == [c.job.id for c in got_m], step
                for m, s in zip(got_m, got_s, strict=True):
                    held[m.job.id] = (m.lease, s.lease)
            elif op < 0.7 and held:
                m_lease, s_lease = held.pop(rng.choice(sorted(held)))
                how = rng.choice(["complete", "release", "fail", "retry"])
                assert _finish(memory, m_lease, how) == _finish(sqlite, s_lease, how), step
            elif op < 0.8:
                clock.advance(rng.choice([1, 10, 100, 400, 1200]))
            elif op < 0.83:
                assert memory.reclaim_expired() == sqlite.reclaim_expired(), step
            elif op < 0.87:
                # A chain of steps with keys: settling queues each after its parent.
                steps = [
                    NewJob(
                        "q",
                        i,
                        id=f"wf{step}.{i}",
                        parents=(f"wf{step}.{i - 1}",) if i else (),
                        limit_key=rng.choice(["a", "b", None]),
                        limit=rng.choice(limits[1:]),
                    )
                    for i in range(3)
                ]
                steps = [s if s.limit_key else replace(s, limit=None) for s in steps]
                memory.create_workflow(f"wf{step}", steps)
                sqlite.create_workflow(f"wf{step}", steps)
            elif op < 0.88:
                flows = [f.id for f in memory.list_workflows(state="running")]
                if flows:
                    flow = rng.choice(flows)
                    assert memory.cancel_workflow(flow).state is sqlite.cancel_workflow(flow).state
            elif op < 0.92:
                queued = [j.id for j in memory.list_jobs(status="queued", limit=1000)]
                if queued:
                    job_id = rng.choice(queued)
                    assert memory.cancel(job_id) is sqlite.cancel(job_id)
            else:
                key, lim = rng.choice("abcd"), rng.choice([None, *limits[1:]])
                memory.set_limit(key, lim)
                sqlite.set_limit(key, lim)
            if step % 25 == 0:
                assert _states(sqlite) == _states(memory), step
        assert _states(sqlite) == _states(memory)


def _finish(client: qw.Client, lease: qw.Lease, how: str) -> object:
    """Finish the job ``how``; its status after, or the error's name for a lost lease."""
    try:
        if how == "complete":
            return client.complete(lease)
        if how == "release":
            return client.release(lease)
        return client.fail(lease, "no", retry_in=0.5 if how == "retry" else None)
    except qw.LeaseLost as exc:
        return type(exc).__name__


def _states(client: qw.Client) -> list[tuple[object, ...]]:
    states = client.keys(limit=1000)
    return [(s.key, s.queued, s.running, s.limit, s.overridden, s.started) for s in states]
