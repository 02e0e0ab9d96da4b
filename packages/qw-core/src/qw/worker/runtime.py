"""The worker: claim in batches, run, renew, finish in batches, stop gracefully.

Threads: the caller of :meth:`Worker.run` claims; ``concurrency`` pool
threads run sync tasks (or, with ``inline``, the claiming thread does); one
event loop thread runs async tasks; one
finisher thread writes outcomes in batches; one heartbeat thread renews
leases, enforces timeouts, keeps the registry entry fresh and sweeps
expired leases; one scheduler thread, when the app has periodic schedules,
enqueues their ticks (:mod:`qw.schedule`). Nothing is started per job. Only the contract
(:class:`qw.Client`) is used, so the worker runs unchanged on every backend.

One lock, ``Worker._cond``, guards the worker's bookkeeping and every
:class:`~qw.worker.slot.JobSlot` (whose methods take it); the counters in
:class:`~qw.worker.stats.WorkerStats` have a lock of their own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

from qw.client import Client
from qw.contract import Abort, Complete, Fail, Outcome, Release
from qw.errors import ConfigurationError, InvalidPayload, QwError
from qw.model import Claim, Job, JobStatus, JSONValue, WorkerInfo
from qw.payload import TaskInvocation, decode_task_payload, resolve_refs
from qw.plugin.manager import QwPluginManager
from qw.schedule import FakeClock, Scheduler
from qw.validation import DEFAULT_MAX_PAYLOAD_BYTES
from qw.worker.config import WorkerConfig
from qw.worker.executor import AsyncRunner, InlineRunner, SyncRunner, ThreadPool, timeout_error
from qw.worker.finisher import Finisher
from qw.worker.gctuning import tuned_gc
from qw.worker.heartbeat import Heartbeat
from qw.worker.outcomes import failed, released, storable_text
from qw.worker.shutdown import stop_on_signals
from qw.worker.slot import JobSlot
from qw.worker.source import TaskSource
from qw.worker.stats import WorkerStats

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger("qw.worker")

# How long the claim loop waits (for a free slot, or on the store's wake-up)
# before looking at the stop flags again: a stop takes effect within this.
_SLOT_WAIT_S = 0.05
# Claim once this fraction (1/n) of the slots is free; see Worker._claimable.
CLAIM_FLOOR_DIVISOR = 4
# After the grace period: how long releases may take to be written.
_RELEASE_WRITE_S = 10.0
# After the grace period: how long a cancelled coroutine may take to unwind
# before it is left to its lease like a sync task's thread.
_UNWIND_S = 0.5
# At exit, one deadline for all pool threads and the event loop thread
# together (busy ones are daemons, left running).
_THREADS_EXIT_S = 0.1
#: With ``prefetch=None``: hold about this many seconds of work (at the rate
#: jobs have been finishing) ahead of the slots, at least ``concurrency``.
#: Short jobs then come in large claims; a job waits at most about this long
#: in the prefetch buffer, so slow jobs are not hoarded.
PREFETCH_HORIZON_S = 0.05
#: The most jobs an adaptive prefetch holds ahead of the slots.
MAX_PREFETCH = 1000
# The shortest span over which the finishing rate is measured.
_RATE_WINDOW_S = 0.02


class Worker:
    """Runs an app's tasks from ``config.queues`` until stopped.

    ``app`` is a :class:`~qw.worker.source.TaskSource`: a :class:`qw.App`,
    usually through :meth:`qw.App.worker`.
    """

    def __init__(
        self,
        app: TaskSource,
        config: WorkerConfig,
        *,
        plugins: QwPluginManager | None = None,
        load_plugins: bool = True,
    ) -> None:
        self.app = app
        self.config = config
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.plugins = plugins or QwPluginManager()
        if load_plugins:
            self.plugins.load_entry_points()
        self.stats = WorkerStats()
        # Set from the store's capabilities when run() opens it.
        self.result_limit = DEFAULT_MAX_PAYLOAD_BYTES
        self._info = WorkerInfo(
            id=self.id,
            queues=config.queues,
            host=socket.gethostname(),
            pid=os.getpid(),
            concurrency=config.concurrency,
            started_at=datetime.now(UTC),
        )
        # Re-entrant: JobSlot methods take it, also while the worker holds it across slots.
        # They take the lock itself: a Condition's `with` is a Python-level call
        # around it, and a job takes the lock about seven times.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._inflight: dict[str, JobSlot] = {}
        # Plain flags: a signal handler sets them, so no lock may be taken there.
        self._stop_requested = False
        self._force = False
        self._running = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: SyncRunner = (
            InlineRunner(self) if config.inline else ThreadPool(self, config.concurrency)
        )
        self._async = AsyncRunner(self, config.concurrency)
        self._finisher: Finisher | None = None
        self._adaptive = config.prefetch is None
        self._prefetch = config.concurrency if config.prefetch is None else config.prefetch
        # Jobs dispatched whose task has not returned yet (running or prefetched).
        self._active = 0
        # Tasks returned so far, and (when, how many) at the last rate measurement.
        self._returned = 0
        self._rate_mark = (time.monotonic(), 0)
        #: The scheduler of the app's periodic schedules, once run() started one.
        self.scheduler: Scheduler | None = None

    def rename(self, worker_id: str) -> None:
        """Register as ``worker_id`` instead of the generated id; call before :meth:`run`."""
        self.id = worker_id
        self._info = dataclasses.replace(self._info, id=worker_id)

    def __repr__(self) -> str:
        return f"<qw.Worker {self.id} queues={list(self.config.queues)}>"

    @property
    def info(self) -> WorkerInfo:
        """The worker as the registry and the hooks see it (made once: hooks run per job)."""
        return self._info

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    @property
    def running_jobs(self) -> int:
        """Jobs whose task has not returned yet: running, or prefetched to run."""
        return self._active

    @property
    def held_jobs(self) -> int:
        """Jobs claimed and not yet done: running, prefetched, or their outcome being written."""
        with self._cond:
            return len(self._inflight)

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until :attr:`held_jobs` is 0; whether it is."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._inflight, timeout)

    # -- control -----------------------------------------------------------

    def request_stop(self, *, force: bool = False) -> None:
        """Stop claiming; with ``force`` end the grace period now. Signal-safe."""
        self._stop_requested = True
        if force:
            self._force = True

    def stop(self, *, force: bool = False, timeout: float | None = None) -> None:
        """Stop (from another thread) and wait up to ``timeout`` s for :meth:`run` to return."""
        self.request_stop(force=force)
        with self._cond:
            self._cond.notify_all()
        self._done.wait(timeout)

    def start(self) -> threading.Thread:
        """Run in a background thread; :meth:`stop` ends it."""
        self._thread = threading.Thread(target=self.run, name=f"qw-worker-{self.id}", daemon=True)
        self._thread.start()
        self._running.wait(30)
        return self._thread

    def run(self, *, handle_signals: bool = True) -> WorkerStats:
        """Work until stopped (``request_stop``, SIGTERM or SIGINT); return the stats."""
        opened: list[Client] = []
        try:
            client = self.app.client
            shared = client.capabilities.thread_safe
            self.result_limit = client.capabilities.max_payload_bytes
            periodic = self._runs_schedules(client)
            threads = ["finisher", "heartbeat"] + (["scheduler"] if periodic else [])
            # A backend that is not thread-safe gets one client per worker thread.
            if not shared:
                opened = [self._thread_client(client) for _ in threads]
        except BaseException:
            for extra in opened:
                extra.close()
            self._running.set()
            self._done.set()
            raise
        mine = opened or [client] * len(threads)
        finisher_client, heartbeat_client = mine[0], mine[1]
        self._finisher = Finisher(finisher_client, self._committed, batch=self.config.finish_batch)
        heartbeat = Heartbeat(self, heartbeat_client, self.config)
        scheduler = self._scheduler(mine[2]) if periodic else None
        self.scheduler = scheduler
        try:
            client.heartbeat(self.info)
            self._finisher.start()
            heartbeat.start()
            if scheduler is not None:
                scheduler.start(lambda: self._stop_requested)
            self.plugins.worker_started(self.info, client)
            log.debug("worker %s started on %s", self.id, ",".join(self.config.queues))
            self._running.set()
            with tuned_gc(self.config.tune_gc):
                if handle_signals:
                    with stop_on_signals(self):
                        self._claim_loop(client)
                        self._drain()
                else:
                    self._claim_loop(client)
                    self._drain()
        finally:
            self._running.set()
            if scheduler is not None:
                scheduler.stop()
            heartbeat.stop()
            self._finisher.stop(_RELEASE_WRITE_S)
            try:
                client.remove_worker(self.id)
            except QwError as exc:
                log.warning("could not remove worker %s from the registry: %r", self.id, exc)
            until = time.monotonic() + _THREADS_EXIT_S
            self._pool.stop(_THREADS_EXIT_S)
            self._async.stop(max(until - time.monotonic(), 0.0))
            self.plugins.worker_stopped(self.info, client)
            for extra in opened:
                extra.close()
            log.info("worker %s stopped: %s", self.id, self.stats)
            self._done.set()
        return self.stats

    def _runs_schedules(self, client: Client) -> bool:
        """Whether this worker runs a scheduler; refuses a store without schedule records."""
        if not (self.config.scheduler and self.app.schedules):
            return False
        if not client.capabilities.schedules:
            raise ConfigurationError(
                f"the app has periodic schedules, but the {client.backend.name} backend does "
                "not declare capability 'schedules'; run this worker with scheduler=False "
                "(qw worker --no-scheduler) and the scheduler on another store"
            )
        return True

    def _scheduler(self, client: Client) -> Scheduler:
        """The scheduler of the app's schedules, on the store's clock (or $QW_FAKE_CLOCK's)."""
        schedules = list(self.app.schedules.values())
        fake = os.environ.get("QW_FAKE_CLOCK")
        if not fake:
            return Scheduler(client, schedules)
        clock = FakeClock.parse(fake)
        log.warning("worker %s: schedules run on a FAKE clock (QW_FAKE_CLOCK=%s)", self.id, fake)
        return Scheduler(
            client, schedules, clock=lambda: clock.at(client.now()), speedup=clock.speedup
        )

    def _thread_client(self, client: Client) -> Client:
        """A client of the worker thread's own, for a backend that is not thread-safe."""
        extra = self.app.open_client()
        if extra is client:
            raise ConfigurationError(
                f"a worker needs a client per thread on the {client.backend.name} backend "
                "(not thread-safe), but the app gave it its shared client"
            )
        return extra

    # -- claiming ----------------------------------------------------------

    def _claim_loop(self, client: Client) -> None:
        config = self.config
        pause = 0.05
        while not self._stop_requested:
            free = self._claimable()
            if free <= 0:
                with self._cond:
                    if self._claimable() <= 0 and not self._stop_requested:
                        self._cond.wait(_SLOT_WAIT_S)
                continue
            try:
                limit = min(free, 1000)
                claims = client.claim(
                    config.queues, worker=self.id, lease_s=config.lease_s, limit=limit
                )
                pause = 0.05
            except Exception as exc:
                # A backend error is expected (store down); anything else is a
                # backend bug, logged in full. Either way: back off, keep going.
                if isinstance(exc, QwError):
                    log.warning("claim failed (%r); retrying in %.2f s", exc, pause)
                else:
                    log.exception("claim failed unexpectedly; retrying in %.2f s", pause)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            if claims:
                if self._adaptive and len(claims) == limit and self._active < config.concurrency:
                    # A slot sat idle during the claim and the queue has more:
                    # the buffer is too small for this round trip. Grow it now
                    # rather than wait for the finishing rate to show it.
                    self._prefetch = min(MAX_PREFETCH, 2 * self._prefetch)
                parents = self._parents_of(client, claims)
                started = [
                    rec for claim in claims if (rec := self._dispatch(claim, parents)) is not None
                ]
                coroutines = [rec for rec in started if rec.is_async]
                if coroutines:
                    self._async.submit_many(coroutines)
                # Inline sync jobs run here, each once the whole claim is held
                # (its leases renewed, a stop releasing what has not begun).
                for rec in started:
                    if not rec.is_async:
                        self._pool.submit(rec)
                continue
            try:
                self.wait_for_work(client)
            except Exception as exc:
                log.warning("wait failed (%r)", exc)
                time.sleep(min(config.poll_interval, 1.0))

    def wait_for_work(self, client: Client) -> None:
        """Sleep on the store's wake-up for up to ``poll_interval``, or until a stop.

        The claim loop calls it (in :meth:`run`'s thread, with ``client``)
        each time a claim found nothing, and claims again when it returns.
        The override point for an idle policy: a subclass may call
        :meth:`request_stop` here instead of waiting. An exception is
        logged and the loop claims again after ``poll_interval`` (at most 1 s).
        """
        config = self.config
        until = time.monotonic() + config.poll_interval
        # In slices: a stop request only sets a flag (it may come from a signal).
        while not self._stop_requested:
            remaining = until - time.monotonic()
            if remaining <= 0 or client.wait(config.queues, min(remaining, _SLOT_WAIT_S)):
                return

    def _claimable(self) -> int:
        """How many jobs to claim now: 0 until enough slots are free for a worthwhile batch.

        The worker keeps up to ``capacity`` (slots plus prefetch) jobs
        running or waiting to run. One counts as done once its task
        returned, before its outcome is written, so the next claim overlaps
        the finisher's write; jobs held but not yet written are capped at
        twice the capacity. Claiming for every single freed place would make
        one round trip per job; waiting for a quarter of them (or an idle
        worker) keeps claims batched.
        """
        if self._adaptive:
            self._adapt_prefetch()
        capacity = self.config.concurrency + self._prefetch
        active = self._active
        free = min(capacity - active, 2 * capacity - len(self._inflight))
        return free if active == 0 or free >= max(1, capacity // CLAIM_FLOOR_DIVISOR) else 0

    def _adapt_prefetch(self) -> None:
        """Size the prefetch to ``PREFETCH_HORIZON_S`` of work at the recent finishing rate.

        It grows at once with the rate (so a backlog of short jobs is
        claimed in large batches after a few windows) and shrinks by at most
        half per window (so a pause between bursts does not reset it).
        """
        now = time.monotonic()
        since, count = self._rate_mark
        if now - since < _RATE_WINDOW_S:
            return
        returned = self._returned
        self._rate_mark = (now, returned)
        rate = (returned - count) / (now - since)
        target = min(MAX_PREFETCH, max(self.config.concurrency, int(rate * PREFETCH_HORIZON_S)))
        self._prefetch = max(target, self._prefetch // 2)

    def _parents_of(self, client: Client, claims: list[Claim]) -> dict[str, Job]:
        """The parents of the claimed workflow steps, read in one call (none for plain jobs)."""
        ids = list(dict.fromkeys(p for claim in claims for p in claim.job.parents))
        if not ids:
            return {}
        try:
            found = client.get_many(ids)
        except QwError as exc:
            # Each step then fails its attempt (retried) rather than run without its inputs.
            log.warning("could not read the parents of claimed steps (%r)", exc)
            return {}
        return {job.id: job for job in found if job is not None}

    def _dispatch(self, claim: Claim, parents: dict[str, Job]) -> JobSlot | None:
        """Hold a claimed job; start it on the pool, or return it to start with its batch.

        Returned: async jobs (started together), and with ``inline`` sync ones
        (run in this thread once every job of the claim is held).
        """
        job = claim.job
        payload = job.payload
        task = None
        args: list[JSONValue] = []
        kwargs: dict[str, JSONValue] = {}
        invalid: InvalidPayload | None = None
        call: TaskInvocation | None = None
        try:
            call = decode_task_payload(payload)
        except InvalidPayload as exc:
            invalid = exc
        else:
            task = self.app.tasks.get(call.name)
            args, kwargs = call.args, call.kwargs
        mine: dict[str, Job] = {}
        missing: list[str] = []
        if job.parents:
            mine = {p: parents[p] for p in job.parents if p in parents}
            missing = [p for p in job.parents if p not in mine]
            if call is not None and call.refs and not missing:
                results = {p: j.result for p, j in mine.items() if j.status is JobStatus.SUCCEEDED}
                args, kwargs = resolve_refs(call, results)
        rec = JobSlot(job, claim.lease, task, args, kwargs, lock=self._lock)
        rec.parents = mine
        with self._lock:
            self._inflight[job.id] = rec
            self._active += 1
        self.stats.add("claimed")
        self.plugins.job_claimed(job, self._info)
        if task is None:
            # Not retried: another attempt would read the same payload.
            shown = _describe(payload)
            error: dict[str, JSONValue] = (
                {
                    "type": "qw.UnknownTask",
                    "message": f"this worker has no task for payload {shown}",
                }
                if invalid is None
                else {"type": "qw.InvalidPayload", "message": f"{invalid}; payload {shown}"}
            )
            self.settle(rec, failed(rec, error, retryable=False))
            self.returned(rec)
        elif missing:
            # The store could not be read (the parents of a step never go
            # before it): retried, rather than run with inputs missing.
            error = {"type": "qw.ParentsUnread", "message": f"could not read parents {missing}"}
            self.settle(rec, failed(rec, error, retryable=True))
            self.returned(rec)
        elif task.is_async or self.config.inline:
            return rec
        else:
            self._pool.submit(rec)
        return None

    # -- the host interface (executors, finisher, heartbeat) ---------------

    def settle(self, rec: JobSlot, outcome: Outcome, *, timed_out: bool = False) -> bool:
        """Send ``rec``'s outcome to be written, unless it was settled already.

        ``timed_out``: the outcome is the attempt's timeout.
        """
        if not rec.settle(timed_out=timed_out):
            return False
        assert self._finisher is not None
        self._finisher.put(rec, outcome)
        return True

    def returned(self, rec: JobSlot) -> None:
        """The task's code is done with ``rec``: its slot may take another job."""
        with self._cond:
            finished = rec.mark_returned()
            self._active -= 1
            self._returned += 1
            if finished:
                self._inflight.pop(rec.id, None)
            self._cond.notify_all()

    def _committed(self, rec: JobSlot, outcome: Outcome, status: JobStatus | None) -> None:
        stats = self.stats
        if rec.timed_out:
            stats.add("timed_out")
        if status is None and rec.completed_in_transaction:
            # The check after the task's own completion was fenced off: its
            # transaction committed the job's end (the likely case), or the
            # job was reclaimed since; either way it is not ours to write.
            stats.add("succeeded")
            self.plugins.job_finished(
                rec.job, JobStatus.SUCCEEDED, rec.completed_result, None, rec.elapsed()
            )
            self._free(rec)
            return
        if status is None:
            stats.add("lost")
            log.warning("job %s: lease lost before its outcome was written", rec.id)
            self.plugins.lease_lost(rec.job, self._info)
        elif isinstance(outcome, Complete):
            stats.add("succeeded")
        elif isinstance(outcome, Fail):
            stats.add("retried" if status is JobStatus.QUEUED else "failed")
        elif isinstance(outcome, Abort):
            stats.add("cancelled")
        elif isinstance(outcome, Release):
            stats.add("released")
        if isinstance(outcome, Release):
            if status is not None:
                # Not a finished attempt: qw_job_finished would call it a retry.
                reason = rec.stop_reason or "shutdown"
                self.plugins.job_released(rec.job, reason)
        elif status is not None:
            result = outcome.result if isinstance(outcome, Complete) else None
            error = outcome.error if isinstance(outcome, (Fail, Abort)) else None
            self.plugins.job_finished(rec.job, status, result, error, rec.elapsed())
        self._free(rec)

    def _free(self, rec: JobSlot) -> None:
        """``rec``'s outcome is written or given up; forget it once its task returned too."""
        with self._cond:
            if rec.mark_committed():
                self._inflight.pop(rec.id, None)
                self._cond.notify_all()

    def reclaimed(self, count: int) -> None:
        """The heartbeat's reclaim sweep requeued or failed ``count`` expired jobs."""
        self.plugins.jobs_reclaimed(count, self._info)

    def renew_leases(self, client: Client) -> None:
        with self._cond:
            held = [rec for rec in self._inflight.values() if not rec.settled]
        if not held:
            return
        answers = client.renew_many([rec.lease for rec in held], self.config.lease_s)
        for rec, lease in zip(held, answers, strict=True):
            if lease is None:
                # Ended by the task's own transaction: the check after it returns settles it.
                if not rec.completed_in_transaction:
                    self._lost(rec)
                continue
            if rec.renewed(lease):
                log.info("job %s: cancel requested", rec.id)
                if rec.is_async:
                    self._async.cancel(rec, "cancel")

    def _lost(self, rec: JobSlot) -> None:
        """Drop ``rec``, whose lease another worker took: nothing is written for it."""
        if not rec.settle():
            return
        log.warning("job %s: lease lost (reclaimed); its result will be dropped", rec.id)
        if rec.is_async:
            self._async.cancel(rec, "lost")
        self.stats.add("lost")
        self.plugins.lease_lost(rec.job, self._info)
        self._free(rec)

    def expire_timeouts(self, now: float) -> None:
        """Fail (or retry) sync jobs past their deadline; their threads run on, ignored."""
        with self._cond:
            late = [
                rec
                for rec in self._inflight.values()
                if rec.deadline is not None
                and rec.deadline <= now
                and not rec.settled
                and rec.task is not None
                and not rec.task.is_async
            ]
        for rec in late:
            # Flag and settle together, so the task's own late outcome is ignored.
            if not rec.settle(timed_out=True):
                continue
            log.warning("job %s: timed out after %.1f s", rec.id, rec.elapsed())
            assert self._finisher is not None
            self._finisher.put(rec, failed(rec, timeout_error(rec), retryable=True))

    # -- stopping ----------------------------------------------------------

    def _drain(self) -> None:
        """Let running jobs finish within the grace period; then stop without waiting for them.

        Unstarted jobs and cancelled coroutines are released; sync tasks still
        running are left to their leases (see the comment below).
        """
        deadline = time.monotonic() + self.config.grace_s
        # Prefetched jobs that have not started go back at once, attempt not counted.
        with self._cond:
            waiting = [r for r in self._inflight.values() if r.release_unstarted()]
        assert self._finisher is not None
        for rec in waiting:
            self._finisher.put(rec, released(rec))
            if rec.is_async:
                self._async.cancel(rec, "shutdown")
        if self._unsettled() and not self._force:
            log.info(
                "worker %s stopping: waiting up to %.1f s for %d running jobs "
                "(signal again to stop now)",
                self.id,
                self.config.grace_s,
                len(self._unsettled()),
            )
        with self._cond:
            while self._unsettled() and not self._force and time.monotonic() < deadline:
                self._cond.wait(min(_SLOT_WAIT_S, max(deadline - time.monotonic(), 0.0)))
            leftover = self._unsettled()
            # A thread cannot be stopped: a job whose sync task still runs is
            # not released (another worker would run it alongside). Settled
            # with nothing written, its late result is ignored; its lease is
            # no longer renewed and lapses, and a reclaim sweep requeues it
            # as a new attempt.
            coroutines = [rec for rec in leftover if rec.is_async]
            abandoned = [rec for rec in leftover if not rec.is_async and rec.abandon()]
        # A cancelled coroutine settles itself as released once it unwound.
        for rec in coroutines:
            self._async.cancel(rec, "shutdown")
        if abandoned:
            self.stats.add("abandoned", len(abandoned))
            log.warning(
                "left %d running sync jobs to their leases (not released: their code still "
                "runs; each is requeued as a new attempt within %.1f s)",
                len(abandoned),
                self.config.lease_s,
            )
        # Wait for every outcome to be written and cancelled coroutines to unwind.
        now = time.monotonic()
        until, unwind_by = now + _RELEASE_WRITE_S, now + _UNWIND_S
        with self._cond:
            while time.monotonic() < until and any(map(_busy, self._inflight.values())):
                if coroutines and time.monotonic() >= unwind_by:
                    stuck = [rec for rec in coroutines if rec.abandon()]
                    if stuck:
                        log.warning(
                            "left %d coroutines that ignore cancel to their leases", len(stuck)
                        )
                    coroutines = []
                self._cond.wait(_SLOT_WAIT_S)

    def _unsettled(self) -> list[JobSlot]:
        return [rec for rec in self._inflight.values() if not rec.settled]


def _busy(rec: JobSlot) -> bool:
    """Whether stopping must still wait for ``rec``: its write, or its coroutine."""
    if rec.abandoned:
        return False
    return not rec.committed or (rec.is_async and not rec.returned)


def _describe(payload: Any) -> str:
    text = storable_text(repr(payload))
    return text if len(text) <= 200 else text[:197] + "..."
