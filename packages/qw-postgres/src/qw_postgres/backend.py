"""The ``postgres`` backend: one namespace of a qw schema in PostgreSQL.

Every write is a single statement run on a pooled autocommit connection, so
it costs one round trip and commits atomically: a transition, its outbox
event and its NOTIFY either all happen or none do. The statements decide no
status: :mod:`qw.transitions` does, and they apply what it decided. Only
three operations read first: an enqueue whose jobs carry dedupe keys (the
live holders, then the insert), a reclaim (the expired leases, locked, then
their transitions, in one transaction) and the cancel of a queued job. All
times come from the server's ``now()``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar, Self

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

from qw.capabilities import Capabilities
from qw.contract import Finish, Insert, Switches
from qw.errors import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    DuplicateJob,
    SchemaError,
)
from qw.model import (
    Claim,
    Enqueued,
    Event,
    Job,
    JobStatus,
    Lease,
    PurgeResult,
    WorkerInfo,
)
from qw.transitions import (
    plan_cancel_queued,
    plan_enqueue,
    plan_reclaim,
    repeat_status,
)
from qw.validation import validate_namespace
from qw.wakeup import Listener, WakeupHub
from qw_postgres.batches import (
    enqueue_document,
    enqueue_rows,
    finish_documents,
    renew_document,
    transition_document,
)
from qw_postgres.errors import translate_errors
from qw_postgres.listening import (
    channel_name,
    listener_application_name,
    make_listen,
)
from qw_postgres.queries import ENQUEUE_COPY_TYPES, Queries
from qw_postgres.rows import STATUSES, to_event, to_job, to_worker
from qw_postgres.schema import LATEST_VERSION, apply_migrations, installed_version
from qw_postgres.settings import Settings, parse_url

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


class PostgresBackend:
    """A namespace in a PostgreSQL schema; see the module docstring."""

    name: ClassVar[str] = "postgres"
    capabilities = Capabilities(
        thread_safe=True,
        multi_process=True,
        native_wakeup=True,
        durable=True,
        queue_switch=True,
    )

    def __init__(self, settings: Settings, *, namespace: str) -> None:
        self._namespace = validate_namespace(namespace)
        self._settings = settings
        self._schema = settings.schema
        self._q = _queries(settings.schema)
        self._channel = channel_name(settings.schema, self._namespace)
        self._conninfo = _full_conninfo(settings.conninfo)
        self._hub = WakeupHub(poll_interval=settings.poll_interval)
        self._lock = threading.Lock()
        self._listener: Listener | None = None
        self._closed = False
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
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self._pool.close()

    @contextmanager
    def _conn(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise BackendUnavailable(f"postgres: {what} on a closed backend")
        with translate_errors(f"postgres: {what}"), self._pool.connection() as conn:
            yield conn

    def _fetch(self, what: str, query: bytes, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with self._conn(what) as conn:
            return conn.execute(query, params, prepare=True).fetchall()

    def _count(self, what: str, query: bytes, params: dict[str, Any]) -> int:
        with self._conn(what) as conn:
            return conn.execute(query, params, prepare=True).rowcount

    def now(self) -> datetime:
        row = self._fetch("now", self._q.now, {})[0]
        value: datetime = row[0]
        return value

    # -- producing -------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        if not jobs:
            return []
        keys = list({j.dedupe_key for j in jobs if j.dedupe_key is not None})
        if not keys:
            # Nothing to look up: every job is inserted, in one statement.
            answers, _ = plan_enqueue(jobs, {})
            self._insert_jobs(jobs, [])
            self._hub.notify({j.queue for j in jobs})
            return answers
        for _ in range(ENQUEUE_TRIES):
            rows = self._fetch("enqueue", self._q.live_keys, {"ns": self._namespace, "keys": keys})
            answers, insert = plan_enqueue(jobs, dict(rows))
            chosen = set(insert)
            skipped = [j.id for i, j in enumerate(jobs) if i not in chosen]
            try:
                # Guarded by jobs_dedupe: a key taken since the look-up fails it.
                self._insert_jobs([jobs[i] for i in insert], skipped)
            except BackendConflict:
                continue
            self._hub.notify({jobs[i].queue for i in insert})
            return answers
        raise BackendConflict("postgres: the dedupe keys of this batch stayed contended; try again")

    def _insert_jobs(self, jobs: Sequence[Insert], skipped_ids: list[str]) -> None:
        """Insert ``jobs`` (one JSON document, or a COPY for a large batch), all or nothing.

        ``skipped_ids`` are the batch's jobs answered by a dedupe key: an id
        among them that is already stored refuses the whole batch too.
        """
        params: dict[str, Any] = {
            "ns": self._namespace,
            "channel": self._channel,
            "skipped_ids": skipped_ids,
        }
        if len(jobs) < COPY_MIN_JOBS:
            with translate_errors("postgres: enqueue"):
                params["batch"] = enqueue_document(jobs)
            rows = self._fetch("enqueue", self._q.enqueue, params)
        else:
            with self._conn("enqueue") as conn, conn.transaction():
                conn.execute(self._q.enqueue_stage)
                with conn.cursor().copy(self._q.enqueue_copy) as copy:
                    copy.set_types(ENQUEUE_COPY_TYPES)
                    for row in enqueue_rows(jobs):
                        copy.write_row(row)
                rows = conn.execute(self._q.enqueue_staged, params, prepare=True).fetchall()
        dups = sorted(value for kind, value in rows if kind == "d")
        if dups:
            raise DuplicateJob(f"job id {dups[0]!r} already exists; nothing was enqueued")

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
            query = self._q.claim_one
            params["queue"] = queues[0]
        else:
            query = self._q.claim_many
            params["queues"] = list(queues)
        rows = self._fetch("claim", query, params)
        # RETURNING order is unspecified; seq is the store's FIFO order.
        rows.sort(key=lambda r: (r[3], r[18]))
        claims = []
        for row in rows:
            job = to_job(row)
            assert job.lease_expires_at is not None
            claims.append(Claim(job, Lease(job.id, row[17], job.lease_expires_at)))
        return claims

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

    def finish(self, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        answers: list[JobStatus | None] = []
        for batch in _distinct_job_batches(finishes):
            with translate_errors("postgres: finish"):
                documents = list(finish_documents(batch))
            for part, document in documents:
                answers.extend(self._finish_batch(part, document))
        return answers

    def _finish_batch(self, finishes: Sequence[Finish], document: str) -> list[JobStatus | None]:
        """Apply one document's transitions; answer the rest by :func:`repeat_status`."""
        params = {"ns": self._namespace, "channel": self._channel, "batch": document}
        answers: list[JobStatus | None] = [None] * len(finishes)
        racing: list[int] = []
        for kind, ord_, status, finished_by in self._fetch("finish", self._q.finish, params):
            if kind == "u":
                answers[ord_ - 1] = finishes[ord_ - 1].transition.status
            elif kind == "p":
                t = finishes[ord_ - 1].transition
                answers[ord_ - 1] = repeat_status(t, STATUSES[status], finished_by)
            elif kind == "r":
                racing.append(ord_ - 1)
        if racing:
            # Another session moved the job between our snapshot and our
            # update (perhaps the same finish, sent twice): read what won.
            again = {"ns": self._namespace, "ids": [finishes[i].lease.job_id for i in racing]}
            for ord_, status, finished_by in self._fetch("finish", self._q.finished_by, again):
                index = racing[ord_ - 1]
                t = finishes[index].transition
                answers[index] = repeat_status(t, STATUSES[status], finished_by)
        return answers

    def reclaim_expired(self) -> int:
        ns = {"ns": self._namespace}
        with self._conn("reclaim_expired") as conn, conn.transaction():
            expired = conn.execute(self._q.reclaim_expired, ns, prepare=True).fetchall()
            if not expired:
                return 0
            document = transition_document(
                (job_id, token, attempts, plan_reclaim(attempts=attempts, max_attempts=m, queue=q))
                for job_id, token, attempts, m, q in expired
            )
            params = {"ns": self._namespace, "channel": self._channel, "batch": document}
            row = conn.execute(self._q.reclaim, params, prepare=True).fetchone()
        return 0 if row is None else int(row[0])

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        self._ensure_listener()
        return self._hub.wait(queues, timeout)

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
        params = {
            "ns": self._namespace,
            "queue": "" if queue is None else queue,
            "enabled": enabled,
            "channel": self._channel,
        }
        self._fetch("set_enabled", self._q.set_switch, params)
        if enabled:
            self._hub.notify_all()

    def switches(self) -> Switches:
        rows = self._fetch("switches", self._q.switches, {"ns": self._namespace})
        by_queue = dict(rows)
        enabled = by_queue.pop("", True)
        return Switches(enabled=enabled, queues=by_queue)

    # -- inspection and operations -------------------------------------------

    def get(self, job_id: str) -> Job | None:
        rows = self._fetch("get", self._q.get, {"ns": self._namespace, "id": job_id})
        return to_job(rows[0]) if rows else None

    def counts(self) -> dict[str, dict[JobStatus, int]]:
        counts: dict[str, dict[JobStatus, int]] = {}
        for queue, status, n in self._fetch("counts", self._q.counts, {"ns": self._namespace}):
            counts.setdefault(queue, {})[JobStatus(status)] = int(n)
        return counts

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Job]:
        params = {
            "ns": self._namespace,
            "queue": queue,
            "status": None if status is None else str(status),
            "after": after,
            "limit": limit,
        }
        return [to_job(r) for r in self._fetch("list_jobs", self._q.list_jobs, params)]

    def cancel(self, job_id: str) -> JobStatus | None:
        params = {"ns": self._namespace, "id": job_id}
        for _ in range(10):
            rows = self._fetch("cancel", self._q.cancel, params)
            if not rows:
                return None
            kind, status, queue = rows[0]
            current = STATUSES[status]
            if kind == "f" or current.is_terminal:
                return current
            if current is JobStatus.QUEUED:
                t = plan_cancel_queued(queue=queue)
                apply = {
                    "ns": self._namespace,
                    "channel": self._channel,
                    "batch": transition_document([(job_id, None, None, t)]),
                }
                [(applied, _)] = self._fetch("cancel", self._q.cancel_queued, apply)
                if applied:
                    return t.status
            # The job changed under us (claimed, or finished): look again.
        raise BackendError(f"postgres: cancel of {job_id!r} kept racing other writers")

    # -- the outbox --------------------------------------------------------------

    def fetch_events(self, limit: int = 100) -> list[Event]:
        rows = self._fetch(
            "fetch_events", self._q.fetch_events, {"ns": self._namespace, "limit": limit}
        )
        return [to_event(r) for r in rows]

    def ack_events(self, cursors: Sequence[int]) -> int:
        wanted = sorted({c for c in cursors if c in _INT8})
        if not wanted:
            return 0
        return self._count(
            "ack_events", self._q.ack_events, {"ns": self._namespace, "cursors": wanted}
        )

    def purge(self, older_than: float) -> PurgeResult:
        params = {"ns": self._namespace, "older_than": float(older_than), "batch": PURGE_BATCH}
        totals = []
        for query in (self._q.purge_jobs, self._q.purge_events):
            total = 0
            while True:
                n = self._count("purge", query, params)
                total += n
                if n < PURGE_BATCH:
                    break
            totals.append(total)
        return PurgeResult(jobs=totals[0], events=totals[1])


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
