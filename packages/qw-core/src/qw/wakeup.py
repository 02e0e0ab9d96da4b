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

import threading
import time
from collections.abc import Iterable

__all__ = ["WakeupHub"]


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

    @property
    def connected(self) -> bool:
        """Whether a push channel is live (else ``wait`` polls)."""
        return self._connected

    def set_connected(self, connected: bool) -> None:
        """Record the listener's state; a (re)connect wakes every waiter."""
        with self._cond:
            was = self._connected
            self._connected = connected
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
