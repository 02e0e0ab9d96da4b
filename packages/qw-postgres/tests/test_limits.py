"""Flow control on PostgreSQL: what the shared contract cannot see.

The running count sampled in SQL while threads and processes race (with
keys full, backlogs parked and parked jobs woken), parking itself (a full
key's backlog leaves the claim index, a freed slot, a reopened rate
window, an operators' limit and the recheck each bring it back, in claim
order), speculative leases given back exactly, fair ranks of racing
producers, and the plain claim staying one statement.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_mod
import random
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

import qw
from qw.model import JobStatus, Limit, NewJob
from qw_postgres import PostgresBackend, backend

from .conftest import with_query
from .test_workflows import counting_statements

SCHEMA = "qw_test"
S = JobStatus
#: The race: each key's concurrency limit (a and c declared by the jobs,
#: b by the operators), and how many jobs of each key (None: no key).
RACE_LIMITS = {"a": 2, "b": 1, "c": 3}
RACE_JOBS: dict[str | None, int] = {"a": 160, "b": 60, "c": 120, None: 60}
RACE_THREADS = 4
RACE_PROCESSES = 3
RACE_DEADLINE = 120.0


def _namespace() -> str:
    return "lim" + uuid.uuid4().hex[:12]


@pytest.fixture
def url(pg_url: str) -> str:
    return with_query(pg_url, f"schema={SCHEMA}&pool_max=6")


@pytest.fixture
def client(url: str) -> Iterator[qw.Client]:
    c = qw.Client(PostgresBackend.from_url(url, namespace=_namespace()))
    yield c
    c.close()


def _rows(pg_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run ``query`` (``{}`` is the test schema) on a connection of its own."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        cur = conn.execute(sql.SQL(query).format(sql.Identifier(SCHEMA)), params)
        return cur.fetchall() if cur.description is not None else []


def _parked(pg_url: str, namespace: str) -> list[str]:
    rows = _rows(
        pg_url,
        "SELECT id FROM {}.jobs WHERE namespace = %s AND status = 'queued' AND parked ORDER BY seq",
        namespace,
    )
    return [r[0] for r in rows]


def _ids(client: qw.Client, jobs: list[NewJob]) -> list[str]:
    answers = client.enqueue(jobs)
    assert all(a.created for a in answers)
    return [a.id for a in answers]


def _claim(client: qw.Client, limit: int = 100, queues: tuple[str, ...] = ("q",)) -> list[str]:
    return [c.job.id for c in client.claim(list(queues), worker="w", limit=limit)]


def _interleaved() -> list[tuple[int, str | None]]:
    """The race's jobs, keys interleaved, each with its index."""
    left = dict(RACE_JOBS)
    out: list[tuple[int, str | None]] = []
    while any(left.values()):
        for key in list(left):
            if left[key]:
                left[key] -= 1
                out.append((len(out), key))
    return out


# -- racing: the running count, sampled in SQL ---------------------------------


def _race_work(url: str, namespace: str, seed: int, total: int, start: Any, results: Any) -> None:
    """Claim from q1/q2 and end each job (complete, or now and then a retry or a release).

    Runs in a thread or in a process of its own; reports ``("ok", seed)``
    or ``("error", traceback)`` on ``results``.
    """
    try:
        with qw.open(url, namespace=namespace) as client:
            rnd = random.Random(seed)
            start.wait(60)
            deadline = time.monotonic() + RACE_DEADLINE
            while time.monotonic() < deadline:
                queues = ["q1", "q2"] if rnd.random() < 0.5 else [rnd.choice(["q1", "q2"])]
                claims = client.claim(queues, worker=f"r{seed}", limit=rnd.randint(1, 12))
                if not claims:
                    counts = client.counts()
                    done = sum(c.get(S.SUCCEEDED, 0) for c in counts.values())
                    if done >= total:
                        break
                    time.sleep(0.002)
                    continue
                time.sleep(rnd.uniform(0, 0.004))
                outcomes: list[qw.model.Outcome] = []
                for claim in claims:
                    roll = rnd.random()
                    if roll < 0.1 and claim.job.attempts < claim.job.max_attempts:
                        outcomes.append(qw.Fail(claim.lease, "again", retry_in=0))
                    elif roll < 0.2:
                        outcomes.append(qw.Release(claim.lease))
                    else:
                        outcomes.append(qw.Complete(claim.lease))
                client.finish(outcomes)
        results.put(("ok", seed))
    except BaseException:
        results.put(("error", traceback.format_exc()))


