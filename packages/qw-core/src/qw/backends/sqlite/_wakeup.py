"""Wake-ups for one SQLite file: immediate within a process, polled across processes.

Backend objects on the same file and namespace in one process share a
:class:`~qw.wakeup.WakeupHub`, so an enqueue through one wakes a ``wait`` on
another at once. Other processes' commits are seen by polling
``PRAGMA data_version`` on a dedicated connection: it changes whenever
another connection committed to the file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence

from qw.backends.sqlite._db import Database, translate
from qw.wakeup import WakeupHub

__all__ = ["ChangeWatch", "shared_hub"]

_hubs: weakref.WeakValueDictionary[tuple[str, str], WakeupHub] = weakref.WeakValueDictionary()
_hubs_lock = threading.Lock()


def shared_hub(path: str, namespace: str) -> WakeupHub:
    """The hub every backend object on (``path``, ``namespace``) in this process shares."""
    with _hubs_lock:
        hub = _hubs.get((path, namespace))
        if hub is None:
            # In-process signals are pushed, never lost: the hub need not poll.
            hub = WakeupHub(connected=True)
            _hubs[(path, namespace)] = hub
        return hub


class ChangeWatch:
    """Notices commits made by other connections since a thread's last claim."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._marks = threading.local()

    def _version(self) -> int:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._db.connect()
                return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise translate(exc, self._db.path) from exc

    def mark(self, queues: Sequence[str]) -> None:
        """Remember the file's version for ``queues``; call before a claim reads."""
        version = self._version()
        marks: dict[str, int] = self._marks.__dict__.setdefault("by_queue", {})
        for queue in queues:
            marks[queue] = version

    def changed(self, queues: Sequence[str]) -> bool:
        """Whether the file changed since this thread last marked any of ``queues``.

        A queue never marked counts as changed: the caller has not looked yet.
        """
        marks: dict[str, int] = self._marks.__dict__.get("by_queue", {})
        if any(q not in marks for q in queues):
            return True
        version = self._version()
        return any(marks[q] != version for q in queues)

    def wait(self, hub: WakeupHub, queues: Sequence[str], timeout: float) -> bool:
        """Wait on ``hub`` for in-process signals, checking for other commits between polls."""
        deadline = time.monotonic() + timeout
        poll = self._db.options.poll_interval
        while True:
            if self.changed(queues):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if hub.wait(queues, min(poll, remaining)):
                return True

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
