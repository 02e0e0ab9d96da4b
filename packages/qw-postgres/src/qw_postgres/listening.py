"""LISTEN/NOTIFY wake-ups: the psycopg half of :class:`qw.wakeup.Listener`.

One channel per (schema, namespace), named from a digest of the two
validated names so it is always a short, plain identifier; the payload is
the queue name, or ``*`` for "every queue" (a switch turned ON).

A second channel per namespace, :func:`done_channel_name`, carries "a job of
the namespace ended" (payload ``*``, one per transaction) to the processes
waiting for results (``wait_finished``); workers never LISTEN to it, so a
finish costs them nothing to receive. Writes notify it only while a session
is registered in ``result_listeners`` (:func:`make_results_listen`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from qw.wakeup import ListenFn, StopEvent, WakeupHub

__all__ = [
    "ALL_QUEUES",
    "channel_name",
    "done_channel_name",
    "listener_application_name",
    "make_listen",
    "make_results_listen",
]

ALL_QUEUES = "*"
#: A query this often proves a quiet connection is still alive (a half-open
#: TCP connection would otherwise look like a quiet channel forever).
PING_EVERY_S = 15.0
#: How long a results listener waits, after registering, for the
#: transactions that began before it to end (see make_results_listen), and
#: how often it looks.
SETTLE_MAX_S = 2.0
SETTLE_POLL_S = 0.01


def channel_name(schema: str, namespace: str) -> str:
    """The NOTIFY channel for ``namespace`` in ``schema`` (both already validated)."""
    digest = hashlib.blake2s(f"{schema}\0{namespace}".encode(), digest_size=12).hexdigest()
    return f"qw_{digest}"


def done_channel_name(schema: str, namespace: str) -> str:
    """The channel on which every write that ends jobs of ``namespace`` notifies ``*``."""
    return f"{channel_name(schema, namespace)}_done"


def listener_application_name(namespace: str, kind: str = "listener") -> str:
    """The ``application_name`` the listening connection shows in ``pg_stat_activity``."""
    return f"qw-{kind}:{namespace}"[:63]


def make_listen(
    conninfo: str,
    channel: str,
    hub: WakeupHub,
    *,
    application_name: str,
) -> ListenFn:
    """A ``listen(ready, stopping)`` that feeds ``hub`` from ``channel`` until it fails."""
    listen_stmt = sql.SQL("LISTEN {}").format(sql.Identifier(channel))

    def listen(ready: Callable[[], None], stopping: StopEvent) -> None:
        conn: psycopg.Connection[Any] = psycopg.connect(
            conninfo,
            autocommit=True,
            application_name=application_name,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        with conn:
            conn.execute(listen_stmt)
            ready()
            _deliver(conn, hub, stopping)

    return listen


def make_results_listen(
    conninfo: str,
    channel: str,
    hub: WakeupHub,
    *,
    namespace: str,
    register: bytes,
    settled: bytes,
    unregister: bytes,
    application_name: str,
) -> ListenFn:
    """A ``listen`` for the done channel that registers its session while it listens.

    Writes that end jobs notify the done channel only while a session of
    the namespace is in ``result_listeners`` (queries.RESULTS_REGISTER). A
    statement that began before the row committed did not see it, so did
    not notify: the listener says it is ready (and the hub's connect wakes
    every waiter to read again) only once no transaction that began before
    is still open, or after SETTLE_MAX_S; until then waiters poll.
    """
    listen_stmt = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
    ns = {"ns": namespace}

    def listen(ready: Callable[[], None], stopping: StopEvent) -> None:
        conn: psycopg.Connection[Any] = psycopg.connect(
            conninfo,
            autocommit=True,
            application_name=application_name,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        with conn:
            conn.execute(listen_stmt)
            row = conn.execute(register, ns).fetchone()
            assert row is not None
            since = {"since": row[0]}
            try:
                deadline = time.monotonic() + SETTLE_MAX_S
                while not stopping.is_set() and time.monotonic() < deadline:
                    done = conn.execute(settled, since).fetchone()
                    if done is not None and done[0]:
                        break
                    stopping.wait(SETTLE_POLL_S)
                ready()
                _deliver(conn, hub, stopping)
            finally:
                if not conn.closed and not conn.broken:
                    try:
                        conn.execute(unregister, ns)
                    except psycopg.Error:
                        pass  # gone with the session anyway; the next registration clears it

    return listen


def _deliver(conn: psycopg.Connection[Any], hub: WakeupHub, stopping: StopEvent) -> None:
    """Hand each notification to ``hub`` as it arrives, until ``stopping`` (or a failure).

    One wait (:meth:`StopEvent.wait_readable`) covers the socket and ``stopping``, so
    a notification is read the moment it lands and a stop ends the wait at
    once (no polling tick for ``App.close()`` to wait out).
    """
    last_ping = time.monotonic()
    while not stopping.is_set():
        # timeout=0 reads what is buffered (notifications that came in
        # during the ping are kept by psycopg until asked for) and what the
        # socket holds, without blocking; everything libpq read is parsed
        # there, so the wait that follows misses nothing.
        for note in conn.notifies(timeout=0):
            if note.payload == ALL_QUEUES:
                hub.notify_all()
            else:
                hub.notify((note.payload,))
        if stopping.is_set():
            return
        wait = PING_EVERY_S - (time.monotonic() - last_ping)
        if wait <= 0:
            conn.execute("SELECT 1")
            last_ping = time.monotonic()
            continue
        stopping.wait_readable(conn.fileno(), wait)