class _SqlSampler:
    """Reads the running jobs per key in one statement every few milliseconds."""

    def __init__(self, pg_url: str, namespace: str) -> None:
        self._url = pg_url
        self._ns = namespace
        self.most: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = sql.SQL(
            "SELECT limit_key, count(*) FROM {}.jobs WHERE namespace = %s"
            " AND status = 'running' AND limit_key IS NOT NULL GROUP BY limit_key"
        ).format(sql.Identifier(SCHEMA))
        with psycopg.connect(self._url, autocommit=True) as conn:
            while not self._stop.is_set():
                for key, n in conn.execute(query, (self._ns,)).fetchall():
                    self.most[key] = max(self.most.get(key, 0), int(n))
                self.samples += 1
                time.sleep(0.002)

    def __enter__(self) -> _SqlSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_racing_threads_and_processes_never_exceed_a_limit_sampled_in_sql(
    client: qw.Client, url: str, pg_url: str
) -> None:
    ns = client.namespace
    client.set_limit("b", Limit(concurrency=RACE_LIMITS["b"]))
    jobs = []
    for i, key in _interleaved():
        own = Limit(concurrency=RACE_LIMITS[key]) if key in ("a", "c") else None
        jobs.append(NewJob("q1" if i % 3 else "q2", i, limit_key=key, limit=own))
    ids = _ids(client, jobs)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_race_work, args=(url, ns, 100 + i, len(ids), start, results), daemon=True
        )
        for i in range(RACE_PROCESSES)
    ]
    threads = [
        threading.Thread(target=_race_work, args=(url, ns, i, len(ids), start, results))
        for i in range(RACE_THREADS)
    ]
    for p in procs:
        p.start()
    reports = []
    with _SqlSampler(pg_url, ns) as sampler:
        for t in threads:
            t.start()
        start.set()
        try:
            for _ in range(RACE_PROCESSES + RACE_THREADS):
                reports.append(results.get(timeout=RACE_DEADLINE + 60))
        except queue_mod.Empty:
            pytest.fail(f"only {len(reports)} racers reported back")
        finally:
            for t in threads:
                t.join(30)
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
    errors = [r[1] for r in reports if r[0] != "ok"]
    assert not errors, "\n".join(errors)
    assert sampler.samples > 50
    for key, limit in RACE_LIMITS.items():
        assert 1 <= sampler.most.get(key, 0) <= limit, (key, sampler.most)
    done = client.get_many(ids)
    assert all(j is not None and j.status is S.SUCCEEDED for j in done)
    assert _parked(pg_url, ns) == []


# -- parking -----------------------------------------------------------------------


def test_a_full_keys_backlog_is_parked_and_claims_read_past_it_in_one_statement(
    client: qw.Client, pg_url: str
) -> None:
    backlog = _ids(
        client, [NewJob("q", i, limit_key="hot", limit=Limit(concurrency=1)) for i in range(3000)]
    )
    assert _claim(client, 1) == backlog[:1]
    free = _ids(client, [NewJob("q", f"free{i}") for i in range(5)])
    # The first claim meets the backlog: it parks it (the jobs it read, and
    # the rest of the key's at once) and goes on to the free jobs.
    assert _claim(client, 5) == free
    assert _parked(pg_url, client.namespace) == backlog[1:]
    held = client.get(backlog[1])
    assert (held.status, held.attempts, held.started_at, held.worker) == (S.QUEUED, 0, None, None)
    # From now on the backlog is out of the claim index: a claim is the plain statement.
    more = _ids(client, [NewJob("q", f"more{i}") for i in range(3)])
    with counting_statements() as sent:
        assert _claim(client, 3) == more
    assert len(sent) == 1, [s[:60] for s in sent]
    states = client.keys()
    state = next(s for s in states if s.key == "hot")
    assert (state.queued, state.running, state.throttled) == (2999, 1, True)


