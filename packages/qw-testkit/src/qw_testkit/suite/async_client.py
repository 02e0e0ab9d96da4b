"""The producer and operator contract, driven through :class:`qw.aio.AsyncClient`.

Each test runs its coroutine with ``asyncio.run`` on the backend's async
twin (:meth:`ContractBase.make_async_backend`: a native one, or the sync
backend in threads) and checks what it sees against the sync client on the
same namespace: the two must agree on every answer.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

import qw
from qw.aio import AsyncClient
from qw.contract import STORE_EVENT_CANCELLED
from qw.errors import (
    DuplicateJob,
    InvalidInput,
    InvalidName,
    InvalidPayload,
    InvalidWorkflow,
    JobNotFound,
    QwError,
    WorkflowNotFound,
)
from qw.model import EventSpec, JobStatus, Limit, NewJob, WorkflowState
from qw_testkit.base import ContractBase, OpenClient, new_namespace, snapshot
from qw_testkit.gates import requires

T = TypeVar("T")

#: How long a result waiter may take to notice an end it was woken for (or
#: polled: the bounded poll's longest pause is 0.25 s), with room for a slow CI box.
PROMPT_S = 2.0


class _Recording:
    """An async backend that records each call it passes on: proof of "before any I/O"."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(value):
            return value

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await value(*args, **kwargs)

        return call


