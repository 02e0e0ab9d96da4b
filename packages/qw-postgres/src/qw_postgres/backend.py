"""The ``postgres`` backend: one namespace of a qw schema in PostgreSQL.

Every write of a plain job is a single statement run on a pooled autocommit
connection, so it costs one round trip and commits atomically: a
transition, its outbox event and its NOTIFY either all happen or none do.
The statements decide no status: :mod:`qw.transitions` does, and they apply
what it decided. Only three operations on plain jobs read first: an enqueue
whose jobs carry dedupe keys (the live holders, then the insert), a reclaim
(the expired leases, locked, then their transitions, in one transaction)
and the cancel of a queued job. All times come from the server's ``now()``.

A write that ends a workflow step (finish, reclaim, cancel), adds steps or
cancels a workflow is one transaction that locks the workflow's row first,
then the steps' rows, and in it settles the step's children
(:func:`qw.transitions.settle` over :class:`_StepEnds`) and counts the
workflow's live steps; see docs/backends/postgres.md, "Workflows".

A claim that meets limit keys runs in rounds of one transaction each
(:meth:`PostgresBackend._claim_keyed`, :class:`_Round`): candidates leased
speculatively, the keys' advisory locks, their state read under them,
:func:`qw.limits.plan_claim` deciding, and the leases not kept given back;
held-back jobs are parked out of the claim index until their key may have
room. See docs/backends/postgres.md, "Flow control".
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, Self, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import AdaptContext
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import tuple_row
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.json import set_json_loads
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool

from qw.capabilities import Capabilities
from qw.contract import Finish, Insert, Switches, WorkflowInsert
from qw.errors import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    DuplicateJob,
    InvalidInput,
    SchemaError,
)
from qw.limits import Candidate, effective_limit, key_state, plan_claim
from qw.model import (
    PROGRESS_EVENT,
    Claim,
    Enqueued,
    Event,
    Job,
    JobStatus,
    KeyState,
    Lease,
    Limit,
    PurgeResult,
    Schedule,
    WorkerInfo,
    Workflow,
    WorkflowState,
)
from qw.plans import drive
from qw.transitions import (
    Ready,
    Transition,
    plan_cancel_queued,
    plan_enqueue,
    plan_reclaim,
    plan_retry,
    plan_workflow_end,
    repeat_status,
    settle,
    workflow_event,
)
from qw.validation import validate_namespace
from qw.wakeup import Listener, WakeupHub
from qw_postgres.batches import (
    children_of,
    enqueue_document,
    enqueue_rows,
    finish_documents,
    flows_document,
    limit_fields,
    renew_document,
    step_document,
    transition_document,
)
from qw_postgres.errors import translate_errors
from qw_postgres.listening import (
    SETTLE_MAX_S,
    channel_name,
    done_channel_name,
    listener_application_name,
    make_listen,
    make_results_listen,
)
from qw_postgres.queries import (
    CLAIM_RANK,
    CLAIM_SEQ,
    CLAIM_TOKEN,
    ENQUEUE_COPY_TYPES,
    KEYED_JOB,
    Queries,
)
from qw_postgres.rows import (
    PARENT_FAILURES,
    STATES,
    STATUSES,
    to_event,
    to_job,
    to_limit,
    to_schedule,
    to_worker,
    to_workflow,
)
from qw_postgres.schema import LATEST_VERSION, apply_migrations, installed_version
from qw_postgres.settings import Settings, parse_url

if TYPE_CHECKING:
    from qw_postgres.aio import AsyncPostgresBackend

__all__ = ["PostgresBackend", "migrate"]

log = logging.getLogger("qw_postgres")

#: How long the first claim or wait waits for the LISTEN to be in place
#: (after that, the hub polls until the listener connects).
LISTEN_START_WAIT_S = 2.0
#: From this many jobs on, ``enqueue`` stages rows with a binary COPY (a few
#: more round trips, much cheaper per row); below it, one JSON document.
#: See docs/backends/postgres.md, "Bulk enqueue".
COPY_MIN_JOBS = 5000
#: How many times ``enqueue`` plans a keyed batch again after a racing
#: producer took one of its dedupe keys before ``BackendConflict``.
ENQUEUE_TRIES = 5
#: Rows a purge deletes per statement.
PURGE_BATCH = 5000
#: Ended workflows (each with all its steps) a purge deletes per statement.
PURGE_WORKFLOW_BATCH = 100
#: How many times a workflow transaction is run again after PostgreSQL broke
#: a deadlock by aborting it (workflow writes lock in one order, see
#: :class:`_StepEnds`; one can only form between cancel_workflow and a
#: worker's renew or finish batch holding two running steps of it).
DEADLOCK_TRIES = 5
#: Rounds a keyed claim runs at most: a round that held jobs back and read
#: a full batch of candidates is followed by one reading on from there, so
#: a throttled key's backlog does not hide other keys' jobs.
CLAIM_ROUNDS = 5
#: A keyed claim's first round leases ``limit`` candidates (every lease it
#: does not keep costs an update to give back); each further round reads
#: twice as many, up to CLAIM_FETCH_MAX: a round takes one advisory lock per
#: key among its candidates, and PostgreSQL's lock table is shared (see
#: docs/backends/postgres.md, "Limits").
CLAIM_FETCH_MAX = 1000
#: Parked (key, queue) rows due a look that one round reads at most, and
#: the parked jobs it locks of each.
PROBE_KEYS = 32
PROBE_FETCH = 64
#: Jobs of a (key, queue) found full that a round parks beyond those it
#: read (see queries.CLAIM_APPLY): a long throttled backlog leaves the claim
#: index in a few claims.
PARK_AHEAD = 10_000
#: When parked jobs of a key full by concurrency are looked at again if no
#: wake came (a job of the key leaving running wakes them at once; this
#: bounds the wait should a wake be missed, see docs "Parking").
PARK_RECHECK_S = 1.0
_T = TypeVar("_T")
#: Before every job in claim order: (priority, fair_rank, seq).
_CLAIM_START = (-(2**31), -1, 0)
_QUEUED_OR_WAITING = (JobStatus.QUEUED, JobStatus.WAITING)
_INT8 = range(-(2**63), 2**63)
_warned_durability: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


@lru_cache(maxsize=32)
def _queries(schema: str) -> Queries:
    return Queries.for_schema(schema)


def _full_conninfo(conninfo: str) -> str:
    """``conninfo`` with qw's defaults for what the user left unset."""
    given = conninfo_to_dict(conninfo)
    extra: dict[str, Any] = {}
    if "connect_timeout" not in given:
        extra["connect_timeout"] = 10
    if "application_name" not in given and "fallback_application_name" not in given:
        extra["fallback_application_name"] = "qw"
    return make_conninfo(conninfo, **extra)


_json_decode = json.JSONDecoder().decode


def _json_loads(data: str | bytes) -> Any:
    # json.loads would first sniff which UTF the bytes are in; the server
    # sends UTF-8, and skipping the sniff halves the cost of a small payload.
    return _json_decode(data if isinstance(data, str) else data.decode())


def _configure(conn: psycopg.Connection[Any]) -> None:
    # Timestamps then arrive as UTC datetimes, whatever the server's TimeZone.
    conn.execute("SET TIME ZONE 'UTC'")
    set_json_loads(_json_loads, conn)


def _own_loaders(context: AdaptContext) -> None:
    """The loaders the backend reads with, set on ``context`` whatever its connection has.

    For a cursor of the application's connection, which may load text, JSON
    or timestamps its own way (Django loads ``jsonb`` as text, and
    timestamps in its own time zone): set on the cursor only, they change
    nothing of the application's. Timestamps keep the session's zone (its
    ``TimeZone`` is the application's to set), still the same instants.
    """
    set_json_loads(_json_loads, context)
    adapters = context.adapters
    for name in ("text", "varchar", "bpchar", "name"):
        adapters.register_loader(name, TextLoader)
    adapters.register_loader("timestamptz", TimestamptzLoader)


class _Exec(Protocol):
    """What a write runs its statements through: a pooled connection, or :class:`_Bound`."""

    def execute(
        self, query: bytes, params: Mapping[str, Any] | None = None, *, prepare: bool | None = None
    ) -> psycopg.Cursor[Any]: ...

    def cursor(self) -> psycopg.Cursor[Any]: ...


