"""WakeupHub and Listener with real threads (generous margins: the CI box is busy)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from qw.wakeup import Listener, WakeupHub


class Waiter:
    """Runs ``hub.wait`` in a thread and records its answer and how long it took."""

    def __init__(self, hub: WakeupHub, queues: list[str], timeout: float) -> None:
        self.result: bool | None = None
        self.elapsed = -1.0
        self.started = threading.Event()

        def run() -> None:
            self.started.set()
            t0 = time.monotonic()
            self.result = hub.wait(queues, timeout)
            self.elapsed = time.monotonic() - t0

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.started.wait(5)

    def join(self, timeout: float = 10) -> bool | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "waiter still blocked"
        return self.result


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return check()


# -- WakeupHub -----------------------------------------------------------------


def test_a_notify_before_wait_is_not_lost() -> None:
    hub = WakeupHub(connected=True)
    hub.arm(["q"])
    hub.notify(["q"])
    t0 = time.monotonic()
    assert hub.wait(["q"], 5) is True
    assert time.monotonic() - t0 < 1


def test_arm_clears_the_flag() -> None:
    hub = WakeupHub(connected=True)
    hub.notify(["q"])
    hub.arm(["q"])
    assert hub.wait(["q"], 0.05) is False


def test_a_notify_from_another_thread_wakes_a_waiter_promptly() -> None:
    hub = WakeupHub(connected=True)
    hub.arm(["q"])
    waiter = Waiter(hub, ["q"], timeout=30)
    time.sleep(0.1)
    assert waiter.thread.is_alive()  # it is really blocked
    hub.notify(["q"])
    assert waiter.join() is True
    assert waiter.elapsed < 10


def test_other_queues_do_not_wake_a_waiter() -> None:
    hub = WakeupHub(connected=True)
    hub.arm(["a"])
    waiter = Waiter(hub, ["a"], timeout=0.3)
    hub.notify(["b"])
    assert waiter.join() is False
    assert waiter.elapsed >= 0.29


def test_any_of_several_queues_wakes() -> None:
    hub = WakeupHub(connected=True)
    hub.arm(["a", "b"])
    waiter = Waiter(hub, ["a", "b"], timeout=30)
    hub.notify(["b"])
    assert waiter.join() is True


def test_notify_all_wakes_queues_armed_before_it_only() -> None:
    hub = WakeupHub(connected=True)
    hub.arm(["a"])
    hub.notify_all()
    assert hub.wait(["a"], 0.05) is True
    hub.arm(["a"])  # re-armed after the broadcast: nothing pending now
    assert hub.wait(["a"], 0.05) is False


def test_a_never_armed_queue_counts_as_signalled() -> None:
    # Until a claim has read the queue there may be work: do not sleep.
    hub = WakeupHub(connected=True)
    assert hub.wait(["fresh"], 5) is True


def test_timeout_is_respected_when_connected() -> None:
    hub = WakeupHub(connected=True)
    hub.arm(["q"])
    t0 = time.monotonic()
    assert hub.wait(["q"], 0.2) is False
    elapsed = time.monotonic() - t0
    assert 0.19 <= elapsed < 5


def test_zero_timeout_returns_at_once() -> None:
    hub = WakeupHub(connected=True)
    hub.arm(["q"])
    assert hub.wait(["q"], 0) is False


def test_disconnected_hub_polls() -> None:
    hub = WakeupHub(poll_interval=0.1, connected=False)
    hub.arm(["q"])
    t0 = time.monotonic()
    assert hub.wait(["q"], 30) is True  # "claim again" after one poll interval
    elapsed = time.monotonic() - t0
    assert 0.09 <= elapsed < 5


def test_disconnected_hub_never_sleeps_past_the_timeout() -> None:
    hub = WakeupHub(poll_interval=10, connected=False)
    hub.arm(["q"])
    t0 = time.monotonic()
    assert hub.wait(["q"], 0.2) is False  # the timeout came before a poll was due
    assert time.monotonic() - t0 < 5


def test_connecting_wakes_every_waiter() -> None:
    hub = WakeupHub(poll_interval=60, connected=False)
    hub.arm(["q"])
    waiter = Waiter(hub, ["q"], timeout=30)
    time.sleep(0.1)
    assert waiter.thread.is_alive()
    hub.set_connected(True)  # signals may have been missed while down
    assert waiter.join() is True
    assert waiter.elapsed < 10
    assert hub.connected


def test_disconnecting_turns_a_blocked_waiter_into_a_poller() -> None:
    hub = WakeupHub(poll_interval=0.1, connected=True)
    hub.arm(["q"])
    waiter = Waiter(hub, ["q"], timeout=30)
    time.sleep(0.1)
    hub.set_connected(False)
    assert waiter.join() is True
    assert waiter.elapsed < 10


def test_a_hub_fed_by_several_listeners_is_connected_only_while_all_are() -> None:
    hub = WakeupHub(poll_interval=0.1, connected=False)
    one, two = object(), object()
    hub.set_connected(False, one)
    hub.set_connected(False, two)
    hub.set_connected(True, one)
    assert not hub.connected, "the second channel is not live yet"
    hub.set_connected(True, two)
    assert hub.connected
    hub.arm(["q"])
    waiter = Waiter(hub, ["q"], timeout=30)
    time.sleep(0.1)
    hub.set_connected(False, two)  # its queues' signals may now be missed: poll
    assert waiter.join() is True
    assert waiter.elapsed < 10
    assert not hub.connected
    hub.set_connected(True, two)
    assert hub.connected


# -- Listener ------------------------------------------------------------------


@pytest.fixture
def stoppers() -> Iterator[list[Listener]]:
    started: list[Listener] = []
    yield started
    for listener in started:
        listener.stop()


class FlakyChannel:
    """A fake channel: fails ``failures`` times, then stays up until stopped."""

    def __init__(self, hub: WakeupHub, failures: int) -> None:
        self.hub = hub
        self.failures = failures
        self.calls = 0
        self.drop = threading.Event()
        self.connected_once = threading.Event()

    def listen(self, ready: Callable[[], None], stopping: threading.Event) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"refused #{self.calls}")
        ready()
        self.connected_once.set()
        while not stopping.is_set():
            if self.drop.is_set():
                self.drop.clear()
                raise ConnectionError("dropped")
            stopping.wait(0.01)


def test_listener_marks_the_hub_connected_and_stop_disconnects(
    stoppers: list[Listener],
) -> None:
    hub = WakeupHub(connected=False)
    channel = FlakyChannel(hub, failures=0)
    listener = Listener(hub, channel.listen, name="test-listener")
    stoppers.append(listener)
    listener.start()
    assert _eventually(lambda: hub.connected)
    assert listener.alive
    listener.stop()
    assert not listener.alive
    assert not hub.connected
    assert listener.reconnects == 0


def test_listener_reconnects_after_listen_raises(stoppers: list[Listener]) -> None:
    hub = WakeupHub(poll_interval=0.05, connected=False)
    channel = FlakyChannel(hub, failures=3)
    listener = Listener(hub, channel.listen, name="flaky", min_backoff=0.01, max_backoff=0.05)
    stoppers.append(listener)
    listener.start()
    assert channel.connected_once.wait(10)
    assert listener.reconnects == 3
    assert channel.calls == 4
    assert _eventually(lambda: hub.connected)


def test_a_dropped_channel_degrades_to_polling_then_recovers(
    stoppers: list[Listener],
) -> None:
    hub = WakeupHub(poll_interval=0.05, connected=False)
    channel = FlakyChannel(hub, failures=0)
    listener = Listener(hub, channel.listen, name="drops", min_backoff=0.5, max_backoff=1.0)
    stoppers.append(listener)
    listener.start()
    assert _eventually(lambda: hub.connected)
    hub.arm(["q"])
    channel.drop.set()
    assert _eventually(lambda: not hub.connected)
    # While reconnecting (backoff 0.5 s), a waiter polls instead of hanging.
    t0 = time.monotonic()
    assert hub.wait(["q"], 30) is True
    assert time.monotonic() - t0 < 10
    assert _eventually(lambda: hub.connected)
    assert listener.reconnects == 1


def test_notifications_from_the_listener_wake_waiters(stoppers: list[Listener]) -> None:
    hub = WakeupHub(poll_interval=60, connected=False)
    signal = threading.Event()

    def listen(ready: Callable[[], None], stopping: threading.Event) -> None:
        ready()
        while not stopping.is_set():
            if signal.wait(0.01):
                signal.clear()
                hub.notify(["jobs"])

    listener = Listener(hub, listen, name="notifier")
    stoppers.append(listener)
    listener.start()
    assert _eventually(lambda: hub.connected)
    hub.arm(["jobs"])
    waiter = Waiter(hub, ["jobs"], timeout=30)
    time.sleep(0.1)
    assert waiter.thread.is_alive()  # connected: no polling wake-ups
    signal.set()
    assert waiter.join() is True
    assert waiter.elapsed < 10


def test_listen_returning_ends_the_listener_disconnected(stoppers: list[Listener]) -> None:
    hub = WakeupHub(connected=False)

    def listen(ready: Callable[[], None], stopping: threading.Event) -> None:
        ready()

    listener = Listener(hub, listen, name="short")
    stoppers.append(listener)
    listener.start()
    assert _eventually(lambda: not listener.alive)
    assert not hub.connected
    assert listener.reconnects == 0


def test_stop_during_backoff_ends_promptly(stoppers: list[Listener]) -> None:
    hub = WakeupHub(connected=False)

    def listen(ready: Callable[[], None], stopping: threading.Event) -> None:
        raise OSError("server down")

    listener = Listener(hub, listen, name="down", min_backoff=30, max_backoff=60)
    stoppers.append(listener)
    listener.start()
    assert _eventually(lambda: listener.reconnects >= 1)
    t0 = time.monotonic()
    listener.stop(timeout=10)
    assert not listener.alive
    assert time.monotonic() - t0 < 5
