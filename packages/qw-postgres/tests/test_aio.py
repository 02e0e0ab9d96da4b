"""The native async twin (qw_postgres.aio) against the real server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

import qw
from qw.aio import AsyncClient, open_async
from qw.model import JobStatus, NewJob
from qw_postgres import PostgresBackend
from qw_postgres.aio import AsyncPostgresBackend
from qw_postgres.listening import channel_name

from .conftest import with_query

SCHEMA = "qw_test"


@pytest.fixture
def url(pg_url: str) -> str:
    # pool_max below the concurrency: the calls queue for connections.
    return with_query(pg_url, f"schema={SCHEMA}&pool_max=8&poll_interval=5")


@pytest.fixture
def sync(url: str) -> Iterator[qw.Client]:
    c = qw.Client(PostgresBackend.from_url(url, namespace="a" + uuid.uuid4().hex[:12]))
    yield c
    c.close()


def test_open_async_gives_the_native_twin(url: str, sync: qw.Client) -> None:
    async def main() -> None:
        async with await open_async(url, namespace=sync.namespace) as client:
            assert isinstance(client.backend, AsyncPostgresBackend)
            await client.enqueue_one("q", 1)
            assert await client.counts() == sync.counts()

    asyncio.run(main())


def test_500_concurrent_single_enqueues_land_exactly_once(url: str, sync: qw.Client) -> None:
    async def main() -> list[qw.Enqueued]:
        backend = await PostgresBackend.open_async(url, namespace=sync.namespace)
        client = AsyncClient(backend)
        try:
            # Half carry a dedupe key shared by pairs: each key yields one job.
            calls = [
                client.enqueue_one("q", i, dedupe_key=f"k{i // 2}" if i % 2 == 0 else None)
                for i in range(500)
            ]
            return list(await asyncio.gather(*calls))
        finally:
            await client.aclose()

    answers = asyncio.run(main())
    created = [a for a in answers if a.created]
    assert len(created) == 500
    assert len({a.id for a in answers}) == 500
    jobs = sync.list_jobs(limit=1000)
    assert sorted(j.payload for j in jobs) == list(range(500))
    assert sorted(j.id for j in jobs) == sorted(a.id for a in answers)


def test_the_native_calls_hold_no_thread(url: str, sync: qw.Client) -> None:
    async def main() -> None:
        backend = await PostgresBackend.open_async(url, namespace=sync.namespace)
        client = AsyncClient(backend)
        ran: list[str] = []
        real = backend.run

        async def spy(fn: object, /, *args: object, **kwargs: object) -> object:
            ran.append(getattr(fn, "__name__", repr(fn)))
            return await real(fn, *args, **kwargs)  # type: ignore[arg-type]

        backend.run = spy  # type: ignore[method-assign]
        try:
            [a, b] = await client.enqueue([NewJob("q", 1), NewJob("q", 2, dedupe_key="d")])
            assert (await client.get(a.id)).payload == 1
            assert [j.id for j in await client.get_many([b.id])] == [b.id]
            assert len(await client.list_jobs(queue="q")) == 2
            assert (await client.counts())["q"][JobStatus.QUEUED] == 2
            assert await client.cancel(a.id) is JobStatus.CANCELLED
            events = await client.fetch_events(10)
            assert await client.ack_events([e.cursor for e in events]) == len(events)
            await client.set_enabled(False, "q")
            assert (await client.switches()).queues == {"q": False}
            await client.set_enabled(True, "q")
            await client.now()
            await client.create_workflow("w", [NewJob("q", 1, id="w.1")])
            assert (await client.wait_finished(a.id, 1)).status is JobStatus.CANCELLED
            # (aclose closes the sync backend in a thread: after this.)
            assert ran == [], f"ran in threads: {ran}"
        finally:
            await client.aclose()

    asyncio.run(main())


def test_many_async_waiters_are_woken_by_one_finish_each(url: str, sync: qw.Client) -> None:
    ids = [a.id for a in sync.enqueue([NewJob("q", i) for i in range(200)])]

    async def main() -> float:
        backend = await PostgresBackend.open_async(url, namespace=sync.namespace)
        client = AsyncClient(backend)
        try:
            waits = [asyncio.create_task(backend.wait_finished(i, 20)) for i in ids]
            await asyncio.sleep(0.5)
            assert not any(w.done() for w in waits)
            started = time.monotonic()

            # Finished by another client, in a thread: 200 waiters, no thread each.
            def finish_all() -> None:
                claims = sync.claim(["q"], worker="w", limit=200)
                sync.finish([qw.Complete(c.lease) for c in claims])

            await asyncio.to_thread(finish_all)
            jobs = await asyncio.gather(*waits)
            assert all(j is not None and j.status is JobStatus.SUCCEEDED for j in jobs)
            return time.monotonic() - started
        finally:
            await client.aclose()

    # poll_interval is 5 s: only the done NOTIFY explains a prompt answer.
    assert asyncio.run(main()) < 3.0


def _transactions(pg_url: str, namespace: str) -> dict[str, int]:
    """How many of a namespace's jobs each writing transaction stored."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT xmin::text, count(*) FROM {SCHEMA}.jobs WHERE namespace = %s GROUP BY 1",
            (namespace,),
        ).fetchall()
    return dict(rows)


