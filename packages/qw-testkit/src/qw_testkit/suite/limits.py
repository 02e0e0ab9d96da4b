"""Flow control: concurrency and rate limits per limit key, operators' limits, fair claiming.

What is checked, in the contract's words (:meth:`qw.contract.Backend.claim`
and the limits section): no claim, from any thread or process, makes a key
exceed its limit; a job held back stays ``queued``, untouched, and the claim
goes on past it to other keys; every way a job leaves ``running`` frees its
slot; rate windows slide on the store's clock; an operators' limit replaces
what jobs declare, from the next claim on; claim order is ``(priority, fair
rank, FIFO)``, fair ranks fixed at insert. The expected answers are written
out by hand or come from :mod:`qw_testkit.limit_model`: nothing here asks
``qw.limits`` what should happen.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import qw
from qw.model import Claim, Job, JobStatus, KeyState, Limit, NewJob
from qw.validation import MAX_BATCH, MAX_CONCURRENCY_LIMIT, MAX_LIST_LIMIT, MAX_SECONDS
from qw_testkit.base import (
    ContractBase,
    OpenClient,
    Snapshot,
    new_namespace,
    race_processes,
    snapshot,
)
from qw_testkit.children import claim_keyed_until_done, claim_one_and_hang
from qw_testkit.gates import requires
from qw_testkit.limit_model import LimitModel, ModelKey, max_overlap, starts_within
from qw_testkit.suite.state_machine import machine_settings

QUEUED = JobStatus.QUEUED
RUNNING = JobStatus.RUNNING
SUCCEEDED = JobStatus.SUCCEEDED
FAILED = JobStatus.FAILED
CANCELLED = JobStatus.CANCELLED

THREADS = 8
PROCESSES = 4
#: The racing tests: concurrency limits per key, and how many jobs of each
#: key (None: no key) are enqueued, interleaved.
RACE_LIMITS = {"a": 3, "b": 1}
RACE_JOBS: dict[str | None, int] = {"a": 120, "b": 30, None: 50}
#: Most seconds a racer holds a claimed batch before completing it.
HOLD = 0.004
#: Seconds a race may take before the kit gives up on it (a failure, not a hang).
DEADLINE = 90.0
#: A short, real lease, judged on the store's clock.
SHORT = 0.5
#: The killed claimer's lease: a little longer, as the kill comes from another process.
KILLED_LEASE = 1.0
#: The rate test: at most RATE starts in any PER seconds.
RATE, PER = 3, 1.0
#: A margin past a window's or lease's end on the store's clock.
MARGIN = 0.05
#: Fairness: a key with this long a backlog must not starve a key with FEW jobs.
BACKLOG = 100_000
FEW = 10
#: Jobs held back ahead of a claimable one (a claim must look past all of them).
HELD_AHEAD = 300


# -- helpers -------------------------------------------------------------------


def kjob(key: str | None, payload: object = None, **options: Any) -> NewJob:
    """A job on queue ``q`` (unless ``queue=``) with limit key ``key``."""
    queue = options.pop("queue", "q")
    return NewJob(queue, payload, limit_key=key, **options)  # type: ignore[arg-type]


def enqueue(client: qw.Client, jobs: Sequence[NewJob]) -> list[str]:
    answers = client.enqueue(list(jobs))
    assert all(a.created for a in answers)
    return [a.id for a in answers]


def claim(
    client: qw.Client, limit: int = 100, lease_s: float = 30.0, queues: Sequence[str] = ("q",)
) -> list[Claim]:
    return client.claim(list(queues), worker="w-limits", lease_s=lease_s, limit=limit)


def ids_of(claims: Sequence[Claim]) -> list[str]:
    return [c.job.id for c in claims]


def keys_of(client: qw.Client) -> list[KeyState]:
    """Every key ``keys()`` reports, over as many pages as it takes."""
    out: list[KeyState] = []
    after: str | None = None
    while True:
        page = client.keys(limit=100, after=after)
        out.extend(page)
        if len(page) < 100:
            return out
        after = page[-1].key


def state_of(client: qw.Client, key: str) -> KeyState | None:
    return next((s for s in keys_of(client) if s.key == key), None)


def running_with(client: qw.Client, key: str) -> list[str]:
    return [j.id for j in client.list_jobs(key=key, status=RUNNING, limit=MAX_LIST_LIMIT)]


def statuses(client: qw.Client, ids: Sequence[str]) -> list[JobStatus | None]:
    return [None if j is None else j.status for j in client.get_many(ids)]


def sleep_until_store(client: qw.Client, when: datetime, margin: float = MARGIN) -> None:
    """Sleep until the store's clock is ``margin`` seconds past ``when``."""
    target = when + timedelta(seconds=margin)
    while True:
        left = (target - client.now()).total_seconds()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


class Declaring:
    """The backend under test, declaring other capabilities: what a client checks first."""

    def __init__(self, backend: qw.Backend, **flags: Any) -> None:
        self._backend = backend
        self.name = backend.name
        self.capabilities = replace(backend.capabilities, **flags)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._backend, attr)


class NoIO:
    """A backend that fails the test on any call: a refusal must come before all I/O."""

    def __init__(self, backend: qw.Backend) -> None:
        self.name = backend.name
        self.capabilities = backend.capabilities
        self.namespace = backend.namespace

    def __getattr__(self, attr: str) -> Any:
        raise AssertionError(f"bad input reached backend.{attr}: the client must refuse it first")


def no_io_client(client: qw.Client) -> qw.Client:
    return qw.Client(cast("qw.Backend", NoIO(client.backend)))


def interleaved(counts: dict[str | None, int], seed: int = 13) -> list[str | None]:
    """The keys of ``counts``, each as many times as it says, shuffled (reproducibly)."""
    keys = [k for k, n in counts.items() for _ in range(n)]
    random.Random(seed).shuffle(keys)
    return keys


def check_spans(spans: Sequence[tuple[str, str | None, float, float]], ids: Sequence[str]) -> None:
    """Each job ran once, and no key ever had more jobs surely running than its limit.

    A span runs from just after the claim that took the job returned to just
    before its complete was sent: the job was ``running`` in the store all
    that time, so overlapping spans are jobs running at once.
    """
    every = Counter(job_id for job_id, *_ in spans)
    twice = [job_id for job_id, n in every.items() if n > 1]
    assert not twice, f"{len(twice)} jobs were claimed more than once: {twice[:5]}"
    assert sorted(every) == sorted(ids), "some jobs were never claimed"
    for key, most in RACE_LIMITS.items():
        mine = [(s, e) for _, k, s, e in spans if k == key]
        peak = max_overlap(mine)
        assert peak <= most, (
            f"key {key!r} (concurrency {most}) had {peak} jobs running at once "
            "(spans from claim to complete overlapped)"
        )


