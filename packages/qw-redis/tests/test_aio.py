"""The native async twin on a single server and a Cluster: its calls, its waits, its opening.

The kit's async suite (through ``make_async_backend`` in test_contract.py)
checks the contract; these check what is the twin's own: the native calls
use no thread, many coroutines at once all land exactly once through its
bounded connections, and a wait is woken by the ``ended`` message.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import qw
import qw.aio
from qw.errors import InvalidName
from qw.model import JobStatus, NewJob
from qw_redis import RedisBackend
from qw_redis.aio import MAX_CONNECTIONS, AsyncRedisBackend


def _no_threads(backend: AsyncRedisBackend) -> None:
    """Make any call that would run in the twin's thread pool fail loudly."""

    async def refuse(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{getattr(fn, '__name__', fn)} ran in a thread")

    backend.run = refuse  # type: ignore[method-assign]


def test_open_async_gives_the_native_twin(url: str, namespace: str) -> None:
    async def main() -> None:
        client = await qw.aio.open_async(url, namespace=namespace)
        try:
            assert isinstance(client.backend, AsyncRedisBackend)
            assert client.backend.capabilities.result_wakeup
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_bad_namespace_is_refused_before_any_io() -> None:
    # Nothing listens on port 1: a connection attempt would raise something else.
    with pytest.raises(InvalidName):
        asyncio.run(RedisBackend.open_async("redis://127.0.0.1:1", namespace="no spaces"))


def test_the_native_calls_use_no_thread(url: str, namespace: str) -> None:
    async def main() -> None:
        backend = await RedisBackend.open_async(url, namespace=namespace)
        _no_threads(backend)
        client = qw.aio.AsyncClient(backend)
        try:
            assert await client.now()
            (a,) = await client.enqueue([NewJob("q", {"n": 1})])
            (b,) = await client.enqueue([NewJob("q", 2)])
            assert (await client.get(a.id)).payload == {"n": 1}
            assert [j.id for j in await client.get_many([a.id, b.id])] == [a.id, b.id]
            assert {j.id for j in await client.list_jobs(queue="q")} == {a.id, b.id}
            assert (await client.counts())["q"][JobStatus.QUEUED] == 2
            assert await client.cancel(b.id) is JobStatus.CANCELLED
            events = await client.fetch_events(10)
            assert [e.job_id for e in events] == [b.id]
            assert await client.ack_events([e.cursor for e in events]) == 1
            await client.set_enabled(False, "q")
            assert (await client.switches()).queues == {"q": False}
            done = await client.wait_finished(b.id, 1.0)
            assert done.status is JobStatus.CANCELLED
            running = await client.wait_finished(a.id, 0.05)
            assert running.status is JobStatus.QUEUED
        finally:
            backend.run = type(backend).run.__get__(backend)  # type: ignore[method-assign]
            await client.aclose()

    asyncio.run(main())


def test_500_concurrent_single_job_enqueues_all_land_exactly_once(url: str, namespace: str) -> None:
    n = 500
    assert n > MAX_CONNECTIONS  # more coroutines than connections: some must wait for one

    async def main() -> list[str]:
        backend = await RedisBackend.open_async(url, namespace=namespace)
        _no_threads(backend)
        client = qw.aio.AsyncClient(backend)
        try:
            answers = await asyncio.gather(
                *(client.enqueue([NewJob("q", i, dedupe_key=f"k{i}")]) for i in range(n))
            )
            return [a.id for (a,) in answers if a.created]
        finally:
            backend.run = type(backend).run.__get__(backend)  # type: ignore[method-assign]
            await client.aclose()

    ids = asyncio.run(main())
    assert len(set(ids)) == len(ids) == n
    sync = qw.open(url, namespace=namespace)
    try:
        assert sync.counts()["q"][JobStatus.QUEUED] == n
        stored = sync.list_jobs(queue="q", limit=n + 1)
        assert sorted(j.id for j in stored) == sorted(ids)
        assert sorted(j.payload for j in stored) == list(range(n))
    finally:
        sync.close()


def test_an_async_wait_is_woken_by_the_message_not_a_poll(url: str, namespace: str) -> None:
    # A poll interval far above the delay: only the message can end the wait in time.
    slow = url + ("&" if "?" in url else "?") + "poll_interval=30"
    other = qw.open(url, namespace=namespace)
    try:
        (job,) = other.enqueue([NewJob("q", 1)])
        (claim,) = other.claim(["q"], worker="w", limit=1)
        ended_at: list[float] = []

        def finish_later() -> None:
            time.sleep(0.3)
            ended_at.append(time.monotonic())
            other.complete(claim.lease, "ok")

        async def main() -> tuple[qw.Job, float]:
            client = await qw.aio.open_async(slow, namespace=namespace)
            try:
                assert (await client.wait_finished(job.id, 0.05)).status is JobStatus.RUNNING
                thread = threading.Thread(target=finish_later)
                thread.start()
                got = await client.wait_finished(job.id, 10.0)
                woke = time.monotonic()
                await asyncio.to_thread(thread.join)
                return got, woke
            finally:
                await client.aclose()

        got, woke = asyncio.run(main())
        assert got.status is JobStatus.SUCCEEDED
        assert got.result == "ok"
        assert woke - ended_at[0] < 0.5
    finally:
        other.close()
