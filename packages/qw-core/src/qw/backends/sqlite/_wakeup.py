"""Wake-ups for one SQLite file: immediate within a process, polled across processes.

Backend objects on the same file and namespace in one process share a
:class:`~qw.wakeup.WakeupHub`, so an enqueue through one wakes a ``wait`` on
another at once, and a :class:`DoneSignal`, so a job ending through one wakes
a ``wait_finished`` on another. Across processes, every transaction that makes work
claimable on a queue (enqueue, retry, release, reclaim, switch ON) bumps that
queue's row in ``qw_wakeups``. A claim records the versions it saw, inside
its own transaction; ``wait`` polls ``PRAGMA data_version`` (which changes
whenever another connection commits) and only on a change re-reads the
versions, so it wakes for new work on its queues and not for other commits.
``wait_finished`` polls ``data_version`` the same way and re-reads its job on
a change: a job's end is a commit, and no commit goes unseen.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from qw.backends.sqlite._db import Database
from qw.errors import BackendUnavailable
from qw.wakeup import WakeupHub

__all__ = ["ChangeWatch", "DoneSignal", "bump", "shared_done", "shared_hub"]

T = TypeVar("T")

_hubs: weakref.WeakValueDictionary[tuple[str, str], WakeupHub] = weakref.WeakValueDictionary()
_dones: weakref.WeakValueDictionary[tuple[str, str], DoneSignal] = weakref.WeakValueDictionary()
_hubs_lock = threading.Lock()
#: The ``qw_wakeups`` row that stands for every queue of the namespace.
ALL_QUEUES = ""


def shared_hub(path: str, namespace: str) -> WakeupHub:
    """The hub every backend object on (``path``, ``namespace``) in this process shares."""
    with _hubs_lock:
        hub = _hubs.get((path, namespace))
        if hub is None:
            # In-process signals are pushed, never lost: the hub need not poll.
            hub = WakeupHub(connected=True)
            _hubs[(path, namespace)] = hub
        return hub


class DoneSignal:
    """A count of the writes that ended jobs in this process; waiters block until it moves.

    A waiter reads :attr:`generation` before reading its job, so an end
    signalled in between is not lost.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    def notify(self) -> None:
        """Some job of the namespace may have ended."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the generation is not ``seen`` or ``timeout`` passes; return it."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, timeout)
            return self._generation


def shared_done(path: str, namespace: str) -> DoneSignal:
    """The end signal every backend object on (``path``, ``namespace``) in this process shares."""
    with _hubs_lock:
        done = _dones.get((path, namespace))
        if done is None:
            done = _dones[(path, namespace)] = DoneSignal()
        return done


def bump(conn: sqlite3.Connection, namespace: str, queues: Iterable[str]) -> None:
    """Record, in the caller's transaction, that ``queues`` may have new work."""
    conn.executemany(
        "INSERT INTO qw_wakeups (namespace, queue, version) VALUES (?, ?, 1) "
        "ON CONFLICT (namespace, queue) DO UPDATE SET version = version + 1",
        [(namespace, q) for q in sorted(set(queues))],
    )


def _versions(conn: sqlite3.Connection, namespace: str, queues: Sequence[str]) -> dict[str, int]:
    names = (ALL_QUEUES, *queues)
    rows = conn.execute(
        "SELECT queue, version FROM qw_wakeups WHERE namespace = ? "
        f"AND queue IN ({', '.join('?' * len(names))})",
        (namespace, *names),
    ).fetchall()
    found = dict(rows)
    return {q: int(found.get(q, 0)) for q in names}


class ChangeWatch:
    """Tells whether work appeared on queues since this thread last claimed them."""

    def __init__(self, db: Database, namespace: str) -> None:
        self._db = db
        self._namespace = namespace
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._marks = threading.local()

    def _by_queue(self) -> dict[str, int]:
        marks: dict[str, int] = self._marks.__dict__.setdefault("by_queue", {})
        return marks

    def mark(self, conn: sqlite3.Connection, queues: Sequence[str]) -> None:
        """Remember the versions of ``queues``; call inside the claim's transaction."""
        self._by_queue().update(_versions(conn, self._namespace, queues))

    def _query(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``read`` on the watch's own connection (autocommit: a fresh snapshot)."""
        with self._lock:
            if self._conn is None or self._pid != os.getpid():
                # After a fork the parent's connection is abandoned, not used.
                self._conn, self._pid = self._db.connect(), os.getpid()
            conn = self._conn
            return self._db.retry(lambda: read(conn))

    def data_version(self) -> int:
        """The watch connection's ``PRAGMA data_version``: it changes when anyone else commits."""
        return self._query(lambda conn: int(conn.execute("PRAGMA data_version").fetchone()[0]))

    def _changed(self, queues: Sequence[str]) -> bool:
        marks = self._by_queue()
        # A queue never claimed in this thread counts as changed: nobody looked yet.
        if any(q not in marks for q in (ALL_QUEUES, *queues)):
            return True
        now = self._query(lambda conn: _versions(conn, self._namespace, queues))
        return any(now[q] != marks[q] for q in now)

    def wait(self, hub: WakeupHub, queues: Sequence[str], timeout: float) -> bool:
        """Wait on ``hub`` for in-process signals, polling for other processes' work."""
        if self._db.closed:
            raise BackendUnavailable(f"the sqlite backend on {self._db.path} is closed")
        deadline = time.monotonic() + timeout
        poll = self._db.options.poll_interval
        # data_version first: a commit after the version check below changes it.
        seen = self.data_version()
        if self._changed(queues):
            return True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if hub.wait(queues, min(poll, remaining)):
                return True
            version = self.data_version()
            if version != seen:
                seen = version
                if self._changed(queues):
                    return True

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
