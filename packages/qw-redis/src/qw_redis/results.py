"""Waiting for jobs to end: which waited-on jobs may have ended.

The scripts that make jobs terminal publish the ids they ended on the
namespace's ``ended`` channel, once per call (``lua/apply.lua``'s
publish_ended): the ids, space-separated, or ``*`` when there were many.
The listener that feeds the queues' :class:`~qw.wakeup.WakeupHub` subscribes
that channel too and hands each message to :class:`EndedWaiters`, which
keeps a flag only for the jobs someone is waiting on (every ended id of a
busy namespace would otherwise pile up). A waiter arms its flag before it
reads the job, so a job that ends between the read and the wait is not
missed. :class:`AsyncEndedWaiters` is the same registry for one event
loop, fed by the async twin's own subscription (:mod:`qw_redis.aio`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Generic, TypeVar

__all__ = ["ALL", "AsyncEndedWaiters", "EndedWaiters", "Watch", "ended_ids"]

#: The message that means "re-read every job waited on".
ALL = "*"

W = TypeVar("W")


def ended_ids(data: object) -> list[str] | None:
    """The ids an ``ended`` message names; None when it names every job (``*``)."""
    text = data.decode() if isinstance(data, bytes) else str(data)
    return None if text == ALL else text.split(" ")


class _Registry(Generic[W]):
    """Waiters by job id, and the rules of firing them; subclasses say what a waiter is."""

    def __init__(self) -> None:
        self._watching: dict[str, set[W]] = {}
        self._live = False

    # What a waiter is, and the lock that guards the registry.
    def _new(self) -> W:
        raise NotImplementedError

    def _fire(self, waiter: W) -> None:
        raise NotImplementedError

    def _fired(self) -> None:
        """Called, under the lock, after firing any waiter."""

    def _locked(self) -> AbstractContextManager[object]:
        raise NotImplementedError

    @property
    def live(self) -> bool:
        """Whether the channel is subscribed (else waiters must poll)."""
        return self._live

    @contextmanager
    def watch(self, job_id: str) -> Iterator[W]:
        """Register a waiter for ``job_id`` for the block's duration."""
        waiter = self._new()
        with self._locked():
            self._watching.setdefault(job_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            with self._locked():
                waiters = self._watching.get(job_id)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._watching[job_id]

    def set_live(self, live: bool) -> None:
        """Record the subscription's state; either change fires every waiter.

        Up: messages may have been missed while it was down. Down: waiters
        re-read, and then poll until it is back.
        """
        with self._locked():
            self._live = live
            self._fire_all()

    def deliver(self, data: object) -> None:
        """Hand over one ``ended`` message: fire the waiters of the ids it names."""
        ids = ended_ids(data)
        with self._locked():
            if ids is None:
                self._fire_all()
                return
            hit = False
            for job_id in ids:
                for waiter in self._watching.get(job_id, ()):
                    self._fire(waiter)
                    hit = True
            if hit:
                self._fired()

    def _fire_all(self) -> None:
        for waiters in self._watching.values():
            for waiter in waiters:
                self._fire(waiter)
        self._fired()


class Watch:
    """One waiter's flag for one job: set when the job may have ended."""

    __slots__ = ("fired",)

    def __init__(self) -> None:
        self.fired = False


class EndedWaiters(_Registry[Watch]):
    """Thread-safe flags of the jobs being waited on, set by ``ended`` messages."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition()

    def _new(self) -> Watch:
        return Watch()

    def _fire(self, waiter: Watch) -> None:
        waiter.fired = True

    def _fired(self) -> None:
        self._cond.notify_all()

    def _locked(self) -> AbstractContextManager[object]:
        return self._cond

    def arm(self, watch: Watch) -> None:
        """Clear ``watch``'s flag; call before reading the job."""
        with self._cond:
            watch.fired = False

    def wait(self, watch: Watch, timeout: float) -> bool:
        """Block until ``watch`` fires (True) or ``timeout`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: watch.fired, timeout)


class AsyncEndedWaiters(_Registry[asyncio.Event]):
    """The same flags as events of one event loop (used only from that loop's thread)."""

    def _new(self) -> asyncio.Event:
        return asyncio.Event()

    def _fire(self, waiter: asyncio.Event) -> None:
        waiter.set()

    def _locked(self) -> AbstractContextManager[object]:
        return nullcontext()  # one thread: nothing runs between two awaits