def test_concurrent_single_enqueues_commit_together_with_one_wake_up_each(
    url: str, pg_url: str, sync: qw.Client
) -> None:
    # A group commit (aio._GroupInsert): callers that come while a write
    # waits for a connection share its transaction, and its one NOTIFY.
    channel = channel_name(SCHEMA, sync.namespace)
    spy = psycopg.connect(pg_url, autocommit=True)
    spy.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))

    async def main() -> list[qw.Enqueued]:
        async with await open_async(url, namespace=sync.namespace) as client:
            await client.enqueue_one("q", -1)  # alone: a transaction of its own
            return list(await asyncio.gather(*(client.enqueue_one("q", i) for i in range(300))))

    try:
        answers = asyncio.run(main())
        wakes = [n.payload for n in spy.notifies(timeout=1.0)]
    finally:
        spy.close()
    assert all(a.created for a in answers)
    assert sorted(j.payload for j in sync.list_jobs(limit=400)) == list(range(-1, 300))
    sizes = _transactions(pg_url, sync.namespace)
    assert sum(sizes.values()) == 301
    assert 1 in sizes.values()
    assert len(sizes) < 100  # 300 calls from one loop at once, 8 connections
    assert wakes == ["q"] * len(sizes)


def test_a_group_refused_for_one_job_gives_each_caller_its_own_answer(
    url: str, sync: qw.Client
) -> None:
    held = sync.enqueue_one("q", "holder", id="taken").id

    async def main() -> list[qw.Enqueued | BaseException]:
        async with await open_async(url, namespace=sync.namespace) as client:
            jobs = [NewJob("q", i) for i in range(40)]
            jobs[10] = NewJob("q", "dup", id=held)
            jobs[20] = NewJob("q", "nul", id="id\u0000")
            # Two callers with one free key: one stores it, the other is answered by it.
            jobs[30] = NewJob("q", "k1", dedupe_key="k")
            jobs[31] = NewJob("q", "k2", dedupe_key="k")
            calls = [
                client.enqueue_one(j.queue, j.payload, id=j.id, dedupe_key=j.dedupe_key)
                for j in jobs
            ]
            return list(await asyncio.gather(*calls, return_exceptions=True))

    answers = asyncio.run(main())
    assert isinstance(answers[10], qw.DuplicateJob)
    assert isinstance(answers[20], qw.InvalidInput)
    keyed = [answers.pop(31), answers.pop(30)]
    del answers[20], answers[10]
    assert all(isinstance(a, qw.Enqueued) and a.created for a in answers)
    assert all(isinstance(a, qw.Enqueued) for a in keyed)
    [holder] = [a for a in keyed if isinstance(a, qw.Enqueued) and a.created]
    assert keyed[0].id == keyed[1].id == holder.id  # type: ignore[union-attr]
    jobs = sync.list_jobs(limit=100)
    assert len(jobs) == 1 + 36 + 1  # the holder, the plain callers, the key's
    assert sync.get(held).payload == "holder"


def test_a_group_lost_with_the_server_fails_every_caller(url: str, sync: qw.Client) -> None:
    async def main() -> list[qw.Enqueued | BaseException]:
        client = await open_async(url, namespace=sync.namespace)
        backend = client.backend
        assert isinstance(backend, AsyncPostgresBackend)
        await backend._apool.close()  # every write now fails to get a connection
        try:
            return list(
                await asyncio.gather(
                    *(client.enqueue_one("q", i) for i in range(20)), return_exceptions=True
                )
            )
        finally:
            await client.aclose()

    answers = asyncio.run(main())
    assert all(isinstance(a, qw.BackendUnavailable) for a in answers), answers
    assert sync.counts() == {}
