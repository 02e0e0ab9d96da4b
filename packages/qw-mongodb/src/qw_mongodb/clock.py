"""The server's clock, measured and then followed with the local monotonic clock.

Every time qw writes (a lease's expiry, a due time, ``last_seen``) comes from
:meth:`ServerClock.now`: the server's time as stamped by ``$currentDate`` on
a small document, plus the monotonic time elapsed since. The client's wall
clock is never used, so a client whose clock is wrong or jumps cannot lease
early or late. The error is at most half the round trip of the best of a few
samples; the measurement is refreshed every ``refresh_s`` seconds so that
drift between the two machines' oscillators stays bounded.

``$currentDate`` is used rather than ``$$NOW`` in pipeline updates because it
is the same single-document update on every server version and topology.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["ServerClock", "as_utc", "to_millis"]

#: ``stamp()`` asks the server for its time (one round trip) and returns it.
Stamp = Callable[[], datetime]


def as_utc(value: datetime) -> datetime:
    """A BSON date read back as an aware UTC datetime (naive means UTC in BSON)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_millis(value: datetime) -> datetime:
    """``value`` truncated to BSON's millisecond precision, in UTC."""
    value = as_utc(value)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


class ServerClock:
    """The server's now, from a measured reference point and ``time.monotonic``."""

    def __init__(self, stamp: Stamp, *, samples: int = 3, refresh_s: float = 30.0) -> None:
        self._stamp = stamp
        self._samples = samples
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._server_ref: datetime | None = None
        self._mono_ref = 0.0
        # A fresh measurement may land a hair earlier than an answer already
        # given; time as qw reports it never goes backwards.
        self._last = datetime.min.replace(tzinfo=UTC)
        #: Half the round trip of the sample in use: the measurement's error bound.
        self.uncertainty_s = 0.0

    def measure(self) -> None:
        """Take fresh samples now; keep the one with the shortest round trip."""
        best: tuple[float, datetime, float] | None = None
        for _ in range(self._samples):
            sent = time.monotonic()
            server = as_utc(self._stamp())
            received = time.monotonic()
            rtt = received - sent
            if best is None or rtt < best[0]:
                best = (rtt, server, (sent + received) / 2)
        assert best is not None
        with self._lock:
            self.uncertainty_s = best[0] / 2
            self._server_ref = best[1]
            self._mono_ref = best[2]

    def now(self) -> datetime:
        """The server's current time (millisecond precision, aware UTC)."""
        mono = time.monotonic()
        with self._lock:
            stale = self._server_ref is None or mono - self._mono_ref > self._refresh_s
        if stale:
            self.measure()
            mono = time.monotonic()
        with self._lock:
            assert self._server_ref is not None
            now = to_millis(self._server_ref + timedelta(seconds=mono - self._mono_ref))
            self._last = max(self._last, now)
            return self._last
