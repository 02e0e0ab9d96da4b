"""Any sync backend, served to an event loop from a bounded pool of threads of its own."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from qw.aio.polling import poll_finished
from qw.errors import BackendUnavailable, InvalidInput

if TYPE_CHECKING:
    from qw.capabilities import Capabilities
    from qw.contract import Backend, Insert, Switches, WorkflowInsert
    from qw.model import (
        Enqueued,
        Event,
        Job,
        JobStatus,
        KeyState,
        Limit,
        PurgeResult,
        WorkerInfo,
        Workflow,
        WorkflowState,
    )

__all__ = ["WAIT_SLICE_S", "ThreadedAsyncBackend"]

T = TypeVar("T")

#: The longest one call of the sync ``wait_finished`` holds a thread: a
#: waiter whose task was cancelled frees its thread within this.
WAIT_SLICE_S = 1.0


class ThreadedAsyncBackend:
    """An :class:`~qw.aio.AsyncBackend` running each call of ``backend`` in a thread.

    The threads are a pool of this object's own (at most ``max_threads``;
    one when the backend is not ``thread_safe``), never the loop's default
    executor, so a slow store cannot starve ``asyncio.to_thread`` callers.
    Result waits (``wait_finished``) get a second pool of the same size, so
    waiters never hold up enqueues. Not bound to a loop: one object may
    serve successive ``asyncio.run`` calls.

    A store with an async driver subclasses this and overrides the calls it
    makes natively; the others keep running here, on :attr:`backend`.
    ``close_backend=False`` leaves ``backend`` open at :meth:`aclose` (it
    is someone else's: the sync client an app was given).
    """

    def __init__(
        self, backend: Backend, *, max_threads: int = 8, close_backend: bool = True
    ) -> None:
        if type(max_threads) is not int or not 1 <= max_threads <= 1024:
            raise InvalidInput(f"max_threads must be an int in [1, 1024], not {max_threads!r}")
        self._backend = backend
        shared = backend.capabilities.thread_safe
        prefix = f"qw-aio-{backend.name}"
        self._pool = ThreadPoolExecutor(max_threads if shared else 1, thread_name_prefix=prefix)
        # A backend that is not thread-safe gets one thread for everything.
        self._waits: Executor = (
            ThreadPoolExecutor(max_threads, thread_name_prefix=f"{prefix}-wait")
            if shared
            else self._pool
        )
        self._close_backend = close_backend
        self._closed = False

    def __repr__(self) -> str:
        return f"<qw.aio.ThreadedAsyncBackend {self.name} namespace={self.namespace!r}>"

    @property
    def backend(self) -> Backend:
        """The sync backend the threads call."""
        return self._backend

    @property
    def name(self) -> str:
        return self._backend.name

    @property
    def capabilities(self) -> Capabilities:
        return self._backend.capabilities

    @property
    def namespace(self) -> str:
        return self._backend.namespace

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in one of the pool's threads, awaited."""
        return await self._run_in(self._pool, fn, *args, **kwargs)

    async def _run_in(
        self, pool: Executor, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> T:
        if self._closed:
            raise BackendUnavailable(f"the async {self.name} backend is closed")
        call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(pool, call)

    async def aclose(self) -> None:
        """Close the sync backend (in a thread), then let the pools' threads go. Idempotent."""
        if self._closed:
            return
        try:
            if self._close_backend:
                await self.run(self._backend.close)
        finally:
            self._closed = True
            self._pool.shutdown(wait=False)
            if self._waits is not self._pool:
                self._waits.shutdown(wait=False)

    # -- the calls, each in a thread ---------------------------------------

    async def now(self) -> datetime:
        return await self.run(self._backend.now)

    async def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        return await self.run(self._backend.enqueue, jobs)

    async def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        return await self.run(self._backend.create_workflow, workflow, steps)

    async def get(self, job_id: str) -> Job | None:
        return await self.run(self._backend.get, job_id)

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        return await self.run(self._backend.get_many, job_ids)

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        workflow: str | None = None,
        key: str | None = None,
    ) -> list[Job]:
        filters: dict[str, str] = {}
        # Passed on only when given, as Client does, for backends older than a filter.
        if workflow is not None:
            filters["workflow"] = workflow
        if key is not None:
            filters["key"] = key
        return await self.run(
            self._backend.list_jobs, queue=queue, status=status, limit=limit, after=after, **filters
        )

    async def counts(self) -> dict[str, dict[JobStatus, int]]:
        return await self.run(self._backend.counts)

    async def cancel(self, job_id: str) -> JobStatus | None:
        return await self.run(self._backend.cancel, job_id)

    async def retry(self, job_id: str) -> JobStatus | None:
        return await self.run(self._backend.retry, job_id)

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        return await self.run(self._backend.get_workflow, workflow_id)

    async def list_workflows(
        self, *, state: WorkflowState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Workflow]:
        return await self.run(self._backend.list_workflows, state=state, limit=limit, after=after)

    async def cancel_workflow(self, workflow_id: str) -> Workflow | None:
        return await self.run(self._backend.cancel_workflow, workflow_id)

    async def fetch_events(self, limit: int = 100) -> list[Event]:
        return await self.run(self._backend.fetch_events, limit)

    async def ack_events(self, cursors: Sequence[int]) -> int:
        return await self.run(self._backend.ack_events, cursors)

    async def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        await self.run(self._backend.set_enabled, enabled, queue)

    async def switches(self) -> Switches:
        return await self.run(self._backend.switches)

    async def workers(self) -> list[WorkerInfo]:
        return await self.run(self._backend.workers)

    async def purge(self, older_than: float) -> PurgeResult:
        return await self.run(self._backend.purge, older_than)

    async def set_limit(self, key: str, limit: Limit | None) -> None:
        await self.run(self._backend.set_limit, key, limit)

    async def limits(self) -> dict[str, Limit]:
        return await self.run(self._backend.limits)

    async def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        return await self.run(self._backend.keys, limit=limit, after=after)

    async def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        """As the sync method; woken in a wait thread, in slices of at most WAIT_SLICE_S.

        A backend without ``result_wakeup`` is polled with ``asyncio.sleep``
        between reads: no thread sleeps for it.
        """
        if not self._backend.capabilities.result_wakeup:
            return await poll_finished(self.get, job_id, timeout)
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            piece = min(left, WAIT_SLICE_S)
            job = await self._run_in(self._waits, self._backend.wait_finished, job_id, piece)
            if job is None or job.status.is_terminal or piece >= left:
                return job