class _Sampler:
    """A thread reading the running jobs of each racing key until stopped."""

    def __init__(self, client: qw.Client) -> None:
        self.client = client
        self.peaks: Counter[str] = Counter()
        self.over: list[str] = []
        self.errors: list[BaseException] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for key, most in RACE_LIMITS.items():
                    n = len(running_with(self.client, key))
                    self.peaks[key] = max(self.peaks[key], n)
                    if n > most:
                        self.over.append(f"list_jobs(key={key!r}, status=running): {n} > {most}")
                for state in self.client.keys(limit=100):
                    bound = RACE_LIMITS.get(state.key)
                    if bound is not None and state.running > bound:
                        self.over.append(f"keys(): {state.key!r} running {state.running} > {bound}")
                self.samples += 1
                time.sleep(0.001)
        except BaseException as exc:
            self.errors.append(exc)

    def check(self) -> None:
        assert not self.errors, self.errors
        assert self.samples > 0, "the sampler never read the store"
        assert not self.over, f"a key ran more jobs than its limit: {self.over[:5]}"


def odd_limit(**fields: Any) -> Limit:
    """A Limit with fields of any type, as untyped callers may build one."""
    return Limit(**fields)


BAD_KEYS: list[tuple[str, Any]] = [
    ("empty", ""),
    ("too-long", "k" * 201),
    ("newline", "a\nb"),
    ("nul", "a\x00"),
    ("lone-surrogate", "x\ud800"),
    ("int", 5),
]
BAD_LIMITS: list[tuple[str, Any]] = [
    ("negative-concurrency", odd_limit(concurrency=-1)),
    ("float-concurrency", odd_limit(concurrency=1.5)),
    ("bool-concurrency", odd_limit(concurrency=True)),
    ("huge-concurrency", odd_limit(concurrency=MAX_CONCURRENCY_LIMIT + 1)),
    ("rate-without-per", odd_limit(rate=1)),
    ("per-without-rate", odd_limit(per=1.0)),
    ("zero-rate", odd_limit(rate=0, per=1.0)),
    ("float-rate", odd_limit(rate=1.5, per=1.0)),
    ("zero-per", odd_limit(rate=1, per=0)),
    ("negative-per", odd_limit(rate=1, per=-1.0)),
    ("nan-per", odd_limit(rate=1, per=float("nan"))),
    ("huge-per", odd_limit(rate=1, per=MAX_SECONDS * 2.0)),
    ("a-dict", {"concurrency": 1}),
    ("an-int", 3),
]


def _by_key(key: Any) -> dict[str, Callable[[qw.Client], object]]:
    """The calls that must refuse the limit key ``key``."""
    return {
        # A good job first: the whole batch is refused, not only the bad job.
        "enqueue-key": lambda c: c.enqueue([NewJob("q", 1), NewJob("q", 2, limit_key=key)]),
        "workflow-key": lambda c: c.create_workflow(
            "w", [NewJob("q", id="w.a"), NewJob("q", id="w.b", limit_key=key)]
        ),
        "set_limit-key": lambda c: c.set_limit(key, Limit(1)),
        "list_jobs-key": lambda c: c.list_jobs(key=key),
        "keys-after": lambda c: c.keys(after=key),
    }


def _by_limit(limit: Any) -> dict[str, Callable[[qw.Client], object]]:
    """The calls that must refuse the limit ``limit``."""
    return {
        "enqueue-limit": lambda c: c.enqueue(
            [NewJob("q", 1), NewJob("q", 2, limit_key="k", limit=limit)]
        ),
        "set_limit": lambda c: c.set_limit("k", limit),
    }


def _bad_input() -> dict[str, Callable[[qw.Client], object]]:
    """Calls the client must refuse, by name; each given a client to call."""
    calls: dict[str, Callable[[qw.Client], object]] = {}
    for name, key in BAD_KEYS:
        calls.update({f"{what}-{name}": call for what, call in _by_key(key).items()})
    for name, limit in BAD_LIMITS:
        calls.update({f"{what}-{name}": call for what, call in _by_limit(limit).items()})
    calls["limit-without-key"] = lambda c: c.enqueue([NewJob("q", limit=Limit(concurrency=1))])
    calls["fair-without-key"] = lambda c: c.enqueue([NewJob("q", fair=True)])
    calls["fair-not-a-bool"] = lambda c: c.enqueue([NewJob("q", limit_key="k", fair=cast(Any, 1))])
    calls["workflow-limit-without-key"] = lambda c: c.create_workflow(
        "w", [NewJob("q", id="w.a", limit=Limit(concurrency=1))]
    )
    calls["keys-limit-0"] = lambda c: c.keys(limit=0)
    calls["keys-limit-too-many"] = lambda c: c.keys(limit=MAX_LIST_LIMIT + 1)
    calls["keys-limit-a-str"] = lambda c: c.keys(limit=cast(Any, "5"))
    return calls


BAD_INPUT = _bad_input()


# -- the model test ------------------------------------------------------------

MODEL_QUEUES = ("a", "b")
MODEL_KEYS = ("k1", "k2", "k3")
#: Declared limits and operators' limits the machine draws. Every rate has a
#: window of an hour: within an example, a start never leaves it.
HOUR = 3600.0
#: The limits each key's jobs may declare: one key with a concurrency, one
#: with a rate, one with neither or a pause, so that every example has each.
OWN_LIMITS: dict[str, list[Limit | None]] = {
    "k1": [Limit(concurrency=1), Limit(concurrency=2)],
    "k2": [Limit(rate=2, per=HOUR), Limit(concurrency=1, rate=3, per=HOUR)],
    "k3": [None, Limit(concurrency=0), Limit(concurrency=3)],
}
OPERATOR_LIMITS = [
    None,
    Limit(concurrency=0),
    Limit(concurrency=1),
    Limit(concurrency=3),
    Limit(),
    Limit(rate=1, per=HOUR),
]
KINDS = ("complete", "fail", "retry", "release", "abort")


