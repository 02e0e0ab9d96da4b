"""The ``redis`` backend: one namespace in Redis (single server or Cluster).

Every change is one Lua script called by SHA (see :mod:`qw_redis.scripts`);
each script touches only the keys passed in ``KEYS``, all under the
namespace's hash tag. Times come from the server (``TIME`` in the script).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, cast

from qw.capabilities import Capabilities
from qw.contract import Finish, Insert, Switches, WorkflowInsert
from qw.errors import BackendError, DuplicateJob, InvalidName, SchemaError, Unsupported
from qw.limits import key_state
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
    Transition,
    plan_cancel_queued,
    plan_enqueue,
    plan_reclaim,
    plan_retry,
    repeat_status,
)
from qw.wakeup import Listener, WakeupHub
from qw_redis.codec import (
    CLAIM_WIDTH,
    ROW_WIDTH,
    WORKFLOW_WIDTH,
    StepFields,
    decode_limit,
    encode_limit,
    flow_fields,
    from_us,
    job_from_row,
    loads,
    progress_args,
    progress_from,
    step_fields,
    to_us,
    worker_from,
    worker_info_json,
    workflow_from_row,
)
from qw_redis.connect import check_persistence, open_client, subscriber_for
from qw_redis.errors import translated
from qw_redis.keys import SCHEMA_VERSION, Keyspace, packed_queue
from qw_redis.listen import make_listen
from qw_redis.plans import Command, Op, Plan, Script
from qw_redis.results import EndedWaiters
from qw_redis.scripts import NAMES, STANDALONE, key_names, source
from qw_redis.urls import RedisConfig, parse_url

if TYPE_CHECKING:
    from qw.aio import AsyncBackend

__all__ = ["RedisBackend", "token_queue"]

T = TypeVar("T")

#: Due scheduled jobs moved to ready per queue per claim (bounds the script's run time).
PROMOTE_MAX = 1000
#: Expired leases handled per reclaim script call; terminal jobs per purge call.
BATCH = 500
#: Job id -> queue entries remembered from this object's claims.
_QUEUE_CACHE_MAX = 100_000
#: The (script, queues) KEYS lists remembered (a process uses a few queue lists).
_CALL_KEYS_MAX = 1024
#: Held-back jobs a claim looks at once it has taken a job (see lua/claim.lua):
#: it then answers what it has, a prefix of plan_claim's answer, rather than
#: reading deeper into keys that are full (the next claim goes on); with
#: nothing taken yet it looks as far as it takes, never answering nothing
#: while a claimable job lies past the held-back ones.
SCAN_MAX = 500
#: Parked jobs of one (queue, key, declared limit) a claim moves back at most
#: (more only where the limit has room for more; see lua/claim.lua).
UNPARK_MAX = 1000
#: Held-back jobs a claim only passes over before it parks the next ones,
#: of one key and in all (see lua/claim.lua): parking a job and moving it
#: back costs about what a few claims' reading it costs.
PARK_KEY = 2
PARK_AFTER = 1000
#: How long the first claim or wait waits for the subscription (then it polls).
_FIRST_CONNECT_S = 2.0
#: Fields per job of ``expired.lua``'s reply.
_EXPIRED_WIDTH = 6
#: Jobs converted per migrate script call (see lua/migrate.lua).
MIGRATE_BATCH = 5000
#: Enqueue attempts when live dedupe keys keep changing under the plan.
_ENQUEUE_TRIES = 10
#: Calls of a script that may end a workflow step, when it keeps naming
#: queues of the step's workflow that the call did not declare (add_steps
#: can grow a workflow's queues between two calls).
_QUEUE_TRIES = 10


# Only ever up: clients opened with fewer shards keep placing on what is stored.
# Not one of the layout's scripts (lua/): it reaches the router's key alone,
# once per open, so it is sent by EVAL as it is.
_RAISE_SHARDS = """
local stored = tonumber(redis.call('GET', KEYS[1]) or '1')
local asked = tonumber(ARGV[1])
if asked > stored then
  redis.call('SET', KEYS[1], asked)
  return asked
