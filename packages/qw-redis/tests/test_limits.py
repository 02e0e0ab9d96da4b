"""Flow control in Redis: claim.lua's rule is qw.limits.plan_claim, parking included.

The contract suite (qw_testkit's LimitTests) checks the behaviour against
its own model. This checks the Redis side: what ``lua/claim.lua`` takes is
exactly what :func:`qw.limits.plan_claim` says given the store's state read
raw (every due queued job, parked ones included, in claim order; running
jobs and starts per key; the operators' limits), through random workloads
whose keys mix limits, queues and fairness; the key indexes and the
parking structures agree with the statuses after every step; parked jobs
come back on every way a slot frees, across queues and processes; a
throttled run ahead costs one claim, not every claim.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import qw
from qw.limits import Candidate, plan_claim
from qw.model import JobStatus, Lease, Limit, NewJob
from qw_redis import RedisBackend
from qw_redis import backend as backend_module
from qw_redis.codec import decode_limit, from_us
from qw_redis.keys import Keyspace
from qw_testkit.base import new_namespace
from qw_testkit.limit_model import max_overlap

from .test_invariants import _raw, check_invariants, parked_jobs

QUEUES = ["a", "b"]
KEYS = ["k1", "k2", "k3"]
OWN = [
    None,
    Limit(concurrency=1),
    Limit(concurrency=2),
    Limit(concurrency=0),
    Limit(rate=2, per=3600.0),
    Limit(concurrency=1, rate=3, per=3600.0),
    Limit(rate=1, per=0.3),
    Limit(),
]
OPERATORS = [
    None,
    None,
    Limit(concurrency=0),
    Limit(concurrency=1),
    Limit(concurrency=3),
    Limit(),
    Limit(rate=2, per=0.3),
]


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Park every held-back job (no pass-over first), so that parking is what is tested."""
    monkeypatch.setattr(backend_module, "PARK_KEY", 0)
    monkeypatch.setattr(backend_module, "PARK_AFTER", 0)


@pytest.fixture
def ns(namespace: str) -> str:
    """conftest's fresh namespace, by this file's shorter name."""
    return namespace


# -- the store's state, read raw, as plan_claim is given it -------------------


def _candidates(r: Any, keys: Keyspace, queues: list[str]) -> list[Any]:
    """Every queued job of ``queues`` (parked or not), in claim order: flow fields, run_at."""
    status = r.hgetall(keys.column("status"))
    packed = r.hgetall(keys.column("job"))
    lim = r.hgetall(keys.column("lim"))
    run_at = r.hgetall(keys.column("run_at"))
    rows = []
    for job_id, s in status.items():
        prio, _max, _created, seq, queue, _rest = packed[job_id].split(":", 5)
        if s != "queued" or queue not in queues:
            continue
        key, limit, rank = None, None, 0
        if job_id in lim:
            _fair, rank_s, enc, key = lim[job_id].split(" ", 3)
            rank, limit = int(rank_s), decode_limit(enc)
        rows.append((int(prio), rank, int(seq), job_id, key, limit, from_us(run_at[job_id])))
    rows.sort()
    return rows


#: The windows of every rate the tests below declare or set.
PERS = (3600.0, 0.3)


class _State:
    """One namespace's state read raw, and plan_claim over it at a given instant."""

    def __init__(self, r: Any, keys: Keyspace, client: qw.Client) -> None:
        self.r, self.keys = r, keys
        status = r.hgetall(keys.column("status"))
        self.running: dict[str, int] = {}
        for job_id, v in r.hgetall(keys.column("lim")).items():
            if status.get(job_id) == "running":
                k = v.split(" ", 3)[3]
                self.running[k] = self.running.get(k, 0) + 1
        self.starts: dict[str, list[datetime]] = {}
        for m in r.zrange(keys.key("lstart"), 0, -1):
            k, t, _id = m.split("\n")
            self.starts.setdefault(k, []).append(from_us(t))
        self.overrides = client.limits()
        self.rows = {q: _candidates(r, keys, [q]) for q in QUEUES}

    def instants(self, before: datetime, after: datetime) -> list[datetime]:
        """``before``, and every instant in (before, after] at which a start leaves a window."""
        edges = {t + timedelta(seconds=p) for ts in self.starts.values() for t in ts for p in PERS}
        return [before, *sorted(e for e in edges if before < e <= after)]

    def plan(self, queues: list[str], n: int, now: datetime) -> list[str]:
        rows = sorted(row for q in queues for row in self.rows[q] if row[-1] <= now)
        chosen = plan_claim(
            [Candidate(key, limit) for *_, key, limit, _due in rows],
            running=self.running,
            starts=self.starts,
            overrides=self.overrides,
            now=now,
            limit=n,
        )
        return [rows[i][3] for i in chosen]