def limit_machine_settings() -> settings:
    """The profile's effort, with longer runs: a limit shows only after a few claims."""
    base = machine_settings()
    return settings(base, stateful_step_count=max(base.stateful_step_count, 50))


class LimitMachine(RuleBasedStateMachine):
    """One namespace of the backend under test, and the limit model.

    Each key's jobs all declare one limit (drawn per example), so that
    ``keys()``'s "the limit of one of its live jobs" names one limit.
    """

    def __init__(self, open_client: OpenClient) -> None:
        super().__init__()
        self.client = open_client(new_namespace())
        self.model = LimitModel()
        self.own: dict[str, Limit | None] = {}
        self.leases: dict[str, qw.Lease] = {}
        self.serial = 0
        # A store that shards queues counts a key per shard: one queue here.
        self.one_queue = not self.client.capabilities.cross_queue_atomic

    def _q(self, queue: str) -> str:
        return MODEL_QUEUES[0] if self.one_queue else queue

    def teardown(self) -> None:
        self.client.close()

    @initialize(limits=st.tuples(*(st.sampled_from(OWN_LIMITS[k]) for k in MODEL_KEYS)))
    def declare(self, limits: tuple[Limit | None, ...]) -> None:
        self.own = dict(zip(MODEL_KEYS, limits, strict=True))

    @rule(
        batch=st.lists(
            st.tuples(
                # Mostly one queue and one priority, so that keys and ranks decide.
                st.sampled_from(("a", "a", "a", "b")),
                st.sampled_from((0, 0, 0, -1, 1)),
                st.sampled_from((None, *MODEL_KEYS, *MODEL_KEYS)),
                st.booleans(),
                st.sampled_from([True, True, True, True, False]),
            ),
            min_size=1,
            max_size=5,
        )
    )
    def enqueue(self, batch: list[tuple[str, int, str | None, bool, bool]]) -> None:
        jobs = []
        for drawn, priority, key, fair, due in batch:
            queue = self._q(drawn)
            self.serial += 1
            job_id = f"j{self.serial:04d}"
            fair = fair and key is not None
            limit = None if key is None else self.own[key]
            jobs.append(
                NewJob(
                    queue,
                    self.serial,
                    id=job_id,
                    priority=priority,
                    limit_key=key,
                    limit=limit,
                    fair=fair,
                    delay=None if due else HOUR,
                )
            )
            self.model.enqueue(
                job_id, queue, priority=priority, key=key, limit=limit, fair=fair, due=due
            )
        assert [a.id for a in self.client.enqueue(jobs)] == [j.id for j in jobs]

    @rule(
        queues=st.sampled_from([["a"], ["b"], ["a", "b"]]),
        limit=st.integers(1, 4),
    )
    def claim(self, queues: list[str], limit: int) -> None:
        queues = list(dict.fromkeys(self._q(q) for q in queues))
        expected = self.model.claimable(queues, limit)
        claims = self.client.claim(queues, worker="machine", lease_s=HOUR, limit=limit)
        assert ids_of(claims) == [j.id for j in expected], (
            "claim order under limits: (priority, fair rank, FIFO), held-back jobs skipped"
        )
        for c, job in zip(claims, expected, strict=True):
            self.model.claimed(job)
            self.leases[job.id] = c.lease

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), kind=st.sampled_from(KINDS))
    def finish(self, data: st.DataObject, kind: str) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.leases)))
        lease = self.leases.pop(job_id)
        expected = self.model.finish(job_id, kind)
        if kind == "complete":
            got = self.client.complete(lease)
        elif kind == "fail":
            got = self.client.fail(lease, "no")
        elif kind == "retry":
            got = self.client.fail(lease, "again", retry_in=0)
        elif kind == "release":
            got = self.client.release(lease)
        else:
            got = self.client.abort(lease, "stop")
        assert got is expected

    @precondition(lambda self: bool(self.model.jobs))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.model.jobs)))
        assert self.client.cancel(job_id) is self.model.cancel(job_id)

    @rule(key=st.sampled_from(MODEL_KEYS), limit=st.sampled_from(OPERATOR_LIMITS))
    def set_limit(self, key: str, limit: Limit | None) -> None:
        self.client.set_limit(key, limit)
        self.model.set_limit(key, limit)

    @invariant()
    def jobs_agree(self) -> None:
        stored = {j.id: j for j in self.client.list_jobs(limit=MAX_LIST_LIMIT)}
        assert sorted(stored) == sorted(self.model.jobs)
        for job_id, job in self.model.jobs.items():
            got = stored[job_id]
            assert (got.status, got.attempts) == (job.status, job.attempts), job_id
            assert (got.limit_key, got.limit, got.fair) == (job.key, job.limit, job.fair), job_id

    @invariant()
    def keys_agree(self) -> None:
        got = [
            ModelKey(s.key, s.queued, s.running, s.limit, s.overridden, s.started)
            for s in self.client.keys(limit=100)
        ]
        assert got == self.model.keys()
        assert self.client.limits() == self.model.overrides


# -- the tests -------------------------------------------------------------------


