"""A namespace spread over several hash tags: one shard per tag, each queue on one shard.

A plain namespace keeps every key under the hash tag ``{ns}``, so on a
Redis Cluster it lives in one slot and one primary bounds its throughput.
With ``shards=N`` in the URL its queues are spread over N tags instead:
shard 0 is the plain layout (``{ns}``, so a namespace of qw-redis 0.1.0 is
shard 0 as it stands) and shard ``s`` is the same layout under
``{ns/s}``. Each shard is served by a :class:`~qw_redis.backend.RedisBackend`
of its own, running the same scripts on its own keys.

**What holds, and where.** A job lives, from enqueue to purge, on the shard
of its queue, so everything about one job (claim once per lease, fenced
finishes, the outbox event committed with its end, retries, progress) is
one script on one slot, exactly as in a plain namespace. A call that spans
queues holds across the queues of one shard: a batch, a workflow and its
``extend`` must keep to one shard (else :class:`~qw.errors.CrossShard`,
before any write); a dedupe key, a limit key's counts and a job id you
choose are unique, and counted, per shard. A claim over queues on several
shards takes them shard by shard, starting from a different shard each call
(priority, then FIFO, among the queues of each shard). Operator writes (the
switches, limits) go to every shard; workers and schedules live on shard 0.

**Placement** is decided once per queue, when it is first used, and stored
in shard 0 (``qw:{ns}:placement``): the CRC-32 of the name modulo the
namespace's shard count. The count is stored too (``qw:{ns}:shards``) and
only ever grows, so clients given another URL, or none, route alike, and
a queue never moves: the queues a namespace had when it was first sharded
stay on shard 0 with their jobs.

**Event cursors** of a sharded namespace carry their shard in the low six
bits (``shard_cursor * 64 + shard``); :meth:`fetch_events` merges the shards
in that order.
"""

from __future__ import annotations

import itertools
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import ClassVar, Self, TypeVar

from qw.contract import Finish, Insert, Switches, WorkflowInsert
from qw.errors import CrossShard
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
from qw_redis.backend import RedisBackend, token_queue
from qw_redis.keys import Keyspace
from qw_redis.urls import MAX_SHARDS, RedisConfig

__all__ = ["ShardedRedisBackend", "open_namespace", "propose_shard"]

T = TypeVar("T")

#: Job ids remembered with their shard (from enqueue and claim), so that a
#: lookup by id need not ask every shard.
_ID_CACHE_MAX = 100_000


def propose_shard(queue: str, shards: int) -> int:
    """The shard a new queue is placed on: its name's CRC-32 modulo ``shards``."""
    return zlib.crc32(queue.encode()) % shards


def open_namespace(home: RedisBackend) -> RedisBackend | ShardedRedisBackend:
    """``home`` as it is, or a router over it when its URL or its store says sharded.

    The store says so as much as the URL (``qw:{ns}:shards``), so every
    client of a sharded namespace routes alike whatever URL it was given.
    """
    try:
        stored = home.stored_shards()
    except BaseException:
        home.close()
        raise
    asked = home.config.shards
    if asked == 1 and stored == 1:
        return home
    return ShardedRedisBackend(home, max(asked, stored))