def _open_client(url: str, namespace: str) -> qw.Client:
    return qw.Client(RedisBackend.from_url(url, namespace=namespace))


# -- the differential test -----------------------------------------------------


@pytest.mark.parametrize(("seed", "park"), [(1, "eager"), (2, "eager"), (3, "default"), (4, "few")])
def test_claims_are_plan_claim_of_the_stored_state(
    url: str, ns: str, seed: int, park: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if park != "default":
        # Eager: every held-back job parked. Few: a few passed over first, as by default.
        monkeypatch.setattr(backend_module, "PARK_KEY", 0 if park == "eager" else 1)
        monkeypatch.setattr(backend_module, "PARK_AFTER", 0 if park == "eager" else 3)
    rnd = random.Random(seed)
    keys = Keyspace(ns)
    client = _open_client(url, ns)
    r = _raw(url)
    leases: dict[str, Lease] = {}
    own = {k: rnd.choice(OWN) for k in KEYS}
    serial = 0
    compared = 0
    try:
        for _step in range(220):
            action = rnd.choices(
                ["enqueue", "claim", "finish", "cancel", "set_limit", "sleep"],
                weights=[4, 6, 4, 1, 1, 1],
            )[0]
            if action == "enqueue":
                jobs = []
                for _ in range(rnd.randint(1, 4)):
                    serial += 1
                    key = rnd.choice([None, *KEYS])
                    # Mostly the key's own limit; sometimes another (one key, several limits).
                    limit = (
                        None
                        if key is None
                        else (own[key] if rnd.random() < 0.8 else rnd.choice(OWN))
                    )
                    jobs.append(
                        NewJob(
                            rnd.choice(QUEUES),
                            serial,
                            id=f"j{serial:04d}",
                            priority=rnd.randint(-1, 1),
                            limit_key=key,
                            limit=limit,
                            fair=key is not None and rnd.random() < 0.5,
                            delay=3600 if rnd.random() < 0.1 else None,
                        )
                    )
                client.enqueue(jobs)
            elif action == "claim":
                queues = rnd.choice([["a"], ["b"], ["a", "b"]])
                n = rnd.randint(1, 4)
                state = _State(r, keys, client)
                before = client.now()
                lease_s = 0.05 if rnd.random() < 0.05 else 60.0
                claims = client.claim(queues, worker="w", lease_s=lease_s, limit=n)
                after = client.now()
                got = [c.job.id for c in claims]
                # The claim ran at some instant in [before, after]: what plan_claim
                # says at each instant a start leaves a window, or at before.
                wants = {tuple(state.plan(queues, n, t)) for t in state.instants(before, after)}
                assert tuple(got) in wants, (got, wants)
                compared += 1
                for c in claims:
                    leases[c.job.id] = c.lease
            elif action == "finish" and leases:
                job_id = rnd.choice(sorted(leases))
                lease = leases.pop(job_id)
                kind = rnd.choice(["complete", "retry", "release", "fail", "abort"])
                if kind == "complete":
                    client.complete(lease)
                elif kind == "retry":
                    client.fail(lease, "again", retry_in=0)
                elif kind == "release":
                    client.release(lease)
                elif kind == "fail":
                    client.fail(lease, "no")
                else:
                    client.abort(lease, "stop")
            elif action == "cancel" and serial:
                client.cancel(f"j{rnd.randint(1, serial):04d}")
            elif action == "set_limit":
                client.set_limit(rnd.choice(KEYS), rnd.choice(OPERATORS))
            elif action == "sleep":
                time.sleep(rnd.choice([0.06, 0.35]))
                client.reclaim_expired()
                leases = {i: ls for i, ls in leases.items() if _holds(client, ls)}
            check_invariants(r, keys, QUEUES)
        assert compared > 30
    finally:
        client.close()
        r.close()


def _holds(client: qw.Client, lease: Lease) -> bool:
    job = client.get(lease.job_id)
    return job is not None and job.status is JobStatus.RUNNING and job.attempts == lease.attempt


# -- parking -------------------------------------------------------------------


def test_a_throttled_run_ahead_is_parked_by_one_claim(url: str, ns: str) -> None:
    """By default: the first few held-back jobs of the key stay, the rest are parked."""
    few = backend_module.PARK_KEY
    keys = Keyspace(ns)
    client = _open_client(url, ns)
    r = _raw(url)
    n = 20_000
    try:
        client.set_limit("busy", Limit(concurrency=1))
        for start in range(0, n, 10_000):
            client.enqueue(
                [
                    NewJob("q", i, limit_key="busy", priority=-1)
                    for i in range(start, start + 10_000)
                ]
            )
        free = client.enqueue([NewJob("q", i) for i in range(200)])
        first = client.claim(["q"], worker="w", limit=1)
        assert [c.job.limit_key for c in first] == ["busy"]
        # This claim looks past the held-back run (parking it) to a free job.
        t0 = time.perf_counter()
        (c,) = client.claim(["q"], worker="w", limit=1)
        parking = time.perf_counter() - t0
        assert c.job.limit_key is None
        ready = keys.queue_keys(["q"])[0]
        # The held-back jobs left the ready set, but for the first few: later
        # claims pass over those few only.
        assert r.zcard(ready) == 199 + few
        assert len(parked_jobs(r, keys)) == n - 1 - few
        assert client.counts()["q"][JobStatus.QUEUED] == n - 1 + 199
        assert client.keys()[0].queued == n - 1
        times = []
        for _ in range(99):
            t0 = time.perf_counter()
            (c,) = client.claim(["q"], worker="w", limit=1)
            times.append(time.perf_counter() - t0)
            assert c.job.limit_key is None
        # An empty-ish queue, for comparison.
        other = _open_client(url, new_namespace())
        try:
            other.enqueue([NewJob("q", i) for i in range(100)])
            base = []
            for _ in range(100):
                t0 = time.perf_counter()
                other.claim(["q"], worker="w", limit=1)
                base.append(time.perf_counter() - t0)
        finally:
            other.close()
        assert statistics.median(times) < 3 * statistics.median(base) + 0.002, (
            statistics.median(times),
            statistics.median(base),
            parking,
        )
        assert [j for j in free if j.created]
        rest = client.claim(["q"], worker="w", limit=200)
        assert len(rest) == 100
        assert {c.job.limit_key for c in rest} == {None}
        # The slot frees: the next busy job (FIFO) comes back, one at a time.
        client.complete(first[0].lease)
        (nxt,) = client.claim(["q"], worker="w", limit=5)
        assert nxt.job.payload == 1
        assert client.claim(["q"], worker="w", limit=5) == []
        check_invariants(r, keys, ["q"])
    finally:
        client.close()
        r.close()


def test_a_claim_that_took_a_job_stops_after_scan_max_held_back_ones(
    url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_module, "SCAN_MAX", 50)
    client = _open_client(url, ns)
    try:
        client.set_limit("paused", Limit(concurrency=0))
        first = client.enqueue([NewJob("q", "first")])
        client.enqueue([NewJob("q", i, limit_key="paused") for i in range(120)])
        after = client.enqueue([NewJob("q", f"after{i}") for i in range(3)])
        # Taken one, then 50 held back looked at: it answers what it has.
        assert [c.job.id for c in client.claim(["q"], worker="w", limit=10)] == [first[0].id]
        # Nothing taken yet: it looks as far as it takes (parking on the way).
        got = client.claim(["q"], worker="w", limit=10)
        assert [c.job.id for c in got] == [a.id for a in after]
        assert client.claim(["q"], worker="w", limit=10) == []
    finally:
        client.close()


@pytest.mark.parametrize(
    "exit_", ["complete", "retry", "release", "fail", "abort", "reclaim", "cancel_queued"]
)
def test_every_exit_moves_a_parked_job_back(url: str, ns: str, eager: None, exit_: str) -> None:
    keys = Keyspace(ns)
    client = _open_client(url, ns)
    r = _raw(url)
    one = Limit(concurrency=1)
    try:
        # The key's jobs in two queues: a slot freed in one brings back the other's.
        ids = [
            a.id
            for a in client.enqueue([NewJob("a", i, limit_key="k", limit=one) for i in range(2)])
        ]
        there = [
            a.id
            for a in client.enqueue([NewJob("b", i, limit_key="k", limit=one) for i in range(2)])
        ]
        lease_s = 0.2 if exit_ == "reclaim" else 60.0
        (held,) = client.claim(["a"], worker="w", lease_s=lease_s, limit=5)
        assert held.job.id == ids[0]
        assert client.claim(["a", "b"], worker="w", limit=5) == []
        assert set(parked_jobs(r, keys)) == {ids[1], *there}
        check_invariants(r, keys, ["a", "b"])
        lease = held.lease
        if exit_ == "complete":
            client.complete(lease)
        elif exit_ == "retry":
            client.fail(lease, "again", retry_in=0)
        elif exit_ == "release":
            client.release(lease)
        elif exit_ == "fail":
            client.fail(lease, "no")
        elif exit_ == "abort":
            client.abort(lease, "stop")
        elif exit_ == "reclaim":
            time.sleep(0.25)
            assert client.reclaim_expired() == 1
        else:
            # A queued job leaving frees nothing, but its key is looked at again, harmlessly.
            assert client.cancel(there[1]) is JobStatus.CANCELLED
            check_invariants(r, keys, ["a", "b"])
            assert client.claim(["b"], worker="w", limit=5) == []
            client.complete(lease)
        check_invariants(r, keys, ["a", "b"])
        got = client.claim(["b"], worker="w", limit=5)
        assert [c.job.id for c in got] == [there[0]], "a slot freed in queue a serves queue b"
        assert client.claim(["a", "b"], worker="w", limit=5) == []
        check_invariants(r, keys, ["a", "b"])
    finally:
        client.close()
        r.close()


def test_a_full_rate_window_parks_until_it_makes_room(url: str, ns: str, eager: None) -> None:
    keys = Keyspace(ns)
    client = _open_client(url, ns)
    r = _raw(url)
    try:
        rate = Limit(rate=2, per=0.4)
        ids = [
            a.id
            for a in client.enqueue([NewJob("q", i, limit_key="r", limit=rate) for i in range(5)])
        ]
        first = client.claim(["q"], worker="w", limit=10)
        assert [c.job.id for c in first] == ids[:2]
        assert set(parked_jobs(r, keys)) == set(ids[2:])
        (mark,) = r.hgetall(keys.key("pwt")).values()
        started = first[0].job.started_at
        assert started is not None
        assert from_us(mark) == started + timedelta(seconds=0.4), (
            "the first start leaving the window"
        )
        assert client.claim(["q"], worker="w", limit=10) == []
        time.sleep(0.45)
        assert [c.job.id for c in client.claim(["q"], worker="w", limit=10)] == ids[2:4]
        check_invariants(r, keys, ["q"])
    finally:
        client.close()
        r.close()


def test_set_limit_brings_parked_jobs_back_and_wakes_waiters(
    url: str, ns: str, eager: None
) -> None:
    client = _open_client(url, ns)
    waiter = _open_client(url, ns)
    try:
        client.set_limit("k", Limit(concurrency=0))
        ids = [a.id for a in client.enqueue([NewJob("q", i, limit_key="k") for i in range(3)])]
        assert waiter.claim(["q"], worker="w") == []
        woke: list[float] = []

        def wait() -> None:
            t0 = time.monotonic()
            if waiter.backend.wait(["q"], 10):
                woke.append(time.monotonic() - t0)

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.2)
        client.set_limit("k", Limit(concurrency=2))
        t.join(15)
        assert woke
        assert woke[0] < 5
        assert [c.job.id for c in waiter.claim(["q"], worker="w", limit=5)] == ids[:2]
    finally:
        client.close()
        waiter.close()