class LimitTests(ContractBase):
    def url_or_skip(self) -> str:
        url = self.backend_url()
        if url is None:
            pytest.skip(
                f"{type(self).__name__}.backend_url() returns None, so child processes "
                "cannot open the store"
            )
        return url

    def _race_jobs(self, client: qw.Client) -> list[str]:
        # Key a's jobs declare its limit; key b's is the operators': both must hold.
        client.set_limit("b", Limit(concurrency=RACE_LIMITS["b"]))
        jobs = [
            kjob(key, i, limit=Limit(concurrency=RACE_LIMITS[key]) if key == "a" else None)
            for i, key in enumerate(interleaved(RACE_JOBS))
        ]
        return enqueue(client, jobs)

    def _check_drained(self, client: qw.Client, ids: list[str]) -> None:
        assert client.counts() == {"q": {s: len(ids) * (s is SUCCEEDED) for s in JobStatus}}
        assert {j.attempts for j in client.get_many(ids) if j is not None} == {1}
        assert [s.key for s in keys_of(client)] == ["b"], "only the operators' limit is left"

    # -- concurrency ---------------------------------------------------------

    @requires("limits", "thread_safe")
    def test_a_concurrency_limit_is_never_exceeded_by_racing_threads(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        ids = self._race_jobs(client)
        clients = [open_client(client.namespace) for _ in range(THREADS)]
        start = threading.Barrier(THREADS)
        spans: list[tuple[str, str | None, float, float]] = []
        errors: list[BaseException] = []
        deadline = time.monotonic() + DEADLINE

        def work(index: int) -> None:
            c = clients[index]
            rnd = random.Random(index)
            try:
                start.wait()
                while time.monotonic() < deadline and len(spans) < len(ids):
                    claims = c.claim(["q"], worker=f"t{index}", limit=rnd.randint(1, 4))
                    after_claim = time.monotonic()
                    if not claims:
                        time.sleep(0.001)
                        continue
                    time.sleep(rnd.uniform(0, HOLD))
                    for cl in claims:
                        spans.append((cl.job.id, cl.job.limit_key, after_claim, time.monotonic()))
                        c.complete(cl.lease, index)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
        with _Sampler(open_client(client.namespace)) as sampler:
            for t in threads:
                t.start()
            for t in threads:
                t.join(DEADLINE + 30)
        assert not errors, errors
        check_spans(spans, ids)
        sampler.check()
        self._check_drained(client, ids)

    @requires("limits", "multi_process")
    def test_a_concurrency_limit_is_never_exceeded_by_racing_processes(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        url = self.url_or_skip()
        ids = self._race_jobs(client)
        with _Sampler(open_client(client.namespace)) as sampler:
            reports = race_processes(
                claim_keyed_until_done,
                lambda start, results: (
                    url,
                    client.namespace,
                    "q",
                    len(ids),
                    HOLD,
                    start,
                    results,
                    DEADLINE,
                ),
                count=PROCESSES,
                timeout=DEADLINE + 90,
            )
        check_spans([span for _, part in reports for span in part], ids)
        sampler.check()
        assert sum(1 for _, part in reports if part) > 1, "only one process ever won a claim"
        self._check_drained(client, ids)

    @requires("limits")
    def test_a_claim_takes_only_the_free_slots(self, client: qw.Client) -> None:
        ids = enqueue(client, [kjob("k", i, limit=Limit(concurrency=2)) for i in range(5)])
        first = claim(client, limit=10)
        assert ids_of(first) == ids[:2], "two slots: the first two, FIFO"
        assert claim(client, limit=10) == []
        assert sorted(running_with(client, "k")) == sorted(ids[:2])
        client.complete(first[0].lease)
        assert ids_of(claim(client, limit=10)) == [ids[2]]
        assert claim(client, limit=10) == []
        assert statuses(client, ids) == [SUCCEEDED, RUNNING, RUNNING, QUEUED, QUEUED]

    @requires("cross_queue_atomic")
    @requires("limits")
    def test_a_key_counts_its_jobs_in_every_queue(self, client: qw.Client) -> None:
        one = Limit(concurrency=1)
        here = enqueue(client, [kjob("k", 1, limit=one, queue="q1")])
        there = enqueue(client, [kjob("k", 2, limit=one, queue="q2"), kjob(None, queue="q2")])
        assert ids_of(claim(client, queues=["q1"])) == here
        assert ids_of(claim(client, queues=["q2"])) == [there[1]], "key k is full in q1"
        assert state_of(client, "k") == KeyState("k", 1, 1, one)

    @pytest.mark.parametrize(
        "exit_", ["complete", "retry", "fail", "release", "cancel", "reclaim", "reclaim_final"]
    )
    @requires("limits")
    def test_every_exit_from_running_frees_the_slot(self, client: qw.Client, exit_: str) -> None:
        one = Limit(concurrency=1)
        attempts = 1 if exit_ == "reclaim_final" else 3
        ids = enqueue(client, [kjob("k", i, limit=one, max_attempts=attempts) for i in range(3)])
        reclaim = exit_.startswith("reclaim")
        first = claim(client, limit=10, lease_s=SHORT if reclaim else 30.0)
        assert ids_of(first) == [ids[0]]
        assert claim(client, limit=10) == [], "the key is full"
        lease = first[0].lease
        if exit_ == "complete":
            assert client.complete(lease) is SUCCEEDED
        elif exit_ == "retry":
            assert client.fail(lease, "again", retry_in=0) is QUEUED
        elif exit_ == "fail":
            assert client.fail(lease, "no") is FAILED
        elif exit_ == "release":
            assert client.release(lease) is QUEUED
        elif exit_ == "cancel":
            assert client.cancel(ids[0]) is RUNNING
            assert claim(client, limit=10) == [], "a cancel-requested job still holds its slot"
            assert client.renew(lease).cancel_requested
            assert client.abort(lease, "cancelled") is CANCELLED
        else:
            sleep_until_store(client, lease.expires_at)
            assert client.reclaim_expired() == 1
            assert statuses(client, [ids[0]]) == [QUEUED if exit_ == "reclaim" else FAILED]
        requeued = exit_ in ("retry", "release", "reclaim")
        after = claim(client, limit=10)
        assert ids_of(after) == [ids[0] if requeued else ids[1]], f"{exit_} freed no slot"
        assert claim(client, limit=10) == []
        assert state_of(client, "k") == KeyState("k", 2 if requeued else 1, 1, one)

    @requires("limits", "multi_process")
    def test_a_killed_claimer_frees_its_slot_when_reclaimed(self, client: qw.Client) -> None:
        url = self.url_or_skip()
        one = Limit(concurrency=1)
        ids = enqueue(client, [kjob("k", i, limit=one) for i in range(2)])
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        proc = ctx.Process(
            target=claim_one_and_hang,
            args=(url, client.namespace, "q", KILLED_LEASE, results),
            daemon=True,
        )
        proc.start()
        try:
            what, job_id, expires = results.get(timeout=60)
        finally:
            proc.kill()
            proc.join(30)
        assert what == "claimed", job_id
        assert job_id == ids[0]
        assert isinstance(expires, datetime)
        if (expires - client.now()).total_seconds() > 0.1:
            # The dead worker's job still holds the slot until its lease is reclaimed.
            assert claim(client, limit=10) == []
            assert state_of(client, "k") == KeyState("k", 1, 1, one)
        sleep_until_store(client, expires)
        assert client.reclaim_expired() == 1
        assert state_of(client, "k") == KeyState("k", 2, 0, one)
        again = claim(client, limit=10)
        assert ids_of(again) == [ids[0]]
        assert again[0].job.attempts == 2
        assert claim(client, limit=10) == []

    # -- held back, never blocking -------------------------------------------

    @requires("limits")
    def test_a_held_back_job_stays_queued_untouched(self, client: qw.Client) -> None:
        a = enqueue(
            client, [kjob("a", i, limit=Limit(concurrency=1), priority=-1) for i in range(3)]
        )
        b = enqueue(client, [kjob("b", i, limit=Limit(concurrency=2)) for i in range(3)])
        plain = enqueue(client, [NewJob("q", i) for i in range(2)])
        held = [*a[1:], b[2]]
        before = client.get_many(held)
        claims = claim(client, limit=10)
        assert ids_of(claims) == [a[0], b[0], b[1], *plain]
        assert client.get_many(held) == before, "a held-back job must not change at all"
        assert {(j.status, j.attempts) for j in before if j is not None} == {(QUEUED, 0)}
        assert claim(client, limit=10) == []
        assert client.get_many(held) == before

    @requires("limits")
    def test_a_throttled_key_never_blocks_other_keys(self, client: qw.Client) -> None:
        # Ahead in claim order: a paused key's jobs, and a full key's, at a better priority.
        enqueue(
            client,
            [kjob("paused", i, limit=Limit(concurrency=0), priority=-2) for i in range(HELD_AHEAD)],
        )
        busy = enqueue(
            client,
            [kjob("busy", i, limit=Limit(concurrency=1), priority=-1) for i in range(HELD_AHEAD)],
        )
        assert ids_of(claim(client, limit=1)) == [busy[0]]
        other = enqueue(client, [kjob("other", "o"), kjob(None, "plain")])
        assert ids_of(claim(client, limit=1)) == [other[0]]
        assert ids_of(claim(client, limit=1)) == [other[1]]
        assert claim(client, limit=5) == []
        counts = client.counts()["q"]
        assert (counts[QUEUED], counts[RUNNING]) == (2 * HELD_AHEAD - 1, 3)

    # -- rate windows ------------------------------------------------------

    @requires("limits")
    def test_a_rate_limit_holds_starts_to_a_window_on_the_stores_clock(
        self, client: qw.Client
    ) -> None:
        rate = Limit(rate=RATE, per=PER)
        ids = enqueue(client, [kjob("r", i, limit=rate) for i in range(2 * RATE + 1)])
        plain = enqueue(client, [kjob(None, "plain"), kjob("free", "free")])
        starts: list[datetime] = []

        def take(expect: int) -> list[datetime]:
            """Claim; ``expect`` jobs of key r must start. Complete them all at once."""
            claims = claim(client, limit=10)
            mine = [c.job.started_at for c in claims if c.job.limit_key == "r"]
            assert len(mine) == expect, (
                f"expected {expect} starts of key r at {client.now().isoformat()} (store), "
                f"got {len(mine)}; earlier starts: {[t.isoformat() for t in starts]}"
            )
            for c in claims:
                # Completed at once: a rate counts starts, not running jobs.
                client.complete(c.lease)
            got = [t for t in mine if t is not None]
            assert len(got) == expect, "a claimed job has no started_at"
            starts.extend(got)
            return got

        first = min(take(RATE))
        assert statuses(client, plain) == [SUCCEEDED, SUCCEEDED], "other keys are not held back"
        state = state_of(client, "r")
        assert state == KeyState("r", RATE + 1, 0, rate, False, RATE)
        assert state.throttled
        # Nothing more starts while the first starts are inside the window.
        while (first + timedelta(seconds=PER - 0.2) - client.now()).total_seconds() > 0:
            take(0)
            time.sleep(0.1)
        sleep_until_store(client, max(starts) + timedelta(seconds=PER))
        second = min(take(RATE))
        assert (second - first).total_seconds() >= PER - 0.002, "started inside the window"
        take(0)
        sleep_until_store(client, max(starts) + timedelta(seconds=PER))
        take(1)
        assert statuses(client, ids) == [SUCCEEDED] * len(ids)
        assert starts_within(starts, PER - 0.002) <= RATE, [t.isoformat() for t in starts]
        assert state_of(client, "r") is None, "no live job and no operators' limit: not listed"

    # -- operators' limits -----------------------------------------------------

    @requires("limits")
    def test_concurrency_zero_pauses_a_key_and_removing_it_resumes(self, client: qw.Client) -> None:
        ids = enqueue(client, [kjob("k", i) for i in range(4)])
        other = enqueue(client, [kjob("other", "o")])
        running = claim(client, limit=1)
        assert ids_of(running) == [ids[0]]
        pause = Limit(concurrency=0)
        client.set_limit("k", pause)
        assert client.limits() == {"k": pause}
        assert ids_of(claim(client, limit=10)) == other, "the paused key's jobs are held back"
        state = state_of(client, "k")
        assert state == KeyState("k", 3, 1, pause, True, 0)
        assert state.throttled
        # A running job of a paused key finishes as usual; nothing new starts.
        assert client.complete(running[0].lease) is SUCCEEDED
        assert claim(client, limit=10) == []
        assert {(j.status, j.attempts) for j in client.get_many(ids[1:]) if j} == {(QUEUED, 0)}
        client.set_limit("k", None)
        assert client.limits() == {}
        assert ids_of(claim(client, limit=10)) == ids[1:]
        assert state_of(client, "k") == KeyState("k", 0, 3, None, False, 0)

    @requires("limits")
    def test_an_operators_limit_replaces_the_jobs_own_at_claim(self, client: qw.Client) -> None:
        own = Limit(concurrency=1)
        ids = enqueue(client, [kjob("k", i, limit=own) for i in range(5)])
        before = client.get_many(ids)
        client.set_limit("k", Limit(concurrency=3))
        first = claim(client, limit=10)
        assert ids_of(first) == ids[:3], "the operators' 3 replaces the jobs' 1"
        assert client.get_many(ids[3:]) == before[3:], "a limit set never touches a job"
        assert state_of(client, "k") == KeyState("k", 2, 3, Limit(concurrency=3), True, 0)
        client.set_limit("k", Limit(concurrency=1))
        client.complete(first[0].lease)
        client.complete(first[1].lease)
        assert claim(client, limit=10) == [], "lowered to 1, with 1 still running"
        client.complete(first[2].lease)
        assert ids_of(claim(client, limit=10)) == [ids[3]]
        # Limit() is no limit at all: it lifts the jobs' own.
        client.set_limit("k", Limit())
        assert ids_of(claim(client, limit=10)) == [ids[4]]
        assert state_of(client, "k") == KeyState("k", 0, 2, Limit(), True, 0)
        client.set_limit("k", None)
        assert state_of(client, "k") == KeyState("k", 0, 2, own, False, 0)
        assert [j.limit for j in client.get_many(ids) if j is not None] == [own] * 5

    @requires("limits")
    def test_an_operators_rate_replaces_the_jobs_concurrency(self, client: qw.Client) -> None:
        ids = enqueue(client, [kjob("k", i, limit=Limit(concurrency=10)) for i in range(4)])
        client.set_limit("k", Limit(rate=2, per=3600.0))
        for c in claim(client, limit=10):
            client.complete(c.lease)
        assert statuses(client, ids) == [SUCCEEDED, SUCCEEDED, QUEUED, QUEUED]
        assert claim(client, limit=10) == []
        assert state_of(client, "k") == KeyState("k", 2, 0, Limit(rate=2, per=3600.0), True, 2)

    @requires("limits")
    def test_operators_limits_are_kept_listed_and_replaced(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        assert client.limits() == {}
        client.set_limit("z", Limit(concurrency=5))
        client.set_limit("a", Limit(rate=10, per=60.0))
        client.set_limit("z", Limit(concurrency=2, rate=1, per=0.5))
        want = {"a": Limit(rate=10, per=60.0), "z": Limit(concurrency=2, rate=1, per=0.5)}
        assert client.limits() == want
        assert list(client.limits()) == ["a", "z"]
        again = open_client(client.namespace)
        assert again.limits() == want, "persistent: another client sees them"
        assert keys_of(again) == [
            KeyState("a", 0, 0, want["a"], True, 0),
            KeyState("z", 0, 0, want["z"], True, 0),
        ]
        client.set_limit("a", None)
        client.set_limit("never-set", None)
        assert again.limits() == {"z": want["z"]}

    # -- fairness ------------------------------------------------------------

    @requires("limits")
    def test_a_long_backlog_does_not_starve_a_key_with_a_few_jobs(self, client: qw.Client) -> None:
        backlog: list[str] = []
        for start in range(0, BACKLOG, MAX_BATCH):
            size = min(MAX_BATCH, BACKLOG - start)
            backlog.extend(enqueue(client, [kjob("A", fair=True) for _ in range(size)]))
        few = enqueue(client, [kjob("B", i, fair=True) for i in range(FEW)])
        taken: list[str] = []
        for _ in range(3):
            taken.extend(ids_of(claim(client, limit=FEW)))
        missing = sorted(set(few) - set(taken))
        assert not missing, (
            f"{len(missing)} of key B's {FEW} fair jobs did not start within the first 3 claims "
            f"of {FEW}, behind key A's backlog of {BACKLOG}"
        )
        from_a = [i for i in taken if i not in set(few)]
        assert from_a == backlog[: len(from_a)], "key A's jobs in FIFO order"

    @requires("limits")
    def test_claim_order_is_priority_then_fair_rank_then_fifo(self, client: qw.Client) -> None:
        a = enqueue(client, [kjob("A", i, fair=True) for i in range(3)])
        n = enqueue(client, [kjob("N", i) for i in range(2)])
        p = enqueue(client, [kjob("C", "urgent", fair=True, priority=-1)])
        b = enqueue(client, [kjob("B", i, fair=True) for i in range(3)])
        # Ranks: A 0,1,2; N (not fair) 0; C 0; B 0,1,2. Priority first; within a
        # rank, FIFO: non-fair jobs have rank 0, so they come with the first round.
        want = [*p, a[0], *n, b[0], a[1], b[1], a[2], b[2]]
        assert ids_of(claim(client, limit=100)) == want, "claim order: priority, fair rank, FIFO"

    @requires("limits")
    def test_fair_ranks_are_per_queue(self, client: qw.Client) -> None:
        a1 = enqueue(client, [kjob("A", i, fair=True, queue="q1") for i in range(3)])
        a2 = enqueue(client, [kjob("A", i, fair=True, queue="q2") for i in range(2)])
        b2 = enqueue(client, [kjob("B", i, fair=True, queue="q2") for i in range(2)])
        # Key A's ranks in q2 start at 0 whatever it has in q1.
        got = ids_of(claim(client, queues=["q2"]))
        assert got == [a2[0], b2[0], a2[1], b2[1]], "fair ranks count per (queue, key)"
        assert ids_of(claim(client, queues=["q1"])) == a1

    @requires("limits")
    def test_a_key_arriving_late_starts_at_the_queues_fair_clock(self, client: qw.Client) -> None:
        a = enqueue(client, [kjob("A", i, fair=True) for i in range(20)])
        assert ids_of(claim(client, limit=10)) == a[:10]
        # The queue's fair clock is now 9: B's first job gets rank 9, not 0, so it
        # takes its turn among A's remaining jobs instead of jumping all of them.
        b = enqueue(client, [kjob("B", i, fair=True) for i in range(3)])
        got = ids_of(claim(client, limit=6))
        assert got == [b[0], a[10], b[1], a[11], b[2], a[12]], "a new key ranks from the clock"

    @pytest.mark.parametrize("back", ["release", "reclaim"])
    @requires("limits")
    def test_fair_ranks_are_kept_by_a_retry_a_release_and_a_reclaim(
        self, client: qw.Client, back: str
    ) -> None:
        a = enqueue(client, [kjob("A", i, fair=True, max_attempts=3) for i in range(4)])
        b = enqueue(client, [kjob("B", i, fair=True, max_attempts=3) for i in range(4)])
        lease_s = SHORT if back == "reclaim" else 30.0
        first = claim(client, limit=2, lease_s=lease_s)
        assert ids_of(first) == [a[0], b[0]]
        (a1,) = claim(client, limit=1)
        assert a1.job.id == a[1]
        client.complete(first[0].lease)
        assert client.fail(a1.lease, "again", retry_in=0) is QUEUED
        if back == "release":
            assert client.release(first[1].lease) is QUEUED
        else:
            sleep_until_store(client, first[1].lease.expires_at)
            assert client.reclaim_expired() == 1
        # b0 keeps rank 0 and a1 rank 1: b0, then a1 before b1 (same rank, FIFO).
        got = ids_of(claim(client, limit=100))
        assert got == [b[0], a[1], b[1], a[2], b[2], a[3], b[3]], f"{back} or retry moved a rank"

    # -- the model ---------------------------------------------------------

    @requires("limits")
    def test_claims_agree_with_the_limit_model(self, open_client: OpenClient) -> None:
        def factory() -> RuleBasedStateMachine:
            return LimitMachine(open_client)

        # Hypothesis accepts any zero-argument factory; its stub says "class".
        run_state_machine_as_test(factory, settings=limit_machine_settings())  # type: ignore[arg-type]

    # -- what the store reports ------------------------------------------------

    @requires("limits")
    def test_keys_report_each_keys_state(self, client: qw.Client) -> None:
        conc, rate = Limit(concurrency=2), Limit(rate=2, per=3600.0)
        a = enqueue(client, [kjob("a", i, limit=conc) for i in range(3)])
        b = enqueue(client, [kjob("b", i, limit=rate) for i in range(3)])
        c = enqueue(client, [kjob("c")])
        plain = enqueue(client, [kjob(None, "plain")])
        client.set_limit("d", Limit(concurrency=5))
        client.create_workflow(
            "w", [NewJob("q", id="w.root"), kjob("e", id="w.e", parents=("w.root",))]
        )
        assert keys_of(client) == [
            KeyState("a", 3, 0, conc),
            KeyState("b", 3, 0, rate),
            KeyState("c", 1, 0, None),
            KeyState("d", 0, 0, Limit(concurrency=5), True),
        ], "a waiting step is not queued: key e is not listed yet"
        claims = claim(client, limit=100)
        assert ids_of(claims) == [*a[:2], *b[:2], *c, *plain, "w.root"]
        states = keys_of(client)
        assert states == [
            KeyState("a", 1, 2, conc),
            KeyState("b", 1, 2, rate, False, 2),
            KeyState("c", 0, 1, None),
            KeyState("d", 0, 0, Limit(concurrency=5), True),
        ]
        assert [s.throttled for s in states] == [True, True, False, False]
        for cl in claims:
            client.complete(cl.lease)
        assert keys_of(client) == [
            KeyState("a", 1, 0, conc),
            KeyState("b", 1, 0, rate, False, 2),
            KeyState("d", 0, 0, Limit(concurrency=5), True),
            KeyState("e", 1, 0, None),
        ], "ended jobs are not counted; the promoted step is"
        assert [s.key for s in client.keys(limit=2)] == ["a", "b"]
        assert [s.key for s in client.keys(after="b")] == ["d", "e"]
        assert [s.key for s in client.keys(after="b", limit=1)] == ["d"]
        assert client.keys(after="e") == []

    @requires("limits")
    def test_keys_page_through_many_keys(self, client: qw.Client) -> None:
        names = [f"k{i:03d}" for i in range(250)]
        enqueue(client, [kjob(name) for name in reversed(names)])
        assert [s.key for s in keys_of(client)] == names
        assert {(s.queued, s.running, s.limit) for s in keys_of(client)} == {(1, 0, None)}
        assert [s.key for s in client.keys(limit=3, after="k100")] == ["k101", "k102", "k103"]

    @requires("limits")
    def test_list_jobs_filters_by_key(self, client: qw.Client) -> None:
        a = enqueue(client, [kjob("a", i) for i in range(4)])
        a2 = enqueue(client, [kjob("a", "other queue", queue="q2")])
        enqueue(client, [kjob("b"), kjob(None)])
        every_a = sorted([*a, *a2])
        assert [j.id for j in client.list_jobs(key="a")] == every_a
        assert [j.id for j in client.list_jobs(key="a", queue="q2")] == a2
        assert [j.id for j in client.list_jobs(key="a", limit=2)] == every_a[:2]
        assert [j.id for j in client.list_jobs(key="a", after=every_a[1])] == every_a[2:]
        claimed = ids_of(claim(client, limit=2))
        running = [j.id for j in client.list_jobs(key="a", status=RUNNING)]
        assert running == sorted(i for i in claimed if i in every_a)
        assert client.list_jobs(key="nobody") == []
        client.create_workflow("w", [kjob("a", id="w.s")])
        assert [j.id for j in client.list_jobs(key="a", workflow="w")] == ["w.s"]
        assert {j.limit_key for j in client.list_jobs(key="a", limit=100)} == {"a"}

    @requires("limits")
    def test_jobs_read_back_their_key_limit_and_fairness(self, client: qw.Client) -> None:
        declared = [
            kjob(None, id="none"),
            kjob("k", id="key-only"),
            kjob("k", id="conc", limit=Limit(concurrency=2)),
            kjob("k2", id="rate", limit=Limit(rate=5, per=0.25)),
            kjob("k3", id="both", limit=Limit(concurrency=1, rate=2, per=1.5), fair=True),
            kjob("k4", id="fair", fair=True),
            kjob("k5", id="nothing", limit=Limit()),
        ]
        enqueue(client, declared)

        def fields(job: Job | None) -> tuple[object, ...]:
            assert job is not None
            return (job.limit_key, job.limit, job.fair)

        want = {n.id: (n.limit_key, n.limit, n.fair) for n in declared}
        assert {i: fields(client.get(i)) for i in want} == want
        assert [fields(j) for j in client.get_many(list(want))] == list(want.values())
        assert {j.id: fields(j) for j in client.list_jobs(limit=100)} == want
        claimed = {c.job.id: fields(c.job) for c in claim(client, limit=100)}
        assert claimed == want
        assert {j.id: fields(j) for j in client.list_jobs(limit=100)} == want

    # -- workflow steps --------------------------------------------------------

    @requires("limits")
    def test_workflow_steps_are_held_to_their_keys_limits(self, client: qw.Client) -> None:
        one = Limit(concurrency=1)
        w = "wl"
        kids = [f"{w}.c{i}" for i in range(4)]
        client.create_workflow(
            w,
            [
                NewJob("q", id=f"{w}.root"),
                *(
                    kjob("k", i, id=k, limit=one, parents=(f"{w}.root",))
                    for i, k in enumerate(kids)
                ),
                NewJob("q", id=f"{w}.u", parents=(f"{w}.root",)),
            ],
        )
        assert keys_of(client) == [], "waiting steps are not queued"
        client.complete(claim(client)[0].lease)
        first = claim(client)
        assert ids_of(first) == [kids[0], f"{w}.u"], "one slot for the four steps of key k"
        assert state_of(client, "k") == KeyState("k", 3, 1, one)
        by_id = {c.job.id: c.lease for c in first}
        added = [kjob("k", "added", id=f"{w}.x", limit=one, parents=(kids[0],))]
        assert client.add_steps(by_id[kids[0]], w, added)
        client.complete(by_id[f"{w}.u"])
        ran: list[str] = [kids[0]]
        client.complete(by_id[kids[0]])
        deadline = time.monotonic() + 30
        while client.get_workflow(w).state is qw.WorkflowState.RUNNING:
            assert time.monotonic() < deadline, "the workflow never ended"
            claims = claim(client)
            assert len(claims) == 1, f"key k has concurrency 1: {ids_of(claims)}"
            assert claim(client) == []
            ran.append(claims[0].job.id)
            client.complete(claims[0].lease)
        assert sorted(ran) == sorted([*kids, f"{w}.x"])
        assert client.get_workflow(w).state is qw.WorkflowState.SUCCEEDED

    @requires("limits")
    def test_a_promoted_fair_step_keeps_the_rank_it_got_at_insert(self, client: qw.Client) -> None:
        w = "wf"
        client.create_workflow(
            w,
            [
                kjob("A", id=f"{w}.s1", fair=True),
                kjob("A", id=f"{w}.s2", fair=True, parents=(f"{w}.s1",)),
            ],
        )
        b = enqueue(client, [kjob("B", i, fair=True) for i in range(4)])
        (s1,) = claim(client, limit=1)
        assert s1.job.id == f"{w}.s1"
        client.complete(s1.lease)
        # s2 was ranked 1 when it was inserted (waiting): promoted, it keeps it.
        got = ids_of(claim(client, limit=10))
        assert got == [b[0], f"{w}.s2", b[1], b[2], b[3]], "promotion moved the step's rank"

    # -- bad input, a store without the capability, namespaces -----------------

    @pytest.mark.parametrize("call", sorted(BAD_INPUT))
    @requires("limits")
    def test_bad_keys_and_limits_are_refused_before_any_io(
        self, client: qw.Client, call: str
    ) -> None:
        make = BAD_INPUT[call]
        with pytest.raises(qw.InvalidInput):
            make(no_io_client(client))
        enqueue(client, [kjob("k", "kept", limit=Limit(concurrency=1))])
        client.set_limit("kept", Limit(concurrency=4))
        before = _limit_snapshot(client)
        with pytest.raises(qw.InvalidInput):
            make(client)
        assert _limit_snapshot(client) == before, "a refused call wrote something"

    @requires("limits")
    def test_the_bounds_of_keys_and_limits_are_kept(self, client: qw.Client) -> None:
        long_key = ("é✓\U0001f600" * 67)[:200]
        biggest = Limit(
            concurrency=MAX_CONCURRENCY_LIMIT, rate=MAX_CONCURRENCY_LIMIT, per=float(MAX_SECONDS)
        )
        tiny = Limit(rate=1, per=0.001)
        jobs = [
            kjob(long_key, id="long", limit=biggest, fair=True),
            kjob("tiny", id="tiny", limit=tiny),
            kjob("zero", id="zero", limit=Limit(concurrency=0)),
        ]
        enqueue(client, jobs)
        assert [(j.limit_key, j.limit) for j in client.get_many(["long", "tiny", "zero"]) if j] == [
            (long_key, biggest),
            ("tiny", tiny),
            ("zero", Limit(concurrency=0)),
        ]
        client.set_limit(long_key, biggest)
        assert client.limits() == {long_key: biggest}
        assert state_of(client, long_key) == KeyState(long_key, 1, 0, biggest, True, 0)
        assert [j.id for j in client.list_jobs(key=long_key)] == ["long"]
        assert sorted(ids_of(claim(client))) == ["long", "tiny"]

    def test_a_store_without_limits_refuses_them(self, client: qw.Client) -> None:
        refusing = client
        if client.capabilities.limits:
            # The client refuses before the store is asked: shown with this store,
            # declared without the capability.
            refusing = qw.Client(cast("qw.Backend", Declaring(client.backend, limits=False)))
        before = snapshot(client)
        calls: list[Callable[[], object]] = [
            lambda: refusing.enqueue([NewJob("q", 1), kjob("k", 2)]),
            lambda: refusing.enqueue([kjob("k", fair=True)]),
            lambda: refusing.create_workflow("w", [kjob("k", id="w.a")]),
            lambda: refusing.set_limit("k", Limit(concurrency=1)),
            lambda: refusing.set_limit("k", None),
            lambda: refusing.limits(),
            lambda: refusing.keys(),
        ]
        for call in calls:
            with pytest.raises(qw.Unsupported, match="limits"):
                call()
        assert snapshot(client) == before
        assert refusing.enqueue_one("q", "no key is fine").created

    @requires("limits")
    def test_limits_and_keys_are_per_namespace(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        one = Limit(concurrency=1)
        other = open_client(new_namespace())
        client.set_limit("p", Limit(concurrency=0))
        mine = enqueue(client, [kjob("k", i, limit=one) for i in range(2)])
        assert ids_of(claim(client)) == mine[:1]
        theirs = enqueue(other, [kjob("k", i, limit=one) for i in range(2)])
        their_p = enqueue(other, [kjob("p")])
        assert ids_of(claim(other)) == [theirs[0], *their_p], "key k and the pause are mine"
        assert other.limits() == {}
        assert keys_of(other) == [KeyState("k", 1, 1, one), KeyState("p", 0, 1, None)]
        assert keys_of(client) == [
            KeyState("k", 1, 1, one),
            KeyState("p", 0, 0, Limit(concurrency=0), True),
        ]
        assert [j.id for j in other.list_jobs(key="k")] == sorted(theirs)


def _limit_snapshot(client: qw.Client) -> tuple[Snapshot, dict[str, Limit], list[KeyState]]:
    return snapshot(client), client.limits(), keys_of(client)


# ``pytest -k Limit`` selects this module's tests in a backend's subclass:
# -k matches the names set on a test function, and a subclass's node ids do
# not name the mixin class.
for _name, _test in list(vars(LimitTests).items()):
    if _name.startswith("test_") and callable(_test):
        _test.LimitTests = True
