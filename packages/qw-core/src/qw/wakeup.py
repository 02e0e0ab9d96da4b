"""Per-queue wake-up signals: the part of ``Backend.wait`` every store shares.

A backend owns one :class:`WakeupHub`. Its notification listener (LISTEN,
pub/sub, a change feed, or nothing) calls :meth:`WakeupHub.notify`; its
``claim`` calls :meth:`WakeupHub.arm` *before* reading the store; its ``wait``
is :meth:`WakeupHub.wait`. Because arming happens before the read, a signal
sent after a claim found nothing is never lost.

While the listener is not connected (not started yet, or dropped and
reconnecting) the hub degrades to a bounded poll: ``wait`` returns True
("claim again") every ``poll_interval`` seconds. When the listener
(re)connects it calls :meth:`WakeupHub.set_connected`, which also wakes every
waiter, because signals may have been missed while it was down.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["ListenFn", "Listener", "StopEvent", "WakeupHub"]

log = logging.getLogger("qw.wakeup")


class WakeupHub:
    """Thread-safe "work may be available" flags, one per queue."""

    def __init__(self, *, poll_interval: float = 0.5, connected: bool = False) -> None:
        self.poll_interval = poll_interval
        self._cond = threading.Condition()
        self._pending: set[str] = set()
        # notify_all() bumps the epoch; a queue armed before the bump is pending.
        self._epoch = 0
        self._armed_at: dict[str, int] = {}
        self._connected = connected
        # The listeners feeding this hub that are not live: it is connected
        # only while none is down (a sharded store has a channel per shard).
        self._down: set[object] = set()

    @property
    def connected(self) -> bool:
        """Whether a push channel is live (else ``wait`` polls)."""
        return self._connected

    def set_connected(self, connected: bool, source: object = None) -> None:
        """Record listener ``source``'s state; a (re)connect wakes every waiter.

        With several listeners the hub is connected while every one that
        said so still is: a channel down means its signals may be missed.
        """
        with self._cond:
            was = self._connected
            if connected:
                self._down.discard(source)
            else:
                self._down.add(source)
            self._connected = connected and not self._down
            if connected and not was:
                self._epoch += 1
            self._cond.notify_all()

    def notify(self, queues: Iterable[str]) -> None:
        """Signal that ``queues`` may have due work."""
        with self._cond:
            self._pending.update(queues)
            self._cond.notify_all()

    def notify_all(self) -> None:
        """Signal every queue (a namespace-wide change, such as a switch turned ON)."""
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()

    def arm(self, queues: Iterable[str]) -> None:
        """Clear the flags of ``queues``; call before reading the store in a claim."""
        with self._cond:
            for queue in queues:
                self._pending.discard(queue)
                self._armed_at[queue] = self._epoch

    def _signalled(self, queues: Iterable[str]) -> bool:
        return any(q in self._pending or self._armed_at.get(q, -1) < self._epoch for q in queues)

    def wait(self, queues: Iterable[str], timeout: float) -> bool:
        """Block until one of ``queues`` is signalled (True) or ``timeout`` passes (False).

        While not connected, returns True after at most ``poll_interval``.
        """
        names = tuple(queues)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._signalled(names):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if self._connected:
                    self._cond.wait(remaining)
                    continue
                polled = self.poll_interval <= remaining
                self._cond.wait(min(remaining, self.poll_interval))
                if self._signalled(names):
                    return True
                if not self._connected:
                    return polled


class StopEvent(threading.Event):
    """An event that is also readable: :meth:`fileno` turns readable once it is set.

    A listener waits on its connection's socket and on this together
    (:meth:`wait_readable`), so a stop ends the wait at once instead of
    after a polling tick (``App.close()`` would otherwise wait out the tick).
    """

    def __init__(self) -> None:
        super().__init__()
        self._recv, self._send = socket.socketpair()
        self._recv.setblocking(False)
        self._send.setblocking(False)
        self._closed = False

    def fileno(self) -> int:
        """The descriptor to select for reading; readable from :meth:`set` on."""
        return self._recv.fileno()

    def wait_readable(self, fd: int, timeout: float) -> None:
        """Block until ``fd`` is readable, this event is set, or ``timeout`` s pass.

        ``poll`` where there is one: ``select`` fails on descriptors past
        FD_SETSIZE (1024), which a busy process reaches.
        """
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.register(self._recv.fileno(), select.POLLIN)
            poller.poll(max(timeout, 0.0) * 1000.0)
        else:
            select.select([fd, self._recv.fileno()], [], [], max(timeout, 0.0))

    def set(self) -> None:
        super().set()
        try:
            self._send.send(b"\0")
        except OSError:
            pass  # closed, or the buffer already holds a byte: readable either way

    def close(self) -> None:
        """Release the socket pair (once no thread selects on it any more)."""
        if not self._closed:
            self._closed = True
            self._recv.close()
            self._send.close()


#: ``listen(ready, stopping)``: connect, subscribe, call ``ready()`` once
#: subscribed, then deliver signals to the hub until the connection fails
#: (raise) or ``stopping`` is set (return). ``stopping`` is a
#: :class:`StopEvent`: a listener that blocks on a socket selects it too.
ListenFn = Callable[[Callable[[], None], StopEvent], None]


class Listener:
    """A daemon thread that keeps a backend's notification channel alive.

    It runs ``listen`` in a loop: when the channel drops (``listen`` raises)
    the hub is marked disconnected, so waiters poll, and ``listen`` is tried
    again after a capped, growing pause. Each backend supplies only the
    store-specific ``listen``; the reconnect policy lives here, once.
    """

    def __init__(
        self,
        hub: WakeupHub,
        listen: ListenFn,
        *,
        name: str,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self._hub = hub
        self._listen = listen
        self._stopping = StopEvent()
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._subscribed = threading.Event()
        self.reconnects = 0
        # Down until subscribed: a hub fed by other listeners too must poll
        # for this one's queues meanwhile.
        hub.set_connected(False, self)

    def start(self, ready_timeout: float = 0.0) -> bool:
        """Start the thread; wait up to ``ready_timeout`` s for the channel; True if live.

        Waiting lets a backend open with its channel live: a connect arriving
        after the first claim wakes every waiter (signals may have been
        missed), a spurious wake-up a quiet worker should not see. When the
        channel is not live in time (False) nothing fails: the hub polls
        every ``poll_interval`` and the listener keeps trying, as after any drop.
        """
        self._thread.start()
        return self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the first subscription; whether it happened."""
        return self._subscribed.wait(timeout) if timeout > 0 else self._subscribed.is_set()

    @property
    def ready(self) -> bool:
        """Whether ``listen`` has subscribed at least once."""
        return self._subscribed.is_set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask ``listen`` to return and wait up to ``timeout`` for the thread."""
        self._stopping.set()
        self._hub.set_connected(False, self)
        if self._thread is threading.current_thread():
            return
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            # A thread still running past the timeout may yet select it: left open.
            self._stopping.close()

    def _ready(self) -> None:
        self._hub.set_connected(True, self)
        self._subscribed.set()

    def _run(self) -> None:
        backoff = self._min_backoff
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._listen(self._ready, self._stopping)
            except Exception as exc:
                self._hub.set_connected(False, self)
                if self._stopping.is_set():
                    return
                self.reconnects += 1
                log.warning(
                    "%s: notification channel lost (%r); polling until it reconnects",
                    self._thread.name,
                    exc,
                )
                # A channel that stayed up a while earns a fresh, short pause.
                if time.monotonic() - started > self._max_backoff:
                    backoff = self._min_backoff
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            else:
                self._hub.set_connected(False, self)
                return