def test_a_freed_slot_wakes_the_queue_of_the_parked_jobs(url: str, ns: str, eager: None) -> None:
    client = _open_client(url, ns)
    waiter = _open_client(url, ns)
    try:
        one = Limit(concurrency=1)
        client.enqueue(
            [NewJob("a", 0, limit_key="k", limit=one), NewJob("b", 1, limit_key="k", limit=one)]
        )
        (held,) = client.claim(["a"], worker="w")
        assert waiter.claim(["b"], worker="w") == []
        woke: list[float] = []

        def wait() -> None:
            t0 = time.monotonic()
            if waiter.backend.wait(["b"], 10):
                woke.append(time.monotonic() - t0)

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.2)
        client.complete(held.lease)
        t.join(15)
        assert woke
        assert woke[0] < 5
        assert [c.job.payload for c in waiter.claim(["b"], worker="w")] == [1]
    finally:
        client.close()
        waiter.close()


# -- racing ----------------------------------------------------------------------

RACE = {"x": 2, "y": 1, "z": 3}


@pytest.mark.parametrize("park", ["eager", "default"])
def test_racing_threads_on_keys_across_queues_never_exceed_and_drain(
    url: str, ns: str, park: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if park == "eager":
        monkeypatch.setattr(backend_module, "PARK_KEY", 0)
        monkeypatch.setattr(backend_module, "PARK_AFTER", 0)
    keys = Keyspace(ns)
    setup = _open_client(url, ns)
    r = _raw(url)
    rnd = random.Random(5)
    setup.set_limit("y", Limit(concurrency=RACE["y"]))
    jobs = []
    for i in range(240):
        key = rnd.choice([None, "x", "y", "z"])
        limit = None if key in (None, "y") else Limit(concurrency=RACE[key])
        jobs.append(
            NewJob(
                rnd.choice(QUEUES),
                i,
                limit_key=key,
                limit=limit,
                fair=key is not None and rnd.random() < 0.5,
            )
        )
    ids = [a.id for a in setup.enqueue(jobs)]
    spans: list[tuple[str, str | None, float, float]] = []
    errors: list[BaseException] = []
    deadline = time.monotonic() + 90
    clients = [_open_client(url, ns) for _ in range(6)]

    def work(index: int) -> None:
        c = clients[index]
        own = random.Random(index)
        queues = [["a"], ["b"], ["a", "b"]][index % 3]
        try:
            while time.monotonic() < deadline and len(spans) < len(ids):
                claims = c.claim(queues, worker=f"t{index}", limit=own.randint(1, 3))
                t0 = time.monotonic()
                if not claims:
                    c.backend.wait(queues, 0.05)
                    continue
                time.sleep(own.uniform(0, 0.003))
                for cl in claims:
                    if own.random() < 0.1:
                        c.release(cl.lease)  # runs again later: no span
                    else:
                        spans.append((cl.job.id, cl.job.limit_key, t0, time.monotonic()))
                        c.complete(cl.lease)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clients))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert sorted(i for i, *_ in spans) == sorted(ids), "every job ran exactly once"
        for key, most in RACE.items():
            assert max_overlap([(s, e) for _, k, s, e in spans if k == key]) <= most, key
        check_invariants(r, keys, QUEUES)
        assert parked_jobs(r, keys) == {}
    finally:
        for c in clients:
            c.close()
        setup.close()
        r.close()


# -- schedules -------------------------------------------------------------------


def test_schedule_ticks_keep_microseconds_and_live_apart_from_jobs(url: str, ns: str) -> None:
    client = _open_client(url, ns)
    try:
        client.save_schedule(qw.Schedule("s", "every 30s", "UTC", "q", "task"))
        tick = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
        assert client.advance_schedule("s", tick)
        assert not client.advance_schedule("s", tick)
        assert client.advance_schedule("s", tick + timedelta(microseconds=1))
        assert client.purge(0).jobs == 0
        (s,) = client.schedules()
        assert s.last_tick == tick + timedelta(microseconds=1)
        client.save_schedule(qw.Schedule("s", "every 60s", "Europe/Paris", "q2", "other"))
        assert client.schedules() == [
            qw.Schedule(
                "s", "every 60s", "Europe/Paris", "q2", "other", tick + timedelta(microseconds=1)
            )
        ]
        assert client.remove_schedule("s")
        assert not client.remove_schedule("s")
        assert not client.advance_schedule("s", tick + timedelta(days=1))
    finally:
        client.close()
