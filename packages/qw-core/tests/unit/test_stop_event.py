"""StopEvent: an Event a listener can select on, so a stop ends its wait at once."""

from __future__ import annotations

import select
import threading
import time

from qw.wakeup import Listener, StopEvent, WakeupHub


def test_fileno_turns_readable_when_set() -> None:
    event = StopEvent()
    try:
        assert select.select([event.fileno()], [], [], 0)[0] == []
        event.set()
        event.set()  # a second set is harmless
        assert select.select([event.fileno()], [], [], 0)[0] == [event.fileno()]
        assert event.is_set()
    finally:
        event.close()
        event.set()  # after close: still sets, no error


def test_listener_stop_ends_a_listen_blocked_in_select_at_once() -> None:
    hub = WakeupHub()
    entered = threading.Event()

    def listen(ready: object, stopping: StopEvent) -> None:
        entered.set()
        select.select([stopping.fileno()], [], [], 30.0)

    listener = Listener(hub, listen, name="test-stop-event")
    listener.start()
    assert entered.wait(5)
    started = time.perf_counter()
    listener.stop(timeout=5)
    assert time.perf_counter() - started < 0.05
    assert not listener.alive
