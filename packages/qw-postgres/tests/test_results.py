"""Progress and result wake-ups: what PostgreSQL stores and notifies for them."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

import qw
from qw.model import PROGRESS_EVENT, JobStatus, NewJob
from qw_postgres import PostgresBackend
from qw_postgres.listening import done_channel_name
from qw_postgres.queries import Queries

from .conftest import with_query

SCHEMA = "qw_test"


@pytest.fixture
def url(pg_url: str) -> str:
    # A 5 s poll: a prompt answer can only have come from a notification.
    return with_query(pg_url, f"schema={SCHEMA}&pool_max=4&poll_interval=5")


@pytest.fixture
def client(url: str) -> Iterator[qw.Client]:
    c = qw.Client(PostgresBackend.from_url(url, namespace="r" + uuid.uuid4().hex[:12]))
    yield c
    c.close()


class DoneChannel:
    """A LISTEN of its own on the namespace's done channel, to count notifications.

    ``register``: as a results listener does, so that writes notify at all.
    """

    def __init__(self, pg_url: str, namespace: str, *, register: bool = True) -> None:
        self.conn = psycopg.connect(pg_url, autocommit=True)
        channel = done_channel_name(SCHEMA, namespace)
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        if register:
            self.conn.execute(Queries.for_schema(SCHEMA).results_register, {"ns": namespace})

    def count(self, settle_s: float = 0.3) -> int:
        return len(list(self.conn.notifies(timeout=settle_s)))

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def done(pg_url: str, client: qw.Client) -> Iterator[DoneChannel]:
    channel = DoneChannel(pg_url, client.namespace)
    yield channel
    channel.close()


def test_one_done_notification_per_finish_call_not_per_job(
    client: qw.Client, done: DoneChannel
) -> None:
    client.enqueue([NewJob("q", i, max_attempts=2) for i in range(60)])
    claims = client.claim(["q"], worker="w", limit=60)
    assert done.count() == 0
    half = [qw.Complete(c.lease) for c in claims[:50]]
    assert client.finish(half) == [JobStatus.SUCCEEDED] * 50
    assert done.count() == 1
    # A retry ends nothing: no notification on the done channel.
    assert client.finish([qw.Fail(c.lease, "x", 0) for c in claims[50:]]) == [JobStatus.QUEUED] * 10
    assert done.count() == 0
    # Every write that ends jobs notifies: cancel of a queued job, a reclaim
    # that fails a job out of attempts, a workflow's cancel.
    retried = client.claim(["q"], worker="w", lease_s=0.05, limit=10)
    assert len(retried) == 10
    time.sleep(0.2)
    assert client.reclaim_expired() == 10
    assert done.count() == 1
    [queued] = client.enqueue([NewJob("q", 1)])
    assert client.cancel(queued.id) is JobStatus.CANCELLED
    assert done.count() == 1
    client.create_workflow("w", [NewJob("q", 1, id="w.a"), NewJob("q", 2, id="w.b")])
    client.cancel_workflow("w")
    assert done.count() == 1


def test_without_a_results_listener_a_finish_sends_no_notification(
    pg_url: str, client: qw.Client
) -> None:
    # The hot path: nobody waits for results in this namespace, so a finish
    # takes no NOTIFY (whose commit would queue behind every other one's).
    silent = DoneChannel(pg_url, client.namespace, register=False)
    try:
        client.enqueue([NewJob("q", i) for i in range(5)])
        for claim in client.claim(["q"], worker="w", limit=5):
            client.complete(claim.lease)
        assert silent.count() == 0
        # Once someone registers (the first wait_finished), every end notifies.
        with DoneChannelFor(pg_url, client.namespace):
            [job] = client.enqueue([NewJob("q", 1)])
            assert client.cancel(job.id) is JobStatus.CANCELLED
            assert silent.count() == 1
    finally:
        silent.close()


class DoneChannelFor:
    """A registered DoneChannel as a context."""

    def __init__(self, pg_url: str, namespace: str) -> None:
        self._args = (pg_url, namespace)

    def __enter__(self) -> DoneChannel:
        self.channel = DoneChannel(*self._args)
        return self.channel

    def __exit__(self, *exc: object) -> None:
        self.channel.close()


def test_a_dead_listeners_registration_is_cleared_by_the_next(
    pg_url: str, client: qw.Client
) -> None:
    rows = "SELECT count(*) FROM {}.result_listeners WHERE namespace = %s"
    query = sql.SQL(rows).format(sql.Identifier(SCHEMA))
    first = DoneChannel(pg_url, client.namespace)
    first.close()  # gone without unregistering, as a killed process would be
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute(query, (client.namespace,)).fetchone() == (1,)
        with DoneChannelFor(pg_url, client.namespace):
            assert conn.execute(query, (client.namespace,)).fetchone() == (1,)
            dead = conn.execute(
                sql.SQL("SELECT pid FROM {}.result_listeners WHERE namespace = %s").format(
                    sql.Identifier(SCHEMA)
                ),
                (client.namespace,),
            ).fetchall()
        # A backend's results listener clears that one too, and removes its
        # own row when it closes.
        [job] = client.enqueue([NewJob("q", 1)])
        assert client.wait_finished(job.id, 0.05).status is JobStatus.QUEUED
        pids = conn.execute(
            sql.SQL("SELECT pid FROM {}.result_listeners WHERE namespace = %s").format(
                sql.Identifier(SCHEMA)
            ),
            (client.namespace,),
        ).fetchall()
        assert len(pids) == 1
        assert pids != dead
        client.close()
        assert conn.execute(query, (client.namespace,)).fetchone() == (0,)


def test_wait_finished_returns_when_the_job_ends(client: qw.Client, url: str) -> None:
    [job] = client.enqueue([NewJob("q", 1)])
    got: list[tuple[float, qw.Job]] = []
    waiting = threading.Event()

    def waiter() -> None:
        other = qw.Client(PostgresBackend.from_url(url, namespace=client.namespace))
        try:
            waiting.set()
            got.append((time.monotonic(), other.wait_finished(job.id, 10)))
        finally:
            other.close()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert waiting.wait(5)
    [claim] = client.claim(["q"], worker="w")
    time.sleep(0.5)
    assert got == []
    ended = time.monotonic()
    client.complete(claim.lease, "done")
    thread.join(10)
    [(at, finished)] = got
    assert (finished.status, finished.result) == (JobStatus.SUCCEEDED, "done")
    # poll_interval is 5 s: the NOTIFY woke it.
    assert at - ended < 1.0


def test_many_waiters_of_one_process_each_get_their_job(client: qw.Client) -> None:
    jobs = [a.id for a in client.enqueue([NewJob("q", i) for i in range(8)])]
    results: dict[str, JobStatus] = {}

    def waiter(job_id: str) -> None:
        results[job_id] = client.wait_finished(job_id, 20).status

    threads = [threading.Thread(target=waiter, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    started = time.monotonic()
    # One finish call at a time, each ending one job: every waiter's signal
    # must reach it, though all share the process's LISTEN.
    for _ in jobs:
        [claim] = client.claim(["q"], worker="w")
        client.complete(claim.lease)
    for t in threads:
        t.join(20)
    assert results == dict.fromkeys(jobs, JobStatus.SUCCEEDED)
    assert time.monotonic() - started < 5


def test_wait_finished_times_out_with_the_job_as_it_is(client: qw.Client) -> None:
    [job] = client.enqueue([NewJob("q", 1)])
    started = time.monotonic()
    assert client.wait_finished(job.id, 0.3).status is JobStatus.QUEUED
    assert 0.3 <= time.monotonic() - started < 2
    with pytest.raises(qw.JobNotFound):
        client.wait_finished("nope", 0.1)


def test_progress_is_stored_with_its_event_and_fenced(client: qw.Client) -> None:
    [job] = client.enqueue([NewJob("q", 1, max_attempts=2)])
    assert client.get(job.id).progress is None
    [claim] = client.claim(["q"], worker="w")
    before = client.now()
    client.set_progress(claim.lease, 0.25, "a quarter")
    client.set_progress(claim.lease, message="only a message")
    progress = client.get(job.id).progress
    assert progress is not None
    assert (progress.fraction, progress.message) == (None, "only a message")
    assert progress.at >= before
    events = [e for e in client.fetch_events(100) if e.type == PROGRESS_EVENT]
    assert [e.data for e in events] == [
        {"fraction": 0.25, "message": "a quarter"},
        {"fraction": None, "message": "only a message"},
    ]
    client.fail(claim.lease, "boom", retry_in=0)
    with pytest.raises(qw.LeaseLost):
        client.set_progress(claim.lease, 0.9)
    # Kept after the attempt ended; the next attempt's report replaces it.
    assert client.get(job.id).progress == progress
    [again] = client.claim(["q"], worker="w")
    assert again.job.progress == progress
    client.set_progress(again.lease, 1.0)
    client.complete(again.lease)
    final = client.get(job.id).progress
    assert final is not None
    assert final.fraction == 1.0
    assert final.message is None
