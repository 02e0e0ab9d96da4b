"""qw.aio on memory and sqlite, with a real worker thread: the async client, handles, the app."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_handles import make_app, running

import qw
import qw.aio
from qw.aio import AsyncClient, ThreadedAsyncBackend
from qw.backends.memory import MemoryBackend
from qw.model import JobStatus, WorkflowState


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://aio-{time.monotonic_ns()}"
    return f"sqlite:///{tmp_path / 'aio.db'}"


@pytest.fixture
def app(url: str) -> Iterator[qw.App]:
    application = make_app(url, "aio")
    yield application
    application.close()


def test_qw_exports_the_async_names_lazily() -> None:
    assert qw.AsyncClient is qw.aio.AsyncClient
    assert qw.open_async is qw.aio.open_async
    assert {"AsyncClient", "open_async"} <= set(dir(qw))


def test_await_handle_is_the_result(app: qw.App) -> None:
    async def main() -> tuple[object, object, JobStatus]:
        handle = await app.tasks["h.add"].aenqueue(20, 22)
        assert isinstance(handle, qw.Enqueued)
        status = await handle.status()
        with running(app):
            result = await handle
            again = await handle.result(timeout=5)
        await app.aclose()
        return result, again, status

    assert asyncio.run(main()) == (42, 42, JobStatus.QUEUED)


def test_async_handles_raise_the_typed_errors(app: qw.App) -> None:
    async def main() -> None:
        failing = await app.tasks["h.boom"].aenqueue()
        cancelled = await app.tasks["h.add"].aenqueue(1, 1)
        assert await cancelled.cancel() is JobStatus.CANCELLED
        with pytest.raises(qw.JobWasCancelled):
            await cancelled
        waiting = await app.tasks["h.add"].options(queue="nobody").aenqueue(1, 1)
        with pytest.raises(qw.ResultTimeout):
            await waiting.result(timeout=0.2)
        with running(app), pytest.raises(qw.JobFailed) as failed:
            await failing.result(timeout=30)
        assert failed.value.status == "failed"
        await app.aclose()

    asyncio.run(main())


def test_the_app_has_one_async_client_per_loop(app: qw.App) -> None:
    seen: list[AsyncClient] = []

    async def main() -> None:
        first, second = await asyncio.gather(app.async_client(), app.async_client())
        assert first is second
        seen.append(first)
        await app.tasks["h.add"].aenqueue(1, 2)
        await app.aclose()

    asyncio.run(main())
    asyncio.run(main())  # a second loop opens its own
    assert seen[0] is not seen[1]
    assert app.client.counts()["h"][JobStatus.QUEUED] == 2


def test_aenqueue_many_and_a_workflow_awaited(app: qw.App) -> None:
    add = app.tasks["h.add"]

    async def main() -> tuple[list[Any], Any, WorkflowState]:
        handles = await app.aenqueue_many([add.job(i, 1) for i in range(3)])
        wf = app.workflow()
        first = wf.add(add, 1, 2)
        wf.add(add, first, 100)
        flow = await wf.aenqueue()
        with running(app):
            results = [await h for h in handles]
            total = await flow
        state = (await flow.status()).state
        await app.aclose()
        return results, total, state

    assert asyncio.run(main()) == ([1, 2, 3], 103, WorkflowState.SUCCEEDED)


def test_wait_finished_wakes_while_the_loop_runs_other_tasks(app: qw.App) -> None:
    ticks: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main() -> qw.Job:
        handle = await app.tasks["h.slow"].aenqueue(0.3)
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        with running(app):
            job = await handle.wait(timeout=30)
        stop.set()
        await task
        await app.aclose()
        return job

    assert asyncio.run(main()).result == "slept"
    assert len(ticks) > 10  # the loop was never blocked by the wait


def test_open_async_resolves_as_qw_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QW_URL", "memory://aio-env")
    monkeypatch.setenv("QW_NAMESPACE", "from-env")

    async def main() -> tuple[str, str]:
        async with await qw.open_async() as client:
            return client.namespace, client.backend.name

    assert asyncio.run(main()) == ("from-env", "memory")
    monkeypatch.setenv("QW_NAMESPACE", "")
    with pytest.raises(qw.InvalidName):
        asyncio.run(qw.open_async())
    with pytest.raises(qw.InvalidName):
        asyncio.run(qw.open_async("memory://", namespace="bad name!"))


def test_the_threads_are_the_backends_own_and_bounded() -> None:
    backend = ThreadedAsyncBackend(MemoryBackend("aio-pool", namespace="p"), max_threads=2)

    def name_after_a_pause() -> str:
        time.sleep(0.05)
        return threading.current_thread().name

    async def main() -> set[str]:
        names = await asyncio.gather(*(backend.run(name_after_a_pause) for _ in range(8)))
        await backend.aclose()
        await backend.aclose()  # idempotent
        with pytest.raises(qw.BackendUnavailable):
            await backend.get("x")
        return set(names)

    names = asyncio.run(main())
    assert len(names) <= 2
    assert all(n.startswith("qw-aio-memory") for n in names)
    with pytest.raises(qw.InvalidInput):
        ThreadedAsyncBackend(MemoryBackend("aio-pool", namespace="p"), max_threads=0)


def test_an_app_given_a_client_wraps_it_and_leaves_it_open(url: str) -> None:
    sync = qw.open(url, namespace="given")
    app = qw.App(client=sync)

    async def main() -> None:
        client = await app.async_client()
        assert client.namespace == "given"
        await client.enqueue_one("h", 1)
        await app.aclose()

    asyncio.run(main())
    assert sync.counts()["h"][JobStatus.QUEUED] == 1  # still open
    sync.close()