def test_a_freed_slot_hands_out_the_parked_jobs_in_claim_order(
    client: qw.Client, pg_url: str
) -> None:
    lim = Limit(concurrency=1)
    ids = _ids(client, [NewJob("q", i, limit_key="k", limit=lim) for i in range(6)])
    urgent = _ids(client, [NewJob("q", "urgent", limit_key="k", limit=lim, priority=-5)])[0]
    [first] = client.claim(["q"], worker="w")
    assert first.job.id == urgent
    assert _claim(client) == []
    assert set(_parked(pg_url, client.namespace)) == set(ids)
    client.complete(first.lease)
    for want in ids:
        [claim] = client.claim(["q"], worker="w", limit=10)
        assert claim.job.id == want
        assert _claim(client) == []
        client.complete(claim.lease)
    assert _parked(pg_url, client.namespace) == []


def test_a_parked_rate_limited_key_is_looked_at_again_when_its_window_reopens(
    client: qw.Client, pg_url: str
) -> None:
    lim = Limit(rate=2, per=1.0)
    ids = _ids(client, [NewJob("q", i, limit_key="r", limit=lim) for i in range(5)])
    first = client.claim(["q"], worker="w", limit=10)
    assert [c.job.id for c in first] == ids[:2]
    assert _claim(client) == []
    [(check_at,)] = _rows(
        pg_url, "SELECT check_at FROM {}.parked_keys WHERE namespace = %s", client.namespace
    )
    # The window reopens a second after the starts (the claim's store time).
    started = max(c.job.started_at for c in first if c.job.started_at is not None)
    assert timedelta(seconds=1) <= check_at - started < timedelta(seconds=1.5)
    # Nothing frees a slot or wakes the key: only time reopens the window.
    while client.now() < check_at:
        assert _claim(client) == []
        time.sleep(0.1)
    assert _claim(client) == ids[2:4]


def test_a_paused_key_stays_parked_until_its_limit_is_lifted(
    client: qw.Client, pg_url: str
) -> None:
    client.set_limit("p", Limit(concurrency=0))
    ids = _ids(client, [NewJob("q", i, limit_key="p") for i in range(4)])
    assert _claim(client) == []
    assert _rows(
        pg_url,
        "SELECT check_at = 'infinity' FROM {}.parked_keys WHERE namespace = %s",
        client.namespace,
    ) == [(True,)]
    client.set_limit("p", None)
    assert _claim(client) == ids


def test_a_lost_wake_is_made_good_by_the_recheck(
    client: qw.Client, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "PARK_RECHECK_S", 0.5)
    ids = _ids(
        client, [NewJob("q", i, limit_key="k", limit=Limit(concurrency=1)) for i in range(3)]
    )
    assert _claim(client, 1) == ids[:1]
    assert _claim(client) == []
    # The running job ends behind the backend's back: no wake is sent.
    _rows(
        pg_url,
        "UPDATE {}.jobs SET status = 'succeeded', token = NULL WHERE namespace = %s AND id = %s",
        client.namespace,
        ids[0],
    )
    assert _claim(client) == []
    deadline = time.monotonic() + 5
    got: list[str] = []
    while not got and time.monotonic() < deadline:
        time.sleep(0.1)
        got = _claim(client)
    assert got == ids[1:2]


def test_parking_ahead_leaves_the_jobs_of_another_limit_claimable(
    client: qw.Client, pg_url: str
) -> None:
    narrow, wide = Limit(concurrency=1), Limit(concurrency=100)
    jobs = [NewJob("q", i, limit_key="k", limit=narrow) for i in range(40)]
    jobs += [NewJob("q", f"w{i}", limit_key="k", limit=wide) for i in range(5)]
    ids = _ids(client, jobs)
    assert _claim(client, 1) == ids[:1]
    # Held back by the narrow limit, the first 39 park (with the rest of
    # their limit); the wide ones, behind them, are claimed past them.
    assert _claim(client, 10) == ids[40:]
    assert _parked(pg_url, client.namespace) == ids[1:40]