class _Via(Protocol):
    """How a write gets its connection: the backend's pool, or the application's (bound).

    enqueue, create_workflow and finish are written once against this, so
    the pooled and the bound calls run the same statements.
    """

    #: Whether this is the application's connection (its transaction, its session).
    bound: bool

    def fetch(self, what: str, query: bytes, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run one statement (atomic on its own) and fetch its rows."""
        ...

    def transaction(self, what: str, *, pipeline: bool = True) -> AbstractContextManager[_Exec]:
        """A block whose statements commit (pooled) or are kept (bound) together, or not at all."""
        ...

    def attempt(self, what: str) -> AbstractContextManager[None]:
        """A block whose failed statement leaves the rest able to go on (bound: a savepoint)."""
        ...

    def notify(self, queues: Iterable[str]) -> None:
        """Wake this process's waiters on ``queues`` (bound: left to LISTEN, after commit)."""
        ...


class _Pooled:
    """The backend's own pool: each statement, or transaction, on an autocommit connection."""

    __slots__ = ("_backend",)
    bound = False

    def __init__(self, backend: PostgresBackend) -> None:
        self._backend = backend

    def fetch(self, what: str, query: bytes, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return self._backend._fetch(what, query, params)

    @contextmanager
    def transaction(self, what: str, *, pipeline: bool = True) -> Iterator[_Exec]:
        with self._backend._conn(what) as conn:
            if pipeline:
                # Pipelined: BEGIN, the first statements and COMMIT ride
                # with the round trips the write needs for what it reads.
                with conn.pipeline(), conn.transaction():
                    yield conn
            else:
                with conn.transaction():
                    yield conn

    def attempt(self, what: str) -> AbstractContextManager[None]:
        return nullcontext()

    def notify(self, queues: Iterable[str]) -> None:
        self._backend._hub.notify(queues)


_SAVEPOINT = "qw_write_{}"


class _Bound:
    """The application's psycopg connection: statements join its current transaction.

    Every statement runs on a cursor of its own (server-side binding, tuple
    rows, :func:`_own_loaders`), so the connection's cursor_factory,
    row_factory and loaders neither change what the backend reads nor are
    changed by it. The transaction is the application's: never committed
    nor rolled back here. A call's writes are wrapped in a savepoint of
    their own (:meth:`scope`), so one that fails (a duplicate id) leaves the
    application's transaction as it was, able to go on; on a connection
    that is idle the first statement opens the transaction, as any
    statement of the application's would (psycopg sends BEGIN, with the
    connection's isolation level). An autocommit connection has no
    transaction to join: the call's statements get one of their own.
    """

    __slots__ = ("_conn", "_depth")
    bound = True

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._depth = 0

    @classmethod
    def check(cls, connection: object) -> _Bound:
        """The bound way for ``connection``, or InvalidInput (before any I/O)."""
        if isinstance(connection, psycopg.AsyncConnection):
            raise InvalidInput(
                "postgres: connection= got a psycopg AsyncConnection; the application's "
                "transaction is written through a sync psycopg.Connection (psycopg.connect)"
            )
        if not isinstance(connection, psycopg.Connection):
            raise InvalidInput(
                "postgres: connection= needs a psycopg 3 Connection (or an SQLAlchemy "
                f"Connection/Session or Django connection over one), not {type(connection)!r}"
            )
        if connection.closed:
            raise InvalidInput("postgres: connection= got a closed connection")
        status = connection.info.transaction_status
        if status == psycopg.pq.TransactionStatus.INERROR:
            raise InvalidInput(
                "postgres: the connection's transaction has already failed; roll it back first"
            )
        if status not in (psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.INTRANS):
            raise InvalidInput(f"postgres: the connection is busy ({status.name})")
        return cls(connection)

    def cursor(self) -> psycopg.Cursor[Any]:
        cur = psycopg.Cursor(self._conn, row_factory=tuple_row)
        _own_loaders(cur)
        return cur

    def execute(
        self, query: bytes, params: Mapping[str, Any] | None = None, *, prepare: bool | None = None
    ) -> psycopg.Cursor[Any]:
        # ``prepare`` is ignored: the application's prepare_threshold
        # stands (None behind a transaction-pooling PgBouncer, say).
        return self.cursor().execute(query, params)

    def fetch(self, what: str, query: bytes, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with translate_errors(f"postgres: {what}"):
            return self.execute(query, params).fetchall()

    @contextmanager
    def scope(self, what: str) -> Iterator[None]:
        """One call's writes: a savepoint in the application's transaction (see the class)."""
        with translate_errors(f"postgres: {what}"):
            if self._conn.autocommit:
                with self._conn.transaction():
                    yield
            else:
                with self._savepoint():
                    yield

    @contextmanager
    def transaction(self, what: str, *, pipeline: bool = True) -> Iterator[_Exec]:
        with translate_errors(f"postgres: {what}"), self._savepoint():
            yield self

    def attempt(self, what: str) -> AbstractContextManager[None]:
        return self._savepoint()

    def notify(self, queues: Iterable[str]) -> None:
        # NOTIFY in the statements is delivered at the application's commit;
        # this process's waiters then get it through LISTEN like any other.
        return

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        self._depth += 1
        name = _SAVEPOINT.format(self._depth).encode()
        try:
            self.execute(b"SAVEPOINT " + name)
            try:
                yield
            except BaseException:
                self._roll_back_to(name)
                raise
            self.execute(b"RELEASE SAVEPOINT " + name)
        finally:
            self._depth -= 1

    def _roll_back_to(self, name: bytes) -> None:
        if self._conn.closed:
            return
        try:
            self.execute(b"ROLLBACK TO SAVEPOINT " + name)
            self.execute(b"RELEASE SAVEPOINT " + name)
        except psycopg.Error:
            # The connection broke meanwhile: the application's transaction
            # is lost anyway, and the error it gets is the first one.
            log.debug("qw_postgres: rolling back to %s failed", name, exc_info=True)


class _Fetch(NamedTuple):
    """A plan's statement, atomic on its own: its rows (or, ``rowcount``, its rowcount) come back.

    ``attempt``: bound to the application's connection, it runs in a
    savepoint, so that the plan may go on after it failed (a dedupe race).
    """

    what: str
    query: bytes
    params: Mapping[str, Any]
    rowcount: bool = False
    attempt: bool = False


class _InsertJobs(NamedTuple):
    """Insert ``jobs`` all or nothing (:meth:`PostgresBackend._insert_jobs`); None comes back."""

    jobs: Sequence[Insert]
    skipped: list[str]
    attempt: bool


class _Wake(NamedTuple):
    """Wake this process's waiters on ``queues`` (None: every queue); None comes back."""

    queues: frozenset[str] | None


class _CancelStep(NamedTuple):
    """Cancel a queued or waiting step (:meth:`PostgresBackend._cancel_step`); a bool comes back."""

    job_id: str
    queue: str
    workflow: str


_Request = _Fetch | _InsertJobs | _Wake | _CancelStep
#: An operation written once, as the requests it makes and what it does with
#: the answers: the sync backend serves them on its pool or the application's
#: connection, the async twin (qw_postgres.aio) with awaits (qw.plans drives both).
_Plan = Generator[_Request, Any, _T]


class PostgresBackend:
    """A namespace in a PostgreSQL schema; see the module docstring."""

    name: ClassVar[str] = "postgres"
    capabilities = Capabilities(
        thread_safe=True,
        multi_process=True,
        native_wakeup=True,
        durable=True,
        queue_switch=True,
        limits=True,
        schedules=True,
        progress=True,
        result_wakeup=True,
        retry=True,
        transactional=True,
    )

    def __init__(self, settings: Settings, *, namespace: str) -> None:
        self._namespace = validate_namespace(namespace)
        self._settings = settings
        self._schema = settings.schema
        self._q = _queries(settings.schema)
        self._channel = channel_name(settings.schema, self._namespace)
        self._done = done_channel_name(settings.schema, self._namespace)
        self._conninfo = _full_conninfo(settings.conninfo)
        self._hub = WakeupHub(poll_interval=settings.poll_interval)
        # "A job ended": fed by a LISTEN of its own, started by the first
        # wait_finished (a worker never starts it).
        self._done_hub = WakeupHub(poll_interval=settings.poll_interval)
        self._lock = threading.Lock()
        self._listener: Listener | None = None
        self._done_listener: Listener | None = None
        self._pooled = _Pooled(self)
        self._closed = False
        # Queue lists whose last claim met limit keys: the next claim goes
        # straight to the keyed path instead of trying the plain statement.
        self._keyed: set[tuple[str, ...]] = set()
        with translate_errors("postgres: opening the store"):
            self._check_store()
            self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                self._conninfo,
                min_size=settings.pool_min,
                max_size=settings.pool_max,
                timeout=settings.pool_timeout,
                kwargs={"autocommit": True},
                configure=_configure,
                name=f"qw-postgres:{self._namespace}",
                open=False,
            )
            self._pool.open(wait=False)

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> Self:
        validate_namespace(namespace)
        return cls(parse_url(url), namespace=namespace)

    @classmethod
    async def open_async(cls, url: str, *, namespace: str) -> AsyncPostgresBackend:
        """The native async twin (:mod:`qw_postgres.aio`), for ``qw.aio.open_async``."""
        validate_namespace(namespace)
        parse_url(url)
        # Imported here: qw.aio and the async pool load only for async users.
        from qw_postgres.aio import AsyncPostgresBackend

        return await AsyncPostgresBackend.open(url, namespace=namespace)

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def schema(self) -> str:
        """The PostgreSQL schema that holds this store's tables."""
        return self._schema

    def __repr__(self) -> str:
        return f"<PostgresBackend schema={self._schema!r} namespace={self._namespace!r}>"

    # -- lifecycle -----------------------------------------------------------

    def _check_store(self) -> None:
        """Reach the server, bring the schema up to date, warn on weak durability."""
        with psycopg.connect(self._conninfo, autocommit=True) as conn:
            version = installed_version(conn, self._schema)
            if version > LATEST_VERSION:
                raise SchemaError(
                    f"schema {self._schema!r} is at version {version}, newer than this "
                    f"qw-postgres (which knows up to {LATEST_VERSION}); upgrade qw-postgres"
                )
            if version < LATEST_VERSION:
                if self._settings.auto_migrate:
                    apply_migrations(conn, self._schema)
                else:
                    log.warning(
                        "qw_postgres: schema %r is at version %d, not %d; run `qw migrate`",
                        self._schema,
                        version,
                        LATEST_VERSION,
                    )
            row = conn.execute(self._q.server_settings).fetchone()
        if row is not None:
            self._warn_if_not_durable(*row)

    def _warn_if_not_durable(self, synchronous_commit: str, fsync: str, fpw: str) -> None:
        weak = [
            f"{name}={value}"
            for name, value, good in (
                ("synchronous_commit", synchronous_commit, {"on", "remote_apply", "remote_write"}),
                ("fsync", fsync, {"on"}),
                ("full_page_writes", fpw, {"on"}),
            )
            if value not in good
        ]
        if not weak:
            return
        key = (self._conninfo, self._schema)
        with _warned_lock:
            if key in _warned_durability:
                return
            _warned_durability.add(key)
        log.warning(
            "qw_postgres: the server runs with %s; an acknowledged enqueue or finish can be "
            "lost in a crash (see docs/backends/postgres.md, Durability)",
            ", ".join(weak),
        )

    def migrate(self) -> int:
        """Bring the schema to the latest version (idempotent); return that version."""
        with (
            translate_errors("postgres: migrate"),
            psycopg.connect(self._conninfo, autocommit=True) as conn,
        ):
            return apply_migrations(conn, self._schema)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listeners = (self._listener, self._done_listener)
            self._listener = self._done_listener = None
        for listener in listeners:
            if listener is not None:
                listener.stop()
        self._pool.close()

    @contextmanager
    def _conn(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise BackendUnavailable(f"postgres: {what} on a closed backend")
        with translate_errors(f"postgres: {what}"), self._pool.connection() as conn:
            yield conn

    def _fetch(self, what: str, query: bytes, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with self._conn(what) as conn:
            return conn.execute(query, params, prepare=True).fetchall()

    def _count(self, what: str, query: bytes, params: Mapping[str, Any]) -> int:
        with self._conn(what) as conn:
            return conn.execute(query, params, prepare=True).rowcount

    def _run(self, via: _Via, plan: _Plan[_T]) -> _T:
        """Run ``plan`` on ``via`` (the pool, or the application's connection)."""

        def serve(request: _Request) -> Any:
            if isinstance(request, _Fetch):
                with via.attempt(request.what) if request.attempt else nullcontext():
                    if request.rowcount:
                        assert not via.bound
                        return self._count(request.what, request.query, request.params)
                    return via.fetch(request.what, request.query, request.params)
            if isinstance(request, _InsertJobs):
                with via.attempt("enqueue") if request.attempt else nullcontext():
                    self._insert_jobs(via, request.jobs, request.skipped)
                return None
            if isinstance(request, _Wake):
                if request.queues is None:
                    self._hub.notify_all()
                else:
                    via.notify(request.queues)
                return None
            return self._cancel_step(request.job_id, request.queue, request.workflow)

        return drive(plan, serve)

    def now(self) -> datetime:
        return self._run(self._pooled, self._now_plan())

    def _now_plan(self) -> _Plan[datetime]:
        rows = yield _Fetch("now", self._q.now, {})
        value: datetime = rows[0][0]
        return value

    # -- producing -------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        return self._run(self._pooled, self._enqueue_plan(jobs))

    def enqueue_in(self, connection: object, jobs: Sequence[Insert]) -> list[Enqueued]:
        via = _Bound.check(connection)
        if not jobs:
            return []
        with via.scope("enqueue"):
            return self._run(via, self._enqueue_plan(jobs))

    def _enqueue_plan(self, jobs: Sequence[Insert]) -> _Plan[list[Enqueued]]:
        if not jobs:
            return []
        keys = list({j.dedupe_key for j in jobs if j.dedupe_key is not None})
        if not keys:
            # Nothing to look up: every job is inserted, in one statement.
            answers, _ = plan_enqueue(jobs, {})
            yield _InsertJobs(jobs, [], attempt=False)
            yield _Wake(frozenset(j.queue for j in jobs))
            return answers
        for _ in range(ENQUEUE_TRIES):
            rows = yield _Fetch("enqueue", self._q.live_keys, {"ns": self._namespace, "keys": keys})
            answers, insert = plan_enqueue(jobs, dict(rows))
            chosen = set(insert)
            skipped = [j.id for i, j in enumerate(jobs) if i not in chosen]
            try:
                # Guarded by jobs_dedupe: a key taken since the look-up fails it.
                yield _InsertJobs([jobs[i] for i in insert], skipped, attempt=True)
            except BackendConflict:
                continue
            yield _Wake(frozenset(jobs[i].queue for i in insert))
            return answers
        raise BackendConflict("postgres: the dedupe keys of this batch stayed contended; try again")

    def _insert_jobs(self, via: _Via, jobs: Sequence[Insert], skipped_ids: list[str]) -> None:
        """Insert ``jobs`` (one JSON document, or a COPY for a large batch), all or nothing.

        ``skipped_ids`` are the batch's jobs answered by a dedupe key: an id
        among them that is already stored refuses the whole batch too.
        """
        if len(jobs) < COPY_MIN_JOBS:
            rows = via.fetch("enqueue", *self.insert_statement(jobs, skipped_ids))
        else:
            params = self._insert_params(skipped_ids)
            q = self._q
            keyed = any(j.limit_key is not None for j in jobs)
            fair = keyed and any(j.fair for j in jobs)
            staged = (
                q.enqueue_staged_fair
                if fair
                else q.enqueue_staged_keyed
                if keyed
                else q.enqueue_staged
            )
            with via.transaction("enqueue", pipeline=False) as conn:
                conn.execute(q.enqueue_stage)
                with conn.cursor().copy(q.enqueue_copy) as copy:
                    copy.set_types(ENQUEUE_COPY_TYPES)
                    for row in enqueue_rows(jobs):
                        copy.write_row(row)
                rows = conn.execute(staged, params, prepare=True).fetchall()
                if via.bound:
                    # ON COMMIT comes at the application's commit: a second
                    # bulk enqueue in its transaction must not read these.
                    conn.execute(q.enqueue_unstage)
        refuse_duplicates(rows)

    def _insert_params(self, skipped_ids: list[str]) -> dict[str, Any]:
        return {"ns": self._namespace, "channel": self._channel, "skipped_ids": skipped_ids}

    def _one_params(self, job: Insert) -> dict[str, Any]:
        """ENQUEUE_ONE's parameters (a job without a key has no limit: qw.validation)."""
        concurrency, rate, rate_per, has_limit = limit_fields(job)
        return {
            "ns": self._namespace,
            "channel": self._channel,
            "id": job.id,
            "queue": job.queue,
            "priority": job.priority,
            "run_at": job.run_at,
            "delay": None if job.delay is None else float(job.delay),
            "max_attempts": job.max_attempts,
            "payload": job.payload,
            "dedupe_key": job.dedupe_key,
            "limit_key": job.limit_key,
            "concurrency": concurrency,
            "rate": rate,
            "rate_per": rate_per,
            "has_limit": has_limit,
        }

    def insert_statement(
        self, jobs: Sequence[Insert], skipped_ids: list[str]
    ) -> tuple[bytes, dict[str, Any]]:
        """The statement inserting a batch below COPY_MIN_JOBS (rows for refuse_duplicates)."""
        if len(jobs) == 1 and not skipped_ids and not jobs[0].fair:
            # One job without a fair rank to take (fair needs the ranks CTE).
            return self._q.enqueue_one, self._one_params(jobs[0])
        params = self._insert_params(skipped_ids)
        keyed = any(j.limit_key is not None for j in jobs)
        fair = keyed and any(j.fair for j in jobs)
        with translate_errors("postgres: enqueue"):
            params["batch"] = enqueue_document(jobs, keyed=keyed)
        q = self._q
        return (q.enqueue_fair if fair else q.enqueue_keyed if keyed else q.enqueue), params

    # -- working -----------------------------------------------------------------

    def claim(
        self, queues: Sequence[str], *, worker: str, lease_s: float, limit: int
    ) -> list[Claim]:
        self._ensure_listener()
        self._hub.arm(queues)
        params: dict[str, Any] = {
            "ns": self._namespace,
            "worker": worker,
            "lease_s": float(lease_s),
            "limit": limit,
        }
        if len(queues) == 1:
            params["queue"] = queues[0]
        params["queues"] = list(queues)
        hint = tuple(queues)
        rows: list[tuple[Any, ...]] = []
        if hint not in self._keyed:
            query = self._q.claim_one if len(queues) == 1 else self._q.claim_many
            rows = self._fetch("claim", query, params)
            if rows and rows[0][0] is None:
                # The plain statement met a limit key and took nothing.
                self._keyed.add(hint)
        if hint in self._keyed:
            rows, keyed = self._claim_keyed(params)
            if not keyed:
                self._keyed.discard(hint)
        # RETURNING order is unspecified; this is claim order.
        rows.sort(key=lambda r: (r[3], r[CLAIM_RANK], r[CLAIM_SEQ]))
        claims = []
        for row in rows:
            job = to_job(row)
            assert job.lease_expires_at is not None
            # Stamped with the attempt here, so the Client need not rebuild the lease.
            expires, token = job.lease_expires_at, row[CLAIM_TOKEN]
            lease = Lease(job.id, token, expires, False, job.attempts, job.max_attempts)
            claims.append(Claim(job, lease))
        return claims

    def _claim_keyed(self, params: dict[str, Any]) -> tuple[list[tuple[Any, ...]], bool]:
        """Claim under limits, in rounds; return the claimed rows and whether keys are still met.

        Each round is one transaction (see queries.py, "the keyed claim").
        A round that held jobs back and read a full batch is followed by one
        reading on from where it stopped, at most CLAIM_ROUNDS in all. The
        last round says whether the next claim should go keyed straight
        away (an earlier one may have parked every keyed job it met).
        """
        limit: int = params["limit"]
        claimed: list[tuple[Any, ...]] = []
        keyed = False
        after = _CLAIM_START
        fetch = min(limit, CLAIM_FETCH_MAX)
        for _ in range(CLAIM_ROUNDS):
            rows, met, more = self._claim_round(params, limit - len(claimed), after, fetch)
            claimed += rows
            keyed = met
            if more is None or len(claimed) >= limit:
                break
            after = more
            fetch = min(fetch * 2, CLAIM_FETCH_MAX)
        return claimed, keyed

    def _claim_round(
        self, params: dict[str, Any], want: int, after: tuple[int, int, int], fetch: int
    ) -> tuple[list[tuple[Any, ...]], bool, tuple[int, int, int] | None]:
        """One keyed round: (claimed rows, keys met, where a next round starts or None)."""
        read = dict(params)
        pfetch = min(fetch, PROBE_FETCH)
        read.update(ap=after[0], ar=after[1], fetch=fetch, pfetch=pfetch, probe=PROBE_KEYS)
        read["as"] = after[2]
        one = "queue" in params
        q = self._q
        for attempt in range(1, DEADLOCK_TRIES + 1):
            with self._conn("claim") as conn:
                try:
                    # Two round trips: BEGIN with the first statement, and
                    # the writes with the COMMIT (their result read after).
                    # BEGIN and COMMIT are sent as statements of the
                    # pipeline (conn.transaction() would sync once more).
                    with conn.pipeline():
                        conn.execute(b"BEGIN")
                        query = q.claim_candidates_one if one else q.claim_candidates_many
                        rows = conn.execute(query, read, prepare=True).fetchall()
                        round_ = _Round(rows, fetch, pfetch, want)
                        if round_.keys:
                            round_.plan()
                        else:
                            round_.take_first()
                        cur = round_.apply(conn, q, params)
                        conn.execute(b"COMMIT")
                    claimed = round_.claimed()
                    if cur is not None:
                        claimed += cur.fetchall()
                except BaseException as exc:
                    _roll_back(conn)
                    if not isinstance(exc, pg_errors.DeadlockDetected) or attempt == DEADLOCK_TRIES:
                        raise
                    log.info("qw_postgres: a claim was chosen to break a deadlock; trying again")
                    continue
            return claimed, round_.met, round_.next_after
        raise AssertionError("unreachable")  # pragma: no cover

    def renew(self, leases: Sequence[Lease], lease_s: float) -> list[Lease | None]:
        params = {
            "ns": self._namespace,
            "lease_s": float(lease_s),
            "batch": renew_document(leases),
        }
        answers: list[Lease | None] = [None] * len(leases)
        for ord_, expires, cancel_requested in self._fetch("renew", self._q.renew, params):
            lease = leases[ord_ - 1]
            answers[ord_ - 1] = Lease(lease.job_id, lease.token, expires, cancel_requested)
        return answers

    def set_progress(
        self, lease: Lease, fraction: float | None, message: str | None, event_data: str
    ) -> bool:
        params = {
            "ns": self._namespace,
            "id": lease.job_id,
            "token": lease.token,
            "attempt": lease.attempt,
            "fraction": fraction,
            "message": message,
            "type": PROGRESS_EVENT,
            "data": event_data,
        }
        [(n,)] = self._fetch("set_progress", self._q.set_progress, params)
        return bool(n)

    def finish(self, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        return self._finish(self._pooled, finishes)

    def finish_in(self, connection: object, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        via = _Bound.check(connection)
        if not finishes:
            return []
        with via.scope("finish"):
            return self._finish(via, finishes)

    def _finish(self, via: _Via, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        answers: list[JobStatus | None] = []
        for batch in _distinct_job_batches(finishes):
            with translate_errors("postgres: finish"):
                documents = list(finish_documents(batch))
            for part, document in documents:
                answers.extend(self._finish_batch(via, part, document))
        return answers

    def _finish_batch(
        self, via: _Via, finishes: Sequence[Finish], document: str
    ) -> list[JobStatus | None]:
        """Apply one document's transitions; answer the rest by :func:`repeat_status`."""
        params = {
            "ns": self._namespace,
            "channel": self._channel,
            "done": self._done,
            "batch": document,
        }
        answers: list[JobStatus | None] = [None] * len(finishes)
        racing: list[int] = []
        steps: list[int] = []
        workflows: set[str] = set()
        for kind, ord_, status, finished_by in via.fetch("finish", self._q.finish, params):
            if kind == "u":
                answers[ord_ - 1] = finishes[ord_ - 1].transition.status
            elif kind == "p":
                t = finishes[ord_ - 1].transition
                answers[ord_ - 1] = repeat_status(t, STATUSES[status], finished_by)
            elif kind == "r":
                racing.append(ord_ - 1)
            elif kind == "w":
                # A step this finish ends: left for FINISH_STEPS (the 4th
                # column is its workflow).
                steps.append(ord_ - 1)
                workflows.add(finished_by)
        if steps:
            ended = self._finish_steps(via, [finishes[i] for i in steps], workflows)
            for index, answer in zip(steps, ended, strict=True):
                answers[index] = answer
        if racing:
            # Another session moved the job between our snapshot and our
            # update (perhaps the same finish, sent twice): read what won.
            again = {"ns": self._namespace, "ids": [finishes[i].lease.job_id for i in racing]}
            for ord_, status, finished_by in via.fetch("finish", self._q.finished_by, again):
                index = racing[ord_ - 1]
                t = finishes[index].transition
                answers[index] = repeat_status(t, STATUSES[status], finished_by)
        return answers

    def _finish_steps(
        self, via: _Via, finishes: Sequence[Finish], workflows: set[str]
    ) -> list[JobStatus | None]:
        """Finishes that end workflow steps, with their settles, in one transaction."""

        def write(conn: _Exec, woken: set[str]) -> list[JobStatus | None]:
            ends = self._step_ends(conn, workflows)
            answers: list[JobStatus | None] = [None] * len(finishes)
            racing: list[int] = []
            applied: list[tuple[int, str, JobStatus, str, int]] = []
            start = 0
            for part, document in finish_documents(finishes):
                params = {
                    "ns": self._namespace,
                    "channel": self._channel,
                    "done": self._done,
                    "batch": document,
                }
                rows = conn.execute(self._q.finish_steps, params, prepare=True).fetchall()
                for kind, ord_, status, other, step_id, kids in rows:
                    index = start + ord_ - 1
                    if kind == "u":
                        answers[index] = finishes[index].transition.status
                        applied.append((index, step_id, STATUSES[status], other, kids))
                    elif kind == "p":
                        t = finishes[index].transition
                        answers[index] = repeat_status(t, STATUSES[status], other)
                    elif kind == "r":
                        racing.append(index)
                start += len(part)
            # Settled in the order of the finishes, each with its descendants.
            for _, step_id, status, workflow, kids in sorted(applied):
                ends.ended(step_id, status, workflow, kids)
            ends.flush()
            if racing:
                again = {"ns": self._namespace, "ids": [finishes[i].lease.job_id for i in racing]}
                for ord_, status, finished_by in conn.execute(
                    self._q.finished_by, again, prepare=True
                ).fetchall():
                    index = racing[ord_ - 1]
                    t = finishes[index].transition
                    answers[index] = repeat_status(t, STATUSES[status], finished_by)
            woken |= ends.queues
            return answers

        return self._in_workflows(via, "finish", write)

    def reclaim_expired(self) -> int:
        ns = {"ns": self._namespace}
        steps: list[str] = []
        workflows: set[str] = set()
        with self._conn("reclaim_expired") as conn, conn.transaction():
            expired = conn.execute(self._q.reclaim_expired, ns, prepare=True).fetchall()
            if not expired:
                return 0
            plans = []
            for job_id, token, attempts, m, q, workflow in expired:
                t = plan_reclaim(attempts=attempts, max_attempts=m, queue=q)
                if workflow is not None and t.status.is_terminal:
                    # Ending a step settles its children under its
                    # workflow's lock, taken first: see _reclaim_steps.
                    steps.append(job_id)
                    workflows.add(workflow)
                else:
                    plans.append((job_id, token, attempts, t))
            count = 0
            if plans:
                params = {
                    "ns": self._namespace,
                    "channel": self._channel,
                    "done": self._done,
                    "batch": transition_document(plans),
                }
                row = conn.execute(self._q.reclaim, params, prepare=True).fetchone()
                count = 0 if row is None else int(row[0])
        if steps:
            count += self._reclaim_steps(steps, workflows)
        return count

    def _reclaim_steps(self, step_ids: list[str], workflows: set[str]) -> int:
        """Reclaim expired steps whose attempts are used up, settling their children."""

        def write(conn: _Exec, woken: set[str]) -> int:
            ends = self._step_ends(conn, workflows)
            params: dict[str, Any] = {"ns": self._namespace, "ids": step_ids}
            expired = conn.execute(self._q.reclaim_steps_read, params, prepare=True).fetchall()
            if not expired:
                return 0
            params["channel"] = self._channel
            params["done"] = self._done
            params["batch"] = transition_document(
                (job_id, token, attempts, plan_reclaim(attempts=attempts, max_attempts=m, queue=q))
                for job_id, token, attempts, m, q, _ in expired
            )
            applied = conn.execute(self._q.reclaim_steps, params, prepare=True).fetchall()
            for _, step_id, status, workflow, kids, _ in sorted(applied):
                ended = STATUSES[status]
                if ended.is_terminal:
                    ends.ended(step_id, ended, workflow, kids)
            ends.flush()
            woken |= ends.queues
            return len(applied)

        return self._in_workflows(self._pooled, "reclaim_expired", write)

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        self._ensure_listener()
        return self._hub.wait(queues, timeout)

    def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        # Armed before each read, under a key of this thread's own: a job
        # ending between the read and the wait has already woken it, and
        # no other waiter's arming clears that (each has its own key).
        self._ensure_done_listener()
        key = (f"t{threading.get_ident()}",)
        deadline = time.monotonic() + timeout
        while True:
            self._done_hub.arm(key)
            job = self.get(job_id)
            if job is None or job.status.is_terminal:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                return job
            # Woken by any job of the namespace ending (or, while the LISTEN
            # is down, every poll_interval): read again.
            self._done_hub.wait(key, left)

    def _ensure_done_listener(self) -> None:
        if self._done_listener is not None:
            return
        with self._lock:
            if self._done_listener is not None or self._closed:
                return
            listen = make_results_listen(
                self._conninfo,
                self._done,
                self._done_hub,
                namespace=self._namespace,
                register=self._q.results_register,
                settled=self._q.results_settled,
                unregister=self._q.results_unregister,
                application_name=listener_application_name(self._namespace, "results"),
            )
            listener = Listener(
                self._done_hub, listen, name=f"qw-postgres-results:{self._namespace}"
            )
            listener.start()
            self._done_listener = listener
        # It is ready once registered and settled (make_results_listen);
        # not ready in time, waits poll until it is.
        listener.wait_ready(LISTEN_START_WAIT_S + SETTLE_MAX_S)

    def _ensure_listener(self) -> None:
        if self._listener is not None:
            return
        with self._lock:
            if self._listener is not None or self._closed:
                return
            listen = make_listen(
                self._conninfo,
                self._channel,
                self._hub,
                application_name=listener_application_name(self._namespace),
            )
            listener = Listener(self._hub, listen, name=f"qw-postgres-listener:{self._namespace}")
            listener.start()
            self._listener = listener
        # Subscribe before the first claim arms the hub: a connect that came
        # after it would wake that claimer's first wait for nothing. Not
        # subscribed in time, the hub polls until it is.
        listener.wait_ready(LISTEN_START_WAIT_S)

    @property
    def listener_reconnects(self) -> int:
        """How many times the LISTEN connection was lost and retried (for operators)."""
        return self._listener.reconnects if self._listener is not None else 0

    # -- workers and switches --------------------------------------------------

    def heartbeat(self, worker: WorkerInfo) -> None:
        params = {
            "ns": self._namespace,
            "id": worker.id,
            "queues": list(worker.queues),
            "host": worker.host,
            "pid": worker.pid,
            "concurrency": worker.concurrency,
            "started_at": worker.started_at,
        }
        self._count("heartbeat", self._q.heartbeat, params)

    def remove_worker(self, worker_id: str) -> None:
        self._count(
            "remove_worker", self._q.remove_worker, {"ns": self._namespace, "id": worker_id}
        )

    def workers(self) -> list[WorkerInfo]:
        rows = self._fetch("workers", self._q.workers, {"ns": self._namespace})
        return [to_worker(r) for r in rows]

    def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        self._run(self._pooled, self._set_enabled_plan(enabled, queue))

    def _set_enabled_plan(self, enabled: bool, queue: str | None) -> _Plan[None]:
        params = {
            "ns": self._namespace,
            "queue": "" if queue is None else queue,
            "enabled": enabled,
            "channel": self._channel,
        }
        yield _Fetch("set_enabled", self._q.set_switch, params)
        if enabled:
            yield _Wake(None)

    def switches(self) -> Switches:
        return self._run(self._pooled, self._switches_plan())

    def _switches_plan(self) -> _Plan[Switches]:
        rows = yield _Fetch("switches", self._q.switches, {"ns": self._namespace})
        by_queue = dict(rows)
        enabled = by_queue.pop("", True)
        return Switches(enabled=enabled, queues=by_queue)

    # -- inspection and operations -------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self._run(self._pooled, self._get_plan(job_id))

    def _get_plan(self, job_id: str) -> _Plan[Job | None]:
        rows = yield _Fetch("get", self._q.get, {"ns": self._namespace, "id": job_id})
        return to_job(rows[0]) if rows else None

    def counts(self) -> dict[str, dict[JobStatus, int]]:
        return self._run(self._pooled, self._counts_plan())

    def _counts_plan(self) -> _Plan[dict[str, dict[JobStatus, int]]]:
        counts: dict[str, dict[JobStatus, int]] = {}
        for queue, status, n in (yield _Fetch("counts", self._q.counts, {"ns": self._namespace})):
            counts.setdefault(queue, {})[JobStatus(status)] = int(n)
        return counts

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        workflow: str | None = None,
        key: str | None = None,
    ) -> list[Job]:
        plan = self._list_jobs_plan(queue, status, limit, after, workflow, key)
        return self._run(self._pooled, plan)

    def _list_jobs_plan(
        self,
        queue: str | None,
        status: JobStatus | None,
        limit: int,
        after: str | None,
        workflow: str | None,
        key: str | None,
    ) -> _Plan[list[Job]]:
        params = {
            "ns": self._namespace,
            "queue": queue,
            "status": None if status is None else str(status),
            "after": after,
            "limit": limit,
            "key": key,
        }
        if workflow is not None:
            query = self._q.list_steps
            params["workflow"] = workflow
        elif key is not None:
            query = self._q.list_key_jobs
        else:
            query = self._q.list_jobs
        return [to_job(r) for r in (yield _Fetch("list_jobs", query, params))]

    def cancel(self, job_id: str) -> JobStatus | None:
        return self._run(self._pooled, self._cancel_plan(job_id))

    def _cancel_plan(self, job_id: str) -> _Plan[JobStatus | None]:
        params = {"ns": self._namespace, "id": job_id}
        for _ in range(10):
            rows = yield _Fetch("cancel", self._q.cancel, params)
            if not rows:
                return None
            kind, status, queue, workflow = rows[0]
            current = STATUSES[status]
            if kind == "f" or current.is_terminal:
                return current
            if workflow is not None and current in _QUEUED_OR_WAITING:
                if (yield _CancelStep(job_id, queue, workflow)):
                    return JobStatus.CANCELLED
            elif current is JobStatus.QUEUED:
                t = plan_cancel_queued(queue=queue)
                apply = {
                    "ns": self._namespace,
                    "channel": self._channel,
                    "done": self._done,
                    "batch": transition_document([(job_id, None, None, t)]),
                }
                [(applied, _)] = yield _Fetch("cancel", self._q.cancel_queued, apply)
                if applied:
                    return t.status
            # The job changed under us (claimed, or finished): look again.
        raise BackendError(f"postgres: cancel of {job_id!r} kept racing other writers")

    def retry(self, job_id: str) -> JobStatus | None:
        return self._run(self._pooled, self._retry_plan(job_id))

    def _retry_plan(self, job_id: str) -> _Plan[JobStatus | None]:
        params = {"ns": self._namespace, "id": job_id}
        for _ in range(10):
            rows = yield _Fetch("retry", self._q.retry_read, params)
            if not rows:
                return None
            status, attempts, max_attempts, queue, workflow, holder = rows[0]
            current = STATUSES[status]
            t = plan_retry(
                current,
                attempts,
                max_attempts,
                workflow,
                job_id=job_id,
                queue=queue,
                holder=holder,
            )
            if t is None:
                return current
            apply = {
                **params,
                "channel": self._channel,
                "to": t.status.value,
                "run_in": t.run_in,
                "result": t.result,
                "max_attempts": t.max_attempts,
                "status": status,
                "attempts": attempts,
                "ev_type": t.event_type,
                "ev_data": t.event_data,
            }
            try:
                [(applied, _)] = yield _Fetch("retry", self._q.retry, apply)
            except BackendConflict:
                continue  # a producer took the dedupe key since the read: read again
            if applied:
                yield _Wake(frozenset((queue,)))
                return t.status
            # Retried (or purged) by someone else meanwhile: look again.
        raise BackendError(f"postgres: retry of {job_id!r} kept racing other writers")

    # -- limits ------------------------------------------------------------------

    def set_limit(self, key: str, limit: Limit | None) -> None:
        params = {
            "ns": self._namespace,
            "key": key,
            "remove": limit is None,
            "concurrency": None if limit is None else limit.concurrency,
            "rate": None if limit is None else limit.rate,
            "per": None if limit is None or limit.per is None else float(limit.per),
            "channel": self._channel,
        }
        self._fetch("set_limit", self._q.set_limit, params)
        self._hub.notify_all()

    def limits(self) -> dict[str, Limit]:
        rows = self._fetch("limits", self._q.limits, {"ns": self._namespace})
        return {key: Limit(c, r, per) for key, c, r, per in rows}

    def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        params = {"ns": self._namespace, "after": after, "limit": limit}
        with self._conn("keys") as conn:
            rows = conn.execute(self._q.keys, params, prepare=True).fetchall()
            if not rows:
                return []
            found = {"ns": self._namespace, "keys": [r[0] for r in rows]}
            starts: dict[str, list[datetime]] = {}
            for key, at, n in conn.execute(self._q.key_starts, found, prepare=True).fetchall():
                starts.setdefault(key, []).extend([at] * n)
        states = []
        for key, queued, running, own, overridden, c, r, per, now in rows:
            overrides = {key: Limit(c, r, per)} if overridden else {}
            states.append(
                key_state(
                    key,
                    queued=int(queued),
                    running=int(running),
                    own=None if own is None else to_limit(json.loads(own)),
                    overrides=overrides,
                    starts=starts.get(key, []),
                    now=now,
                )
            )
        return states

    # -- schedules ---------------------------------------------------------------

    def save_schedule(self, schedule: Schedule) -> None:
        params = {
            "ns": self._namespace,
            "name": schedule.name,
            "spec": schedule.spec,
            "tz": schedule.tz,
            "queue": schedule.queue,
            "task": schedule.task,
        }
        self._count("save_schedule", self._q.save_schedule, params)

    def advance_schedule(self, name: str, tick: datetime) -> bool:
        params = {"ns": self._namespace, "name": name, "tick": tick}
        return self._count("advance_schedule", self._q.advance_schedule, params) == 1

    def schedules(self) -> list[Schedule]:
        rows = self._fetch("schedules", self._q.schedules, {"ns": self._namespace})
        return [to_schedule(r) for r in rows]

    def remove_schedule(self, name: str) -> bool:
        params = {"ns": self._namespace, "name": name}
        return self._count("remove_schedule", self._q.remove_schedule, params) == 1

    # -- the outbox --------------------------------------------------------------

    def fetch_events(self, limit: int = 100) -> list[Event]:
        return self._run(self._pooled, self._fetch_events_plan(limit))

    def _fetch_events_plan(self, limit: int) -> _Plan[list[Event]]:
        params = {"ns": self._namespace, "limit": limit}
        rows = yield _Fetch("fetch_events", self._q.fetch_events, params)
        return [to_event(r) for r in rows]

    def ack_events(self, cursors: Sequence[int]) -> int:
        return self._run(self._pooled, self._ack_events_plan(cursors))

    def _ack_events_plan(self, cursors: Sequence[int]) -> _Plan[int]:
        wanted = sorted({c for c in cursors if c in _INT8})
        if not wanted:
            return 0
        params = {"ns": self._namespace, "cursors": wanted}
        n: int = yield _Fetch("ack_events", self._q.ack_events, params, rowcount=True)
        return n

    def purge(self, older_than: float) -> PurgeResult:
        params = {
            "ns": self._namespace,
            "older_than": float(older_than),
            "batch": PURGE_WORKFLOW_BATCH,
        }
        # A workflow's steps go only with it, once it ended long enough ago.
        steps = 0
        while True:
            [(flows, n)] = self._fetch("purge", self._q.purge_workflows, params)
            steps += int(n)
            if flows < PURGE_WORKFLOW_BATCH:
                break
        params["batch"] = PURGE_BATCH
        totals = []
        for query in (self._q.purge_jobs, self._q.purge_events):
            total = 0
            while True:
                n = self._count("purge", query, params)
                total += n
                if n < PURGE_BATCH:
                    break
            totals.append(total)
        totals[0] += steps
        return PurgeResult(jobs=totals[0], events=totals[1])

    # -- workflows ---------------------------------------------------------------

    def _in_workflows(self, via: _Via, what: str, write: Callable[[_Exec, set[str]], _T]) -> _T:
        """Run ``write`` in one transaction; wake the queues it names once it committed.

        ``write`` takes the rows of the workflows it touches first
        (:meth:`_step_ends`). A deadlock PostgreSQL broke by aborting it
        rolled everything back (its NOTIFYs too; bound, back to the
        savepoint), so it is simply run again. Pooled, it is pipelined:
        BEGIN, the workflows' lock and the first statement go in one round
        trip, and so do the last statement and COMMIT (a result is waited
        for only where the write reads it), so the workflow's row is held
        for as few round trips as can be.
        """
        for attempt in range(1, DEADLOCK_TRIES + 1):
            woken: set[str] = set()
            try:
                with via.transaction(what) as conn:
                    result = write(conn, woken)
            except BackendError as exc:
                if not isinstance(exc.__cause__, pg_errors.DeadlockDetected):
                    raise
                if attempt == DEADLOCK_TRIES:
                    raise
                log.info("qw_postgres: %s was chosen to break a deadlock; running it again", what)
                continue
            if woken:
                via.notify(woken)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _step_ends(self, conn: _Exec, workflows: Iterable[str]) -> _StepEnds:
        """Lock ``workflows``' rows (in id order) for a write that ends steps of them.

        The rows are read when first needed: the statements sent meanwhile
        ride in the same round trip as the lock (and run after it).
        """
        params = {"ns": self._namespace, "ids": sorted(set(workflows))}
        locked = conn.execute(self._q.lock_workflows, params, prepare=True)
        return _StepEnds(conn, self._q, self._namespace, self._channel, self._done, locked)

    def _cancel_step(self, job_id: str, queue: str, workflow: str) -> bool:
        """Cancel a queued or waiting step; False if it moved meanwhile."""

        def write(conn: _Exec, woken: set[str]) -> bool:
            ends = self._step_ends(conn, (workflow,))
            t = plan_cancel_queued(queue=queue)
            params = {
                "ns": self._namespace,
                "channel": self._channel,
                "done": self._done,
                "batch": transition_document([(job_id, None, None, t)]),
            }
            rows = conn.execute(self._q.cancel_step, params, prepare=True).fetchall()
            if not rows:
                return False
            [(_, step_id, status, step_workflow, kids, _)] = rows
            ends.ended(step_id, STATUSES[status], step_workflow, kids)
            ends.flush()
            woken |= ends.queues
            return True

        return self._in_workflows(self._pooled, "cancel", write)

    def _live_keys(self, conn: _Exec, keys: list[str]) -> dict[str, str]:
        params = {"ns": self._namespace, "keys": keys}
        return dict(conn.execute(self._q.live_keys, params, prepare=True).fetchall())

    def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        return self._run(self._pooled, self._create_workflow_plan(workflow, steps))

    def create_workflow_in(
        self, connection: object, workflow: WorkflowInsert, steps: Sequence[Insert]
    ) -> bool:
        via = _Bound.check(connection)
        with via.scope("create_workflow"):
            return self._run(via, self._create_workflow_plan(workflow, steps))

    def _create_workflow_plan(
        self, workflow: WorkflowInsert, steps: Sequence[Insert]
    ) -> _Plan[bool]:
        with translate_errors("postgres: create_workflow"):
            document = step_document(steps, children_of(steps))
        params: dict[str, Any] = {
            "ns": self._namespace,
            "channel": self._channel,
            "workflow": workflow.id,
            "output": workflow.output,
            "live": len(steps),
            "batch": document,
        }
        keys = list({s.dedupe_key for s in steps if s.dedupe_key is not None})
        for _ in range(ENQUEUE_TRIES):
            if keys:
                live = yield _Fetch(
                    "create_workflow", self._q.live_keys, {"ns": self._namespace, "keys": keys}
                )
                held = _held_keys(steps, dict(live))
                if held:
                    # A retried create finds its own steps holding the keys.
                    known = {"ns": self._namespace, "workflow": workflow.id}
                    if (yield _Fetch("create_workflow", self._q.get_workflow, known)):
                        return False
                    raise DuplicateJob(
                        f"a live job already holds the dedupe key of step(s) {held}; "
                        "nothing was written"
                    )
            try:
                # Guarded by jobs_dedupe: a key taken since the look-up fails it.
                query = (
                    self._q.create_workflow_fair
                    if any(s.fair for s in steps)
                    else self._q.create_workflow
                )
                [(created, _)] = yield _Fetch("create_workflow", query, params, attempt=True)
            except BackendConflict:
                if not keys:
                    raise
                continue
            if created:
                yield _Wake(frozenset(s.queue for s in steps if s.status is JobStatus.QUEUED))
            return bool(created)
        raise BackendConflict(
            "postgres: the dedupe keys of this workflow stayed contended; try again"
        )

    def add_steps(self, lease: Lease, steps: Sequence[Insert]) -> bool | None:
        rows = self._fetch(
            "add_steps", self._q.step_of, {"ns": self._namespace, "id": lease.job_id}
        )
        if not rows or rows[0][0] is None:
            return None
        workflow: str = rows[0][0]
        if any(s.workflow != workflow for s in steps):
            return None
        children = children_of(steps)
        with translate_errors("postgres: add_steps"):
            document = step_document(steps, children)
        keys = list({s.dedupe_key for s in steps if s.dedupe_key is not None})
        params: dict[str, Any] = {
            "ns": self._namespace,
            "channel": self._channel,
            "workflow": workflow,
            "live": len(steps),
            "batch": document,
            "parent": lease.job_id,
            "kids": children.get(lease.job_id, []),
        }
        fence = {
            "ns": self._namespace,
            "id": lease.job_id,
            "token": lease.token,
            "attempt": lease.attempt,
        }

        def write(conn: _Exec, woken: set[str]) -> bool | None:
            ends = self._step_ends(conn, (workflow,))
            flow = ends.flows.get(workflow)
            if flow is None or flow.cancel_requested:
                return None
            if conn.execute(self._q.add_steps_fence, fence, prepare=True).fetchone() is None:
                return None
            first = {"ns": self._namespace, "id": steps[0].id}
            if conn.execute(self._q.job_exists, first, prepare=True).fetchone() is not None:
                return False
            if keys:
                held = _held_keys(steps, self._live_keys(conn, keys))
                if held:
                    raise DuplicateJob(
                        f"a live job already holds the dedupe key of step(s) {held}; "
                        "nothing was written"
                    )
            query = self._q.add_steps_fair if any(s.fair for s in steps) else self._q.add_steps
            conn.execute(query, params, prepare=True)
            woken.update(s.queue for s in steps if s.status is JobStatus.QUEUED)
            return True

        for _ in range(ENQUEUE_TRIES):
            try:
                return self._in_workflows(self._pooled, "add_steps", write)
            except BackendConflict:
                if not keys:
                    raise
        raise BackendConflict(
            "postgres: the dedupe keys of these steps stayed contended; try again"
        )

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        params = {"ns": self._namespace, "workflow": workflow_id}
        rows = self._fetch("get_workflow", self._q.get_workflow, params)
        return to_workflow(rows[0]) if rows else None

    def list_workflows(
        self, *, state: WorkflowState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Workflow]:
        params = {
            "ns": self._namespace,
            "state": None if state is None else str(state),
            "after": after,
            "limit": limit,
        }
        return [
            to_workflow(r) for r in self._fetch("list_workflows", self._q.list_workflows, params)
        ]

    def cancel_workflow(self, workflow_id: str) -> Workflow | None:
        def write(conn: _Exec, woken: set[str]) -> Workflow | None:
            ends = self._step_ends(conn, (workflow_id,))
            flow = ends.flows.get(workflow_id)
            if flow is None:
                return None
            if flow.state is WorkflowState.RUNNING:
                flow.cancel_requested = flow.changed = True
                params = {"ns": self._namespace, "workflow": workflow_id}
                rows = conn.execute(self._q.workflow_live_steps, params, prepare=True).fetchall()
                # In the order the steps were stored, as their events are.
                for step_id, queue, status, _ in sorted(rows, key=lambda r: r[3]):
                    if status == "running":
                        ends.flag.append(step_id)
                    else:
                        # Every waiting step is cancelled here: nothing is left to settle.
                        ends.write(step_id, workflow_id, plan_cancel_queued(queue=queue))
                ends.flush()
            params = {"ns": self._namespace, "workflow": workflow_id}
            row = conn.execute(self._q.get_workflow, params, prepare=True).fetchone()
            return None if row is None else to_workflow(row)

        return self._in_workflows(self._pooled, "cancel_workflow", write)

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        return self._run(self._pooled, self._get_many_plan(job_ids))

    def _get_many_plan(self, job_ids: Sequence[str]) -> _Plan[list[Job | None]]:
        answers: list[Job | None] = [None] * len(job_ids)
        params = {"ns": self._namespace, "ids": list(job_ids)}
        for row in (yield _Fetch("get_many", self._q.get_many, params)):
            answers[row[0] - 1] = to_job(row[1:])
        return answers


def refuse_duplicates(rows: Sequence[tuple[Any, ...]]) -> None:
    """Raise DuplicateJob when an enqueue statement's rows name a stored id."""
    dups = sorted(value for kind, value in rows if kind == "d")
    if dups:
        raise DuplicateJob(f"job id {dups[0]!r} already exists; nothing was enqueued")


class _Cand(NamedTuple):
    """A candidate a keyed round holds: leased speculatively ('c'), or parked and locked."""

    id: str
    queue: str
    priority: int
    rank: int
    seq: int
    key: str | None
    limit: Limit | None
    fair: bool
    parked: bool
    #: Where its row is in this transaction (its lease, or the locked row).
    tid: str
    #: started_at before the speculative lease (given back if not taken).
    old_started: datetime | None
    #: The claim's RETURNING columns (for a 'c' row: the lease, if taken).
    row: tuple[Any, ...]

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.priority, self.rank, self.seq)


class _Round:
    """One keyed claim round: its candidates, what plan_claim took, and what to write.

    Built from CLAIM_CANDIDATES' rows (the state rows, read under the keys'
    locks, are kept for :meth:`plan`). The candidates are the leased ones
    and, per parked (key, queue) due a look, its first parked ones, merged
    in claim order. A list read in full (as many rows as asked) may go on
    past what was read, so the round stops where it ends: at the last
    leased one, or at the last of a parked list that the plan took all of
    (one it held a job of back is of a full key, whose next ones would be
    held back too). Jobs after that point are for the next round.
    """

    def __init__(self, rows: Sequence[tuple[Any, ...]], fetch: int, pfetch: int, want: int) -> None:
        self.want = want
        self._fetch = fetch
        self._pfetch = pfetch
        self._state: list[tuple[Any, ...]] = []
        self._plain: list[_Cand] = []
        parked: dict[tuple[str, str], list[_Cand]] = {}
        self.ready: list[tuple[str, str]] = []
        j = KEYED_JOB
        for row in rows:
            kind = row[0]
            if kind == "c" or kind == "p":
                lim = Limit(row[4], row[5], row[6]) if row[3] else None
                job = row[j:]
                c = _Cand(
                    job[0],
                    job[1],
                    job[3],
                    job[CLAIM_RANK],
                    job[CLAIM_SEQ],
                    job[22],
                    lim,
                    job[24],
                    kind == "p",
                    row[2],
                    row[1],
                    job,
                )
                if kind == "c":
                    self._plain.append(c)
                else:
                    parked.setdefault((c.key or "", c.queue), []).append(c)
            elif kind == "q":
                self.ready.append((row[j + 22], row[j + 1]))
            elif kind != "l":
                # claim_state: kind, key, queue, n, c, r, per, at.
                self._state.append(
                    (kind, row[j + 22], row[j + 1], row[-1], row[4], row[5], row[6], row[1])
                )
        self._parked = parked
        every = self._plain + [c for p in parked.values() for c in p]
        every.sort(key=lambda c: c.position)
        self.cands = every
        self.parked_ids = [c.id for p in parked.values() for c in p]
        self.keys = {c.key for c in every if c.key is not None} | {k for k, _ in self.ready}
        #: Whether the round met limit keys (so the next claim goes keyed too).
        self.met = bool(self.keys)
        #: Where a next round starts, when a list read in full may go on.
        self.next_after: tuple[int, int, int] | None = None
        self.taken: list[_Cand] = []
        self.held: list[_Cand] = []
        self.starts: dict[str, int] = {}
        self.start_pers: dict[str, float] = {}
        self.now: datetime | None = None
        #: (key, queue) → (when to look again, None: never by time; wakes read).
        self.park_rows: dict[tuple[str, str], tuple[datetime | None, int]] = {}
        #: Per (key, queue) found full: the limit its parked-ahead jobs share
        #: (None: the operators', which every job of the key is held to).
        self.ahead: dict[tuple[str, str], Limit | None] = {}
        self.drop: list[tuple[str, str]] = []
        self.clocks: dict[str, int] = {}

    def take_first(self) -> None:
        """No key among the candidates: claim order alone decides (every lease is kept)."""
        self.taken = self.cands[: self.want]
        if len(self._plain) >= self._fetch and self._plain:
            self.next_after = self._plain[-1].position
        self._fair_clocks()

    def plan(self) -> None:
        """Decide by qw.limits.plan_claim from what claim_state read."""
        running: dict[str, int] = {}
        overrides: dict[str, Limit] = {}
        starts: dict[str, list[datetime]] = {}
        wakes: dict[tuple[str, str], int] = {}
        left: set[tuple[str, str]] = set()
        now: datetime | None = None
        for kind, key, queue, n, c, r, per, at in self._state:
            if kind == "n":
                now = at
            elif kind == "r":
                running[key] = int(n)
            elif kind == "o":
                overrides[key] = Limit(c, r, per)
            elif kind == "s":
                starts.setdefault(key, []).extend([at] * int(n))
            elif kind == "w":
                wakes[(key, queue)] = int(n)
            elif kind == "e":
                left.add((key, queue))
        assert now is not None
        self.now = now
        chosen = plan_claim(
            [Candidate(c.key, c.limit) for c in self.cands],
            running=running,
            starts=starts,
            overrides=overrides,
            now=now,
            limit=self.want,
        )
        taken_ids = {self.cands[i].id for i in chosen}
        # Skipped before the claim was full: held back by a full key.
        stop = chosen[-1] if len(chosen) >= self.want else len(self.cands)
        held = [c for c in self.cands[:stop] if c.id not in taken_ids and c.key is not None]
        held_ids = {c.id for c in held}
        ends = []
        if self._plain and len(self._plain) >= self._fetch:
            ends.append(self._plain[-1].position)
        for pair_list in self._parked.values():
            if len(pair_list) >= self._pfetch and not any(c.id in held_ids for c in pair_list):
                ends.append(pair_list[-1].position)
        cut = min(ends) if ends else None
        self.next_after = cut
        # plan_claim decides in order, so its choice up to the cut is what
        # it would choose from the candidates up to the cut alone.
        self.taken = [self.cands[i] for i in chosen if cut is None or self.cands[i].position <= cut]
        self.held = [c for c in held if cut is None or c.position <= cut]
        taken_ids = {c.id for c in self.taken}
        per_key: dict[str, int] = {}
        for c in self.taken:
            if c.key is None:
                continue
            per_key[c.key] = per_key.get(c.key, 0) + 1
            lim = effective_limit(c.key, c.limit, overrides)
            if lim is not None and lim.rate is not None and lim.per is not None:
                self.starts[c.key] = self.starts.get(c.key, 0) + 1
                self.start_pers[c.key] = max(self.start_pers.get(c.key, 0.0), lim.per)
        for c in self.held:
            assert c.key is not None
            lim = effective_limit(c.key, c.limit, overrides)
            after = running.get(c.key, 0) + per_key.get(c.key, 0)
            at = self._next_look(lim, after, starts.get(c.key, []), self.starts.get(c.key, 0))
            pair = (c.key, c.queue)
            if pair not in self.ahead:
                self.ahead[pair] = None if c.key in overrides else c.limit
            seen = self.park_rows.get(pair)
            if seen is None or _earlier(at, seen[0]):
                self.park_rows[pair] = (at, wakes.get(pair, 0))
        for pair in self.ready:
            if pair in self.park_rows or pair in left:
                continue
            if any(c.id not in taken_ids for c in self._parked.get(pair, ())):
                continue
            # Nothing of the pair is parked any more (its key's lock is held,
            # so nothing can be parked meanwhile).
            self.drop.append(pair)
        self._fair_clocks()

    def _next_look(
        self, lim: Limit | None, running: int, starts: list[datetime], started: int
    ) -> datetime | None:
        """When a key held back now may have room: its rate window reopening, else a recheck.

        None: not by time at all (a pause).
        """
        assert self.now is not None
        now = self.now
        if lim is not None and lim.concurrency == 0:
            # Paused: only set_limit (or a job of the key leaving running)
            # changes that, and both wake the key's parked rows.
            return None
        recheck = now + timedelta(seconds=PARK_RECHECK_S)
        if lim is None or (lim.concurrency is not None and running >= lim.concurrency):
            return recheck
        if lim.rate is not None and lim.per is not None:
            since = now - timedelta(seconds=lim.per)
            window = sorted([t for t in starts if t > since] + [now] * started, reverse=True)
            if len(window) >= lim.rate:
                # The rate-th latest start leaving the window frees one start.
                return window[lim.rate - 1] + timedelta(seconds=lim.per)
        return recheck

    def _fair_clocks(self) -> None:
        for c in self.taken:
            if c.fair and c.rank > self.clocks.get(c.queue, -1):
                self.clocks[c.queue] = c.rank

    def claimed(self) -> list[tuple[Any, ...]]:
        """The leased rows the round keeps (those of parked jobs come from CLAIM_APPLY)."""
        return [c.row for c in self.taken if not c.parked]

    def apply(
        self, conn: psycopg.Connection[Any], q: Queries, params: dict[str, Any]
    ) -> psycopg.Cursor[Any] | None:
        """Send the round's writes, if any (the caller's COMMIT follows them in the pipeline)."""
        ns = params["ns"]
        kept = {c.id for c in self.taken}
        back = [c for c in self._plain if c.id not in kept]
        held = {c.id for c in self.held}
        lease = [c for c in self.taken if c.parked]
        cur = None
        if back or lease or self.starts or self.ahead:
            keys = sorted(self.starts)
            ahead = sorted(self.ahead.items())
            own = [lim or Limit() for _, lim in ahead]
            write = {
                "ns": ns,
                "worker": params["worker"],
                "lease_s": params["lease_s"],
                "bids": [c.id for c in back],
                "btids": [c.tid for c in back],
                "bstarted": [c.old_started for c in back],
                "bpark": [c.id in held for c in back],
                "ids": [c.id for c in lease],
                "tids": [c.tid for c in lease],
                "now": self.now,
                "sk": keys,
                "sn": [self.starts[k] for k in keys],
                "sp": [self.start_pers[k] for k in keys],
                "ak": [k for (k, _), _ in ahead],
                "aq": [qu for (_, qu), _ in ahead],
                "ao": [lim is None for _, lim in ahead],
                "ah": [lim is not None for _, lim in ahead],
                "ac": [lim.concurrency for lim in own],
                "ar": [lim.rate for lim in own],
                "ap": [lim.per for lim in own],
                "ahead": PARK_AHEAD,
            }
            cur = conn.execute(q.claim_apply, write, prepare=True)
        if self.park_rows or self.drop:
            pairs = sorted(set(self.park_rows) | set(self.drop))
            conn.execute(
                q.park_lock,
                {"ns": ns, "k": [k for k, _ in pairs], "q": [qu for _, qu in pairs]},
                prepare=True,
            )
            if self.park_rows:
                rows = sorted(self.park_rows.items())
                conn.execute(
                    q.park_set,
                    {
                        "ns": ns,
                        "k": [k for (k, _), _ in rows],
                        "q": [qu for (_, qu), _ in rows],
                        "t": [t for _, (t, _) in rows],
                        "w": [w for _, (_, w) in rows],
                    },
                    prepare=True,
                )
            if self.drop:
                drop = sorted(self.drop)
                conn.execute(
                    q.park_drop,
                    {"ns": ns, "k": [k for k, _ in drop], "q": [qu for _, qu in drop]},
                    prepare=True,
                )
        if self.clocks:
            queues = sorted(self.clocks)
            conn.execute(
                q.fair_clock,
                {"ns": ns, "q": queues, "r": [self.clocks[qu] for qu in queues]},
                prepare=True,
            )
        return cur


def _earlier(a: datetime | None, b: datetime | None) -> bool:
    """Whether look-again time ``a`` comes before ``b`` (None is never)."""
    return a is not None and (b is None or a < b)


def _roll_back(conn: psycopg.Connection[Any]) -> None:
    """End a transaction opened by hand that failed, so the pool gets the connection clean."""
    if conn.closed or conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        conn.execute(b"ROLLBACK")
    except psycopg.Error:
        # Broken meanwhile: the pool checks it and replaces it.
        log.debug("qw_postgres: ROLLBACK after a failed claim failed", exc_info=True)


def _held_keys(steps: Sequence[Insert], live: dict[str, str]) -> list[str]:
    """Steps :func:`plan_enqueue` would not insert: their dedupe key is held."""
    answers, _ = plan_enqueue(steps, live)
    return [a.id for a in answers if not a.created]


class _Flow:
    """A workflow's row, read under its lock, and what this write changes in it."""

    __slots__ = ("cancel_requested", "cancelled", "changed", "failed", "id", "live", "state")

    def __init__(
        self,
        id_: str,
        state: WorkflowState,
        cancel_requested: bool,
        live: int,
        failed: int,
        cancelled: int,
    ) -> None:
        self.id = id_
        self.state = state
        self.cancel_requested = cancel_requested
        self.live = live
        self.failed = failed
        self.cancelled = cancelled
        self.changed = False


class _StepEnds:
    """One transaction's ended steps: settles their children, counts their workflows.

    The PostgreSQL side of :func:`qw.transitions.settle`. It is made once the
    rows of every workflow the write touches are locked (in id order, before
    any job row of them): every write that ends a step, adds steps or
    cancels a workflow does so, so such writes serialise per workflow, and
    the children they lock (in whatever order) are never locked by another
    at the same time: no deadlock between finishes, and a child is promoted
    exactly once however many parents end at once.

    :meth:`count_ended` is one statement per ended parent, whatever its
    fan-out; the transitions :meth:`apply_settled` gets, and the workflows'
    new counters and states, are written together by :meth:`flush` in one
    statement.
    """

    def __init__(
        self,
        conn: _Exec,
        q: Queries,
        namespace: str,
        channel: str,
        done: str,
        locked: psycopg.Cursor[Any],
    ) -> None:
        self._conn = conn
        self._q = q
        self._ns = namespace
        self._channel = channel
        self._done = done
        self._locked: psycopg.Cursor[Any] | None = locked
        self._flows: dict[str, _Flow] = {}
        #: Running steps to flag (cancel_workflow).
        self.flag: list[str] = []
        #: Queues whose steps were queued by a settle.
        self.queues: set[str] = set()
        self._writes: list[tuple[str, None, None, Transition]] = []
        # Steps known to have no children, whose end settles nothing.
        self._kids: dict[str, int] = {}
        self._flow: _Flow | None = None

    @property
    def flows(self) -> dict[str, _Flow]:
        """The locked workflows' rows, by id."""
        if self._locked is not None:
            for row in self._locked.fetchall():
                self._flows[row[0]] = _Flow(row[0], STATES[row[1]], row[2], row[3], row[4], row[5])
            self._locked = None
        return self._flows

    def ended(self, step_id: str, status: JobStatus, workflow: str, kids: int | None) -> None:
        """Count a step this write ended, and settle what its end settles."""
        flow = self._flow = self.flows[workflow]
        _count(flow, status)
        if kids is not None:
            self._kids[step_id] = kids
        settle(self, [(step_id, status)])

    def write(self, step_id: str, workflow: str, transition: Transition) -> None:
        """End a queued or waiting step by ``transition`` (cancel_workflow)."""
        self._writes.append((step_id, None, None, transition))
        _count(self.flows[workflow], transition.status)

    def count_ended(self, parent: str, status: JobStatus) -> list[Ready]:
        if self._kids.get(parent) == 0:
            return []
        params = {
            "ns": self._ns,
            "parent": parent,
            "failed": status is not JobStatus.SUCCEEDED,
        }
        ready = []
        for step_id, queue, policy, failed_parents, kids in self._conn.execute(
            self._q.count_ended, params, prepare=True
        ).fetchall():
            self._kids[step_id] = kids
            ready.append(Ready(step_id, queue, PARENT_FAILURES[policy], tuple(failed_parents)))
        return ready

    def apply_settled(self, step: Ready, transition: Transition) -> None:
        # Written by flush(), all at once: a settled step is counted by no
        # later count_ended (each of its parents has ended, once).
        self._writes.append((step.id, None, None, transition))
        if transition.status is JobStatus.QUEUED:
            self.queues.add(step.queue)
        else:
            assert self._flow is not None
            _count(self._flow, transition.status)

    def flush(self) -> None:
        """Write the settled transitions, the flags and the workflows' rows."""
        flows = []
        for flow in self.flows.values():
            if not flow.changed:
                continue
            finished = False
            ev_type = ev_data = None
            if flow.live == 0 and flow.state is WorkflowState.RUNNING:
                flow.state = plan_workflow_end(
                    failed=flow.failed,
                    cancelled=flow.cancelled,
                    cancel_requested=flow.cancel_requested,
                )
                finished = True
                ev_type, ev_data = workflow_event(flow.id, flow.state)
            flows.append(
                (
                    flow.id,
                    flow.live,
                    flow.failed,
                    flow.cancelled,
                    flow.state,
                    flow.cancel_requested,
                    finished,
                    ev_type,
                    ev_data,
                )
            )
        if not (flows or self._writes or self.flag):
            return
        # Nothing is read back: in a pipeline this rides with the COMMIT.
        params = {
            "ns": self._ns,
            "channel": self._channel,
            "done": self._done,
            "batch": transition_document(self._writes),
            "flag": self.flag,
            "flows": flows_document(flows),
        }
        self._conn.execute(self._q.ends, params, prepare=True)


def _count(flow: _Flow, status: JobStatus) -> None:
    """A step of ``flow`` ended with ``status``."""
    flow.live -= 1
    flow.failed += status is JobStatus.FAILED
    flow.cancelled += status is JobStatus.CANCELLED
    flow.changed = True


def _distinct_job_batches(finishes: Sequence[Finish]) -> Iterator[list[Finish]]:
    """Split ``finishes`` so no batch names a job twice, keeping their order.

    One UPDATE touches a row at most once, so a repeat of the same finish in
    one call must run after the first, as it would in a later call.
    """
    batch: list[Finish] = []
    seen: set[str] = set()
    for finish in finishes:
        job_id = finish.lease.job_id
        if job_id in seen:
            yield batch
            batch, seen = [], set()
        batch.append(finish)
        seen.add(job_id)
    if batch:
        yield batch


def migrate(url: str) -> int:
    """Create or upgrade the qw schema named by ``url`` (``?schema=``); return its version.

    Idempotent, and safe when several processes run it at once. This is what
    ``qw migrate`` calls for a postgres URL.
    """
    settings = parse_url(url)
    with (
        translate_errors("postgres: migrate"),
        psycopg.connect(_full_conninfo(settings.conninfo), autocommit=True) as conn,
    ):
        return apply_migrations(conn, settings.schema)
