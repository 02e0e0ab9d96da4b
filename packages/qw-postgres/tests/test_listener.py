"""The LISTEN connection: killed from the server side, workers still get their jobs."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

import qw
from qw_postgres import PostgresBackend
from qw_postgres.listening import channel_name, listener_application_name

from .conftest import with_query

SCHEMA = "qw_test"


@pytest.fixture
def url(pg_url: str) -> str:
    return with_query(pg_url, f"schema={SCHEMA}&pool_max=4")


@pytest.fixture
def pair(url: str) -> Iterator[tuple[qw.Client, qw.Client]]:
    namespace = "l" + uuid.uuid4().hex[:12]
    worker = qw.Client(PostgresBackend.from_url(url, namespace=namespace))
    producer = qw.Client(PostgresBackend.from_url(url, namespace=namespace))
    yield worker, producer
    worker.close()
    producer.close()


def _listener_pids(pg_url: str, namespace: str) -> list[int]:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (listener_application_name(namespace),),
        ).fetchall()
    return [r[0] for r in rows]


def _work_until_claimed(client: qw.Client, deadline: float) -> list[qw.Claim]:
    """What a worker does: claim, and wait when there is nothing."""
    while time.monotonic() < deadline:
        claims = client.claim(["q"], worker="w", limit=10)
        if claims:
            return claims
        client.wait(["q"], timeout=deadline - time.monotonic())
    return []


def test_wait_is_woken_by_notify_from_another_backend(pair: tuple[qw.Client, qw.Client]) -> None:
    worker, producer = pair
    assert worker.claim(["q"], worker="w") == []
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(worker.wait(["q"], timeout=20)))
    start = time.monotonic()
    waiter.start()
    time.sleep(0.2)
    producer.enqueue_one("q", {"n": 1})
    waiter.join(25)
    assert got == [True]
    # Woken by the notification, not by the 20 s timeout.
    assert time.monotonic() - start < 10


def test_killed_listen_connection_never_leaves_a_worker_asleep(
    pg_url: str, pair: tuple[qw.Client, qw.Client]
) -> None:
    worker, producer = pair
    namespace = worker.namespace
    assert worker.claim(["q"], worker="w") == []  # starts and subscribes the listener
    [pid] = _listener_pids(pg_url, namespace)

    claimed: list[qw.Claim] = []
    deadline = time.monotonic() + 15
    runner = threading.Thread(target=lambda: claimed.extend(_work_until_claimed(worker, deadline)))
    runner.start()
    time.sleep(0.3)  # the worker is now inside wait()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        [(killed,)] = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchall()
    assert killed is True
    # Enqueued while the channel is down: its NOTIFY reaches nobody.
    job = producer.enqueue_one("q", {"after": "kill"})
    enqueued_at = time.monotonic()
    runner.join(20)
    assert [c.job.id for c in claimed] == [job.id]
    assert time.monotonic() - enqueued_at < 10

    # The listener came back on a new connection, and wakes waiters natively again.
    backend = worker.backend
    assert isinstance(backend, PostgresBackend)
    until = time.monotonic() + 10
    while time.monotonic() < until and not _listener_pids(pg_url, namespace):
        time.sleep(0.05)
    new_pids = _listener_pids(pg_url, namespace)
    assert new_pids
    assert new_pids != [pid]
    assert backend.listener_reconnects >= 1
    worker.complete(claimed[0].lease)
    assert worker.claim(["q"], worker="w") == []
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(worker.wait(["q"], timeout=20)))
    start = time.monotonic()
    waiter.start()
    time.sleep(0.2)
    producer.enqueue_one("q", {"n": 2})
    waiter.join(25)
    assert got == [True]
    assert time.monotonic() - start < 10


def test_bulk_enqueue_sends_one_notification_per_queue(
    pg_url: str, pair: tuple[qw.Client, qw.Client]
) -> None:
    _, producer = pair
    channel = channel_name(SCHEMA, producer.namespace)
    with psycopg.connect(pg_url, autocommit=True) as spy:
        spy.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
        producer.enqueue([qw.NewJob("a" if i % 2 else "b", i) for i in range(1000)])
        payloads = [n.payload for n in spy.notifies(timeout=1.0)]
    assert sorted(payloads) == ["a", "b"]


def test_a_single_job_enqueue_sends_its_queue_one_notification(
    pg_url: str, pair: tuple[qw.Client, qw.Client]
) -> None:
    # One job takes a statement of its own (queries.ENQUEUE_ONE): its wake-up too.
    _, producer = pair
    channel = channel_name(SCHEMA, producer.namespace)
    with psycopg.connect(pg_url, autocommit=True) as spy:
        spy.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
        producer.enqueue([qw.NewJob("a", 1)])
        producer.enqueue([qw.NewJob("b", 2, limit_key="k")])
        payloads = [n.payload for n in spy.notifies(timeout=1.0)]
    assert payloads == ["a", "b"]


def test_closing_stops_the_listener(url: str, pg_url: str) -> None:
    namespace = "l" + uuid.uuid4().hex[:12]
    client = qw.Client(PostgresBackend.from_url(url, namespace=namespace))
    client.claim(["q"], worker="w")
    assert len(_listener_pids(pg_url, namespace)) == 1
    client.close()
    until = time.monotonic() + 5
    while time.monotonic() < until and _listener_pids(pg_url, namespace):
        time.sleep(0.05)
    assert _listener_pids(pg_url, namespace) == []
    with pytest.raises(qw.BackendUnavailable):
        client.counts()


def test_pooled_connections_killed_by_the_server_are_replaced(pg_url: str) -> None:
    marker = "qwpool" + uuid.uuid4().hex[:10]
    url = with_query(pg_url, f"schema={SCHEMA}&pool_min=2&pool_max=2&application_name={marker}")
    with qw.open(url, namespace="p" + uuid.uuid4().hex[:12]) as client:
        client.enqueue_one("q", 1)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (marker,),
            ).fetchall()
        assert killed
        failures = 0
        for _ in range(5):
            try:
                counts = client.counts()
                break
            except qw.BackendUnavailable:  # a dead pooled connection, then discarded
                failures += 1
        else:
            pytest.fail("the pool never replaced its killed connections")
        assert failures <= 2
        assert counts["q"][qw.JobStatus.QUEUED] == 1