def test_a_lease_given_back_restores_the_job_exactly(client: qw.Client) -> None:
    lim = Limit(concurrency=1)
    [retried] = _ids(client, [NewJob("q", "again", limit_key="k", limit=lim)])
    [claim] = client.claim(["q"], worker="first")
    assert client.fail(claim.lease, "boom", retry_in=0) is S.QUEUED
    before = client.get(retried)
    assert before.attempts == 1
    assert before.started_at is not None
    [blocker] = _ids(client, [NewJob("other", "b", limit_key="k", limit=lim)])
    assert _claim(client, 1, ("other",)) == [blocker]
    # The claim leases the retried job speculatively, then gives it back.
    assert _claim(client) == []
    assert client.get(retried) == before


def test_cancel_and_reclaim_around_parked_jobs(client: qw.Client, pg_url: str) -> None:
    lim = Limit(concurrency=1)
    ids = _ids(client, [NewJob("q", i, limit_key="k", limit=lim) for i in range(4)])
    [running] = client.claim(["q"], worker="w", lease_s=0.3)
    assert running.job.id == ids[0]
    assert _claim(client) == []
    assert client.cancel(ids[1]) is S.CANCELLED
    assert _parked(pg_url, client.namespace) == ids[2:]
    time.sleep(0.4)
    # The expired lease is requeued by the sweep, which frees the slot and
    # wakes the key: the requeued job comes first (claim order), then ids[2].
    assert client.reclaim_expired() == 1
    [again] = client.claim(["q"], worker="w", limit=10)
    assert again.job.id == ids[0]
    client.complete(again.lease)
    assert _claim(client, 10) == ids[2:3]


def test_a_failed_round_rolls_back_and_leaves_every_job_queued(
    client: qw.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _ids(
        client, [NewJob("q", i, limit_key="k", limit=Limit(concurrency=5)) for i in range(3)]
    )
    real = backend._Round.plan

    def broken(self: Any) -> None:
        raise RuntimeError("the plan failed")

    monkeypatch.setattr(backend._Round, "plan", broken)
    with pytest.raises(RuntimeError):
        client.claim(["q"], worker="w", limit=3)
    monkeypatch.setattr(backend._Round, "plan", real)
    jobs = [j for j in client.get_many(ids) if j is not None]
    assert [(j.status, j.attempts) for j in jobs] == [(S.QUEUED, 0)] * 3
    assert sorted(_claim(client, 3)) == sorted(ids)


# -- fair ranks --------------------------------------------------------------------


def test_racing_producers_get_distinct_fair_ranks(client: qw.Client, pg_url: str) -> None:
    producers, batches, per_batch = 6, 5, 10
    start = threading.Barrier(producers)
    errors: list[BaseException] = []

    def produce(index: int) -> None:
        try:
            start.wait()
            for b in range(batches):
                client.enqueue(
                    [NewJob("f", [index, b, i], limit_key="A", fair=True) for i in range(per_batch)]
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    n = producers * batches * per_batch
    ranks = _rows(
        pg_url,
        "SELECT fair_rank FROM {}.jobs WHERE namespace = %s ORDER BY fair_rank",
        client.namespace,
    )
    assert [r[0] for r in ranks] == list(range(n))
    assert _rows(
        pg_url, "SELECT next FROM {}.fair_ranks WHERE namespace = %s", client.namespace
    ) == [(n,)]


def test_a_large_fair_batch_takes_the_staged_path_with_the_same_ranks(client: qw.Client) -> None:
    n = backend.COPY_MIN_JOBS + 10
    jobs = [NewJob("f", i, limit_key="A" if i % 2 else "B", fair=True) for i in range(n)]
    client.enqueue(jobs)
    late = _ids(client, [NewJob("f", "late", limit_key="C", fair=True)])[0]
    claims = client.claim(["f"], worker="w", limit=6)
    # A and B alternate by rank; C, enqueued last, starts at the queue's clock (0).
    assert [c.job.limit_key for c in claims][:3] == ["B", "A", "C"]
    assert claims[2].job.id == late
