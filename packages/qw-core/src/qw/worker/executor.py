"""Where tasks run: plain functions on a pool of threads (or inline), coroutines on one loop.

Both report to a :class:`Host` (the runtime): ``settle`` with the job's
outcome (ignored if the runtime already settled it: timed out, released,
lease lost) and ``returned`` once the task's code is no longer running.
A task that finished its own job in its transaction
(:meth:`~qw.worker.context.RunningJob.complete`) gets, whatever it returns,
the fenced :func:`~qw.worker.outcomes.uncommitted` check instead.
Neither writes a :class:`~qw.worker.slot.JobSlot`'s state but through its
methods.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from qw.contract import Outcome
from qw.model import JSONValue
from qw.plugin.manager import QwPluginManager
from qw.worker.context import JobCancelled, reset_current, set_current
from qw.worker.outcomes import (
    cancelled,
    error_info,
    failed,
    released,
    result_outcome,
    uncommitted,
    worker_error,
)
from qw.worker.slot import JobSlot

if TYPE_CHECKING:
    import asyncio

__all__ = ["AsyncRunner", "Host", "InlineRunner", "SyncRunner", "ThreadPool", "timeout_error"]

log = logging.getLogger("qw.worker")


class Host(Protocol):
    """What an executor reports to."""

    plugins: QwPluginManager
    #: The largest result the store takes, in bytes of JSON.
    result_limit: int

    @property
    def stop_requested(self) -> bool: ...

    def settle(self, rec: JobSlot, outcome: Outcome, *, timed_out: bool = False) -> bool: ...

    def returned(self, rec: JobSlot) -> None: ...


def timeout_error(rec: JobSlot) -> dict[str, JSONValue]:
    timeout = rec.task.timeout if rec.task is not None else None
    return {"type": "qw.Timeout", "message": f"attempt ran past its timeout of {timeout} s"}


def _outcome_of_exception(rec: JobSlot, exc: BaseException) -> Outcome:
    if isinstance(exc, JobCancelled) or rec.cancel_requested:
        return cancelled(rec)
    no_retry = rec.task.no_retry if rec.task is not None else ()
    return failed(rec, error_info(exc), retryable=not isinstance(exc, no_retry))


def _call(rec: JobSlot) -> Callable[[], Any]:
    task = rec.task
    assert task is not None
    fn, args, kwargs = task.fn, rec.args, rec.kwargs
    return lambda: fn(*args, **kwargs)


def _settle_broken(host: Host, rec: JobSlot, exc: BaseException) -> None:
    """Settle ``rec`` after a bug outside its task, so that it cannot hang ``running``."""
    log.error("job %s: the worker failed around it", rec.id, exc_info=exc)
    try:
        host.settle(rec, worker_error(rec, exc))
    except Exception:
        # Nothing more to do here: its lease lapses and the reclaim sweep takes it.
        log.exception("job %s: could not settle it", rec.id)


def _stopped(rec: JobSlot) -> Outcome | None:
    """The outcome for a coroutine the runtime cancelled, by the reason it gave."""
    if rec.stop_reason == "cancel":
        return cancelled(rec)
    if rec.stop_reason == "shutdown":
        return released(rec)
    return None  # lease lost: nothing to write


def _run_sync(host: Host, rec: JobSlot) -> None:
    """Run ``rec``'s sync task in this thread and settle it; whatever goes wrong, it is settled."""
    try:
        if not rec.begin():  # released (or lost) while it waited
            return
        if rec.cancel_requested:  # cancelled while it waited: do not start it
            host.settle(rec, cancelled(rec))
            return
        outcome, timed_out = _attempt_sync(host, rec)
        host.settle(rec, outcome, timed_out=timed_out)
    except BaseException as exc:
        _settle_broken(host, rec, exc)
    finally:
        host.returned(rec)


def _attempt_sync(host: Host, rec: JobSlot) -> tuple[Outcome, bool]:
    """Run the task: its outcome, and whether it is its timeout's."""
    token = set_current(rec.view)
    try:
        result = host.plugins.run_job(rec.job, _call(rec))
    except BaseException as exc:
        return _outcome_of_exception(rec, exc), False
    finally:
        reset_current(token)
    if rec.completed_in_transaction:
        return uncommitted(rec), False
    if rec.deadline is not None and time.monotonic() > rec.deadline:
        # Returned late, before the heartbeat noticed: still a timeout.
        return failed(rec, timeout_error(rec), retryable=True), True
    if rec.cancel_requested:
        return cancelled(rec), False
    return result_outcome(rec, result, host.result_limit), False


class SyncRunner(Protocol):
    """Where the worker runs sync tasks: :class:`ThreadPool`, or :class:`InlineRunner`."""

    def submit(self, rec: JobSlot) -> None:
        """Run ``rec``'s task (now or later); it reports to the host as it ends."""
        ...

    def stop(self, timeout: float) -> None:
        """Release the runner's threads, waiting up to ``timeout`` s for them."""
        ...


