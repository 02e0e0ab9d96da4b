"""StopEvent: an Event a listener can select on, so a stop ends its wait at once."""

from __future__ import annotations

import os
import resource
import select
import socket
import threading
import time

import pytest

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


def test_wait_readable_takes_a_descriptor_past_fd_setsize() -> None:
    # select() refuses fd >= 1024; a process with many connections gets there.
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] <= 1100 or not hasattr(select, "poll"):
        pytest.skip("needs poll() and more than 1100 descriptors")
    event = StopEvent()
    left, right = socket.socketpair()
    high = os.dup2(left.fileno(), 1090)
    try:
        right.send(b"x")
        started = time.perf_counter()
        event.wait_readable(high, 5.0)
        assert time.perf_counter() - started < 1.0
    finally:
        os.close(high)
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