class ShardedRedisBackend:
    """A namespace over several shards; see the module docstring."""

    name: ClassVar[str] = "redis"
    capabilities = replace(RedisBackend.capabilities, cross_queue_atomic=False)

    def __init__(self, home: RedisBackend, shards: int) -> None:
        """Serve ``home``'s namespace (``home`` is its shard 0) over at least ``shards`` shards.

        Takes ``home`` over: closing this closes it. The first sharded open
        of a namespace places every queue it already has on shard 0.
        """
        self._home = home
        self._lock = threading.Lock()
        self._open: dict[int, RedisBackend] = {0: home}
        self._placed: dict[str, int] = {}
        self._ids: dict[str, int] = {}
        self._turn = itertools.count()
        try:
            self._count = self._grow(min(shards, MAX_SHARDS))
        except BaseException:
            home.close()
            raise

    def _grow(self, shards: int) -> int:
        stored = self._home.stored_shards()
        if shards <= stored:
            return stored
        if stored == 1:
            # The queues of a plain namespace keep their jobs where they are.
            queues = set(self._home.counts()) | set(self._home.switches().queues)
            for queue in sorted(queues):
                self._home.place(queue, 0)
        switches = self._home.switches()
        limits = self._home.limits()
        for s in range(stored, shards):
            # A new shard starts with the operator's switches and limits.
            shard = self._shard(s)
            for queue, on in switches.queues.items():
                shard.set_enabled(on, queue)
            if not switches.enabled:
                shard.set_enabled(False)
            for key, limit in limits.items():
                shard.set_limit(key, limit)
        return self._home.raise_shards(shards)

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> Self:
        """Open ``namespace`` sharded (over ``shards=`` of the URL, at least 2)."""
        from qw_redis.urls import parse_url

        config = parse_url(url)
        return cls(RedisBackend(config, namespace=namespace), max(config.shards, 2))

    # -- the shards ------------------------------------------------------------

    @property
    def namespace(self) -> str:
        return self._home.namespace

    @property
    def config(self) -> RedisConfig:
        """What the URL asked for."""
        return self._home.config

    @property
    def keyspace(self) -> Keyspace:
        """Shard 0's keys."""
        return self._home.keyspace

    @property
    def shards(self) -> int:
        """How many shards new queues are spread over (as last read from the store)."""
        return self._count

    def _shard(self, s: int) -> RedisBackend:
        backend = self._open.get(s)
        if backend is None:
            with self._lock:
                backend = self._open.get(s)
                if backend is None:
                    backend = self._home.open_shard(s)
                    self._open[s] = backend
        return backend

    def _all(self) -> list[RedisBackend]:
        """Every shard, as many as are stored now (another client may have added some)."""
        count = self._home.stored_shards()
        self._count = max(self._count, count)
        return [self._shard(s) for s in range(self._count)]

    def shard_of(self, queue: str) -> int:
        """The shard holding ``queue``, placing it first when it has none."""
        s = self._placed.get(queue)
        if s is None:
            Keyspace.check_queue(queue)
            s = self._home.place(queue, propose_shard(queue, self._count))
            self._placed[queue] = s
        return s

    def _placed_shard(self, queue: str) -> int | None:
        # For reads: an unplaced queue has no jobs, and is not placed by looking.
        s = self._placed.get(queue)
        if s is None:
            Keyspace.check_queue(queue)
            s = self._home.placement(queue)
            if s is not None:
                self._placed[queue] = s
        return s

    def _group(self, queues: Iterable[str]) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = {}
        for queue in dict.fromkeys(queues):
            groups.setdefault(self.shard_of(queue), []).append(queue)
        return groups

    def _one_shard(self, queues: Iterable[str], what: str) -> int:
        groups = self._group(queues)
        if len(groups) > 1:
            where = "; ".join(f"shard {s}: {', '.join(qs)}" for s, qs in sorted(groups.items()))
            raise CrossShard(
                f"{what} spans queues on different shards of namespace {self.namespace!r} "
                f"({where}); it can only be atomic within one shard"
            )
        return next(iter(groups), 0)

    def _remember(self, job_ids: Iterable[str], s: int) -> None:
        if len(self._ids) >= _ID_CACHE_MAX:
            self._ids.clear()
        for job_id in job_ids:
            self._ids[job_id] = s

    def _lease_shard(self, lease: Lease) -> int | None:
        queue = token_queue(lease.token)
        if queue is None:
            # A lease of qw-redis 0.1.0 names no queue: its job is on shard 0, found by id.
            return self._locate(lease.job_id)
        return self._placed_shard(queue)

    def _locate(self, job_id: str) -> int | None:
        """The shard holding job ``job_id``, or None: remembered, else asked shard by shard."""
        s = self._ids.get(job_id)
        if s is not None:
            return s
        for backend in self._all():
            if backend.get(job_id) is not None:
                s = backend.keyspace.shard
                self._remember((job_id,), s)
                return s
        return None

    def _first(self, call: Callable[[RedisBackend], T | None]) -> T | None:
        for backend in self._all():
            found = call(backend)
            if found is not None:
                return found
        return None

    def close(self) -> None:
        # Shard 0 last: it owns the client the others share.
        for _, backend in sorted(self._open.items(), reverse=True):
            backend.close()

    def migrate(self) -> str:
        """Bring every shard's keys to the current layout; say what was done."""
        return "; ".join(backend.migrate() for backend in self._all())

    def now(self) -> datetime:
        return self._home.now()

    # -- producing -------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        if not jobs:
            return []
        s = self._one_shard((j.queue for j in jobs), "this batch")
        answers = self._shard(s).enqueue(jobs)
        self._remember((a.id for a in answers), s)
        return answers

    def enqueue_in(self, connection: object, jobs: Sequence[Insert]) -> list[Enqueued]:
        return self._home.enqueue_in(connection, jobs)

    def create_workflow_in(
        self, connection: object, workflow: WorkflowInsert, steps: Sequence[Insert]
    ) -> bool:
        return self._home.create_workflow_in(connection, workflow, steps)

    def finish_in(self, connection: object, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        return self._home.finish_in(connection, finishes)

    # -- working ---------------------------------------------------------------

    def claim(
        self, queues: Sequence[str], *, worker: str, lease_s: float, limit: int
    ) -> list[Claim]:
        groups = list(self._group(queues).items())
        if len(groups) > 1:
            # Each call starts from another shard: none is starved by a busy one.
            k = next(self._turn) % len(groups)
            groups = groups[k:] + groups[:k]
        claims: list[Claim] = []
        for s, group in groups:
            want = limit - len(claims)
            got = self._shard(s).claim(group, worker=worker, lease_s=lease_s, limit=want)
            self._remember((c.job.id for c in got), s)
            claims += got
            if len(claims) >= limit:
                break
        return claims

    def _by_lease(self, leases: Sequence[Lease]) -> dict[int, list[int]]:
        """Indexes of ``leases`` by the shard of their token's queue (unknown ones left out)."""
        groups: dict[int, list[int]] = {}
        for n, lease in enumerate(leases):
            s = self._lease_shard(lease)
            if s is not None:
                groups.setdefault(s, []).append(n)
        return groups

    def renew(self, leases: Sequence[Lease], lease_s: float) -> list[Lease | None]:
        answers: list[Lease | None] = [None] * len(leases)
        for s, picked in self._by_lease(leases).items():
            renewed = self._shard(s).renew([leases[n] for n in picked], lease_s)
            for n, lease in zip(picked, renewed, strict=True):
                answers[n] = lease
        return answers

    def finish(self, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        answers: list[JobStatus | None] = [None] * len(finishes)
        for s, picked in self._by_lease([f.lease for f in finishes]).items():
            done = self._shard(s).finish([finishes[n] for n in picked])
            for n, status in zip(picked, done, strict=True):
                answers[n] = status
        return answers

    def reclaim_expired(self) -> int:
        return sum(backend.reclaim_expired() for backend in self._all())

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        # One hub for every shard (queue names are unique across them), fed
        # by each shard's own listener.
        for s in self._group(queues):
            self._shard(s).ensure_listener()
        return self._home.hub.wait(queues, timeout)

    def set_progress(
        self, lease: Lease, fraction: float | None, message: str | None, event_data: str
    ) -> bool:
        s = self._lease_shard(lease)
        if s is None:
            return False
        return self._shard(s).set_progress(lease, fraction, message, event_data)

    def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        s = self._locate(job_id)
        return None if s is None else self._shard(s).wait_finished(job_id, timeout)

    # -- workers and switches --------------------------------------------------

    def heartbeat(self, worker: WorkerInfo) -> None:
        self._home.heartbeat(worker)

    def remove_worker(self, worker_id: str) -> None:
        self._home.remove_worker(worker_id)

    def workers(self) -> list[WorkerInfo]:
        return self._home.workers()

    def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        # Shard 0 last: what switches() reports is set once every shard is.
        for backend in reversed(self._all()):
            backend.set_enabled(enabled, queue)

    def switches(self) -> Switches:
        return self._home.switches()

    # -- inspection and operations ---------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self.get_many([job_id])[0]

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        found: list[Job | None] = [None] * len(job_ids)
        remembered: dict[int, list[int]] = {}
        for n, job_id in enumerate(job_ids):
            s = self._ids.get(job_id)
            if s is not None:
                remembered.setdefault(s, []).append(n)
        for s, picked in remembered.items():
            jobs = self._shard(s).get_many([job_ids[n] for n in picked])
            for n, job in zip(picked, jobs, strict=True):
                found[n] = job
        for backend in self._all():
            missing = [n for n, job in enumerate(found) if job is None]
            if not missing:
                break
            jobs = backend.get_many([job_ids[n] for n in missing])
            for n, job in zip(missing, jobs, strict=True):
                if job is not None:
                    found[n] = job
                    self._remember((job.id,), backend.keyspace.shard)
        return found

    def counts(self) -> dict[str, dict[JobStatus, int]]:
        merged: dict[str, dict[JobStatus, int]] = {}
        for backend in self._all():
            for queue, by_status in backend.counts().items():
                into = merged.setdefault(queue, {})
                for status, n in by_status.items():
                    into[status] = into.get(status, 0) + n
        return merged

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
        if queue is not None:
            s = self._placed_shard(queue)
            backends = [] if s is None else [self._shard(s)]
        else:
            backends = self._all()
        jobs: list[Job] = []
        for backend in backends:
            jobs += backend.list_jobs(
                queue=queue, status=status, limit=limit, after=after, workflow=workflow, key=key
            )
        # Each shard's first `limit` by id hold the namespace's first `limit`.
        return sorted(jobs, key=lambda j: j.id)[:limit]

    def cancel(self, job_id: str) -> JobStatus | None:
        s = self._locate(job_id)
        return None if s is None else self._shard(s).cancel(job_id)

    def retry(self, job_id: str) -> JobStatus | None:
        s = self._locate(job_id)
        return None if s is None else self._shard(s).retry(job_id)

    # -- the outbox ------------------------------------------------------------

    def fetch_events(self, limit: int = 100) -> list[Event]:
        events: list[Event] = []
        for backend in self._all():
            s = backend.keyspace.shard
            events += (
                replace(e, cursor=e.cursor * MAX_SHARDS + s) for e in backend.fetch_events(limit)
            )
        events.sort(key=lambda e: e.cursor)
        return events[:limit]

    def ack_events(self, cursors: Sequence[int]) -> int:
        by_shard: dict[int, list[int]] = {}
        for cursor in cursors:
            by_shard.setdefault(cursor % MAX_SHARDS, []).append(cursor // MAX_SHARDS)
        return sum(self._shard(s).ack_events(own) for s, own in by_shard.items() if s < self._count)

    def purge(self, older_than: float) -> PurgeResult:
        jobs = events = 0
        for backend in self._all():
            done = backend.purge(older_than)
            jobs += done.jobs
            events += done.events
        return PurgeResult(jobs=jobs, events=events)

    # -- workflows -------------------------------------------------------------

    def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        s = self._one_shard((step.queue for step in steps), f"workflow {workflow.id!r}")
        # A workflow id is the namespace's: one on another shard is this one.
        if any(b.get_workflow(workflow.id) for b in self._all() if b.keyspace.shard != s):
            return False
        created = self._shard(s).create_workflow(workflow, steps)
        if created:
            self._remember((step.id for step in steps), s)
        return created

    def add_steps(self, lease: Lease, steps: Sequence[Insert]) -> bool | None:
        s = self._lease_shard(lease)
        if s is None:
            return None
        if steps:
            at = self._one_shard([step.queue for step in steps], "these steps")
            if at != s:
                raise CrossShard(
                    f"steps on shard {at} cannot join a workflow on shard {s} "
                    f"of namespace {self.namespace!r}"
                )
        added = self._shard(s).add_steps(lease, steps)
        if added:
            self._remember((step.id for step in steps), s)
        return added

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        return self._first(lambda b: b.get_workflow(workflow_id))

    def list_workflows(
        self, *, state: WorkflowState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Workflow]:
        found: list[Workflow] = []
        for backend in self._all():
            found += backend.list_workflows(state=state, limit=limit, after=after)
        return sorted(found, key=lambda w: w.id)[:limit]

    def cancel_workflow(self, workflow_id: str) -> Workflow | None:
        return self._first(lambda b: b.cancel_workflow(workflow_id))

    # -- limits ----------------------------------------------------------------

    def set_limit(self, key: str, limit: Limit | None) -> None:
        # A key's jobs may be on any shard; each counts its own.
        for backend in reversed(self._all()):
            backend.set_limit(key, limit)

    def limits(self) -> dict[str, Limit]:
        return self._home.limits()

    def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        merged: dict[str, KeyState] = {}
        for backend in self._all():
            for state in backend.keys(limit=limit, after=after):
                seen = merged.get(state.key)
                if seen is None:
                    merged[state.key] = state
                else:
                    merged[state.key] = replace(
                        seen,
                        queued=seen.queued + state.queued,
                        running=seen.running + state.running,
                        started=seen.started + state.started,
                        limit=seen.limit if seen.limit is not None else state.limit,
                        overridden=seen.overridden or state.overridden,
                    )
        return [merged[k] for k in sorted(merged)[:limit]]

    # -- schedules (shard 0's) -------------------------------------------------

    def save_schedule(self, schedule: Schedule) -> None:
        self._home.save_schedule(schedule)

    def advance_schedule(self, name: str, tick: datetime) -> bool:
        return self._home.advance_schedule(name, tick)

    def schedules(self) -> list[Schedule]:
        return self._home.schedules()

    def remove_schedule(self, name: str) -> bool:
        return self._home.remove_schedule(name)

    def __repr__(self) -> str:
        return f"<qw_redis.ShardedRedisBackend namespace={self.namespace!r} shards={self._count}>"
