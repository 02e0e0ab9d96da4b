"""The postgres backend's native async twin (``qw.aio.open_async`` on a postgres URL).

:class:`AsyncPostgresBackend` runs the producer and inspection calls on a
``psycopg_pool.AsyncConnectionPool``: enqueue, create_workflow, get,
get_many, list_jobs, counts, cancel, fetch_events, ack_events, switches,
set_enabled and now are awaited statements, with no thread. They are the
sync backend's own operations (its ``_Plan`` generators: the same
statements, the same decisions, the same row parsing), served here with
awaits instead of blocking calls; concurrent single-job enqueues share one
write (:class:`_GroupInsert`). ``wait_finished`` arms, reads and waits on
an async LISTEN of the namespace's done channel (one connection per twin,
opened by the first wait), so a thousand waiters hold no thread.

What stays in the inherited thread pool, on the sync backend this twin
holds: the operator calls (workers, purge, limits, keys, workflows'
reads and cancel), a bulk enqueue from COPY_MIN_JOBS jobs on (a COPY), and
the cancel of a workflow step (its settle is the sync workflow
transaction). The twin is bound to the event loop it was opened in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from qw.aio import ThreadedAsyncBackend
from qw.contract import Insert, Switches, WorkflowInsert
from qw.errors import BackendConflict, BackendUnavailable, InvalidInput
from qw.model import Enqueued, Event, Job, JobStatus
from qw.plans import adrive
from qw_postgres.backend import (
    _T,
    COPY_MIN_JOBS,
    LISTEN_START_WAIT_S,
    PostgresBackend,
    _CancelStep,
    _Fetch,
    _InsertJobs,
    _json_loads,
    _Plan,
    _Request,
    _Wake,
    refuse_duplicates,
)
from qw_postgres.errors import translate_errors
from qw_postgres.listening import (
    PING_EVERY_S,
    SETTLE_MAX_S,
    SETTLE_POLL_S,
    listener_application_name,
)
from qw_postgres.queries import Queries

__all__ = ["AsyncPostgresBackend"]

log = logging.getLogger("qw_postgres")

#: The most single-job inserts one group commit writes (_GroupInsert).
_GROUP_MAX = 500
#: Growing pause between tries of a lost done LISTEN (as qw.wakeup.Listener's).
_MIN_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 2.0


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # As the sync pool's connections: UTC timestamps, the fast JSON loader.
    await conn.execute("SET TIME ZONE 'UTC'")
    set_json_loads(_json_loads, conn)


class _DoneSignal:
    """The namespace's done channel, LISTENed on an async connection: a generation that moves.

    A waiter takes :attr:`generation` before it reads its job, then waits
    for it to move (:meth:`wait`): a notification between the read and the
    wait has already moved it, so none is lost, and waiters share nothing
    they could clear for each other. While the LISTEN is down a wait lasts
    at most ``poll_interval`` (a bounded poll), and each (re)connect moves
    the generation, since notifications may have been missed. The session
    registers in ``result_listeners`` as the sync results listener does
    (:func:`qw_postgres.listening.make_results_listen`), so that writes
    ending jobs notify at all.
    """

    def __init__(
        self, conninfo: str, channel: str, namespace: str, poll_interval: float, q: Queries
    ) -> None:
        self._conninfo = conninfo
        self._q = q
        self._ns = {"ns": namespace}
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
        self._app_name = listener_application_name(namespace, "results")
        self._poll = poll_interval
        self.generation = 0
        self._moved = asyncio.Event()
        self._connected = False
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start listening (once); wait a moment for the LISTEN to be in place."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"qw-postgres-{self._app_name}")
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), LISTEN_START_WAIT_S + SETTLE_MAX_S)
            except TimeoutError:
                pass  # polled until it connects

    async def wait(self, since: int, timeout: float) -> None:
        """Return once the generation is past ``since``, or after ``timeout`` s."""
        if self.generation != since:
            return
        moved = self._moved
        limit = timeout if self._connected else min(timeout, self._poll)
        try:
            await asyncio.wait_for(moved.wait(), limit)
        except TimeoutError:
            return

    def _move(self) -> None:
        self.generation += 1
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def _run(self) -> None:
        backoff = _MIN_BACKOFF_S
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=self._app_name
                )
                async with conn:
                    await conn.execute(self._listen)
                    try:
                        await self._register(conn)
                        self._connected = True
                        self._ready.set()
                        self._move()
                        backoff = _MIN_BACKOFF_S
                        while True:
                            async for _ in conn.notifies(timeout=PING_EVERY_S):
                                self._move()
                            # Quiet for a while: prove the connection is alive.
                            await conn.execute("SELECT 1")
                    finally:
                        if not conn.closed and not conn.broken:
                            try:
                                await conn.execute(self._q.results_unregister, self._ns)
                            except psycopg.Error:
                                pass  # the next registration clears a dead session's row
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._connected = False
                self._move()
                log.warning("qw_postgres: results LISTEN lost (%r); polling until it is back", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _register(self, conn: psycopg.AsyncConnection[Any]) -> None:
        row = await (await conn.execute(self._q.results_register, self._ns)).fetchone()
        assert row is not None
        since = {"since": row[0]}
        deadline = time.monotonic() + SETTLE_MAX_S
        while time.monotonic() < deadline:
            done = await (await conn.execute(self._q.results_settled, since)).fetchone()
            if done is not None and done[0]:
                return
            await asyncio.sleep(SETTLE_POLL_S)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


class _GroupInsert:
    """Single-job inserts of concurrent callers, written as one statement: a group commit.

    Every NOTIFY holds a server-wide lock through its commit's WAL flush, so
    notifying transactions commit one at a time, each waiting for its own
    flush: one job per transaction caps a store at about one fsync per job,
    whatever the pool size. Here a caller's job waits, at most while one
    writer waits for a pooled connection, with the jobs of the callers that
    come meanwhile; the writer then inserts them all in one statement (one
    transaction, one NOTIFY per queue). One caller alone writes at once, by
    the one-job statement. A write refused by the store for a job's own
    reason (a stored id, a dedupe key taken since the look-up, a value the
    store refuses) is written again job by job, so that each caller gets
    its own answer, as with a call of its own; any other failure (the server
    lost mid-write, when the batch may have committed) goes to every caller.
    """

    def __init__(self, twin: AsyncPostgresBackend) -> None:
        self._twin = twin
        self._pending: list[tuple[Insert, asyncio.Future[None]]] = []
        #: Writers waiting for a connection; each takes up to _GROUP_MAX pending jobs then.
        self._waiting = 0
        self._writers: set[asyncio.Task[None]] = set()

    async def insert(self, job: Insert) -> None:
        """Insert ``job``, alone or with concurrent callers' (all or nothing for it)."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append((job, done))
        if len(self._pending) > self._waiting * _GROUP_MAX:
            self._waiting += 1
            writer = asyncio.create_task(self._write())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        await done

    def _take(self) -> list[tuple[Insert, asyncio.Future[None]]]:
        self._waiting -= 1
        batch, self._pending = self._pending[:_GROUP_MAX], self._pending[_GROUP_MAX:]
        return batch

    async def _write(self) -> None:
        twin = self._twin
        batch: list[tuple[Insert, asyncio.Future[None]]] | None = None
        try:
            async with twin._connection("enqueue") as conn:
                batch = self._take()
                if not batch:
                    return
                query, params = twin._pg.insert_statement([job for job, _ in batch], [])
                refuse_duplicates(
                    await (await conn.execute(query, params, prepare=True)).fetchall()
                )
        except (InvalidInput, BackendConflict) as exc:
            assert batch is not None  # raised by the statement
            if len(batch) == 1:
                _settle(batch, exc)
            else:
                await asyncio.gather(*(self._alone(job, done) for job, done in batch))
            return
        except BaseException as exc:
            _settle(self._take() if batch is None else batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        _settle(batch, None)

    async def _alone(self, job: Insert, done: asyncio.Future[None]) -> None:
        try:
            query, params = self._twin._pg.insert_statement([job], [])
            refuse_duplicates(await self._twin._fetch("enqueue", query, params))
        except Exception as exc:
            _settle([(job, done)], exc)
        else:
            _settle([(job, done)], None)

    async def aclose(self) -> None:
        """Let the writers in flight finish (their callers are awaiting them)."""
        if self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)


