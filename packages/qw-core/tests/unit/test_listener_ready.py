"""Listener.start(ready_timeout=...): the one wait for a channel to go live."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from qw.wakeup import Listener, WakeupHub


def _stop_when_asked(ready: Callable[[], None], stopping: threading.Event) -> None:
    ready()
    stopping.wait()


def test_start_returns_true_once_subscribed() -> None:
    hub = WakeupHub(poll_interval=0.05)
    listener = Listener(hub, _stop_when_asked, name="ready-test")
    try:
        assert listener.start(ready_timeout=5.0) is True
        assert listener.ready
        assert hub.connected
    finally:
        listener.stop()


def test_start_waits_for_a_slow_subscription() -> None:
    def slow(ready: Callable[[], None], stopping: threading.Event) -> None:
        time.sleep(0.2)
        _stop_when_asked(ready, stopping)

    hub = WakeupHub(poll_interval=0.05)
    listener = Listener(hub, slow, name="ready-slow")
    try:
        t0 = time.monotonic()
        assert listener.start(ready_timeout=5.0) is True
        assert 0.15 <= time.monotonic() - t0 < 4.0
    finally:
        listener.stop()


def test_a_channel_that_never_comes_up_degrades_to_polling() -> None:
    def down(ready: Callable[[], None], stopping: threading.Event) -> None:
        raise ConnectionError("store down")

    hub = WakeupHub(poll_interval=0.05)
    listener = Listener(hub, down, name="ready-down", min_backoff=0.01, max_backoff=0.02)
    try:
        t0 = time.monotonic()
        assert listener.start(ready_timeout=0.3) is False
        assert 0.25 <= time.monotonic() - t0 < 3.0
        assert not listener.ready
        assert not hub.connected
        assert listener.alive, "the listener keeps trying after start gave up waiting"
        hub.arm(["q"])
        t1 = time.monotonic()
        assert hub.wait(["q"], 5.0) is True  # a poll, not a block for the full timeout
        assert time.monotonic() - t1 < 2.0
    finally:
        listener.stop()


def test_without_a_timeout_start_does_not_wait() -> None:
    gate = threading.Event()

    def gated(ready: Callable[[], None], stopping: threading.Event) -> None:
        gate.wait(5)
        _stop_when_asked(ready, stopping)

    listener = Listener(WakeupHub(), gated, name="ready-nowait")
    try:
        assert listener.start() is False
        gate.set()
        assert listener.wait_ready(5.0) is True
    finally:
        listener.stop()


def test_ready_stays_true_after_a_reconnect() -> None:
    drops = []

    def flaky(ready: Callable[[], None], stopping: threading.Event) -> None:
        ready()
        if not drops:
            drops.append(1)
            raise ConnectionError("dropped once")
        stopping.wait()

    hub = WakeupHub(poll_interval=0.05)
    listener = Listener(hub, flaky, name="ready-flaky", min_backoff=0.01)
    try:
        assert listener.start(ready_timeout=5.0)
        deadline = time.monotonic() + 5
        while listener.reconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listener.reconnects == 1
        assert listener.ready
    finally:
        listener.stop()
