"""The ``mongodb`` backend: one database per namespace, single-document atomicity only.

Every state change is one compare-and-set on one job document (status and
lease token in the filter), so the backend needs neither transactions nor a
replica set. Events ride in the job document that makes the transition and
are relayed into ``events`` under a deterministic ``_id`` afterwards (see
:mod:`qw_mongodb.documents`). Times come from :class:`~qw_mongodb.clock.ServerClock`.
Every transition is decided by :mod:`qw.transitions`; this module only
applies it under the right compare-and-set.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self

from pymongo import MongoClient, ReturnDocument, WriteConcern
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    CollectionInvalid,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)
from pymongo.errors import ConfigurationError as PyMongoConfigurationError
from pymongo.read_preferences import ReadPreference

from qw.capabilities import Capabilities
from qw.contract import Finish, Insert, Switches
from qw.errors import (
    BackendConflict,
    ConfigurationError,
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
    Transition,
    plan_cancel_queued,
    plan_enqueue,
    plan_reclaim,
    repeat_status,
)
from qw.translate import map_exceptions
from qw.validation import decode_json
from qw.wakeup import Listener, WakeupHub
from qw_mongodb import documents as d
from qw_mongodb.clock import ServerClock, as_utc
from qw_mongodb.config import MongoOptions, WakeupMode, parse_url
from qw_mongodb.errors import ERRORS, translated
from qw_mongodb.names import (
    COUNTERS,
    EVENTS,
    JOBS,
    META,
    SIGNALS,
    SWITCHES,
    WORKERS,
    database_name,
)
from qw_mongodb.wakeups import (
    SIGNALS_MAX_DOCS,
    SIGNALS_SIZE_BYTES,
    listen_change_stream,
    listen_tailable,
    signal_document,
)

__all__ = ["DEFAULT_WRITE_CONCERN", "SCHEMA_VERSION", "MongoBackend", "choose_write_concern"]

log = logging.getLogger("qw.mongodb")

SCHEMA_VERSION = 1
#: Used unless the application's client sets a write concern of its own.
DEFAULT_WRITE_CONCERN = WriteConcern(w="majority", j=True)
# Wake-up signals and clock stamps are not data: losing one costs a poll.
_LIGHT_WRITE_CONCERN = WriteConcern(w=1)
ENQUEUE_TRIES = 20
# A multi-job enqueue whose producer died between insert and commit is
# settled by the sweeper once it is this old.
STAGED_GRACE = timedelta(seconds=60)
RECLAIM_BATCH = 1000
LISTEN_READY_S = 5.0
RELAY_BATCH = 100
_NAMESPACE_SWITCH = "namespace"
_QUEUE_SWITCH = "queue:"


class MongoBackend:
    """A qw namespace in a MongoDB database; see the module docstring."""

    name: ClassVar[str] = "mongodb"

    def __init__(
        self,
        client: MongoClient[Any],
        *,
        namespace: str,
        options: MongoOptions | None = None,
        owns_client: bool = False,
    ) -> None:
        options = options or MongoOptions()
        # Validates the namespace and prefix before any name reaches the driver.
        self._database_name = database_name(namespace, options.database_prefix)
        self._namespace = namespace
        self._options = options
        self._client = client
        self._owns_client = owns_client
        self._closed = False
        self._listener: Listener | None = None
        self.write_concern = choose_write_concern(getattr(client, "write_concern", None))
        self._db: Database[Any] = client.get_database(self._database_name)
        self._jobs = self._collection(JOBS)
        self._events = self._collection(EVENTS)
        self._counters = self._collection(COUNTERS)
        self._workers = self._collection(WORKERS)
        self._switches = self._collection(SWITCHES)
        self._meta = self._collection(META)
        self._clock_stamps = self._collection(META, _LIGHT_WRITE_CONCERN)
        self._signals = self._collection(SIGNALS, _LIGHT_WRITE_CONCERN)
        self._clock = ServerClock(self._stamp)
        self.hub = WakeupHub(poll_interval=options.poll_interval)
        wc = self.write_concern.document
        self.capabilities = Capabilities(
            thread_safe=True,
            multi_process=True,
            native_wakeup=options.wakeup != "poll",
            durable=bool(wc.get("j")) or wc.get("w") == "majority",
        )
        self._signals_on = False
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- opening -----------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> Self:
        """Open ``mongodb://…`` or ``mongodb+srv://…``; qw's options are ``qw_*`` query keys."""
        database_name(namespace)  # refuse a bad namespace before any I/O
        client_url, options = parse_url(url)
        database_name(namespace, options.database_prefix)
        with map_exceptions(ERRORS):
            try:
                client: MongoClient[Any] = MongoClient(client_url, tz_aware=True, appname="qw")
            except PyMongoConfigurationError as exc:
                raise ConfigurationError(f"MongoDB URL not usable: {exc}") from None
        return cls(client, namespace=namespace, options=options, owns_client=True)

    @classmethod
    def from_client(
        cls,
        client: MongoClient[Any],
        *,
        namespace: str,
        database_prefix: str = "qw_",
        wakeup: WakeupMode = "auto",
        poll_interval: float = 0.5,
    ) -> Self:
        """Use a client the application already has; :meth:`close` leaves it open."""
        options = MongoOptions(
            database_prefix=database_prefix, wakeup=wakeup, poll_interval=poll_interval
        )
        return cls(client, namespace=namespace, options=options, owns_client=False)

    def _collection(self, name: str, wc: WriteConcern | None = None) -> Collection[Any]:
        # Claims and compare-and-sets must read what the primary holds.
        return self._db.get_collection(
            name,
            write_concern=wc or self.write_concern,
            read_preference=ReadPreference.PRIMARY,
        )

    @translated
    def _setup(self) -> None:
        schema = self._meta.find_one_and_update(
            {"_id": "schema"},
            {"$setOnInsert": {"version": SCHEMA_VERSION}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert schema is not None  # upserted
        if schema.get("version") != SCHEMA_VERSION:
            raise SchemaError(
                f"database {self._database_name!r} has qw-mongodb schema "
                f"{schema.get('version')!r}; this code knows {SCHEMA_VERSION}"
            )
        try:
            for collection, indexes in (
                (self._jobs, d.job_indexes()),
                (self._events, d.event_indexes()),
            ):
                for index in indexes:
                    spec = dict(index.document)
                    collection.create_index(list(spec.pop("key").items()), **spec)
        except OperationFailure as exc:
            raise SchemaError(
                f"qw's indexes in {self._database_name!r} conflict with existing ones: {exc}"
            ) from exc
        self._clock.measure()
        mode = self._wakeup_mode()
        if mode == "tailable":
            self._ensure_signals()
        self._signals_on = SIGNALS in self._db.list_collection_names()
        if mode != "poll":
            self._listener = Listener(
                self.hub, self._listen_fn(mode), name=f"qw-mongodb-wakeup[{self._namespace}]"
            )
            # Open with the channel live: a connect arriving later wakes every
            # waiter (signals may have been missed), a spurious wake-up that
            # a worker's first quiet wait should not see.
            if not self._listener.start(ready_timeout=LISTEN_READY_S):
                log.warning(
                    "qw-mongodb: %s wake-ups not live after %.0f s; polling until they are",
                    mode,
                    LISTEN_READY_S,
                )

    def _wakeup_mode(self) -> WakeupMode:
        if self._options.wakeup != "auto":
            return self._options.wakeup
        try:
            hello = self._client.admin.command("hello")
        except OperationFailure:  # servers before 4.4.2 know only the old name
            hello = self._client.admin.command("isMaster")
        replicated = "setName" in hello or hello.get("msg") == "isdbgrid"
        return "change_stream" if replicated else "tailable"

    def _ensure_signals(self) -> None:
        if SIGNALS in self._db.list_collection_names():
            return
        try:
            self._db.create_collection(
                SIGNALS, capped=True, size=SIGNALS_SIZE_BYTES, max=SIGNALS_MAX_DOCS
            )
        except CollectionInvalid:
            return  # another process made it first
        except OperationFailure as exc:
            if exc.code != 48:  # NamespaceExists: another process made it first
                raise
            return
        self._signals.insert_one(signal_document([]))

    def _listen_fn(self, mode: WakeupMode) -> Any:
        if mode == "change_stream":
            return lambda ready, stopping: listen_change_stream(self._db, self.hub, ready, stopping)
        return lambda ready, stopping: listen_tailable(self._signals, self.hub, ready, stopping)

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def database(self) -> str:
        """The database that holds this namespace."""
        return self._database_name

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.stop()
        if self._owns_client:
            self._client.close()

    @translated
    def now(self) -> datetime:
        return self._clock.now()

    def _stamp(self) -> datetime:
        doc = self._clock_stamps.find_one_and_update(
            {"_id": "clock"},
            {"$currentDate": {"now": True}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None  # upserted
        return as_utc(doc["now"])

    def _reserve(self, counter: str, n: int) -> int:
        """The first of ``n`` fresh numbers from ``counter`` (a store-side sequence)."""
        for _ in range(2):
            try:
                doc = self._counters.find_one_and_update(
                    *d.counter_bump(counter, n), upsert=True, return_document=ReturnDocument.AFTER
                )
                assert doc is not None  # upserted
                return int(doc["n"]) - n + 1
            except DuplicateKeyError:
                continue  # two first upserts raced; the document exists now
        raise BackendConflict(f"counter {counter!r} could not be advanced")

    def _signal(self, queues: Iterable[str] | None) -> None:
        """Wake local waiters, and other processes' through the signals collection."""
        names = None if queues is None else sorted(set(queues))
        if names is None:
            self.hub.notify_all()
        else:
            self.hub.notify(names)
        if self._signals_on:
            try:
                self._signals.insert_one(signal_document(names))
            except PyMongoError as exc:
                # The work is stored; a lost wake-up only costs others a poll.
                log.warning("qw-mongodb: wake-up signal not written: %r", exc)

    # -- producing ---------------------------------------------------------

    @translated
    def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        for attempt in range(ENQUEUE_TRIES):
            answers = self._try_enqueue(jobs)
            if answers is not None:
                return answers
            # A dedupe key became live between the look-up and the insert.
            time.sleep(min(0.001 * 2**attempt, 0.05))
        raise BackendConflict("dedupe keys of this batch stayed contended; try again")

    def _try_enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued] | None:
        now = self._clock.now()
        keys = {j.dedupe_key for j in jobs if j.dedupe_key is not None}
        live = (
            {
                doc["dedupe_live"]: doc["_id"]
                for doc in self._jobs.find(d.live_keys_filter(keys), {"dedupe_live": 1})
            }
            if keys
            else {}
        )
        answers, insert = plan_enqueue(jobs, live)
        # A job answered by its dedupe key is not inserted, so the unique _id
        # cannot refuse its id; an id already present must still be refused.
        if len(insert) < len(jobs):
            inserted = set(insert)
            skipped = [j.id for i, j in enumerate(jobs) if i not in inserted]
            clash = self._jobs.find_one({"_id": {"$in": skipped}}, {"_id": 1})
            if clash is not None:
                raise DuplicateJob(f"job id {clash['_id']!r} already exists")
        if not insert:
            return answers
        first = self._reserve(d.JOB_SEQ, len(insert))
        # Several jobs are inserted staged and committed by one update, so
        # that a failure part-way can be rolled back and nobody claims a job
        # of a batch that is then undone.
        batch = None if len(insert) == 1 else secrets.token_hex(12)
        docs = [
            d.job_document(jobs[i], seq=first + k, now=now, batch=batch)
            for k, i in enumerate(insert)
        ]
        try:
            if batch is None:
                self._jobs.insert_one(docs[0])
            else:
                self._jobs.insert_many(docs, ordered=True)
        except (DuplicateKeyError, BulkWriteError) as exc:
            self._roll_back(batch)
            if isinstance(exc, BulkWriteError) and any(
                e.get("code") != 11000 for e in exc.details.get("writeErrors", [])
            ):
                raise
            ids = [doc["_id"] for doc in docs]
            clash = self._jobs.find_one({"_id": {"$in": ids}}, {"_id": 1})
            if clash is not None:
                raise DuplicateJob(f"job id {clash['_id']!r} already exists") from None
            return None
        except PyMongoError:
            self._roll_back(batch)
            raise
        if batch is not None:
            self._commit(batch)
        self._signal(jobs[i].queue for i in insert)
        return answers

    def _commit(self, batch: str) -> None:
        # Idempotent, so worth repeating once or twice: every job of the batch
        # is inserted, and an error here would leave the caller unsure. If it
        # still fails, the sweeper finishes a commit that had begun and undoes
        # one that had not.
        for attempt in range(3):
            try:
                self._jobs.update_many(*d.commit_batch(batch))
                return
            except PyMongoError:
                if attempt == 2:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _roll_back(self, batch: str | None) -> None:
        if batch is None:
            return
        try:
            self._jobs.delete_many({"batch": batch, "status": d.PENDING})
        except PyMongoError as exc:
            # Staged jobs stay invisible; the sweeper removes them later.
            log.warning("qw-mongodb: staged batch %s not rolled back yet: %r", batch, exc)

    # -- working -----------------------------------------------------------

    @translated
    def claim(
        self, queues: Sequence[str], *, worker: str, lease_s: float, limit: int
    ) -> list[Claim]:
        self.hub.arm(queues)
        switches = self.switches()
        open_queues = [q for q in queues if switches.queue_enabled(q)]
        if not open_queues:
            return []
        now = self._clock.now()
        token = secrets.token_hex(16)
        update = d.claim_update(token, worker, now, lease_s)
        if limit == 1:
            doc = self._jobs.find_one_and_update(
                d.claim_filter(open_queues, now),
                update,
                sort=d.CLAIM_SORT,
                return_document=ReturnDocument.AFTER,
            )
            return [] if doc is None else [_claim(doc)]
        candidates: list[str] = []
        stamped = 0
        for _ in range(3):
            ids = [
                doc["_id"]
                for doc in self._jobs.find(
                    d.claim_filter(open_queues, now),
                    {"_id": 1},
                    sort=d.CLAIM_SORT,
                    limit=limit - stamped,
                )
            ]
            if not ids:
                break
            candidates.extend(ids)
            won = self._jobs.update_many(d.stamp_filter(ids, open_queues, now), update)
            stamped += won.modified_count
            if won.modified_count == len(ids) or stamped >= limit:
                break
        if not stamped:
            return []
        docs = self._jobs.find({"_id": {"$in": candidates}, "token": token}, sort=d.CLAIM_SORT)
        return [_claim(doc) for doc in docs]

    @translated
    def renew(self, leases: Sequence[Lease], lease_s: float) -> list[Lease | None]:
        answers: list[Lease | None] = []
        for lease in leases:
            expires = d.lease_expiry(self._clock.now(), lease_s)
            doc = self._jobs.find_one_and_update(
                d.fence_filter(lease.job_id, lease.token, lease.attempt),
                d.renew_update(expires),
                projection={"cancel_requested": 1},
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                answers.append(None)
                continue
            answers.append(
                Lease(
                    lease.job_id,
                    lease.token,
                    expires,
                    cancel_requested=bool(doc.get("cancel_requested")),
                )
            )
        return answers

    @translated
    def finish(self, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        requeued: set[str] = set()
        answers: list[JobStatus | None] = []
        for finish in finishes:
            lease, t = finish.lease, finish.transition
            after = self._jobs.find_one_and_update(
                d.fence_filter(lease.job_id, lease.token, lease.attempt),
                d.transition_update(
                    t,
                    now=self._clock.now(),
                    event_key=d.finish_event_key(lease.job_id, lease.token),
                ),
                projection={"queue": 1, "outbox": 1},
                return_document=ReturnDocument.AFTER,
            )
            if after is None:
                answers.append(self._repeat(lease.job_id, t))
                continue
            self._relay(after)
            if t.status is JobStatus.QUEUED:
                requeued.add(after["queue"])
            answers.append(t.status)
        if requeued:
            self._signal(requeued)
        return answers

    def _repeat(self, job_id: str, t: Transition) -> JobStatus | None:
        """The answer to a finish that did not apply: a repeat's status, else None."""
        doc = self._jobs.find_one({"_id": job_id, **d.VISIBLE}, {"status": 1, "finished_by": 1})
        if doc is None:
            return None
        return repeat_status(t, JobStatus(doc["status"]), doc.get("finished_by"))

    # -- the outbox relay ----------------------------------------------------

    def _relay(self, job: Mapping[str, Any]) -> None:
        """Copy ``job``'s outbox entries into ``events`` (idempotent), then drop them."""
        for entry in job.get("outbox") or ():
            try:
                if self._events.find_one({"_id": entry["key"]}, {"_id": 1}) is None:
                    cursor = self._reserve(d.EVENT_CURSOR, 1)
                    try:
                        self._events.insert_one(d.event_document(job["_id"], entry, cursor))
                    except DuplicateKeyError:
                        pass  # another relayer copied it first; its cursor stands
                self._jobs.update_one(*d.outbox_done(job["_id"], entry["key"]))
            except PyMongoError as exc:
                # The entry stays in the job document; the next fetch or sweep relays it.
                log.warning("qw-mongodb: event %s not relayed yet: %r", entry["key"], exc)
                return

    def _relay_leftovers(self) -> None:
        for job in self._jobs.find(d.PENDING_OUTBOX, {"outbox": 1}, limit=RELAY_BATCH):
            self._relay(job)

    @translated
    def reclaim_expired(self) -> int:
        now = self._clock.now()
        count = 0
        requeued: set[str] = set()
        expired = list(
            self._jobs.find(d.expired_filter(now), d.EXPIRED_PROJECTION, limit=RECLAIM_BATCH)
        )
        for doc in expired:
            t = plan_reclaim(
                attempts=doc["attempts"], max_attempts=doc["max_attempts"], queue=doc["queue"]
            )
            after = self._jobs.find_one_and_update(
                d.reclaim_filter(doc, now),
                d.transition_update(
                    t, now=now, event_key=d.expired_event_key(doc["_id"], doc["token"])
                ),
                projection={"outbox": 1},
                return_document=ReturnDocument.AFTER,
            )
            if after is None:
                continue  # finished, renewed or reclaimed by someone else meanwhile
            count += 1
            self._relay(after)
            if t.status is JobStatus.QUEUED:
                requeued.add(doc["queue"])
        self._settle_staged(now)
        self._relay_leftovers()
        if requeued:
            self._signal(requeued)
        return count

    def _settle_staged(self, now: datetime) -> None:
        """Finish or undo multi-job enqueues whose producer died part-way."""
        stale = self._jobs.find(d.stale_staged_filter(now - STAGED_GRACE), {"batch": 1})
        for batch in {doc["batch"] for doc in stale}:
            if self._jobs.find_one(d.batch_committed_filter(batch), {"_id": 1}) is not None:
                # The commit had begun, so every job of the batch was inserted.
                self._jobs.update_many(*d.commit_batch(batch))
            else:
                self._jobs.delete_many({"batch": batch, "status": d.PENDING})

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self.hub.wait(queues, timeout)

    # -- workers and switches ----------------------------------------------

    @translated
    def heartbeat(self, worker: WorkerInfo) -> None:
        update = d.heartbeat_update(worker, self._clock.now())
        try:
            self._workers.update_one({"_id": worker.id}, update, upsert=True)
        except DuplicateKeyError:
            self._workers.update_one({"_id": worker.id}, update, upsert=True)

    @translated
    def remove_worker(self, worker_id: str) -> None:
        self._workers.delete_one({"_id": worker_id})

    @translated
    def workers(self) -> list[WorkerInfo]:
        return [d.worker_from_document(doc) for doc in self._workers.find(sort=[("_id", 1)])]

    @translated
    def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        key = _NAMESPACE_SWITCH if queue is None else _QUEUE_SWITCH + queue
        try:
            self._switches.update_one({"_id": key}, {"$set": {"enabled": enabled}}, upsert=True)
        except DuplicateKeyError:
            self._switches.update_one({"_id": key}, {"$set": {"enabled": enabled}}, upsert=True)
        if enabled:
            self._signal(None)

    @translated
    def switches(self) -> Switches:
        enabled = True
        queues: dict[str, bool] = {}
        for doc in self._switches.find():
            if doc["_id"] == _NAMESPACE_SWITCH:
                enabled = bool(doc["enabled"])
            elif doc["_id"].startswith(_QUEUE_SWITCH):
                queues[doc["_id"][len(_QUEUE_SWITCH) :]] = bool(doc["enabled"])
        return Switches(enabled, queues)

    # -- inspection and operations -----------------------------------------

    @translated
    def get(self, job_id: str) -> Job | None:
        doc = self._jobs.find_one({"_id": job_id, **d.VISIBLE})
        return None if doc is None else d.job_from_document(doc)

    @translated
    def counts(self) -> dict[str, dict[JobStatus, int]]:
        counts: dict[str, dict[JobStatus, int]] = {}
        pipeline: list[dict[str, Any]] = [
            {"$match": d.VISIBLE},
            {"$group": {"_id": {"q": "$queue", "s": "$status"}, "n": {"$sum": 1}}},
        ]
        for row in self._jobs.aggregate(pipeline):
            counts.setdefault(row["_id"]["q"], {})[JobStatus(row["_id"]["s"])] = row["n"]
        return counts

    @translated
    def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Job]:
        query: dict[str, Any] = {"status": status.value} if status is not None else dict(d.VISIBLE)
        if queue is not None:
            query["queue"] = queue
        if after is not None:
            query["_id"] = {"$gt": after}
        docs = self._jobs.find(query, sort=[("_id", 1)], limit=limit)
        return [d.job_from_document(doc) for doc in docs]

    @translated
    def cancel(self, job_id: str) -> JobStatus | None:
        # Each step is a compare-and-set; a job that moved meanwhile is looked at again.
        for _ in range(10):
            doc = self._jobs.find_one({"_id": job_id, **d.VISIBLE}, {"status": 1, "queue": 1})
            if doc is None:
                return None
            if doc["status"] == d.QUEUED:
                t = plan_cancel_queued(queue=doc["queue"])
                update = d.transition_update(
                    t, now=self._clock.now(), event_key=d.cancel_event_key(job_id)
                )
                after = self._jobs.find_one_and_update(
                    d.cancel_queued(job_id, doc["queue"]),
                    update,
                    projection={"outbox": 1},
                    return_document=ReturnDocument.AFTER,
                )
                if after is not None:
                    self._relay(after)
                    return t.status
            elif doc["status"] == d.RUNNING:
                if self._jobs.update_one(*d.cancel_running(job_id)).matched_count:
                    return JobStatus.RUNNING
            else:
                return JobStatus(doc["status"])
        raise BackendConflict(f"job {job_id!r} kept changing while being cancelled")

    # -- the outbox --------------------------------------------------------

    @translated
    def fetch_events(self, limit: int = 100) -> list[Event]:
        # Events whose relay was interrupted are copied first, so a crash
        # between transition and relay only delays them.
        self._relay_leftovers()
        docs = self._events.find({"acked": False}, sort=[("cursor", 1)], limit=limit)
        return [
            Event(
                cursor=doc["cursor"],
                job_id=doc["job_id"],
                type=doc["type"],
                data=decode_json(doc["data"]),
                created_at=as_utc(doc["created_at"]),
            )
            for doc in docs
        ]

    @translated
    def ack_events(self, cursors: Sequence[int]) -> int:
        result = self._events.update_many(
            {"cursor": {"$in": sorted(set(cursors))}, "acked": False},
            {"$set": {"acked": True}},
        )
        return result.modified_count

    @translated
    def purge(self, older_than: float) -> PurgeResult:
        cutoff = self._clock.now() - timedelta(seconds=older_than)
        jobs = self._jobs.delete_many(d.purge_jobs_filter(cutoff)).deleted_count
        events = self._events.delete_many(d.purge_events_filter(cutoff)).deleted_count
        return PurgeResult(jobs=jobs, events=events)


def choose_write_concern(client_wc: object) -> WriteConcern:
    """The application's explicit write concern, else ``w:"majority", j:true``."""
    if isinstance(client_wc, WriteConcern) and not client_wc.is_server_default:
        return client_wc
    return DEFAULT_WRITE_CONCERN


def _claim(doc: Mapping[str, Any]) -> Claim:
    job = d.job_from_document(doc)
    assert job.lease_expires_at is not None
    return Claim(job, Lease(job.id, d.lease_token(doc["token"], job.id), job.lease_expires_at))
