"""The ``mongodb`` backend: one database per namespace, single-document atomicity only.

Every state change is one compare-and-set on one job document (status and
lease token in the filter), so the backend needs neither transactions nor a
replica set. Events ride in the job document that makes the transition and
are relayed into ``events`` under a deterministic ``_id`` afterwards (see
:mod:`qw_mongodb.documents`). Times come from :class:`~qw_mongodb.clock.ServerClock`.
Every transition is decided by :mod:`qw.transitions`; this module only
applies it under the right compare-and-set.

Workflows (``capabilities.atomic_settle`` is False): a step's end is its own
single-document write, as for any job; carrying it to its children and its
workflow comes after, in idempotent writes (:meth:`MongoBackend._carry`):

1. the fenced terminal write; the step's ``ended_settled`` is False (it was
   inserted so, and only step 4 sets it);
2. :func:`qw.transitions.settle` over :class:`_Graph`: each waiting child
   gets the parent pushed into ``settled`` unless already there (and into
   ``failed_parents`` unless it succeeded); a child whose ``settled`` covers
   its ``parents`` gets :func:`~qw.transitions.plan_settled`'s transition by
   compare-and-set from ``waiting``, and a child cancelled so is carried too;
3. the workflow ends when no step of it is left that has not ended (counted
   from the steps, so nothing is counted twice): compare-and-set from
   ``running`` to :func:`~qw.transitions.plan_workflow_end`'s state, its
   event in the same write under a deterministic key;
4. ``ended_settled`` becomes True.

A crash between these leaves ``ended_settled`` False, and
:meth:`MongoBackend.reclaim_expired` redoes 2-4 for up to
:data:`SETTLE_BATCH` such steps per call: a worker's next reclaim pass (one
reclaim interval) completes what a crash left undone. Every write of 2-4 is
a no-op when repeated, so a sweep racing a live settler is harmless.

Progress (:meth:`MongoBackend.set_progress`) is one more fenced
single-document write: the job's ``progress`` and its ``job.progress``
outbox entry together, relayed into ``events`` afterwards as a finish's
event is. Result waits (:meth:`MongoBackend.wait_finished`) are woken by a
change stream of job ends where the server has change streams (capability
``result_wakeup`` then); elsewhere the same method polls, and the client
polls instead of calling it.

Fault injection, for tests only: :meth:`MongoBackend._interrupt_settles`
makes the next ``n`` step ends stop after step 1, as if the process died
there; the sweep is never interrupted.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
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

from qw.calls import RESULT_POLL_MAX_S, poll_pauses
from qw.capabilities import Capabilities
from qw.contract import Finish, Insert, Switches, WorkflowInsert
from qw.errors import (
    BackendConflict,
    ConfigurationError,
    DuplicateJob,
    SchemaError,
    Unsupported,
)
from qw.limits import key_state
from qw.model import (
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
from qw.translate import map_exceptions
from qw.validation import decode_json
from qw.wakeup import Listener, WakeupHub
from qw_mongodb import documents as d
from qw_mongodb import flow as f
from qw_mongodb.claiming import Claimer, claim_unkeyed
from qw_mongodb.clock import ServerClock, as_utc
from qw_mongodb.config import MongoOptions, WakeupMode, parse_url
from qw_mongodb.errors import ERRORS, translated
from qw_mongodb.names import (
    COUNTERS,
    EVENTS,
    FAIR,
    GATES,
    JOBS,
    LIMITS,
    META,
    SCHEDULES,
    SIGNALS,
    SWITCHES,
    WORKERS,
    WORKFLOWS,
    database_name,
)
from qw_mongodb.wakeups import (
    SIGNALS_MAX_DOCS,
    SIGNALS_SIZE_BYTES,
    EndedJobs,
    listen_change_stream,
    listen_ended,
    listen_tailable,
    signal_document,
)

__all__ = ["DEFAULT_WRITE_CONCERN", "SCHEMA_VERSION", "MongoBackend", "choose_write_concern"]

log = logging.getLogger("qw.mongodb")

#: 2 added workflows (0.2.0); 3 flow control: limit keys, fair ranks, gates,
#: operators' limits and schedules. An older store is upgraded on open: its
#: jobs read as jobs without a key, limit or rank (rank 0), and the claim
#: index is remade with the fair rank in it. Progress did not move it: it is
#: one optional field of a job, with no index, that code of schema 3 leaves
#: alone and reads past, and a job without it reads ``progress`` None; a bump
#: would only lock the workers still on schema-3 code out of the store.
SCHEMA_VERSION = 3
_UPGRADABLE = (1, 2)
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
#: With the stream of job ends live, a result wait still reads the job this
#: often: a stream that stalled without failing delays an answer, never loses it.
ENDED_RECHECK_S = 5.0
RELAY_BATCH = 100
#: Step ends (left uncarried by a crash) the sweep carries per reclaim_expired call.
SETTLE_BATCH = 100
#: Workflow cancels (interrupted part-way) the sweep finishes per call.
CANCEL_SWEEP_BATCH = 10
#: Steps a workflow cancel may see move under it before it gives up on one.
CANCEL_TRIES = 10
#: Gates (with slots older than flow.GATE_GRACE) the sweep looks at per call.
GATE_SWEEP_BATCH = 100
_NAMESPACE_SWITCH = "namespace"
_QUEUE_SWITCH = "queue:"
# In ``switches`` (read by every claim anyway): the namespace has had a keyed
# job, so claims plan under limits. Written before the first keyed job, never removed.
_KEYED_MARK = "flow:keyed"


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
        self._workflows = self._collection(WORKFLOWS)
        self._gates = self._collection(GATES)
        self._limits = self._collection(LIMITS)
        self._fair = self._collection(FAIR)
        self._schedules = self._collection(SCHEDULES)
        self._clock_stamps = self._collection(META, _LIGHT_WRITE_CONCERN)
        self._signals = self._collection(SIGNALS, _LIGHT_WRITE_CONCERN)
        self._clock = ServerClock(self._stamp)
        self.hub = WakeupHub(poll_interval=options.poll_interval)
        # Result waits: woken by this object's own finishes and cancels, and
        # by the stream of job ends once the first wait has opened it.
        self._ended = EndedJobs(poll_interval=RESULT_POLL_MAX_S)
        self._ended_listener: Listener | None = None
        self._ended_lock = threading.Lock()
        self._ended_mode: WakeupMode = "poll"  # the mode _setup chooses
        wc = self.write_concern.document
        self.capabilities = Capabilities(
            thread_safe=True,
            multi_process=True,
            native_wakeup=options.wakeup != "poll",
            durable=bool(wc.get("j")) or wc.get("w") == "majority",
            atomic_settle=False,
            limits=True,
            schedules=True,
            progress=True,
            retry=True,
            # Set in _setup: true only where the server has change streams.
            result_wakeup=False,
        )
        # Test hook (see the module docstring): step ends to leave uncarried.
        self._settle_interrupts = 0
        # Whether this object saw or wrote the keyed mark (it is never removed).
        self._keyed = False
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
        version = schema.get("version")
        if version != SCHEMA_VERSION and version not in _UPGRADABLE:
            raise SchemaError(
                f"database {self._database_name!r} has qw-mongodb schema "
                f"{version!r}; this code knows {SCHEMA_VERSION}"
            )
        try:
            for collection, indexes in (
                (self._jobs, d.job_indexes()),
                (self._events, d.event_indexes()),
                (self._workflows, d.workflow_indexes()),
                (self._gates, f.gate_indexes()),
            ):
                existing = collection.index_information()
                for index in indexes:
                    spec = dict(index.document)
                    if _same_index(existing.get(spec["name"]), spec):
                        continue  # made by an earlier open
                    collection.create_index(list(spec.pop("key").items()), **spec)
        except OperationFailure as exc:
            raise SchemaError(
                f"qw's indexes in {self._database_name!r} conflict with existing ones: {exc}"
            ) from exc
        if version != SCHEMA_VERSION:
            # The upgrade is the new indexes (made above) and the version: the
            # jobs of an older store are plain jobs without a key, stored as
            # they were (a missing rank sorts as 0 would: see documents). The
            # claim index without the rank is dropped once its successor exists.
            if d.OLD_CLAIM_INDEX in self._jobs.index_information():
                self._jobs.drop_index(d.OLD_CLAIM_INDEX)
            self._meta.update_one(
                {"_id": "schema", "version": version}, {"$set": {"version": SCHEMA_VERSION}}
            )
        self._clock.measure()
        mode = self._wakeup_mode()
        # Job ends reach result waits only through a change stream (see wakeups).
        self.capabilities = replace(self.capabilities, result_wakeup=mode == "change_stream")
        self._ended_mode = mode
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
        with self._ended_lock:
            if self._ended_listener is not None:
                self._ended_listener.stop()
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
        self._mark_keyed([jobs[i] for i in insert])
        ranks = self._fair_ranks([jobs[i] for i in insert])
        docs = [
            d.job_document(jobs[i], seq=first + k, now=now, batch=batch, rank=ranks[k])
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

    def _fair_ranks(self, jobs: Sequence[Insert]) -> list[int]:
        """Each job's fair rank, fixed now: 0 unless fair (see :meth:`claim`).

        ``qw.limits.fair_rank`` (the later of the key's next rank and the
        queue's fair clock) done by the store: ``$max`` raises the (queue,
        key) counter to the clock read here, then ``$inc`` hands out one
        rank per job. Two writers racing get distinct ranks, each at least
        the clock. A rank handed out to an insert that then fails is not
        reused (a gap, as in ``seq``).
        """
        ranks = [0] * len(jobs)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, job in enumerate(jobs):
            if job.fair and job.limit_key is not None:
                groups.setdefault((job.queue, job.limit_key), []).append(i)
        if not groups:
            return ranks
        clock_ids = sorted({f.fair_clock_id(queue) for queue, _ in groups})
        clocks = {doc["_id"]: int(doc["n"]) for doc in self._fair.find({"_id": {"$in": clock_ids}})}
        for (queue, key), places in groups.items():
            counter = {"_id": f.fair_next_id(queue, key)}
            clock = clocks.get(f.fair_clock_id(queue), 0)
            self._upsert(self._fair, counter, {"$max": {"n": clock}})
            doc = self._fair.find_one_and_update(
                counter, {"$inc": {"n": len(places)}}, return_document=ReturnDocument.AFTER
            )
            assert doc is not None  # upserted just before; never deleted
            first = int(doc["n"]) - len(places)
            for k, i in enumerate(places):
                ranks[i] = first + k
        return ranks

    def _upsert(self, collection: Collection[Any], query: Mapping[str, Any], update: Any) -> None:
        try:
            collection.update_one(query, update, upsert=True)
        except DuplicateKeyError:
            # Two first upserts raced; the document exists now.
            collection.update_one(query, update, upsert=True)

    # -- working -----------------------------------------------------------

    @translated
    def claim(
        self, queues: Sequence[str], *, worker: str, lease_s: float, limit: int
    ) -> list[Claim]:
        self.hub.arm(queues)
        switches, keyed = self._read_switches()
        open_queues = [q for q in queues if switches.queue_enabled(q)]
        if not open_queues:
            return []
        now = self._clock.now()
        token = secrets.token_hex(16)
        update = d.claim_update(token, worker, now, lease_s)
        if not keyed:
            # No keyed job ever: the claim of before flow control, one write for one job.
            docs = claim_unkeyed(
                self._jobs, queues=open_queues, now=now, token=token, update=update, limit=limit
            )
            return [_claim(doc) for doc in docs]
        # Plan under limits, hold the keys' gates, claim the jobs: qw_mongodb.claiming.
        docs = Claimer(
            jobs=self._jobs,
            gates=self._gates,
            limits=self._limits,
            queues=open_queues,
            now=now,
            token=token,
            update=update,
        ).run(limit)
        clocks: dict[str, int] = {}
        for doc in docs:
            if doc.get("fair"):
                rank = int(doc.get("rank") or 0)
                clocks[doc["queue"]] = max(clocks.get(doc["queue"], rank), rank)
        for queue, rank in clocks.items():
            # The queue's fair clock moves up to the claimed rank, never down.
            self._upsert(self._fair, {"_id": f.fair_clock_id(queue)}, {"$max": {"n": rank}})
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
                projection=d.ENDED_PROJECTION,
                return_document=ReturnDocument.AFTER,
            )
            if after is None:
                answers.append(self._repeat(lease.job_id, t))
                continue
            if after.get("limit_key") is not None:
                self._free_slot(
                    after["limit_key"], lease.job_id, d.claim_token_of(lease.token, lease.job_id)
                )
            self._relay(after)
            if t.status is JobStatus.QUEUED:
                requeued.add(after["queue"])
            elif t.status.is_terminal:
                self._ended.ended([lease.job_id])
                if after.get("workflow") is not None:
                    self._carry(after["workflow"], [(after, t.status)])
            answers.append(t.status)
        if requeued:
            self._signal(requeued)
        return answers

    def _free_slot(self, key: str, job_id: str, claim_token: str) -> None:
        """Give back the slot a job that just left ``running`` held in its key's gate.

        After the job's own write (a crash between the two is healed by the
        gate sweep). A driver error is logged, not raised: the job's write stands.
        """
        try:
            self._gates.update_one(*f.gate_give_back(key, job_id, claim_token))
        except PyMongoError as exc:
            log.warning(
                "qw-mongodb: slot of job %s (key %r) not freed yet (reclaim_expired will): %r",
                job_id,
                key,
                exc,
            )

    def _repeat(self, job_id: str, t: Transition) -> JobStatus | None:
        """The answer to a finish that did not apply: a repeat's status, else None."""
        doc = self._jobs.find_one({"_id": job_id, **d.VISIBLE}, {"status": 1, "finished_by": 1})
        if doc is None:
            return None
        return repeat_status(t, JobStatus(doc["status"]), doc.get("finished_by"))

    # -- the outbox relay ----------------------------------------------------

    def _relay(self, job: Mapping[str, Any], source: Collection[Any] | None = None) -> None:
        """Copy ``job``'s outbox entries into ``events`` (idempotent), then drop them.

        ``source`` is the collection the document is in: ``jobs``, or
        ``workflows`` for a workflow's own event (its ``job_id`` is the
        workflow's id).
        """
        for entry in job.get("outbox") or ():
            try:
                if self._events.find_one({"_id": entry["key"]}, {"_id": 1}) is None:
                    cursor = self._reserve(d.EVENT_CURSOR, 1)
                    try:
                        self._events.insert_one(d.event_document(job["_id"], entry, cursor))
                    except DuplicateKeyError:
                        pass  # another relayer copied it first; its cursor stands
                (self._jobs if source is None else source).update_one(
                    *d.outbox_done(job["_id"], entry["key"])
                )
            except PyMongoError as exc:
                # The entry stays in the job document; the next fetch or sweep relays it.
                log.warning("qw-mongodb: event %s not relayed yet: %r", entry["key"], exc)
                return

    def _relay_leftovers(self) -> None:
        for job in self._jobs.find(d.PENDING_OUTBOX, {"outbox": 1}, limit=RELAY_BATCH):
            self._relay(job)
        for flow in self._workflows.find(d.PENDING_OUTBOX, {"outbox": 1}, limit=RELAY_BATCH):
            self._relay(flow, self._workflows)

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
                projection=d.ENDED_PROJECTION,
                return_document=ReturnDocument.AFTER,
            )
            if after is None:
                continue  # finished, renewed or reclaimed by someone else meanwhile
            count += 1
            if after.get("limit_key") is not None:
                self._free_slot(after["limit_key"], doc["_id"], doc["token"])
            self._relay(after)
            if t.status is JobStatus.QUEUED:
                requeued.add(doc["queue"])
            elif after.get("workflow") is not None:
                self._carry(after["workflow"], [(after, t.status)])
        self._sweep_gates(now)
        self._settle_staged(now)
        self._sweep_workflows()
        self._relay_leftovers()
        if requeued:
            self._signal(requeued)
        return count

    def _sweep_gates(self, now: datetime) -> None:
        """Free slots held with no job running under them (a crash between two writes).

        See :mod:`qw_mongodb.flow`: a holder older than the grace whose job
        runs under its token is live (its age is refreshed); any other is
        voided on its job first, so that a claimer only slow cannot claim
        under it afterwards, and then freed.
        """
        cutoff = now - f.GATE_GRACE
        for gate in list(
            self._gates.find(f.aged_gates(cutoff), {"held": 1}, limit=GATE_SWEEP_BATCH)
        ):
            aged = [h for h in gate.get("held") or () if as_utc(h["a"]) < cutoff]
            if not aged:
                continue
            jobs = {
                doc["_id"]: doc
                for doc in self._jobs.find(
                    {"_id": {"$in": [h["j"] for h in aged]}}, {"status": 1, "token": 1}
                )
            }
            for h in aged:
                job = jobs.get(h["j"])
                if job is not None and job["status"] == d.RUNNING and job.get("token") == h["t"]:
                    self._gates.update_one(*f.gate_refresh(gate["_id"], h["j"], h["t"], now))
                    continue
                if (
                    job is not None
                    and not self._jobs.update_one(*f.void_claim(h["j"], h["t"])).matched_count
                ):
                    continue  # it came to run under that token meanwhile: live
                self._gates.update_one(*f.gate_give_back(gate["_id"], h["j"], h["t"]))
                log.info("qw-mongodb: freed a slot of key %r left by a crash", gate["_id"])

    def _settle_staged(self, now: datetime) -> None:
        """Finish or undo multi-job enqueues (and workflow creates and adds) that died part-way.

        A batch of steps whose commit point has passed is revealed at once,
        whatever its age (revealing is what its writer was about to do, and
        is idempotent); one that has not is undone only after STAGED_GRACE,
        as its writer may still be at work.
        """
        cutoff = now - STAGED_GRACE
        projection = {"batch": 1, "workflow": 1, "adder": 1, "created_at": 1}
        found = {
            doc["batch"]: doc for doc in self._jobs.find(d.stale_staged_filter(cutoff), projection)
        }
        for doc in self._jobs.find(d.STAGED_STEPS, projection, limit=RELAY_BATCH):
            found.setdefault(doc["batch"], doc)
        for batch, doc in found.items():
            stale = as_utc(doc["created_at"]) < cutoff
            workflow, adder = doc.get("workflow"), doc.get("adder")
            if workflow is not None and adder is None:
                # A create: its commit point is the workflow document's.
                flow = self._workflows.find_one({"_id": workflow, "batch": batch}, {"state": 1})
                if flow is not None and flow["state"] != d.PENDING:
                    self._reveal_steps(workflow, batch)
                    self._signal(None)
                elif stale:
                    self._undo_create(workflow, batch)
            elif workflow is not None:
                # An add: its commit point is the note on the step that added it.
                if self._jobs.find_one({"_id": adder, "adding.b": batch}, {"_id": 1}):
                    self._finish_add(workflow, batch, adder)
                elif stale:
                    self._jobs.delete_many({"batch": batch, "status": d.PENDING})
                    self._end_workflow_if_done(workflow)
            elif self._jobs.find_one(d.batch_committed_filter(batch), {"_id": 1}) is not None:
                # The commit had begun, so every job of the batch was inserted.
                self._jobs.update_many(*d.commit_batch(batch))
            else:
                self._jobs.delete_many({"batch": batch, "status": d.PENDING})
        # A create that died before staging any step left only its workflow document.
        for flow in self._workflows.find(
            {"state": d.PENDING, "created_at": {"$lt": cutoff}}, {"batch": 1}
        ):
            if flow["batch"] not in found:
                self._undo_create(flow["_id"], flow["batch"])

    def _undo_create(self, workflow_id: str, batch: str) -> None:
        # Steps first: a workflow document left behind is found and undone next time.
        self._jobs.delete_many({"batch": batch, "status": d.PENDING})
        self._workflows.delete_one(d.staged_workflow(workflow_id, batch))

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self.hub.wait(queues, timeout)

    # -- progress and results ------------------------------------------------

    @translated
    def set_progress(
        self, lease: Lease, fraction: float | None, message: str | None, event_data: str
    ) -> bool:
        now = self._clock.now()
        # A fresh part per report: the relay copies each report's event once.
        key = d.progress_event_key(lease.job_id, lease.token, secrets.token_hex(8))
        after = self._jobs.find_one_and_update(
            d.fence_filter(lease.job_id, lease.token, lease.attempt),
            d.progress_update(fraction, message, event_data, now=now, event_key=key),
            projection={"outbox": 1},
            return_document=ReturnDocument.AFTER,
        )
        if after is None:
            return False
        self._relay(after)
        return True

    @translated
    def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        """The job once terminal, else as it is after ``timeout`` s; None if unknown.

        Woken by the change stream of job ends where the server has one
        (``result_wakeup``), and by this object's own finishes and cancels.
        While no stream is live it reads the job as the client's poll does
        (10 ms doubling to 250 ms); with one live, every ENDED_RECHECK_S.
        """
        deadline = time.monotonic() + timeout
        self._open_ended_stream()
        pauses = poll_pauses()  # the client's own schedule, while no stream is live
        with self._ended.watch(job_id) as ended:
            while True:
                # Cleared before the read: an end signalled after it still wakes the wait.
                ended.clear()
                doc = self._jobs.find_one({"_id": job_id, **d.VISIBLE})
                if doc is None:
                    return None
                job = d.job_from_document(doc)
                left = deadline - time.monotonic()
                if job.status.is_terminal or left <= 0:
                    return job
                if self._ended.connected:
                    ended.wait(min(left, ENDED_RECHECK_S))
                else:
                    ended.wait(min(left, next(pauses)))

    def _open_ended_stream(self) -> None:
        """Start the change stream of job ends on the first result wait (change streams only)."""
        if self._ended_mode != "change_stream":
            return
        with self._ended_lock:
            if self._ended_listener is not None or self._closed:
                return
            self._ended_listener = Listener(
                self._ended,
                lambda ready, stopping: listen_ended(self._db, self._ended, ready, stopping),
                name=f"qw-mongodb-ended[{self._namespace}]",
            )
            # Not waited for: the wait polls until the stream is up, and its
            # coming up wakes every waiter (an end may have slipped past).
            self._ended_listener.start()

    # -- the application's transaction ------------------------------------------
    # Not offered (capability ``transactional`` False): the client refuses
    # ``connection=`` before calling these; a direct call is refused here.

    def enqueue_in(self, connection: object, jobs: Sequence[Insert]) -> list[Enqueued]:
        raise Unsupported("the mongodb backend does not enqueue in an application's transaction")

    def create_workflow_in(
        self, connection: object, workflow: WorkflowInsert, steps: Sequence[Insert]
    ) -> bool:
        raise Unsupported("the mongodb backend does not write in an application's transaction")

    def finish_in(self, connection: object, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        raise Unsupported("the mongodb backend does not finish in an application's transaction")

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
        return self._read_switches()[0]

    def _read_switches(self) -> tuple[Switches, bool]:
        """The switches, and whether the namespace has had a keyed job (one read)."""
        enabled = True
        queues: dict[str, bool] = {}
        for doc in self._switches.find():
            if doc["_id"] == _NAMESPACE_SWITCH:
                enabled = bool(doc["enabled"])
            elif doc["_id"].startswith(_QUEUE_SWITCH):
                queues[doc["_id"][len(_QUEUE_SWITCH) :]] = bool(doc["enabled"])
            elif doc["_id"] == _KEYED_MARK:
                self._keyed = True
        return Switches(enabled, queues), self._keyed

    def _mark_keyed(self, jobs: Sequence[Insert]) -> None:
        """Before the first keyed job is written: mark the namespace as planning claims.

        A claim reads the mark with the switches; written first, it is seen
        by every claim that starts after the job can be seen.
        """
        if self._keyed or all(job.limit_key is None for job in jobs):
            return
        self._upsert(self._switches, {"_id": _KEYED_MARK}, {"$set": {"keyed": True}})
        self._keyed = True

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
        workflow: str | None = None,
        key: str | None = None,
    ) -> list[Job]:
        query: dict[str, Any] = {"status": status.value} if status is not None else dict(d.VISIBLE)
        if queue is not None:
            query["queue"] = queue
        if workflow is not None:
            query["workflow"] = workflow
        if key is not None:
            query["limit_key"] = key
        if after is not None:
            query["_id"] = {"$gt": after}
        docs = self._jobs.find(query, sort=[("_id", 1)], limit=limit)
        return [d.job_from_document(doc) for doc in docs]

    @translated
    def cancel(self, job_id: str) -> JobStatus | None:
        # Each step is a compare-and-set; a job that moved meanwhile is looked at again.
        for _ in range(10):
            doc = self._jobs.find_one(
                {"_id": job_id, **d.VISIBLE}, {"status": 1, "queue": 1, "retries": 1}
            )
            if doc is None:
                return None
            if doc["status"] in (d.QUEUED, d.WAITING):
                t = plan_cancel_queued(queue=doc["queue"])
                retries = doc.get("retries")
                update = d.transition_update(
                    t, now=self._clock.now(), event_key=d.cancel_event_key(job_id, retries)
                )
                after = self._jobs.find_one_and_update(
                    d.cancel_queued(job_id, doc["queue"], doc["status"], retries),
                    update,
                    projection=d.ENDED_PROJECTION,
                    return_document=ReturnDocument.AFTER,
                )
                if after is not None:
                    self._relay(after)
                    self._ended.ended([job_id])
                    if after.get("workflow") is not None:
                        self._carry(after["workflow"], [(after, t.status)])
                    return t.status
            elif doc["status"] == d.RUNNING:
                if self._jobs.update_one(*d.cancel_running(job_id)).matched_count:
                    return JobStatus.RUNNING
            else:
                return JobStatus(doc["status"])
        raise BackendConflict(f"job {job_id!r} kept changing while being cancelled")

    @translated
    def retry(self, job_id: str) -> JobStatus | None:
        # One compare-and-set on what was read; a job that moved is read again.
        for _ in range(10):
            doc = self._jobs.find_one({"_id": job_id, **d.VISIBLE}, d.RETRY_PROJECTION)
            if doc is None:
                return None
            status, key = JobStatus(doc["status"]), doc.get("dedupe_key")
            holder = None
            if key is not None:
                found = self._jobs.find_one(
                    {"dedupe_live": key, "status": {"$in": d.LIVE}, "_id": {"$ne": job_id}},
                    {"_id": 1},
                )
                holder = None if found is None else found["_id"]
            t = plan_retry(
                status,
                doc["attempts"],
                doc["max_attempts"],
                doc.get("workflow"),
                job_id=job_id,
                queue=doc["queue"],
                holder=holder,
            )
            if t is None:
                return status
            try:
                after = self._jobs.find_one_and_update(
                    d.retry_filter(doc),
                    d.retry_update(t, doc, now=self._clock.now()),
                    projection={"outbox": 1},
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                continue  # a producer took the dedupe key since the read: read again
            if after is not None:
                self._relay(after)
                self._signal([doc["queue"]])
                return t.status
        raise BackendConflict(f"job {job_id!r} kept changing while being retried")

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
    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        docs = {
            doc["_id"]: doc for doc in self._jobs.find({"_id": {"$in": list(job_ids)}, **d.VISIBLE})
        }
        return [d.job_from_document(docs[i]) if i in docs else None for i in job_ids]

    @translated
    def purge(self, older_than: float) -> PurgeResult:
        cutoff = self._clock.now() - timedelta(seconds=older_than)
        jobs = self._jobs.delete_many(d.purge_jobs_filter(cutoff)).deleted_count
        for flow in self._workflows.find(d.purge_workflows_filter(cutoff), {"_id": 1}):
            steps: dict[str, Any] = {"workflow": flow["_id"]}
            for step in self._jobs.find({**steps, **d.PENDING_OUTBOX}, {"outbox": 1}):
                self._relay(step)
            if self._jobs.find_one({**steps, **d.PENDING_OUTBOX}, {"_id": 1}) is not None:
                continue  # an event of a step is not relayed yet: next time
            # Steps first: a workflow document left behind goes next time.
            jobs += self._jobs.delete_many(steps).deleted_count
            self._workflows.delete_one({"_id": flow["_id"], "state": {"$in": d.WF_ENDED}})
        events = self._events.delete_many(d.purge_events_filter(cutoff)).deleted_count
        # A gate holding nothing is the same as none (claims make it again).
        self._gates.delete_many(f.IDLE_GATES)
        return PurgeResult(jobs=jobs, events=events)

    # -- limits ----------------------------------------------------------------

    @translated
    def set_limit(self, key: str, limit: Limit | None) -> None:
        if limit is None:
            self._limits.delete_one({"_id": key})
        else:
            try:
                self._limits.replace_one({"_id": key}, f.override_document(key, limit), upsert=True)
            except DuplicateKeyError:  # two first upserts raced
                self._limits.replace_one({"_id": key}, f.override_document(key, limit), upsert=True)
        # A limit raised or removed may free held-back jobs on any queue.
        self._signal(None)

    @translated
    def limits(self) -> dict[str, Limit]:
        out: dict[str, Limit] = {}
        for doc in self._limits.find(sort=[("_id", 1)]):
            limit = d.limit_of(doc.get("limit"))
            if limit is not None:
                out[doc["_id"]] = limit
        return out

    @translated
    def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        now = self._clock.now()
        live = {
            row["_id"]: row for row in self._jobs.aggregate(d.key_counts_pipeline(limit, after))
        }
        overrides: dict[str, Limit] = {}
        for doc in self._limits.find(
            {} if after is None else {"_id": {"$gt": after}}, sort=[("_id", 1)], limit=limit
        ):
            found = d.limit_of(doc.get("limit"))
            if found is not None:
                overrides[doc["_id"]] = found
        # The first `limit` of either list include the first `limit` of both.
        names = sorted(set(live) | set(overrides))[:limit]
        with_live = [name for name in names if name in live]
        own = (
            {
                row["_id"]: d.limit_of(row["own"])
                for row in self._jobs.aggregate(d.key_limits_pipeline(with_live))
            }
            if with_live
            else {}
        )
        gates = {
            doc["_id"]: f.gate_of(doc)
            for doc in self._gates.find({"_id": {"$in": names}}, {"starts": 1})
        }
        states = []
        for name in names:
            row = live.get(name, {})
            states.append(
                key_state(
                    name,
                    queued=int(row.get("queued", 0)),
                    running=int(row.get("running", 0)),
                    own=own.get(name),
                    overrides=overrides,
                    starts=(gates.get(name) or f.Gate()).times(),
                    now=now,
                )
            )
        return states

    # -- schedules -------------------------------------------------------------

    @translated
    def save_schedule(self, schedule: Schedule) -> None:
        self._upsert(self._schedules, *f.schedule_save(schedule))

    @translated
    def advance_schedule(self, name: str, tick: datetime) -> bool:
        # One compare-and-set on one document: of racing callers, one matches.
        return self._schedules.update_one(*f.schedule_advance(name, tick)).modified_count == 1

    @translated
    def schedules(self) -> list[Schedule]:
        return [f.schedule_of(doc) for doc in self._schedules.find(sort=[("_id", 1)])]

    @translated
    def remove_schedule(self, name: str) -> bool:
        return self._schedules.delete_one({"_id": name}).deleted_count == 1

    # -- workflows: creating and adding ---------------------------------------
    #
    # Without transactions, a batch of steps is inserted staged (``pending``,
    # invisible) and committed by ONE single-document write, then revealed:
    # a create commits by making its workflow document ``running``; an add by
    # the fenced write that gives the running step its new children and a
    # note of the batch. Whoever finds a committed batch still staged (the
    # caller, the step's own end, or the sweep) reveals it; one that never
    # committed is deleted by the sweep after STAGED_GRACE.

    @translated
    def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        for attempt in range(ENQUEUE_TRIES):
            created = self._try_create_workflow(workflow, steps)
            if created is not None:
                return created
            # Another create of this id is under way, or a dedupe key became live.
            time.sleep(min(0.001 * 2**attempt, 0.05))
        raise BackendConflict(
            f"workflow {workflow.id!r} stayed contended (another create under way, "
            "or dedupe keys taken meanwhile); try again"
        )

    def _try_create_workflow(
        self, workflow: WorkflowInsert, steps: Sequence[Insert]
    ) -> bool | None:
        """One try: what create_workflow answers, or None to look again."""
        now = self._clock.now()
        existing = self._workflows.find_one(
            {"_id": workflow.id}, {"state": 1, "batch": 1, "created_at": 1}
        )
        if existing is not None:
            if existing["state"] != d.PENDING:
                return False
            if as_utc(existing["created_at"]) < now - STAGED_GRACE:
                self._undo_create(workflow.id, existing["batch"])  # its creator died
            return None
        self._check_new_steps(steps)
        batch = secrets.token_hex(12)
        try:
            self._workflows.insert_one(d.workflow_document(workflow, batch=batch, now=now))
        except DuplicateKeyError:
            return None  # another create of this id got there first
        try:
            staged = self._stage_steps(steps, batch=batch, now=now)
        except (DuplicateJob, PyMongoError):
            self._forget_workflow(workflow.id, batch)
            raise
        if not staged:
            self._forget_workflow(workflow.id, batch)
            return None
        if not self._workflows.update_one(*d.commit_workflow(workflow.id, batch)).modified_count:
            # The sweep took this create for abandoned (it ran past STAGED_GRACE).
            self._roll_back(batch)
            raise BackendConflict(f"creating workflow {workflow.id!r} took too long; try again")
        self._reveal_steps(workflow.id, batch)
        queues = {s.queue for s in steps if s.status is JobStatus.QUEUED}
        if queues:
            self._signal(queues)
        return True

    def _forget_workflow(self, workflow_id: str, batch: str) -> None:
        try:
            self._workflows.delete_one(d.staged_workflow(workflow_id, batch))
        except PyMongoError as exc:
            # Invisible while pending; the sweep removes it later.
            log.warning("qw-mongodb: staged workflow %s not rolled back yet: %r", workflow_id, exc)

    def _check_new_steps(self, steps: Sequence[Insert]) -> None:
        """Refuse (DuplicateJob) a step id that exists, or a dedupe key a live job holds."""
        clash = self._jobs.find_one({"_id": {"$in": [s.id for s in steps]}}, {"_id": 1})
        if clash is not None:
            raise DuplicateJob(f"job id {clash['_id']!r} already exists")
        keys = {s.dedupe_key for s in steps if s.dedupe_key is not None}
        if not keys:
            return
        live = {
            doc["dedupe_live"]: doc["_id"]
            for doc in self._jobs.find(d.live_keys_filter(keys), {"dedupe_live": 1})
        }
        answers, _ = plan_enqueue(steps, live)
        held = [a.id for a in answers if not a.created]
        if held:
            raise DuplicateJob(f"a live job already holds the dedupe key of step(s) {held}")

    def _stage_steps(
        self,
        steps: Sequence[Insert],
        *,
        batch: str,
        now: datetime,
        adder: tuple[str, str] | None = None,
    ) -> bool:
        """Insert ``steps`` staged under ``batch``; False (nothing left) if a dedupe key raced."""
        children = d.step_children(steps)
        first = self._reserve(d.JOB_SEQ, len(steps))
        self._mark_keyed(steps)
        ranks = self._fair_ranks(steps)
        docs = [
            d.job_document(
                step,
                seq=first + k,
                now=now,
                batch=batch,
                children=children.get(step.id, ()),
                adder=adder,
                rank=ranks[k],
            )
            for k, step in enumerate(steps)
        ]
        try:
            self._jobs.insert_many(docs, ordered=True)
        except (DuplicateKeyError, BulkWriteError) as exc:
            self._roll_back(batch)
            if isinstance(exc, BulkWriteError) and any(
                e.get("code") != 11000 for e in exc.details.get("writeErrors", [])
            ):
                raise
            clash = self._jobs.find_one(
                {"_id": {"$in": [doc["_id"] for doc in docs]}, "batch": {"$ne": batch}},
                {"_id": 1},
            )
            if clash is not None:
                raise DuplicateJob(f"job id {clash['_id']!r} already exists") from None
            return False
        except PyMongoError:
            self._roll_back(batch)
            raise
        return True

    def _reveal(self, batch: str) -> None:
        for filter_, update in d.reveal_steps(batch):
            self._jobs.update_many(filter_, update)

    def _reveal_steps(self, workflow: str, batch: str) -> None:
        """Reveal a committed batch; cancel it if its workflow's cancel came first.

        The cancel sets its flag before it looks for steps, so either it
        finds these revealed, or the read here finds its flag.
        """
        self._reveal(batch)
        flow = self._workflows.find_one({"_id": workflow}, {"cancel_requested": 1})
        if flow is not None and flow.get("cancel_requested"):
            self._cancel_pass(workflow, batch=batch)

    @translated
    def add_steps(self, lease: Lease, steps: Sequence[Insert]) -> bool | None:
        for attempt in range(ENQUEUE_TRIES):
            answer = self._try_add_steps(lease, steps)
            if not isinstance(answer, _Retry):
                return answer
            time.sleep(min(0.001 * 2**attempt, 0.05))
        raise BackendConflict(
            f"adding steps from job {lease.job_id!r} stayed contended (dedupe keys "
            "taken meanwhile, or another add of this batch under way); try again"
        )

    def _try_add_steps(self, lease: Lease, steps: Sequence[Insert]) -> bool | _Retry | None:
        fence = d.fence_filter(lease.job_id, lease.token, lease.attempt)
        held = self._jobs.find_one(fence, {"workflow": 1})
        workflow = None if held is None else held.get("workflow")
        if workflow is None or any(s.workflow != workflow for s in steps):
            return None
        flow = self._workflows.find_one({"_id": workflow}, {"state": 1, "cancel_requested": 1})
        if flow is None or flow["state"] != d.WF_RUNNING or flow.get("cancel_requested"):
            return None
        first = self._jobs.find_one({"_id": steps[0].id}, {"status": 1, "batch": 1, "adder": 1})
        if first is not None:
            if first["status"] != d.PENDING or first.get("adder") != lease.job_id:
                return False
            # An earlier add of this batch by this job is staged.
            if self._jobs.find_one({"_id": lease.job_id, "adding.b": first["batch"]}, {"_id": 1}):
                self._finish_add(workflow, first["batch"], lease.job_id)
                return False  # it had committed: the batch was added
            # It never committed (its call failed, or its lease was lost): undo, add afresh.
            self._roll_back(first["batch"])
            return _RETRY
        self._check_new_steps(steps)
        batch = secrets.token_hex(12)
        adder = (lease.job_id, d.claim_token_of(lease.token, lease.job_id))
        if not self._stage_steps(steps, batch=batch, now=self._clock.now(), adder=adder):
            return _RETRY
        mine = d.step_children(steps).get(lease.job_id, [])
        if not self._jobs.update_one(fence, d.add_commit(mine, batch, len(steps))).modified_count:
            self._roll_back(batch)
            return None  # the lease was lost meanwhile
        self._finish_add(
            workflow, batch, lease.job_id, {s.queue for s in steps if s.status is JobStatus.QUEUED}
        )
        return True

    def _finish_add(
        self, workflow: str, batch: str, adder: str, queues: set[str] | None = None
    ) -> None:
        """Reveal a committed add and drop its note (idempotent); ``queues`` None wakes all."""
        self._reveal_steps(workflow, batch)
        self._jobs.update_one(*d.add_done(adder, batch))
        if queues is None:
            self._signal(None)
        elif queues:
            self._signal(queues)

    # -- workflows: reading ----------------------------------------------------

    @translated
    def get_workflow(self, workflow_id: str) -> Workflow | None:
        return self._get_workflow(workflow_id)

    def _get_workflow(self, workflow_id: str) -> Workflow | None:
        doc = self._workflows.find_one(
            {"_id": workflow_id, "state": {"$ne": d.PENDING}}, {"outbox": 0}
        )
        if doc is None:
            return None
        return d.workflow_from_document(doc, self._step_counts([workflow_id]).get(workflow_id, {}))

    def _step_counts(self, workflow_ids: list[str]) -> dict[str, dict[JobStatus, int]]:
        counts: dict[str, dict[JobStatus, int]] = {}
        for row in self._jobs.aggregate(d.step_counts_pipeline(workflow_ids)):
            counts.setdefault(row["_id"]["w"], {})[JobStatus(row["_id"]["s"])] = row["n"]
        return counts

    @translated
    def list_workflows(
        self, *, state: WorkflowState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Workflow]:
        query: dict[str, Any] = (
            {"state": state.value} if state is not None else {"state": {"$ne": d.PENDING}}
        )
        if after is not None:
            query["_id"] = {"$gt": after}
        docs = list(self._workflows.find(query, {"outbox": 0}, sort=[("_id", 1)], limit=limit))
        counts = self._step_counts([doc["_id"] for doc in docs])
        return [d.workflow_from_document(doc, counts.get(doc["_id"], {})) for doc in docs]

    # -- workflows: cancelling -------------------------------------------------

    @translated
    def cancel_workflow(self, workflow_id: str) -> Workflow | None:
        flow = self._workflows.find_one({"_id": workflow_id}, {"state": 1})
        if flow is None or flow["state"] == d.PENDING:
            return None
        if flow["state"] == d.WF_RUNNING:
            # The flag first: an add or create revealing steps afterwards sees it.
            self._workflows.update_one(*d.request_cancel(workflow_id))
            self._cancel_pass(workflow_id)
        return self._get_workflow(workflow_id)

    def _cancel_pass(
        self, workflow: str, *, batch: str | None = None, interruptible: bool = True
    ) -> None:
        """Cancel the waiting and queued steps (of ``batch``), flag the running ones, carry.

        Idempotent: a cancel interrupted part-way leaves ``cancel_done``
        False, and the sweep runs the pass again.
        """
        now = self._clock.now()
        ended: list[tuple[Mapping[str, Any], JobStatus]] = []
        for doc in list(
            self._jobs.find(d.cancellable_steps(workflow, batch), {"status": 1, "queue": 1})
        ):
            after = self._cancel_step(doc, now)
            if after is not None:
                ended.append((after, JobStatus.CANCELLED))
        if ended:
            self._carry(workflow, ended, interruptible=interruptible, in_cancel=True)
        else:
            self._end_workflow_if_done(workflow)
        if batch is None:
            self._workflows.update_one(*d.cancel_done(workflow))

    def _cancel_step(self, doc: Mapping[str, Any], now: datetime) -> Mapping[str, Any] | None:
        """Cancel one step as :meth:`cancel` does; its document if it ended so, else None."""
        job_id = doc["_id"]
        for _ in range(CANCEL_TRIES):
            status = doc["status"]
            if status in (d.WAITING, d.QUEUED):
                t = plan_cancel_queued(queue=doc["queue"])
                after = self._jobs.find_one_and_update(
                    d.cancel_queued(job_id, doc["queue"], status),
                    d.transition_update(t, now=now, event_key=d.cancel_event_key(job_id)),
                    projection=d.ENDED_PROJECTION,
                    return_document=ReturnDocument.AFTER,
                )
                if after is not None:
                    self._relay(after)
                    ended: Mapping[str, Any] = after
                    return ended
            elif status == d.RUNNING:
                if self._jobs.update_one(*d.cancel_running(job_id)).matched_count:
                    return None
            else:
                return None  # it ended meanwhile
            found = self._jobs.find_one({"_id": job_id, **d.VISIBLE}, {"status": 1, "queue": 1})
            if found is None:
                return None
            doc = found
        raise BackendConflict(f"step {job_id!r} kept changing while its workflow was cancelled")

    # -- workflows: carrying a step's end --------------------------------------

    def _interrupt_settles(self, n: int = 1) -> None:
        """Test hook: the next ``n`` step ends stop after their own write, as a crash would.

        Their children and workflow are left as the crash leaves them
        (``ended_settled`` False) for :meth:`reclaim_expired` to complete.
        A carry of several ends at once (a workflow cancel) counts as one.
        """
        self._settle_interrupts = n

    def _carry(
        self,
        workflow: str,
        ended: Sequence[tuple[Mapping[str, Any], JobStatus]],
        *,
        interruptible: bool = True,
        in_cancel: bool = False,
    ) -> None:
        """Steps 2-4 of the module docstring for steps of ``workflow`` that just ended.

        Each ``ended`` document carries :data:`~qw_mongodb.documents.ENDED_PROJECTION`.
        A driver error is logged, not raised: the step's own write stands,
        and the sweep completes the rest.
        """
        if interruptible and self._settle_interrupts > 0:
            self._settle_interrupts -= 1
            return
        try:
            if not in_cancel:
                flow = self._workflows.find_one(
                    {"_id": workflow}, {"state": 1, "cancel_requested": 1, "cancel_done": 1}
                )
                if (
                    flow is not None
                    and flow["state"] == d.WF_RUNNING
                    and flow.get("cancel_requested")
                    and not flow.get("cancel_done")
                ):
                    # Finish an interrupted cancel first: no child of this
                    # step is to be settled into running meanwhile.
                    self._cancel_pass(workflow, interruptible=False)
            for doc, _ in ended:
                for note in doc.get("adding") or ():
                    # Steps this one added, committed but not revealed: they are its children.
                    self._finish_add(workflow, note["b"], doc["_id"])
            graph = _Graph(self, self._clock.now())
            for doc, _ in ended:
                graph.children[doc["_id"]] = list(doc.get("children") or ())
            settle(graph, [(doc["_id"], status) for doc, status in ended])
            self._end_workflow_if_done(workflow)
            self._jobs.update_many(*d.carried([doc["_id"] for doc, _ in ended] + graph.ended))
            if graph.requeued:
                self._signal(graph.requeued)
        except PyMongoError as exc:
            log.warning(
                "qw-mongodb: the end of step(s) %s not carried yet (reclaim_expired will): %r",
                [doc["_id"] for doc, _ in ended][:5],
                exc,
            )

    def _end_workflow_if_done(self, workflow: str) -> None:
        """End the workflow if no step of it is left that has not ended (idempotent)."""
        for _ in range(3):
            flow = self._workflows.find_one({"_id": workflow}, {"state": 1, "cancel_requested": 1})
            if flow is None or flow["state"] != d.WF_RUNNING:
                return
            if self._jobs.find_one(d.live_steps(workflow), {"_id": 1}) is not None:
                return
            counts = self._step_counts([workflow]).get(workflow, {})
            requested = bool(flow.get("cancel_requested"))
            state = plan_workflow_end(
                failed=counts.get(JobStatus.FAILED, 0),
                cancelled=counts.get(JobStatus.CANCELLED, 0),
                cancel_requested=requested,
            )
            after = self._workflows.find_one_and_update(
                *d.workflow_end(
                    workflow,
                    state,
                    cancel_requested=requested,
                    event=workflow_event(workflow, state),
                    now=self._clock.now(),
                ),
                projection={"outbox": 1},
                return_document=ReturnDocument.AFTER,
            )
            if after is not None:
                self._relay(after, self._workflows)
                return
            # Ended by another settler, or cancelled meanwhile: look again.

    def _sweep_workflows(self) -> None:
        """Complete what a crash left undone: cancels first, then uncarried step ends."""
        for flow in list(
            self._workflows.find(d.UNFINISHED_CANCELS, {"_id": 1}, limit=CANCEL_SWEEP_BATCH)
        ):
            self._cancel_pass(flow["_id"], interruptible=False)
        by_flow: dict[str, list[tuple[Mapping[str, Any], JobStatus]]] = {}
        for doc in self._jobs.find(d.UNSETTLED_ENDS, d.ENDED_PROJECTION, limit=SETTLE_BATCH):
            by_flow.setdefault(doc["workflow"], []).append((doc, JobStatus(doc["status"])))
        for workflow, ended in by_flow.items():
            self._carry(workflow, ended, interruptible=False)


class _Retry:
    """An add_steps try that must be made again (a sentinel)."""


_RETRY = _Retry()


class _Graph:
    """The MongoDB side of :func:`qw.transitions.settle`: idempotent one-document writes.

    Not one atomic write (see the module docstring): each write is a no-op
    when repeated, so a settle cut short is completed by running it again.
    """

    def __init__(self, backend: MongoBackend, now: datetime) -> None:
        self._backend = backend
        self._jobs = backend._jobs
        self._now = now
        #: Children of the steps being settled, as their own writes returned them.
        self.children: dict[str, list[str]] = {}
        #: Steps this settle ended (cancelled by plan_settled), to be marked carried.
        self.ended: list[str] = []
        self.requeued: set[str] = set()

    def count_ended(self, parent: str, status: JobStatus) -> list[Ready]:
        children = self.children.get(parent)
        if children is None:
            doc = self._jobs.find_one({"_id": parent}, {"children": 1})
            children = list((doc or {}).get("children") or ())
        if not children:
            return []
        self._jobs.update_many(*d.settle_children(children, parent, status))
        # Ready whoever counted the last parent (this call, or one a crash cut short).
        order = {child: i for i, child in enumerate(children)}
        ready = [
            d.ready_of(doc) for doc in self._jobs.find(d.ready_steps(children), d.READY_PROJECTION)
        ]
        ready.sort(key=lambda r: order[r.id])
        return ready

    def apply_settled(self, step: Ready, transition: Transition) -> None:
        after = self._jobs.find_one_and_update(
            d.settled_cas(step.id),
            d.transition_update(transition, now=self._now, event_key=d.settled_event_key(step.id)),
            projection=d.ENDED_PROJECTION,
            return_document=ReturnDocument.AFTER,
        )
        if after is None:
            return  # another settler applied it first, and carries it
        self._backend._relay(after)
        if transition.status is JobStatus.QUEUED:
            self.requeued.add(after["queue"])
        else:
            self.children[step.id] = list(after.get("children") or ())
            self.ended.append(step.id)


def choose_write_concern(client_wc: object) -> WriteConcern:
    """The application's explicit write concern, else ``w:"majority", j:true``."""
    if isinstance(client_wc, WriteConcern) and not client_wc.is_server_default:
        return client_wc
    return DEFAULT_WRITE_CONCERN


def _same_index(found: Mapping[str, Any] | None, spec: Mapping[str, Any]) -> bool:
    """Whether an index listed by ``index_information`` is exactly ``spec`` (an IndexModel's).

    Anything else goes to ``create_index``, which makes it or refuses a
    conflicting one. (mongomock, rebuilding a unique index over existing
    documents, ignores its partial filter: skipping the no-op avoids that.)
    """
    if found is None:
        return False
    keys = [(name, int(direction)) for name, direction in found.get("key", ())]
    return (
        keys == [(name, int(direction)) for name, direction in spec["key"].items()]
        and bool(found.get("unique")) == bool(spec.get("unique"))
        and bool(found.get("sparse")) == bool(spec.get("sparse"))
        and found.get("partialFilterExpression") == spec.get("partialFilterExpression")
    )


def _claim(doc: Mapping[str, Any]) -> Claim:
    job = d.job_from_document(doc)
    assert job.lease_expires_at is not None
    return Claim(job, Lease(job.id, d.lease_token(doc["token"], job.id), job.lease_expires_at))