end
return stored
"""


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _transition_args(t: Transition) -> tuple[object, ...]:
    """``t`` as the fields ``lua/apply.lua`` reads ('' = leave the stored value)."""
    if t.event_type is None:
        event: tuple[str, str] = ("", "")
    else:
        event = (t.event_type, "null" if t.event_data is None else t.event_data)
    return (
        t.status.value,
        "" if t.attempts is None else t.attempts,
        "" if t.run_in is None else _us(t.run_in),
        "" if t.result is None else t.result,
        "" if t.error is None else t.error,
        "1" if t.finished else "",
        "" if t.finished_by is None else t.finished_by,
        *event,
    )


def _needs(reply: Any) -> list[str] | None:
    """The queues a script asked to be declared (``{'N', queue, ...}``), or None."""
    if isinstance(reply, list) and reply and reply[0] == "N":
        return list(reply[1:])
    return None


def _refuse_misplaced(reply: Any, namespace: str) -> None:
    """Raise where an insert on shard 0 found a queue placed on another shard (``{'P', q, s}``).

    Only a client opened before its namespace was sharded sends such a call
    (a router sends each queue's jobs to its shard): it must open again.
    """
    if reply[0] == "P":
        raise SchemaError(
            f"namespace {namespace!r} was sharded after this client opened it, and queue"
            f" {reply[1]!r} lives on shard {reply[2]}: open the client again"
        )


def _flow_args(job: Insert) -> tuple[object, ...]:
    """The flow-control fields of ``job`` as common.lua's insert_lim reads them."""
    if job.limit_key is None:
        return ("", "", "")
    return (job.limit_key, encode_limit(job.limit), "1" if job.fair else "")


def _step_args(steps: Sequence[Insert], index: dict[str, int]) -> list[object]:
    """``steps`` as ``lua/steps.lua`` reads them."""
    args: list[object] = []
    for step in steps:
        args += (
            step.id,
            index[step.queue],
            step.payload,
            step.priority,
            step.max_attempts,
            step.dedupe_key or "",
            "" if step.run_at is None else to_us(step.run_at),
            _us(step.delay or 0),
            JobStatus(step.status).value,
            step.on_parent_failure.value,
            " ".join(step.parents),
            *_flow_args(step),
        )
    return args


def token_queue(token: str) -> str | None:
    """The queue a claim token names (``<hex>:<n>:<queue>``), if it is a valid name."""
    parts = token.split(":")
    if len(parts) != 3:
        return None
    try:
        Keyspace.check_queue(parts[2])
    except InvalidName:
        return None
    return parts[2]


class RedisBackend:
    """A namespace in Redis; see the module docstring."""

    name: ClassVar[str] = "redis"
    capabilities = Capabilities(
        thread_safe=True,
        multi_process=True,
        native_wakeup=True,
        durable=False,
        queue_switch=True,
        limits=True,
        schedules=True,
        progress=True,
        result_wakeup=True,
        retry=True,
    )

    def __init__(
        self,
        config: RedisConfig,
        *,
        namespace: str,
        shard: int = 0,
        client: Any = None,
        hub: WakeupHub | None = None,
    ) -> None:
        """Open shard ``shard`` of ``namespace`` (0: the plain, one-slot namespace).

        A sharded namespace's router (:mod:`qw_redis.sharded`) opens one per
        shard, handing each shard 0's ``client`` (which only shard 0 closes)
        and its ``hub``: queue names are unique across shards.
        """
        # Names are checked before any key is built or any I/O happens.
        self._keys = Keyspace(namespace, shard)
        self._config = config
        self._owns_client = client is None
        if client is None:
            with translated("connect"):
                client = open_client(config)
                check_persistence(config, client)
        self._client: Any = client
        publish = "SPUBLISH" if config.cluster else "PUBLISH"
        self._scripts = {
            n: self._client.register_script(source(n, publish)) for n in (*NAMES, *STANDALONE)
        }
        self._hub = hub if hub is not None else WakeupHub(poll_interval=config.poll_interval)
        self._ended = EndedWaiters()
        self._lock = threading.Lock()
        self._listener: Listener | None = None
        self._closed = False
        #: (script, *queues) -> the call's KEYS (see script_call).
        self._call_keys: dict[tuple[str, ...], tuple[bytes, ...]] = {}
        self._queue_of: dict[str, str] = {}
        # Workflow steps claimed here -> the queues of their workflow, which
        # a script that may end the step declares (see lua/apply.lua's need_queues).
        self._flow_queues_of: dict[str, tuple[str, ...]] = {}
        try:
            self.migrate()
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> Self:
        """Open ``namespace``; a sharded one (by the URL or the store) gets its router.

        Whether a namespace is sharded is the store's to say as much as the
        URL's (``qw:{ns}:shards``), so every client of a sharded namespace
        routes alike whatever URL it was given.
        """
        Keyspace(namespace)
        from qw_redis.sharded import open_namespace

        # A sharded namespace's router serves the same protocol over one of these per shard.
        return cast(Self, open_namespace(cls(parse_url(url), namespace=namespace)))

    # -- shards (see qw_redis.sharded; these read and write shard 0's keys) ---

    def open_shard(self, shard: int) -> RedisBackend:
        """Shard ``shard`` of this namespace, sharing this one's client and wake-up hub."""
        return type(self)(
            self._config, namespace=self.namespace, shard=shard, client=self._client, hub=self._hub
        )

    @property
    def hub(self) -> WakeupHub:
        """The hub this backend's claims arm and its listener feeds."""
        return self._hub

    def stored_shards(self) -> int:
        """How many shards the namespace's new queues are spread over (1 when never sharded)."""
        with translated("shards"):
            raw = self._client.get(self._keys.shards_key)
        return 1 if raw is None else int(raw)

    def raise_shards(self, shards: int) -> int:
        """Store ``shards`` unless more are stored already; the count stored after."""
        with translated("shards"):
            return int(self._client.eval(_RAISE_SHARDS, 1, self._keys.shards_key, shards))

    def placement(self, queue: str) -> int | None:
        """The shard holding ``queue``, or None while it has none."""
        with translated("placement"):
            raw = self._client.hget(self._keys.placement_key, queue)
        return None if raw is None else int(raw)

    def place(self, queue: str, shard: int) -> int:
        """Put ``queue`` on ``shard`` unless it is placed already; the shard holding it."""
        with translated("placement"):
            self._client.hsetnx(self._keys.placement_key, queue, shard)
            return int(self._client.hget(self._keys.placement_key, queue))

    @classmethod
    async def open_async(cls, url: str, *, namespace: str) -> AsyncBackend:
        """The native async twin on ``url`` (see :mod:`qw_redis.aio`).

        A sharded namespace has none: its router runs in threads.
        """
        from qw_redis.aio import AsyncRedisBackend

        return await AsyncRedisBackend.open(cls, url, namespace=namespace)

    @property
    def namespace(self) -> str:
        return self._keys.namespace

    @property
    def config(self) -> RedisConfig:
        """What the URL asked for."""
        return self._config

    @property
    def keyspace(self) -> Keyspace:
        return self._keys

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        if not self._owns_client:
            return
        try:
            self._client.close()
        except Exception:
            pass  # closing a broken connection is not an error

    # -- plumbing ------------------------------------------------------------

    def script_call(
        self, name: str, queues: Sequence[str], args: Sequence[object]
    ) -> tuple[Sequence[bytes], list[object]]:
        """The KEYS and ARGV of script ``name`` with the queue header ``queues``.

        KEYS are the script's own (:func:`~qw_redis.scripts.key_names`), then
        each queue's ready and scheduled sets, built and encoded once per
        script and queue list: a call packs them as they are.
        """
        key = (name, *queues)
        keys = self._call_keys.get(key)
        if keys is None:
            names = self._keys.script_keys(key_names(name)) + self._keys.queue_keys(queues)
            keys = tuple(k.encode() for k in names)
            if len(self._call_keys) >= _CALL_KEYS_MAX:
                self._call_keys.clear()
            self._call_keys[key] = keys
        return keys, [len(queues), *queues, *args]

    def _run(self, name: str, queues: Sequence[str], args: Sequence[object]) -> Any:
        keys, argv = self.script_call(name, queues, args)
        with translated(name):
            return self._scripts[name](keys=keys, args=argv)

    def _do(self, op: Op) -> Any:
        if isinstance(op, Script):
            return self._run(op.name, op.queues, op.args)
        with translated(op.context):
            return getattr(self._client, op.method)(*op.args)

    def _drive(self, plan: Plan[T]) -> T:
        """Run ``plan`` (see :mod:`qw_redis.plans`) with the blocking client."""
        return drive(plan, self._do)

    def _remember(self, job_id: str, queue: str) -> None:
        if len(self._queue_of) >= _QUEUE_CACHE_MAX:
            self._queue_of.clear()
        self._queue_of[job_id] = queue

    def _remember_flow(self, job_id: str, queues: tuple[str, ...]) -> None:
        if len(self._flow_queues_of) >= _QUEUE_CACHE_MAX:
            self._flow_queues_of.clear()
        self._flow_queues_of[job_id] = queues

    def _forget(self, job_id: str) -> None:
        self._queue_of.pop(job_id, None)
        self._flow_queues_of.pop(job_id, None)

    def _queues_of(self, ids: Sequence[str], tokens: Sequence[str] | None = None) -> dict[str, str]:
        return self._drive(self.queues_of_plan(ids, tokens))

    def queues_of_plan(
        self, ids: Sequence[str], tokens: Sequence[str] | None = None
    ) -> Plan[dict[str, str]]:
        """Each job's queue (immutable per id): from its lease token, remembered, else read.

        A token made by claim ends ``:<queue>``. A token naming another queue
        than the job's can only be stale or forged, and the script answers it
        None either way, as it would have without the hint.
        """
        found: dict[str, str] = {}
        for n, i in enumerate(ids):
            q = self._queue_of.get(i)
            if q is None and tokens is not None:
                q = token_queue(tokens[n])
            if q is not None:
                found[i] = q
        missing = list(dict.fromkeys(i for i in ids if i not in found))
        if missing:
            packed = yield Command("lookup", "hmget", (self._keys.column("job"), missing))
            found.update(
                {i: packed_queue(v) for i, v in zip(missing, packed, strict=True) if v is not None}
            )
        return found

    def now(self) -> datetime:
        return self._drive(self.now_plan())

    def now_plan(self) -> Plan[datetime]:
        return from_us((yield Script("now", (), ())))

    def migrate(self) -> str:
        """Bring this namespace's keys to :data:`~qw_redis.keys.SCHEMA_VERSION`; say what was done.

        Runs when the backend opens (one script call when there is nothing
        to do). A namespace written by qw-redis 0.1.0 (no marker) is
        converted in batches of MIGRATE_BATCH jobs, each batch one script;
        several processes may run it at once. One written by a newer
        qw-redis raises :class:`~qw.errors.SchemaError`.
        """
        keys = [*self._keys.script_keys(key_names("migrate")), *self._keys.schema_keys]
        converted = 0
        cursor = "0"
        while True:
            with translated("migrate"):
                reply = self._scripts["migrate"](
                    keys=keys, args=[0, SCHEMA_VERSION, MIGRATE_BATCH, cursor]
                )
            if reply[0] == "M":
                cursor = reply[1]
                converted += 1
                continue
            try:
                found = int(reply[1])
            except ValueError:
                found = -1
            if found != SCHEMA_VERSION:
                raise SchemaError(
                    f"redis namespace {self.namespace!r} has key layout version {reply[1]!r}; "
                    f"this qw-redis knows {SCHEMA_VERSION}: upgrade qw-redis"
                )
            if converted:
                return f"namespace {self.namespace!r}: converted 0.1.0 jobs to version {found}"
            return f"namespace {self.namespace!r}: key layout version {found}, nothing to do"

    # -- producing -----------------------------------------------------------

    def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        return self._drive(self.enqueue_plan(jobs))

    def enqueue_plan(self, jobs: Sequence[Insert]) -> Plan[list[Enqueued]]:
        """Plan with :func:`~qw.transitions.plan_enqueue`, then insert in one script.

        Optimistic: the plan assumes the live holders of the batch's dedupe
        keys (none, at first), and the script writes only if they are still
        exactly those; otherwise it answers the holders it found and the call
        plans again with them. A batch without dedupe keys is one round trip,
        and so is one whose keys no live job holds.
        """
        if len(jobs) == 1:
            job = jobs[0]
            if job.dedupe_key is None and job.limit_key is None and job.workflow is None:
                return (yield from self._enqueue_one(job))
        keys = list(dict.fromkeys(j.dedupe_key for j in jobs if j.dedupe_key is not None))
        live: dict[str, str] = {}
        for _ in range(_ENQUEUE_TRIES):
            answers, insert = plan_enqueue(jobs, live)
            queues = list(dict.fromkeys(jobs[i].queue for i in insert))
            index = {q: i for i, q in enumerate(queues, start=1)}
            args: list[object] = [len(keys)]
            for key in keys:
                args += (key, live.get(key, ""))
            args.append(len(insert))
            for i in insert:
                job = jobs[i]
                args += (
                    job.id,
                    index[job.queue],
                    job.payload,
                    job.priority,
                    job.max_attempts,
                    job.dedupe_key or "",
                    "" if job.run_at is None else to_us(job.run_at),
                    _us(job.delay or 0),
                    *_flow_args(job),
                )
            if len(insert) < len(jobs):
                inserted = set(insert)
                args += (job.id for i, job in enumerate(jobs) if i not in inserted)
            reply = yield Script("enqueue", queues, args)
            _refuse_misplaced(reply, self.namespace)
            if reply[0] == "D":
                raise DuplicateJob(f"job id {reply[1]!r} already exists")
            if reply[0] == "K":
                live = {reply[i]: reply[i + 1] for i in range(1, len(reply), 2)}
                continue
            if queues:
                self._hub.notify(queues)
            return answers
        raise BackendError("the live dedupe keys of this batch keep changing; enqueue gave up")

    def _enqueue_one(self, job: Insert) -> Plan[list[Enqueued]]:
        """One plain job (no dedupe or limit key, no workflow) by ``lua/enqueue_one.lua``.

        The common single call: a script that reaches only the writes it
        makes costs Redis a fraction of the batch script's run.
        """
        run_at = "" if job.run_at is None else to_us(job.run_at)
        args = (job.id, job.payload, job.priority, job.max_attempts, run_at, _us(job.delay or 0))
        reply = yield Script("enqueue_one", (job.queue,), args)
        _refuse_misplaced(reply, self.namespace)
        if reply[0] == "D":
            raise DuplicateJob(f"job id {reply[1]!r} already exists")
        self._hub.notify((job.queue,))
        return [Enqueued(job.id, created=True)]

    # -- working -------------------------------------------------------------

    def claim(
        self, queues: Sequence[str], *, worker: str, lease_s: float, limit: int
    ) -> list[Claim]:
        # A worker claims before it waits: subscribe first, so that arming
        # happens on a live channel and the first wait() is not a poll.
        self.ensure_listener()
        self._hub.arm(queues)
        prefix = secrets.token_hex(12) + ":"
        reply = self._run(
            "claim",
            queues,
            (
                worker,
                _us(lease_s),
                limit,
                prefix,
                PROMOTE_MAX,
                SCAN_MAX,
                UNPARK_MAX,
                PARK_AFTER,
                PARK_KEY,
            ),
        )
        if not reply:
            return []
        now, expires = from_us(reply[0]), from_us(reply[1])
        claims = []
        for b in range(2, len(reply), CLAIM_WIDTH):
            (
                id_,
                queue,
                payload,
                prio,
                run_at,
                max_a,
                att,
                created,
                dedupe,
                result,
                error,
                token,
                step,
                lim,
                prog,
            ) = reply[b : b + CLAIM_WIDTH]
            step_kw = step_fields(step)
            job = Job(
                id=id_,
                queue=queue,
                payload=loads(payload),
                priority=int(prio),
                run_at=from_us(run_at),
                max_attempts=int(max_a),
                attempts=int(att),
                status=JobStatus.RUNNING,
                created_at=from_us(created),
                dedupe_key=dedupe,
                result=loads(result),
                error=loads(error),
                started_at=now,
                worker=worker,
                lease_expires_at=expires,
                **step_kw,
                **flow_fields(lim),
                progress=progress_from(prog),
            )
            self._remember(id_, queue)
            if isinstance(step_kw, StepFields):
                self._remember_flow(id_, step_kw.queues)
            # Stamped with the attempt here, so the Client need not rebuild the lease.
            lease = Lease(id_, token, expires, False, job.attempts, job.max_attempts)
            claims.append(Claim(job, lease))
        return claims

    def renew(self, leases: Sequence[Lease], lease_s: float) -> list[Lease | None]:
        args: list[object] = [_us(lease_s)]
        for lease in leases:
            args += (lease.job_id, lease.token, lease.attempt)
        reply = self._run("renew", (), args)
        answers: list[Lease | None] = []
        for lease, i in zip(leases, range(0, len(reply), 2), strict=True):
            if reply[i] is None:
                answers.append(None)
            else:
                answers.append(
                    replace(
                        lease, expires_at=from_us(reply[i]), cancel_requested=reply[i + 1] == "1"
                    )
                )
        return answers

    def finish(self, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        leases = [f.lease for f in finishes]
        queue_of = self._queues_of([ls.job_id for ls in leases], [ls.token for ls in leases])
        queues = list(dict.fromkeys(queue_of.values()))
        index = {q: i for i, q in enumerate(queues, start=1)}
        args: list[object] = []
        sent: list[int] = []
        for n, finish in enumerate(finishes):
            lease = finish.lease
            queue = queue_of.get(lease.job_id)
            if queue is None:
                continue  # unknown job: answered None below
            args += (
                lease.job_id,
                lease.token,
                index[queue],
                lease.attempt,
                *_transition_args(finish.transition),
            )
            sent.append(n)
        answers: list[JobStatus | None] = [None] * len(finishes)
        if not sent:
            return answers
        flows = self._flow_queues_of
        # Queue indexes of the jobs themselves come first; a step's workflow
        # queues follow, where its end may queue children.
        extra = [q for n in sent for q in flows.get(leases[n].job_id, ()) if q not in index]
        reply = self._run_declaring("finish", queues, extra, args)
        requeued = set(reply[2 * len(sent) :])
        for k, n in enumerate(sent):
            stored = reply[2 * k]
            if stored is None:
                continue
            transition = finishes[n].transition
            job_id = leases[n].job_id
            if stored == 1:
                answers[n] = transition.status
                if transition.status is JobStatus.QUEUED:
                    requeued.add(queue_of[job_id])
            else:
                answers[n] = repeat_status(transition, JobStatus(stored), reply[2 * k + 1])
            self._forget(job_id)
        if requeued:
            self._hub.notify(requeued)
        return answers

    def _run_declaring(
        self, name: str, queues: Sequence[str], extra: Sequence[str], args: Sequence[object]
    ) -> Any:
        return self._drive(self.declaring_plan(name, queues, extra, args))

    def declaring_plan(
        self, name: str, queues: Sequence[str], extra: Sequence[str], args: Sequence[object]
    ) -> Plan[Any]:
        """Run ``name`` with the header ``queues`` + ``extra``, adding queues it asks for.

        Indexes into ``queues`` in ``args`` stay valid: asked-for queues are
        appended after them.
        """
        header = list(queues)
        header += (q for q in dict.fromkeys(extra) if q not in header)
        for _ in range(_QUEUE_TRIES):
            reply = yield Script(name, header, args)
            needed = _needs(reply)
            if needed is None:
                return reply
            header += (q for q in needed if q not in header)
        raise BackendError(f"the queues of a workflow keep changing; {name} gave up")

    def reclaim_expired(self) -> int:
        total = 0
        while True:
            rows = self._run("expired", (), (BATCH,))
            if not rows:
                return total
            width = _EXPIRED_WIDTH
            found = [
                rows[i : i + width]
                for i in range(0, len(rows), width)
                if rows[i + 1] and rows[i + 2]
            ]
            queues = list(dict.fromkeys(row[1] for row in found))
            index = {q: i for i, q in enumerate(queues, start=1)}
            args: list[object] = []
            requeued: set[str] = set()
            extra: list[str] = []
            for job_id, queue, token, attempts, max_attempts, flow_queues in found:
                transition = plan_reclaim(
                    attempts=int(attempts), max_attempts=int(max_attempts), queue=queue
                )
                if transition.status is JobStatus.QUEUED:
                    requeued.add(queue)
                elif flow_queues:
                    extra += flow_queues.split(" ")
                args += (job_id, index[queue], token, *_transition_args(transition))
            moved = 0
            if found:
                reply = self._run_declaring("reclaim", queues, extra, args)
                moved = int(reply[0])
                requeued.update(reply[1:])
            total += moved
            if requeued:
                self._hub.notify(requeued)
            if len(rows) // width < BATCH or moved == 0:
                return total

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        self.ensure_listener()
        return self._hub.wait(queues, timeout)

    def ensure_listener(self) -> None:
        """Subscribe to the shard's wake-ups if not yet (waiting up to 2 s for it)."""
        if self._listener is not None:
            return
        listener = self._start_listener()
        if listener is not None:
            # Not subscribed in time, the hub polls until it is.
            listener.wait_ready(_FIRST_CONNECT_S)

    def _start_listener(self) -> Listener | None:
        with self._lock:
            if self._closed:
                return None
            if self._listener is not None:
                return self._listener
            channel = self._keys.channel
            listen = make_listen(
                self._hub,
                channel,
                lambda: subscriber_for(self._config, self._client, channel),
                sharded=self._config.cluster,
                ended=self._ended,
                ended_channel=self._keys.ended_channel,
            )
            listener = Listener(self._hub, listen, name=f"qw-redis-wakeup-{self._keys.tag}")
            listener.start()
            self._listener = listener
            return listener

    # -- progress and results ------------------------------------------------

    def set_progress(
        self, lease: Lease, fraction: float | None, message: str | None, event_data: str
    ) -> bool:
        """One script: fenced as finish, it writes ``f:prog`` and the outbox event."""
        args = (
            lease.job_id,
            lease.token,
            lease.attempt,
            *progress_args(fraction, message),
            PROGRESS_EVENT,
            event_data,
        )
        return bool(self._run("set_progress", (), args))

    def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        """Arm, read, wait for an ``ended`` message naming the job, read again.

        Arming before each read means a job that ends between the read and
        the wait is not missed; while the subscription is down the wait
        polls every ``poll_interval``.
        """
        self.ensure_listener()
        deadline = time.monotonic() + timeout
        with self._ended.watch(job_id) as watch:
            while True:
                self._ended.arm(watch)
                job = self.get(job_id)
                if job is None or job.status.is_terminal:
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    return job
                if not self._ended.live:
                    left = min(left, self._config.poll_interval)
                self._ended.wait(watch, left)

    # -- the application's transaction ---------------------------------------
    # Not offered (capability ``transactional`` False): Redis cannot take
    # part in another store's transaction; the client refuses
    # ``connection=`` before calling these, and a direct call is refused here.

    def enqueue_in(self, connection: object, jobs: Sequence[Insert]) -> list[Enqueued]:
        raise Unsupported(
            "the redis backend cannot enqueue in an application's transaction: "
            "enqueue after the commit, or from an outbox table"
        )

    def create_workflow_in(
        self, connection: object, workflow: WorkflowInsert, steps: Sequence[Insert]
    ) -> bool:
        raise Unsupported("the redis backend cannot write in an application's transaction")

    def finish_in(self, connection: object, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        raise Unsupported("the redis backend cannot finish in an application's transaction")

    # -- workers and switches ------------------------------------------------

    def heartbeat(self, worker: WorkerInfo) -> None:
        started = "" if worker.started_at is None else to_us(worker.started_at)
        self._run("heartbeat", (), (worker.id, worker_info_json(worker), started))

    def remove_worker(self, worker_id: str) -> None:
        self._run("remove_worker", (), (worker_id,))

    def workers(self) -> list[WorkerInfo]:
        reply = self._run("workers", (), ())
        found = [worker_from(*reply[i : i + 4]) for i in range(0, len(reply), 4)]
        return sorted(found, key=lambda w: w.id)

    def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        self._drive(self.set_enabled_plan(enabled, queue))

    def set_enabled_plan(self, enabled: bool, queue: str | None = None) -> Plan[None]:
        if queue is not None:
            self._keys.queue_keys([queue])  # validates the name before it enters a field
        field = "*" if queue is None else "q:" + queue
        yield Script("switch", (), (field, "1" if enabled else "0"))
        if enabled:
            self._hub.notify_all()

    def switches(self) -> Switches:
        return self._drive(self.switches_plan())

    def switches_plan(self) -> Plan[Switches]:
        raw = yield Command("switches", "hgetall", (self._keys.key("switch"),))
        queues = {k[2:]: v == "1" for k, v in raw.items() if k.startswith("q:")}
        return Switches(raw.get("*", "1") == "1", dict(sorted(queues.items())))

    # -- inspection and operations -------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self.get_many([job_id])[0]

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        return self._drive(self.get_many_plan(job_ids))

    def get_many_plan(self, job_ids: Sequence[str]) -> Plan[list[Job | None]]:
        if not job_ids:
            return []
        reply = yield Script("get", (), list(job_ids))
        n = len(job_ids)
        rows = iter(range(n, len(reply), ROW_WIDTH))
        return [
            job_from_row(reply[(b := next(rows)) : b + ROW_WIDTH]) if reply[i] else None
            for i in range(n)
        ]

    def counts(self) -> dict[str, dict[JobStatus, int]]:
        return self._drive(self.counts_plan())

    def counts_plan(self) -> Plan[dict[str, dict[JobStatus, int]]]:
        raw = yield Command("counts", "hgetall", (self._keys.key("counts"),))
        counts: dict[str, dict[JobStatus, int]] = {}
        for field, value in raw.items():
            queue, _, status = field.rpartition(":")
            if int(value):
                counts.setdefault(queue, {})[JobStatus(status)] = int(value)
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
        return self._drive(
            self.list_jobs_plan(
                queue=queue, status=status, limit=limit, after=after, workflow=workflow, key=key
            )
        )

    def list_jobs_plan(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        workflow: str | None = None,
        key: str | None = None,
    ) -> Plan[list[Job]]:
        if queue is not None:
            self._keys.queue_keys([queue])
        reply = yield Script(
            "list",
            (),
            (
                queue or "",
                "" if status is None else JobStatus(status).value,
                limit,
                after or "",
                workflow or "",
                key or "",
            ),
        )
        return [job_from_row(reply[i : i + ROW_WIDTH]) for i in range(0, len(reply), ROW_WIDTH)]

    def cancel(self, job_id: str) -> JobStatus | None:
        return self._drive(self.cancel_plan(job_id))

    def cancel_plan(self, job_id: str) -> Plan[JobStatus | None]:
        for _ in range(3):
            queue = (yield from self.queues_of_plan([job_id])).get(job_id)
            if queue is None:
                return None
            transition = plan_cancel_queued(queue=queue)
            extra = self._flow_queues_of.get(job_id, ())
            reply = yield from self.declaring_plan(
                "cancel", (queue,), extra, (job_id, *_transition_args(transition))
            )
            if reply is None:
                return None
            if isinstance(reply, list):
                if reply[0] == "Q":
                    self._forget(job_id)
                    continue  # purged and re-created in another queue meanwhile
                if len(reply) > 1:
                    self._hub.notify(reply[1:])
                return JobStatus(reply[0])
            return JobStatus(reply)
        raise BackendError(f"job {job_id!r} keeps changing queue; cancel gave up")

    def retry(self, job_id: str) -> JobStatus | None:
        return self._drive(self.retry_plan(job_id))

    def retry_plan(self, job_id: str) -> Plan[JobStatus | None]:
        """Read the job, decide with :func:`~qw.transitions.plan_retry`, apply by compare-and-set.

        ``lua/retry.lua`` applies the transition only while the job has the
        status and attempts read here, and only if no other live job holds
        its dedupe key (it answers the holder, and the decision is made
        again with it); a job that moved is read again.
        """
        for _ in range(_QUEUE_TRIES):
            (job,) = yield from self.get_many_plan([job_id])
            if job is None:
                return None
            read = (job.status, job.attempts, job.max_attempts, job.workflow)
            t = plan_retry(*read, job_id=job_id, queue=job.queue)
            if t is None:
                return job.status
            reply = yield Script(
                "retry",
                (job.queue,),
                (job_id, job.status.value, job.attempts, t.max_attempts, *_transition_args(t)),
            )
            if not reply:
                return None  # purged since the read
            if reply[0] == "D":
                plan_retry(*read, job_id=job_id, queue=job.queue, holder=reply[1])
            if reply[0] in ("C", "D"):
                continue
            self._hub.notify(reply[1:])
            return JobStatus(reply[0])
        raise BackendError(f"job {job_id!r} kept changing while being retried")

    # -- the outbox ----------------------------------------------------------

    def fetch_events(self, limit: int = 100) -> list[Event]:
        return self._drive(self.fetch_events_plan(limit))

    def fetch_events_plan(self, limit: int = 100) -> Plan[list[Event]]:
        reply = yield Script("fetch", (), (limit,))
        return [
            Event(
                int(reply[i]),
                reply[i + 1],
                reply[i + 2],
                loads(reply[i + 3]),
                from_us(reply[i + 4]),
            )
            for i in range(0, len(reply), 5)
        ]

    def ack_events(self, cursors: Sequence[int]) -> int:
        return self._drive(self.ack_events_plan(cursors))

    def ack_events_plan(self, cursors: Sequence[int]) -> Plan[int]:
        unique = list(dict.fromkeys(int(c) for c in cursors))
        if not unique:
            return 0
        return int((yield Script("ack", (), unique)))

    def purge(self, older_than: float) -> PurgeResult:
        jobs = events = 0
        while True:
            done_jobs, done_events = self._run("purge", (), (_us(older_than), BATCH))
            jobs += int(done_jobs)
            events += int(done_events)
            if int(done_jobs) < BATCH and int(done_events) < BATCH:
                return PurgeResult(jobs=jobs, events=events)

    # -- workflows -----------------------------------------------------------

    def _insert_steps(self, name: str, steps: Sequence[Insert], head: Sequence[object]) -> str:
        return self._drive(self.insert_steps_plan(name, steps, head))

    def insert_steps_plan(
        self, name: str, steps: Sequence[Insert], head: Sequence[object]
    ) -> Plan[str]:
        """Run ``name`` (create_workflow, add_steps) for ``steps``; its answer's letter.

        Raises DuplicateJob where the script found a step id that exists, or
        a dedupe key held by a live job or by an earlier step of the call;
        SchemaError where a queue lives on another shard.
        """
        queues = list(dict.fromkeys(s.queue for s in steps))
        index = {q: i for i, q in enumerate(queues, start=1)}
        reply = yield Script(name, queues, [*head, *_step_args(steps, index)])
        _refuse_misplaced(reply, self.namespace)
        if reply[0] == "D":
            raise DuplicateJob(f"job id {reply[1]!r} already exists")
        if reply[0] == "K":
            # plan_enqueue with the live holders found: any step not created refuses the call.
            live = {reply[i]: reply[i + 1] for i in range(1, len(reply), 2)}
            answers, _ = plan_enqueue(steps, live)
            held = [new.id for a, new in zip(answers, steps, strict=True) if not a.created]
            raise DuplicateJob(
                f"a live job, or an earlier step of the call, holds the dedupe key of {held}"
            )
        if reply[0] == "O":
            self._hub.notify({s.queue for s in steps if s.status is JobStatus.QUEUED})
        return str(reply[0])

    def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        return self._drive(self.create_workflow_plan(workflow, steps))

    def create_workflow_plan(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> Plan[bool]:
        head = (workflow.id, workflow.output or "")
        return (yield from self.insert_steps_plan("create_workflow", steps, head)) == "O"

    def add_steps(self, lease: Lease, steps: Sequence[Insert]) -> bool | None:
        flows = {s.workflow for s in steps}
        if len(flows) != 1 or None in flows:
            return None  # steps of several workflows: none is the leased job's
        (flow,) = flows
        head = (lease.job_id, lease.token, lease.attempt, flow)
        answer = self._insert_steps("add_steps", steps, head)
        if answer == "L":
            return None
        if answer == "O" and lease.job_id in self._flow_queues_of:
            # This step's end may now queue children in the new steps' queues too.
            known = self._flow_queues_of[lease.job_id]
            new = [s.queue for s in steps]
            self._flow_queues_of[lease.job_id] = tuple(dict.fromkeys([*known, *new]))
        return answer == "O"

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        reply = self._run("get_workflow", (), (workflow_id,))
        return workflow_from_row(reply) if reply else None

    def list_workflows(
        self, *, state: WorkflowState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Workflow]:
        value = "" if state is None else WorkflowState(state).value
        reply = self._run("list_workflows", (), (value, limit, after or ""))
        return [
            workflow_from_row(reply[i : i + WORKFLOW_WIDTH])
            for i in range(0, len(reply), WORKFLOW_WIDTH)
        ]

    def cancel_workflow(self, workflow_id: str) -> Workflow | None:
        for _ in range(_QUEUE_TRIES):
            with translated("cancel_workflow"):
                known = self._client.hget(self._keys.key("wqueues"), workflow_id)
            if known is None:
                return None
            queues = known.split(" ")
            args: list[object] = [workflow_id]
            for queue in queues:
                args += _transition_args(plan_cancel_queued(queue=queue))
            reply = self._run("cancel_workflow", queues, args)
            if reply is None:
                return None  # purged meanwhile
            if reply[0] == "O":
                return workflow_from_row(reply[1:])
            # 'N': add_steps grew the workflow's queues meanwhile; read them again.
        raise BackendError(f"the queues of workflow {workflow_id!r} keep changing; cancel gave up")

    # -- limits --------------------------------------------------------------

    def set_limit(self, key: str, limit: Limit | None) -> None:
        self._run("set_limit", (), (key, "" if limit is None else encode_limit(limit)))
        self._hub.notify_all()

    def limits(self) -> dict[str, Limit]:
        with translated("limits"):
            raw = self._client.hgetall(self._keys.key("limits"))
        found = {k: decode_limit(v) for k, v in raw.items()}
        return {k: v for k, v in sorted(found.items()) if v is not None}

    def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        reply = self._run("limit_keys", (), (limit, after or ""))
        now = from_us(reply[0])
        found: list[tuple[str, int, int, Limit | None, Limit | None, list[datetime]]] = []
        i = 1
        while i < len(reply):
            key, queued, running, own, override, n = reply[i : i + 6]
            starts = [from_us(t) for t in reply[i + 6 : i + 6 + int(n)]]
            i += 6 + int(n)
            found.append(
                (
                    key,
                    int(queued),
                    int(running),
                    None if own is None else decode_limit(own),
                    None if override is None else decode_limit(override),
                    starts,
                )
            )
        found.sort(key=lambda f: f[0])
        states = []
        for key, queued, running, own, override, starts in found[:limit]:
            overrides = {} if override is None else {key: override}
            states.append(
                key_state(
                    key,
                    queued=queued,
                    running=running,
                    own=own,
                    overrides=overrides,
                    starts=starts,
                    now=now,
                )
            )
        return states

    # -- schedules -----------------------------------------------------------

    def _schedule_script(self, name: str, args: Sequence[object]) -> Any:
        with translated(name):
            return self._scripts[name](keys=self._keys.schedule_keys, args=list(args))

    def save_schedule(self, schedule: Schedule) -> None:
        record = "\n".join((schedule.spec, schedule.tz, schedule.queue, schedule.task))
        with translated("save_schedule"):
            self._client.hset(self._keys.schedule_keys[0], schedule.name, record)

    def advance_schedule(self, name: str, tick: datetime) -> bool:
        return bool(self._schedule_script("schedule_advance", (name, to_us(tick))))

    def schedules(self) -> list[Schedule]:
        records, ticks = self._schedule_script("schedule_list", ())
        tick_of = {ticks[i]: ticks[i + 1] for i in range(0, len(ticks), 2)}
        found = []
        for i in range(0, len(records), 2):
            name = records[i]
            spec, tz, queue, task = records[i + 1].split("\n")
            tick = tick_of.get(name)
            found.append(
                Schedule(name, spec, tz, queue, task, None if tick is None else from_us(tick))
            )
        return sorted(found, key=lambda s: s.name)

    def remove_schedule(self, name: str) -> bool:
        return bool(self._schedule_script("schedule_remove", (name,)))