class ThreadPool:
    """``size`` daemon threads running sync tasks; started on first use.

    Daemon threads, because a task stuck past its timeout must not keep the
    process alive after the worker released its job and stopped.
    """

    def __init__(self, host: Host, size: int) -> None:
        self._host = host
        self._size = size
        self._queue: queue.SimpleQueue[JobSlot | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, rec: JobSlot) -> None:
        if not self._threads:
            self._start()
        self._queue.put(rec)

    def _start(self) -> None:
        with self._lock:
            while len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._loop, name=f"qw-task-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _loop(self) -> None:
        host = self._host
        # _run_sync settles each job whatever goes wrong, so the thread lives on.
        while (rec := self._queue.get()) is not None:
            _run_sync(host, rec)

    def stop(self, timeout: float) -> None:
        """Ask idle threads to exit; wait up to ``timeout`` in all for them (busy ones stay)."""
        for _ in self._threads:
            self._queue.put(None)
        # One deadline for all: a join per thread would wait ``timeout`` for each busy one.
        until = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(until - time.monotonic(), 0.0))


class InlineRunner:
    """No threads: each sync task runs at once, in the thread that submits it (the claimer's)."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def submit(self, rec: JobSlot) -> None:
        if self._host.stop_requested:
            # Claimed in the batch a stop came during: left unstarted, the stop releases it.
            self._host.returned(rec)
            return
        _run_sync(self._host, rec)

    def stop(self, timeout: float) -> None:
        """Nothing to stop: every task returned before its submit did."""


class AsyncRunner:
    """One event loop thread running every async task; started on first use."""

    def __init__(self, host: Host, slots: int) -> None:
        self._host = host
        self._slots = slots
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit_many(self, recs: list[JobSlot]) -> None:
        """Start coroutines for ``recs``, waking the loop once for all of them."""
        self._ensure_loop().call_soon_threadsafe(self._start_tasks, recs)

    def _start_tasks(self, recs: list[JobSlot]) -> None:
        for rec in recs:
            self._start_task(rec)

    def cancel(self, rec: JobSlot, reason: str) -> None:
        """Cancel ``rec``'s coroutine; ``reason`` is ``cancel``, ``shutdown`` or ``lost``."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel, rec, reason)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            with self._lock:
                if self._loop is None:
                    # Imported on first use: producers importing qw never pay for asyncio.
                    import asyncio

                    self._loop = asyncio.new_event_loop()
                    self._semaphore = asyncio.Semaphore(self._slots)
                    self._thread = threading.Thread(
                        target=self._loop.run_forever, name="qw-async", daemon=True
                    )
                    self._thread.start()
                loop = self._loop
        return loop

    def _start_task(self, rec: JobSlot) -> None:
        if rec.settled or rec.stop_reason is not None:
            self._stopped_before_start(rec)
            return
        assert self._loop is not None
        rec.async_task = self._loop.create_task(self._run(rec))

    def _stopped_before_start(self, rec: JobSlot) -> None:
        outcome = _stopped(rec)
        if outcome is not None:
            self._host.settle(rec, outcome)
        self._host.returned(rec)

    def _cancel(self, rec: JobSlot, reason: str) -> None:
        rec.stop(reason)
        task = rec.async_task
        if task is not None and not task.done():
            task.cancel()

    async def _run(self, rec: JobSlot) -> None:
        import asyncio

        host = self._host
        # Each asyncio task runs in its own copy of the context: nothing to reset.
        set_current(rec.view)
        assert self._semaphore is not None
        # Whatever goes wrong, the job is settled and the loop runs on.
        try:
            outcome: Outcome | None = None
            timed_out = False
            try:
                # Prefetched coroutines wait here for one of the slots.
                async with self._semaphore:
                    if rec.begin():
                        outcome, timed_out = await self._attempt(rec)
            except asyncio.CancelledError:
                # Cancelled while waiting for a slot (an attempt catches its own).
                outcome, timed_out = _stopped(rec), False
            if outcome is not None:
                host.settle(rec, outcome, timed_out=timed_out)
        except BaseException as exc:
            _settle_broken(host, rec, exc)
        finally:
            host.returned(rec)

    async def _attempt(self, rec: JobSlot) -> tuple[Outcome | None, bool]:
        """The attempt's outcome, and whether it is its timeout's."""
        import asyncio

        try:
            coro = cast("Any", self._host.plugins.run_job(rec.job, _call(rec)))
            if rec.deadline is None:
                result = await coro
            else:
                scope = asyncio.timeout(max(rec.deadline - time.monotonic(), 0.0))
                try:
                    async with scope:
                        result = await coro
                except TimeoutError:
                    if not scope.expired():
                        raise
                    return failed(rec, timeout_error(rec), retryable=True), True
        except asyncio.CancelledError:
            # Our own cancel (operator, shutdown, lost lease): finish by its reason.
            return _stopped(rec), False
        except BaseException as exc:
            return _outcome_of_exception(rec, exc), False
        if rec.completed_in_transaction:
            return uncommitted(rec), False
        if rec.cancel_requested:
            return cancelled(rec), False
        return result_outcome(rec, result, self._host.result_limit), False

    def stop(self, timeout: float) -> None:
        """Stop the loop once its tasks ended (they were cancelled or finished)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