def _settle(
    batch: Sequence[tuple[Insert, asyncio.Future[None]]], error: BaseException | None
) -> None:
    for _, done in batch:
        if done.done():
            continue  # its caller was cancelled; the job may be stored all the same
        if error is None:
            done.set_result(None)
        elif isinstance(error, asyncio.CancelledError):
            done.cancel()
        else:
            done.set_exception(error)


class AsyncPostgresBackend(ThreadedAsyncBackend):
    """The native async twin of :class:`PostgresBackend`; see the module docstring."""

    def __init__(
        self,
        backend: PostgresBackend,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
        *,
        max_threads: int = 8,
    ) -> None:
        super().__init__(backend, max_threads=max_threads)
        self._pg = backend
        self._apool = pool
        self._done = _DoneSignal(
            backend._conninfo,
            backend._done,
            backend.namespace,
            backend._settings.poll_interval,
            backend._q,
        )
        self._group = _GroupInsert(self)

    @classmethod
    async def open(cls, url: str, *, namespace: str) -> Self:
        """Open the sync backend (in a thread: it checks the schema) and the async pool."""
        backend = await asyncio.to_thread(PostgresBackend.from_url, url, namespace=namespace)
        settings = backend._settings
        try:
            with translate_errors("postgres: opening the async pool"):
                pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                    backend._conninfo,
                    min_size=settings.pool_min,
                    max_size=settings.pool_max,
                    timeout=settings.pool_timeout,
                    kwargs={"autocommit": True},
                    configure=_configure,
                    name=f"qw-postgres-aio:{namespace}",
                    open=False,
                )
                await pool.open(wait=False)
        except BaseException:
            await asyncio.to_thread(backend.close)
            raise
        return cls(backend, pool)

    def __repr__(self) -> str:
        return f"<AsyncPostgresBackend schema={self._pg.schema!r} namespace={self.namespace!r}>"

    async def aclose(self) -> None:
        if self._closed:
            return
        try:
            await self._done.stop()
            await self._group.aclose()
            await self._apool.close()
        finally:
            await super().aclose()

    # -- serving the sync backend's plans with awaits ----------------------

    async def _run_plan(self, plan: _Plan[_T]) -> _T:
        """Drive ``plan`` (:func:`qw.plans.adrive`), each request awaited."""
        return await adrive(plan, self._serve)

    async def _serve(self, request: _Request) -> Any:
        if isinstance(request, _Fetch):
            # Each statement on an autocommit connection: atomic on its own,
            # so ``attempt`` (a savepoint in the application's) needs nothing.
            return await self._fetch(request.what, request.query, request.params, request.rowcount)
        if isinstance(request, _InsertJobs):
            if len(request.jobs) >= COPY_MIN_JOBS:
                # A COPY: the sync backend's, in a thread (bulk loads are rare here).
                await self.run(
                    self._pg._insert_jobs, self._pg._pooled, request.jobs, request.skipped
                )
                return None
            if len(request.jobs) == 1 and not request.skipped:
                await self._group.insert(request.jobs[0])
                return None
            query, params = self._pg.insert_statement(request.jobs, request.skipped)
            refuse_duplicates(await self._fetch("enqueue", query, params))
            return None
        if isinstance(request, _Wake):
            # This process's own waiters (claims of a worker in it), as the sync call wakes them.
            if request.queues is None:
                self._pg._hub.notify_all()
            else:
                self._pg._hub.notify(request.queues)
            return None
        assert isinstance(request, _CancelStep)
        return await self.run(
            self._pg._cancel_step, request.job_id, request.queue, request.workflow
        )

    async def _fetch(
        self, what: str, query: bytes, params: Mapping[str, Any], rowcount: bool = False
    ) -> Any:
        async with self._connection(what) as conn:
            cur = await conn.execute(query, params, prepare=True)
            return cur.rowcount if rowcount else await cur.fetchall()

    @asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; psycopg's errors in the block come out as qw's."""
        if self._closed:
            raise BackendUnavailable(f"postgres: {what} on a closed backend")
        with translate_errors(f"postgres: {what}"):
            async with self._apool.connection() as conn:
                yield conn

    # -- the native calls --------------------------------------------------

    async def now(self) -> datetime:
        return await self._run_plan(self._pg._now_plan())

    async def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        return await self._run_plan(self._pg._enqueue_plan(jobs))

    async def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        return await self._run_plan(self._pg._create_workflow_plan(workflow, steps))

    async def get(self, job_id: str) -> Job | None:
        return await self._run_plan(self._pg._get_plan(job_id))

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        return await self._run_plan(self._pg._get_many_plan(job_ids))

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
        plan = self._pg._list_jobs_plan(queue, status, limit, after, workflow, key)
        return await self._run_plan(plan)

    async def counts(self) -> dict[str, dict[JobStatus, int]]:
        return await self._run_plan(self._pg._counts_plan())

    async def cancel(self, job_id: str) -> JobStatus | None:
        return await self._run_plan(self._pg._cancel_plan(job_id))

    async def fetch_events(self, limit: int = 100) -> list[Event]:
        return await self._run_plan(self._pg._fetch_events_plan(limit))

    async def ack_events(self, cursors: Sequence[int]) -> int:
        return await self._run_plan(self._pg._ack_events_plan(cursors))

    async def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        await self._run_plan(self._pg._set_enabled_plan(enabled, queue))

    async def switches(self) -> Switches:
        return await self._run_plan(self._pg._switches_plan())

    async def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        """As the sync method: armed (the generation taken) before each read, then woken."""
        await self._done.start()
        deadline = time.monotonic() + timeout
        while True:
            since = self._done.generation
            job = await self.get(job_id)
            if job is None or job.status.is_terminal:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                return job
            await self._done.wait(since, left)
