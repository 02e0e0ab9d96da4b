"""StopEvent: an Event a listener can select on, so a stop ends its wait at once."""

from __future__ import annotations

import select
import socket
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


def test_wait_readable_returns_on_data_on_set_and_on_timeout() -> None:
    event = StopEvent()
    left, right = socket.socketpair()
    try:
        started = time.perf_counter()
        event.wait_readable(left.fileno(), 0.05)
        assert time.perf_counter() - started >= 0.04  # nothing happened: the timeout
        right.send(b"x")
        started = time.perf_counter()
        event.wait_readable(left.fileno(), 5.0)
        assert time.perf_counter() - started < 1.0  # the data
        left.recv(1)
        threading.Timer(0.05, event.set).start()
        started = time.perf_counter()
        event.wait_readable(left.fileno(), 5.0)
        assert time.perf_counter() - started < 1.0  # the stop
    finally:
        left.close()
        right.close()
        event.close()


def test_listener_stop_ends_a_listen_blocked_in_select_at_once() -> None:
    hub = WakeupHub()
    entered = threading.Event()

    def listen(ready: object, stopping: StopEvent) -> None:
        entered.set()
        left, right = socket.socketpair()
        with left, right:
            stopping.wait_readable(left.fileno(), 30.0)

    listener = Listener(hub, listen, name="test-stop-event")
    listener.start()
    assert entered.wait(5)
    started = time.perf_counter()
    listener.stop(timeout=5)
    assert time.perf_counter() - started < 0.05
    assert not listener.alive