class AsyncClientTests(ContractBase):
    """The async client's answers equal the sync client's, on every backend."""

    # -- helpers -------------------------------------------------------------

    async def _open_async(self, namespace: str) -> AsyncClient:
        backend = self.make_async_backend(namespace)
        if inspect.isawaitable(backend):
            backend = await backend
        return AsyncClient(backend)

    def arun(self, namespace: str, body: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """``body(client)`` in a fresh event loop, on a new async client closed after it."""

        async def main() -> T:
            client = await self._open_async(namespace)
            try:
                return await body(client)
            finally:
                await client.aclose()

        return asyncio.run(main())

    # -- producing -------------------------------------------------------------

    def test_async_enqueue_answers_and_reads_back(self, client: qw.Client) -> None:
        async def body(aio: AsyncClient) -> tuple[list[qw.Enqueued], list[Any]]:
            answers = await aio.enqueue([NewJob("q", {"i": i}, priority=i) for i in range(3)])
            one = await aio.enqueue_one("q", "single", delay=60.0)
            jobs = [await aio.get(a.id) for a in [*answers, one]]
            many = await aio.get_many([answers[2].id, "no-such-job", answers[0].id])
            assert await aio.find("no-such-job") is None
            with pytest.raises(JobNotFound):
                await aio.get("no-such-job")
            assert await aio.enqueue([]) == []
            return [*answers, one], [jobs, many]

        answers, (jobs, many) = self.arun(client.namespace, body)
        assert all(a.created for a in answers)
        assert len({a.id for a in answers}) == 4
        assert jobs == [client.get(a.id) for a in answers]
        assert [job.payload for job in jobs] == [{"i": 0}, {"i": 1}, {"i": 2}, "single"]
        assert jobs[3].run_at > jobs[3].created_at
        assert many == [jobs[2], None, jobs[0]]

    def test_async_dedupe_and_duplicate_id(self, client: qw.Client) -> None:
        async def body(aio: AsyncClient) -> None:
            first = await aio.enqueue_one("q", 1, dedupe_key="k")
            again = await aio.enqueue_one("q", 2, dedupe_key="k")
            assert first.created
            assert not again.created
            assert again.id == first.id
            await aio.enqueue_one("q", 3, id="fixed-id")
            with pytest.raises(DuplicateJob):
                await aio.enqueue([NewJob("q", 4, id="new-id"), NewJob("q", 5, id="fixed-id")])

        self.arun(client.namespace, body)
        jobs = client.list_jobs()
        assert sorted(job.payload for job in jobs) == [1, 3]  # type: ignore[type-var]
        assert client.find("new-id") is None

    # -- inspection --------------------------------------------------------------

    def test_async_list_jobs_pages_and_filters(self, client: qw.Client) -> None:
        ids = self.enqueue_n(client, "a", 5) + self.enqueue_n(client, "b", 2)
        running = self.claim_one(client, "a").job.id

        async def body(aio: AsyncClient) -> dict[str, list[str]]:
            pages: list[str] = []
            after = None
            while page := await aio.list_jobs(limit=2, after=after):
                assert len(page) <= 2
                pages.extend(job.id for job in page)
                after = page[-1].id
            return {
                "pages": pages,
                "a": [j.id for j in await aio.list_jobs(queue="a")],
                "running": [j.id for j in await aio.list_jobs(status="running")],
                "queued_b": [j.id for j in await aio.list_jobs(queue="b", status="queued")],
            }

        seen = self.arun(client.namespace, body)
        assert seen["pages"] == sorted(ids)
        assert seen["a"] == sorted(ids[:5])
        assert seen["running"] == [running]
        assert seen["queued_b"] == sorted(ids[5:])
        assert seen["pages"] == [j.id for j in client.list_jobs()]

    def test_async_counts_equal_the_sync_clients(self, client: qw.Client) -> None:
        self.enqueue_n(client, "a", 3)
        self.enqueue_n(client, "b", 1)
        client.complete(self.claim_one(client, "a").lease, "ok")

        async def body(aio: AsyncClient) -> dict[str, dict[JobStatus, int]]:
            return await aio.counts()

        counts = self.arun(client.namespace, body)
        assert counts == client.counts()
        assert counts["a"][JobStatus.SUCCEEDED] == 1
        assert counts["a"][JobStatus.QUEUED] == 2
        assert set(counts["b"]) == set(JobStatus)

    # -- operating ---------------------------------------------------------------

    def test_async_cancel_of_a_queued_job_cancels_it_with_its_event(
        self, client: qw.Client
    ) -> None:
        job_id = client.enqueue_one("q", 1).id

        async def body(aio: AsyncClient) -> tuple[JobStatus, list[qw.Event]]:
            status = await aio.cancel(job_id)
            with pytest.raises(JobNotFound):
                await aio.cancel("no-such-job")
            return status, await aio.fetch_events()

        status, events = self.arun(client.namespace, body)
        assert status is JobStatus.CANCELLED
        assert client.get(job_id).status is JobStatus.CANCELLED
        assert [(e.job_id, e.type) for e in events] == [(job_id, STORE_EVENT_CANCELLED)]
        assert client.claim(["q"], worker="w") == []

    def test_async_events_are_fetched_and_acked(self, client: qw.Client) -> None:
        for i in range(3):
            client.enqueue_one("q", i)
            client.complete(self.claim_one(client).lease, i, event=EventSpec("done", {"i": i}))

        async def body(aio: AsyncClient) -> tuple[list[qw.Event], int, int, list[qw.Event]]:
            events = await aio.fetch_events(limit=2)
            acked = await aio.ack_events([e.cursor for e in events])
            again = await aio.ack_events([e.cursor for e in events])
            return events, acked, again, await aio.fetch_events()

        first, acked, again, rest = self.arun(client.namespace, body)
        assert [e.data for e in first] == [{"i": 0}, {"i": 1}]
        assert (acked, again) == (2, 0)
        assert [e.data for e in rest] == [{"i": 2}]
        assert client.fetch_events() == rest

    def test_async_switches_are_the_stores(self, client: qw.Client) -> None:
        queue_switch = client.capabilities.queue_switch

        async def body(aio: AsyncClient) -> tuple[bool, bool, qw.Switches]:
            await aio.set_enabled(False)
            off = await aio.is_enabled()
            await aio.set_enabled(True)
            if queue_switch:
                await aio.set_enabled(False, "paused")
            return off, await aio.is_enabled("paused"), await aio.switches()

        off, paused_on, switches = self.arun(client.namespace, body)
        assert off is False
        assert switches == client.switches()
        assert client.is_enabled() is True
        assert paused_on is not queue_switch
        assert client.is_enabled("paused") is not queue_switch

    def test_async_workflows_are_created_read_and_cancelled(self, client: qw.Client) -> None:
        wf = "wf-" + new_namespace()
        steps = [NewJob("q", 1, id=f"{wf}.1"), NewJob("q", 2, id=f"{wf}.2", parents=(f"{wf}.1",))]

        async def body(aio: AsyncClient) -> dict[str, Any]:
            made = await aio.create_workflow(wf, steps, output=f"{wf}.2")
            again = await aio.create_workflow(wf, steps[:1])
            seen = {
                "made": made,
                "again": again,
                "got": await aio.get_workflow(wf),
                "steps": await aio.steps(wf),
                "listed": await aio.list_workflows(state="running"),
            }
            assert await aio.find_workflow("wf-none") is None
            with pytest.raises(WorkflowNotFound):
                await aio.get_workflow("wf-none")
            with pytest.raises(WorkflowNotFound):
                await aio.cancel_workflow("wf-none")
            seen["cancelled"] = await aio.cancel_workflow(wf)
            return seen

        seen = self.arun(client.namespace, body)
        assert seen["made"] == qw.Enqueued(wf, True)
        assert seen["again"] == qw.Enqueued(wf, False)
        assert seen["got"].state is WorkflowState.RUNNING
        assert seen["got"].output == f"{wf}.2"
        assert [(j.id, j.status) for j in seen["steps"]] == [
            (f"{wf}.1", JobStatus.QUEUED),
            (f"{wf}.2", JobStatus.WAITING),
        ]
        assert [w.id for w in seen["listed"]] == [wf]
        assert seen["cancelled"].state is WorkflowState.CANCELLED
        assert seen["cancelled"] == client.get_workflow(wf)
        assert {j.status for j in client.steps(wf)} == {JobStatus.CANCELLED}

    @requires("limits")
    def test_async_limits_and_keys_are_the_stores(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1, limit_key="user:1", limit=Limit(concurrency=1))

        async def body(aio: AsyncClient) -> tuple[dict[str, Limit], list[qw.KeyState]]:
            await aio.set_limit("user:2", Limit(concurrency=3))
            return await aio.limits(), await aio.keys()

        limits, keys = self.arun(client.namespace, body)
        assert limits == client.limits() == {"user:2": Limit(concurrency=3)}
        assert keys == client.keys()
        assert [k.key for k in keys] == ["user:1", "user:2"]

    # -- refusals ------------------------------------------------------------------

    def test_async_bad_input_is_refused_alike_before_any_io(self, client: qw.Client) -> None:
        job_id = client.enqueue_one("q", 1).id
        cycle = [
            NewJob("q", 1, id="c.1", parents=("c.2",)),
            NewJob("q", 1, id="c.2", parents=("c.1",)),
        ]
        bad: list[tuple[str, tuple[Any, ...], dict[str, Any], type[QwError]]] = [
            ("enqueue", ([NewJob("bad queue!", 1)],), {}, InvalidName),
            ("enqueue", ([NewJob("q", {1, 2})],), {}, InvalidPayload),  # type: ignore[arg-type]
            ("enqueue", (NewJob("q", 1),), {}, InvalidInput),
            ("enqueue_one", ("q", object()), {}, InvalidPayload),
            ("create_workflow", ("wf-x", cycle), {}, InvalidWorkflow),
            ("create_workflow", ("wf-y", cycle[:1]), {"output": "nope"}, InvalidWorkflow),
            ("get", ("",), {}, InvalidInput),
            ("get_many", ("abc",), {}, InvalidInput),
            ("list_jobs", (), {"limit": 0}, InvalidInput),
            ("list_jobs", (), {"status": "nope"}, InvalidInput),
            ("list_workflows", (), {"state": "nope"}, InvalidInput),
            ("cancel", ("bad id with spaces " * 20,), {}, InvalidInput),
            ("fetch_events", (0,), {}, InvalidInput),
            ("ack_events", ([-1],), {}, InvalidInput),
            ("set_enabled", ("yes",), {}, InvalidInput),
            ("purge", (-1,), {}, InvalidInput),
            ("wait_finished", (job_id, -1), {}, InvalidInput),
            ("keys", (), {"limit": 0}, InvalidInput),
        ]
        expected: list[tuple[type[BaseException], str]] = []
        for name, args, kwargs, error in bad:
            with pytest.raises(error) as refused:
                getattr(client, name)(*args, **kwargs)
            expected.append((type(refused.value), str(refused.value)))
        before = snapshot(client)

        async def body(_: AsyncClient) -> tuple[list[tuple[type[BaseException], str]], list[str]]:
            recording = _Recording((await self._open_async(client.namespace)).backend)
            aio = AsyncClient(recording)
            seen: list[tuple[type[BaseException], str]] = []
            try:
                for name, args, kwargs, _error in bad:
                    try:
                        await getattr(aio, name)(*args, **kwargs)
                    except QwError as exc:
                        seen.append((type(exc), str(exc)))
                    else:
                        seen.append((AssertionError, f"{name} was accepted"))
            finally:
                calls = list(recording.calls)
                await aio.aclose()
            return seen, calls

        seen, calls = self.arun(client.namespace, body)
        assert seen == expected
        assert calls == [], "the async client called its backend before refusing"
        assert snapshot(client) == before

    # -- isolation and concurrency ---------------------------------------------------

    def test_async_namespaces_are_isolated(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        other = open_client(new_namespace())

        async def body(aio: AsyncClient) -> str:
            await aio.set_enabled(False)
            return (await aio.enqueue_one("q", "mine")).id

        job_id = self.arun(client.namespace, body)

        async def look(aio: AsyncClient) -> tuple[Any, ...]:
            return (
                await aio.find(job_id),
                await aio.list_jobs(),
                await aio.counts(),
                await aio.fetch_events(),
                await aio.is_enabled(),
            )

        assert self.arun(other.namespace, look) == (None, [], {}, [], True)
        assert client.get(job_id).payload == "mine"
        assert other.find(job_id) is None
        assert client.is_enabled() is False

    def test_many_concurrent_coroutine_enqueues_are_all_created(self, client: qw.Client) -> None:
        async def body(aio: AsyncClient) -> list[qw.Enqueued]:
            return await asyncio.gather(*(aio.enqueue_one("q", {"i": i}) for i in range(200)))

        answers = self.arun(client.namespace, body)
        assert all(a.created for a in answers)
        assert len({a.id for a in answers}) == 200
        assert client.counts()["q"][JobStatus.QUEUED] == 200
        stored = {job.id: job.payload for job in client.list_jobs(limit=1000)}
        assert stored == {a.id: {"i": i} for i, a in enumerate(answers)}

    # -- results -------------------------------------------------------------------

    def test_async_wait_finished_returns_promptly_once_another_client_completes(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        job_id = client.enqueue_one("q", 1).id
        finisher = open_client(client.namespace)
        finished_at: list[float] = []

        def finish_later() -> None:
            time.sleep(0.3)
            finisher.complete(self.claim_one(finisher).lease, "done")
            finished_at.append(time.monotonic())

        async def body(aio: AsyncClient) -> tuple[qw.Job, float]:
            thread = threading.Thread(target=finish_later, daemon=True)
            thread.start()
            try:
                job = await aio.wait_finished(job_id, 30.0)
                return job, time.monotonic()
            finally:
                await asyncio.get_running_loop().run_in_executor(None, thread.join, 30)

        job, returned_at = self.arun(client.namespace, body)
        assert job.status is JobStatus.SUCCEEDED
        assert job.result == "done"
        assert finished_at, "the finishing thread did not complete the job"
        assert returned_at - finished_at[0] < PROMPT_S

    def test_async_wait_finished_times_out_with_the_job_as_it_is(self, client: qw.Client) -> None:
        job_id = client.enqueue_one("q", 1).id

        async def body(aio: AsyncClient) -> tuple[qw.Job, float]:
            started = time.monotonic()
            job = await aio.wait_finished(job_id, 0.3)
            elapsed = time.monotonic() - started
            with pytest.raises(JobNotFound):
                await aio.wait_finished("no-such-job", 0.1)
            return job, elapsed

        job, elapsed = self.arun(client.namespace, body)
        assert job.status is JobStatus.QUEUED
        assert 0.25 <= elapsed < 0.3 + PROMPT_S

    # -- agreement -------------------------------------------------------------------

    def test_async_answers_equal_the_sync_clients(self, client: qw.Client) -> None:
        ids = self.enqueue_n(client, "a", 4)
        client.complete(self.claim_one(client, "a").lease, {"r": 1}, event=EventSpec("e", 1))
        client.cancel(ids[3])
        wf = "wf-" + new_namespace()
        client.create_workflow(wf, [NewJob("a", 1, id=f"{wf}.1")])
        client.heartbeat(qw.WorkerInfo("w-1", ("a",), "host", 1, 2))

        async def body(aio: AsyncClient) -> dict[str, Any]:
            return {
                "get": [await aio.get(i) for i in ids],
                "get_many": await aio.get_many(ids),
                "list_jobs": await aio.list_jobs(),
                "counts": await aio.counts(),
                "switches": await aio.switches(),
                "workers": await aio.workers(),
                "list_workflows": await aio.list_workflows(),
                "get_workflow": await aio.get_workflow(wf),
                "steps": await aio.steps(wf),
                "fetch_events": await aio.fetch_events(),
                "now": await aio.now(),
            }

        seen = self.arun(client.namespace, body)
        now = seen.pop("now")
        assert seen == {
            "get": [client.get(i) for i in ids],
            "get_many": client.get_many(ids),
            "list_jobs": client.list_jobs(),
            "counts": client.counts(),
            "switches": client.switches(),
            "workers": client.workers(),
            "list_workflows": client.list_workflows(),
            "get_workflow": client.get_workflow(wf),
            "steps": client.steps(wf),
            "fetch_events": client.fetch_events(),
        }
        assert now.tzinfo is not None
        assert abs((client.now() - now).total_seconds()) < 60
