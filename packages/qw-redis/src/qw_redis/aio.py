"""The native async twin of :class:`~qw_redis.backend.RedisBackend`.

:class:`AsyncRedisBackend` (from ``RedisBackend.open_async``, which
``qw.aio.open_async`` uses) sends the producer's and the operator's common
calls with a ``redis.asyncio`` client (a ``RedisCluster`` for
``redis+cluster://``): enqueue, create_workflow, get, get_many, list_jobs,
counts, cancel, fetch_events, ack_events, switches, set_enabled, now and
wait_finished. They run the very plans the blocking backend runs
(:mod:`qw_redis.plans`: the same Lua scripts, keys, retries and parsing),
only awaited. Every other call runs the blocking backend it holds in a
thread, as :class:`qw.aio.ThreadedAsyncBackend` does.

``wait_finished`` subscribes the namespace's ``ended`` channel with an
async pub/sub connection of its own (the node owning the namespace's slot,
sharded, on a Cluster), opened by the first wait. The twin is bound to the
event loop it was opened in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Self, TypeVar

import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from qw.aio import AsyncBackend, ThreadedAsyncBackend
from qw.contract import Insert, Switches, WorkflowInsert
from qw.model import Enqueued, Event, Job, JobStatus
from qw.plans import adrive
from qw_redis.backend import RedisBackend
from qw_redis.connect import subscriber_url
from qw_redis.errors import translated
from qw_redis.keys import Keyspace
from qw_redis.plans import Op, Plan, Script
from qw_redis.results import AsyncEndedWaiters
from qw_redis.scripts import NAMES, source
from qw_redis.sharded import open_namespace
from qw_redis.urls import RedisConfig, parse_url

__all__ = ["AsyncRedisBackend"]

log = logging.getLogger("qw_redis")
T = TypeVar("T")

#: How long the first wait waits for the subscription (then it polls), as the sync backend.
_FIRST_CONNECT_S = 2.0
_SUBSCRIBE_TIMEOUT = 10.0
_MIN_BACKOFF, _MAX_BACKOFF = 0.05, 2.0
#: Connections of the async client (per node, on a Cluster: all of a
#: namespace's keys are on one). Calls beyond it wait for one to be free
#: (redis.asyncio would refuse them: "Too many connections").
MAX_CONNECTIONS = 64


def _async_client(config: RedisConfig) -> Any:
    if config.cluster:
        return RedisCluster.from_url(
            config.driver_url, decode_responses=True, max_connections=MAX_CONNECTIONS
        )
    # No silent retries, as the blocking client: a lost reply's script may have run.
    return redis.asyncio.Redis.from_url(
        config.driver_url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        max_connections=MAX_CONNECTIONS,
    )


class AsyncRedisBackend(ThreadedAsyncBackend):
    """A Redis namespace for asyncio code; see the module docstring."""

    def __init__(self, backend: RedisBackend, client: Any, *, max_threads: int = 8) -> None:
        super().__init__(backend, max_threads=max_threads)
        self._sync = backend
        self._client = client
        publish = "SPUBLISH" if backend.config.cluster else "PUBLISH"
        self._scripts = {n: client.register_script(source(n, publish)) for n in NAMES}
        self._waiters = AsyncEndedWaiters()
        self._subscriber: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._connections = asyncio.Semaphore(MAX_CONNECTIONS)

    @classmethod
    async def open(
        cls, backend_cls: type[RedisBackend], url: str, *, namespace: str
    ) -> AsyncBackend:
        """Open the blocking backend (in a thread: it migrates) and the async client.

        A sharded namespace gets its router in a :class:`ThreadedAsyncBackend`.
        """
        Keyspace(namespace)  # a bad name fails before any I/O
        config = parse_url(url)
        home = await asyncio.to_thread(backend_cls, config, namespace=namespace)
        opened = await asyncio.to_thread(open_namespace, home)
        if not isinstance(opened, RedisBackend):
            return ThreadedAsyncBackend(opened)
        backend = opened
        try:
            client = _async_client(config)
            with translated("connect"):
                await client.ping()
        except BaseException:
            await asyncio.to_thread(backend.close)
            raise
        return cls(backend, client)

    def __repr__(self) -> str:
        return f"<qw_redis.AsyncRedisBackend namespace={self.namespace!r}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the subscription, close the async client, then the blocking backend."""
        task, self._subscriber = self._subscriber, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            with contextlib.suppress(Exception):  # closing a broken connection is not an error
                await self._client.aclose()
        finally:
            await super().aclose()

    # -- running plans ---------------------------------------------------------

    async def _do(self, op: Op) -> Any:
        async with self._connections:
            if isinstance(op, Script):
                keys, argv = self._sync.script_call(op.name, op.queues, op.args)
                with translated(op.name):
                    return await self._scripts[op.name](keys=keys, args=argv)
            with translated(op.context):
                return await getattr(self._client, op.method)(*op.args)

    async def _drive(self, plan: Plan[T]) -> T:
        """Run ``plan`` (see :mod:`qw_redis.plans`) with the async client."""
        return await adrive(plan, self._do)

    # -- the native calls ------------------------------------------------------

    async def now(self) -> datetime:
        return await self._drive(self._sync.now_plan())

    async def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        return await self._drive(self._sync.enqueue_plan(jobs))

    async def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        return await self._drive(self._sync.create_workflow_plan(workflow, steps))

    async def get(self, job_id: str) -> Job | None:
        return (await self._drive(self._sync.get_many_plan([job_id])))[0]

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        return await self._drive(self._sync.get_many_plan(job_ids))

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
        return await self._drive(
            self._sync.list_jobs_plan(
                queue=queue, status=status, limit=limit, after=after, workflow=workflow, key=key
            )
        )

    async def counts(self) -> dict[str, dict[JobStatus, int]]:
        return await self._drive(self._sync.counts_plan())

    async def cancel(self, job_id: str) -> JobStatus | None:
        return await self._drive(self._sync.cancel_plan(job_id))

    async def fetch_events(self, limit: int = 100) -> list[Event]:
        return await self._drive(self._sync.fetch_events_plan(limit))

    async def ack_events(self, cursors: Sequence[int]) -> int:
        return await self._drive(self._sync.ack_events_plan(cursors))

    async def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        await self._drive(self._sync.set_enabled_plan(enabled, queue))

    async def switches(self) -> Switches:
        return await self._drive(self._sync.switches_plan())

    # -- result waits ----------------------------------------------------------

    async def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        """As the blocking backend's: arm, read, await the job's ``ended`` message, read again.

        Arming (clearing the job's event) before each read means a job that
        ends between the read and the wait is not missed; while the
        subscription is down the wait polls every ``poll_interval``.
        """
        await self._ensure_subscribed()
        deadline = time.monotonic() + timeout
        with self._waiters.watch(job_id) as event:
            while True:
                event.clear()
                job = await self.get(job_id)
                if job is None or job.status.is_terminal:
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    return job
                if not self._waiters.live:
                    left = min(left, self._sync.config.poll_interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), left)

    async def _ensure_subscribed(self) -> None:
        if self._subscriber is None:
            self._subscriber = asyncio.get_running_loop().create_task(
                self._subscribe(), name=f"qw-redis-ended-{self.namespace}"
            )
            # Not subscribed in time: the waits poll until it is.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), _FIRST_CONNECT_S)

    async def _subscribe(self) -> None:
        """Keep the ``ended`` subscription up, feeding the waiters, until cancelled."""
        config = self._sync.config
        channel = self._sync.keyspace.ended_channel
        url = await asyncio.to_thread(subscriber_url, config, self._sync._client, channel)
        backoff = _MIN_BACKOFF
        while True:
            started = time.monotonic()
            try:
                await self._listen(url, channel, config.cluster)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "qw-redis %s: ended channel lost (%r); waits poll until it reconnects",
                    self.namespace,
                    exc,
                )
            if time.monotonic() - started > _MAX_BACKOFF:
                backoff = _MIN_BACKOFF
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _listen(self, url: str, channel: str, sharded: bool) -> None:
        client: Any = redis.asyncio.Redis.from_url(
            url, decode_responses=True, retry=Retry(NoBackoff(), 0), health_check_interval=5
        )
        pubsub = client.pubsub()
        try:
            if sharded:
                await pubsub.ssubscribe(channel)
            else:
                await pubsub.subscribe(channel)
            # Live only once the server confirmed, as the blocking listener.
            deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT
            while True:
                message = await pubsub.get_message(timeout=0.25)
                if message is not None and message["type"] in ("subscribe", "ssubscribe"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no subscription confirmation for {channel}")
            self._waiters.set_live(True)
            self._subscribed.set()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                kind = message["type"]
                if kind in ("message", "smessage"):
                    self._waiters.deliver(message["data"])
                elif kind in ("unsubscribe", "sunsubscribe"):
                    raise ConnectionError(f"unsubscribed from {channel} by the server")
        finally:
            self._waiters.set_live(False)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()
