"""Waiting for jobs to end: which waited-on jobs may have ended.

The scripts that make jobs terminal publish the ids they ended on the
namespace's ``ended`` channel, once per call (``lua/apply.lua``'s
publish_ended): the ids, space-separated, or ``*`` when there were many.
The listener that feeds the queues' :class:`~qw.wakeup.WakeupHub` subscribes
that channel too and hands each message to :class:`EndedWaiters`, which
keeps a flag only for the jobs someone is waiting on (every ended id of a
busy namespace would otherwise pile up). A waiter arms its flag before it
reads the job, so a job that ends between the read and the wait is not missed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ALL", "EndedWaiters", "Watch", "ended_ids"]

#: The message that means "re-read every job waited on".
ALL = "*"


def ended_ids(data: object) -> list[str] | None:
    """The ids an ``ended`` message names; None when it names every job (``*``)."""
    text = data.decode() if isinstance(data, bytes) else str(data)
    return None if text == ALL else text.split(" ")


class Watch:
    """One waiter's flag for one job: set when the job may have ended."""

    __slots__ = ("fired", "job_id")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.fired = False


class EndedWaiters:
    """Thread-safe flags of the jobs being waited on, set by ``ended`` messages."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watching: dict[str, set[Watch]] = {}
        self._live = False

    @property
    def live(self) -> bool:
        """Whether the channel is subscribed (else waiters must poll)."""
        return self._live

    def set_live(self, live: bool) -> None:
        """Record the subscription's state; either change fires every watch.

        Up: messages may have been missed while it was down. Down: waiters
        re-read, and then poll until it is back.
        """
        with self._cond:
            self._live = live
            self._fire_all()

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Watch]:
        """Register a waiter for ``job_id`` for the block's duration."""
        watch = Watch(job_id)
        with self._cond:
            self._watching.setdefault(job_id, set()).add(watch)
        try:
            yield watch
        finally:
            with self._cond:
                watches = self._watching.get(job_id)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del self._watching[job_id]

    def arm(self, watch: Watch) -> None:
        """Clear ``watch``'s flag; call before reading the job."""
        with self._cond:
            watch.fired = False

    def wait(self, watch: Watch, timeout: float) -> bool:
        """Block until ``watch`` fires (True) or ``timeout`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: watch.fired, timeout)

    def deliver(self, data: object) -> None:
        """Hand over one ``ended`` message."""
        ids = ended_ids(data)
        if ids is None:
            self.notify_all()
        else:
            self.notify(ids)

    def notify(self, ids: list[str]) -> None:
        """Fire the watches of ``ids`` (ids nobody waits on are dropped)."""
        with self._cond:
            hit = False
            for job_id in ids:
                for watch in self._watching.get(job_id, ()):
                    watch.fired = hit = True
            if hit:
                self._cond.notify_all()

    def notify_all(self) -> None:
        """Fire every watch (a ``*`` message)."""
        with self._cond:
            self._fire_all()

    def _fire_all(self) -> None:
        for watches in self._watching.values():
            for watch in watches:
                watch.fired = True
        self._cond.notify_all()
