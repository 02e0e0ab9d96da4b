"""Wake-ups: a change stream, a tailable cursor on a capped collection, or a poll.

Each ``listen_*`` function is a :data:`qw.wakeup.ListenFn`: it runs inside
:class:`qw.wakeup.Listener`, which owns reconnecting and degrading to a
bounded poll while the channel is down. These functions only open their
cursor, call ``ready()``, and turn what arrives into hub signals.

- change stream (replica set or sharded cluster): watches the namespace's
  database for jobs becoming ``queued`` and switches changing; no extra
  writes are needed.
- tailable await cursor on the capped ``signals`` collection (any server,
  including a standalone ``mongod``): producers insert a tiny signal
  document naming the queues that got work.

Result waits (:meth:`~qw_mongodb.MongoBackend.wait_finished`) have a change
stream of their own, :func:`listen_ended`, opened by the first wait: it
watches jobs becoming terminal and wakes the :class:`EndedJobs` waiters of
those ids only. Workers never open it, so they do not pay for every job's
end. There is no tailable twin: it would cost every finish a signal write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import CursorType
from pymongo.collection import Collection
from pymongo.database import Database

from qw.model import JobStatus
from qw.wakeup import WakeupHub
from qw_mongodb.names import JOBS, SWITCHES

__all__ = [
    "SIGNALS_MAX_DOCS",
    "SIGNALS_SIZE_BYTES",
    "EndedJobs",
    "change_stream_pipeline",
    "ended_job_of_change",
    "ended_jobs_pipeline",
    "listen_change_stream",
    "listen_ended",
    "listen_tailable",
    "signal_document",
]

SIGNALS_SIZE_BYTES = 1024 * 1024
SIGNALS_MAX_DOCS = 10_000
#: How long one server-side wait lasts, so that ``stopping`` is checked often.
AWAIT_MS = 500

Ready = Callable[[], None]


def change_stream_pipeline() -> list[dict[str, Any]]:
    """Inserts of queued jobs, updates that make a job queued, and switch changes."""
    return [
        {
            "$match": {
                "$or": [
                    {
                        "ns.coll": JOBS,
                        "operationType": "insert",
                        "fullDocument.status": "queued",
                    },
                    {
                        "ns.coll": JOBS,
                        "operationType": "update",
                        "updateDescription.updatedFields.status": "queued",
                    },
                    {"ns.coll": SWITCHES},
                ]
            }
        },
        {"$project": {"operationType": 1, "ns": 1, "fullDocument.queue": 1}},
    ]


def queues_of_change(change: dict[str, Any]) -> list[str] | None:
    """The queues a change-stream event wakes; None means every queue.

    An insert names its queue. An update's event carries only the changed
    fields, not the queue, and a switch change concerns every queue: waking
    every waiter once is cheaper than looking the job up.
    """
    full = change.get("fullDocument") or {}
    if change.get("operationType") == "insert" and "queue" in full:
        return [full["queue"]]
    return None


def queues_of_signal(doc: dict[str, Any]) -> list[str] | None:
    """The queues a signal document wakes; None (a switch turned ON) means every queue."""
    queues = doc.get("q")
    return None if queues is None else list(queues)


def _deliver(hub: WakeupHub, queues: list[str] | None) -> None:
    if queues is None:
        hub.notify_all()
    else:
        hub.notify(queues)


def listen_change_stream(
    db: Database[Any], hub: WakeupHub, ready: Ready, stopping: threading.Event
) -> None:
    with db.watch(change_stream_pipeline(), max_await_time_ms=AWAIT_MS) as stream:
        ready()
        while not stopping.is_set() and stream.alive:
            change = stream.try_next()
            if change is not None:
                _deliver(hub, queues_of_change(change))
    if not stopping.is_set():
        raise ConnectionError("change stream closed")


def signal_document(queues: list[str] | None) -> dict[str, Any]:
    """A wake-up for ``queues``; None means every queue (a switch turned ON)."""
    return {"q": queues}


def listen_tailable(
    signals: Collection[Any], hub: WakeupHub, ready: Ready, stopping: threading.Event
) -> None:
    # A tailable cursor follows insertion order (client ObjectIds are not
    # ordered across machines) and dies at once on an empty result, so it
    # is positioned on the newest signal by skipping the others; that one
    # is old news. Signals landing between the count and the find are
    # delivered: a spurious wake-up at worst.
    skip = max(0, signals.estimated_document_count() - 1)
    cursor = signals.find({}, cursor_type=CursorType.TAILABLE_AWAIT, skip=skip)
    cursor.max_await_time_ms(AWAIT_MS)
    try:
        if next(cursor, None) is None:
            raise ConnectionError("the signals collection is empty or gone")
        ready()
        while not stopping.is_set() and cursor.alive:
            for doc in cursor:
                _deliver(hub, queues_of_signal(doc))
                if stopping.is_set():
                    return
    finally:
        cursor.close()
    if not stopping.is_set():
        raise ConnectionError("tailable cursor on the signals collection died")


# -- result waits ------------------------------------------------------------

_TERMINAL = [s.value for s in JobStatus if s.is_terminal]


def ended_jobs_pipeline() -> list[dict[str, Any]]:
    """Updates that make a job terminal (every end is one: no job is inserted ended)."""
    return [
        {
            "$match": {
                "ns.coll": JOBS,
                "operationType": "update",
                "updateDescription.updatedFields.status": {"$in": _TERMINAL},
            }
        },
        {"$project": {"documentKey": 1}},
    ]


def ended_job_of_change(change: dict[str, Any]) -> str | None:
    """The id of the job a change-stream event of :func:`ended_jobs_pipeline` ended."""
    key = change.get("documentKey") or {}
    job_id = key.get("_id")
    return job_id if isinstance(job_id, str) else None


class EndedJobs(WakeupHub):
    """Waiters for the end of particular jobs, by id; only watched ids are remembered.

    A :class:`~qw.wakeup.WakeupHub` so that :class:`~qw.wakeup.Listener`
    can mark it (dis)connected; its per-queue flags are unused. A
    (re)connect wakes every waiter: ends may have been missed meanwhile.
    """

    def __init__(self, *, poll_interval: float) -> None:
        super().__init__(poll_interval=poll_interval)
        self._watch_lock = threading.Lock()
        self._watchers: dict[str, set[threading.Event]] = {}

    @contextmanager
    def watch(self, job_id: str) -> Iterator[threading.Event]:
        """An event set when ``job_id`` may have ended; forgotten at exit."""
        event = threading.Event()
        with self._watch_lock:
            self._watchers.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            with self._watch_lock:
                events = self._watchers.get(job_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._watchers[job_id]

    def ended(self, job_ids: Iterable[str]) -> None:
        """Wake the waiters of ``job_ids`` (ids nobody waits for are dropped)."""
        with self._watch_lock:
            for job_id in job_ids:
                for event in self._watchers.get(job_id, ()):
                    event.set()

    def set_connected(self, connected: bool, source: object = None) -> None:
        super().set_connected(connected, source)
        with self._watch_lock:
            for events in self._watchers.values():
                for event in events:
                    event.set()


def listen_ended(
    db: Database[Any], waiters: EndedJobs, ready: Ready, stopping: threading.Event
) -> None:
    with db.watch(ended_jobs_pipeline(), max_await_time_ms=AWAIT_MS) as stream:
        ready()
        while not stopping.is_set() and stream.alive:
            change = stream.try_next()
            if change is not None and (job_id := ended_job_of_change(change)) is not None:
                waiters.ended([job_id])
    if not stopping.is_set():
        raise ConnectionError("change stream of job ends closed")
