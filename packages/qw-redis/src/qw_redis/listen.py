"""The Redis half of wake-ups: subscribe to the namespace's channels, feed the hub.

Two channels, one connection: ``wake`` (queues that may have work, for the
:class:`~qw.wakeup.WakeupHub`) and ``ended`` (jobs that ended, for
:class:`~qw_redis.results.EndedWaiters`).

:class:`qw.wakeup.Listener` owns reconnecting and degrading to a poll; this
module only supplies ``listen(ready, stopping)``. A single server uses plain
pub/sub; a Cluster uses sharded pub/sub (``SSUBSCRIBE``) on the primary that
owns the namespace's slot. The subscriber's connection never retries on its
own, so a dropped connection surfaces as an error the Listener sees, and the
hub wakes every waiter when the channel is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from qw.wakeup import ListenFn, StopEvent, WakeupHub
from qw_redis.results import EndedWaiters

__all__ = ["make_listen", "subscriber_options"]

_SUBSCRIBE_TIMEOUT = 10.0
#: The longest a quiet subscriber sleeps between reads: a read runs
#: redis-py's health check (a PING every ``health_check_interval``).
_TICK = 1.0


def make_listen(
    hub: WakeupHub,
    channel: str,
    connect: Callable[[], redis.Redis],
    *,
    sharded: bool,
    ended: EndedWaiters | None = None,
    ended_channel: str = "",
) -> ListenFn:
    """A ``listen`` function delivering ``channel``'s messages to ``hub``.

    With ``ended``, it subscribes ``ended_channel`` (same slot) too and
    hands its messages there, and every (re)subscription fires every
    waiter of ``ended``, as it wakes every waiter of ``hub``. ``connect``
    returns a new client for the node that owns ``channel``.
    """
    channels = [channel] if ended is None else [channel, ended_channel]

    def listen(ready: Callable[[], None], stopping: StopEvent) -> None:
        client = connect()
        pubsub: Any = client.pubsub()  # type: ignore[no-untyped-call]
        try:
            if sharded:
                pubsub.ssubscribe(*channels)
            else:
                pubsub.subscribe(*channels)
            # ready() only once the server confirmed every channel: a message
            # published before that could be missed while waiters trust us.
            deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT
            confirmed = 0
            while confirmed < len(channels):
                if stopping.is_set():
                    return
                message = _next_message(pubsub, stopping, _TICK)
                if message is not None and message["type"] in ("subscribe", "ssubscribe"):
                    confirmed += 1
                    continue
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no subscription confirmation for {channels}")
            ready()
            if ended is not None:
                ended.set_live(True)
            while not stopping.is_set():
                message = _next_message(pubsub, stopping, _TICK)
                if message is None:
                    continue
                kind = message["type"]
                if kind in ("message", "smessage"):
                    if ended is not None and message["channel"] == ended_channel:
                        ended.deliver(message["data"])
                    else:
                        _deliver(hub, message["data"])
                elif kind in ("unsubscribe", "sunsubscribe"):
                    # The server dropped us (a Cluster slot moved): resubscribe.
                    raise ConnectionError(f"unsubscribed from {channel} by the server")
        finally:
            if ended is not None:
                ended.set_live(False)
            try:
                pubsub.close()
            finally:
                client.close()

    return listen


def _next_message(pubsub: Any, stopping: StopEvent, timeout: float) -> dict[str, Any] | None:
    """The next message read, or None after at most ``timeout`` (or at once on a stop).

    One wait (:meth:`StopEvent.wait_readable`) covers the socket and ``stopping``, so
    a message is read the moment it lands and a stop ends the wait at once
    (no tick for ``App.close()`` to wait out). None also when the read was
    a health-check reply; callers just ask again.
    """
    message: dict[str, Any] | None = pubsub.get_message(timeout=0)
    if message is not None or stopping.is_set():
        return message
    conn = pubsub.connection
    if conn.can_read(0):
        return None  # more is buffered behind a swallowed reply: read it next
    # redis-py has no public accessor for the socket; without one, poll.
    sock = getattr(conn, "_sock", None)
    if sock is None:
        polled: dict[str, Any] | None = pubsub.get_message(timeout=min(timeout, 0.05))
        return polled
    stopping.wait_readable(sock.fileno(), timeout)
    return None


def _deliver(hub: WakeupHub, data: object) -> None:
    text = data.decode() if isinstance(data, bytes) else str(data)
    if text == "*":
        hub.notify_all()
    else:
        hub.notify(text.split(","))


def subscriber_options() -> dict[str, Any]:
    """Connection options for a subscriber: no silent retries, a periodic health check."""
    return {"retry": Retry(NoBackoff(), 0), "health_check_interval": 5}
