"""Closing is prompt: the subscriber thread ends at once, not after a polling tick."""

from __future__ import annotations

import threading
import time
import uuid

import qw

#: The bound the issue sets; the subscriber used to poll ``stopping`` every 0.25 s.
CLOSE_BOUND_S = 0.05


def _listener_threads(namespace: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"qw-redis-wakeup-{namespace}"]


def test_app_close_returns_at_once_with_the_subscriber_running(redis_url: str) -> None:
    namespace = "c" + uuid.uuid4().hex[:12]
    app = qw.App(redis_url, namespace)
    client = app.client
    assert client.claim(["q"], worker="w") == []
    job = client.enqueue_one("q", {"n": 1})
    assert not client.wait_finished(job.id, timeout=0.01).status.is_terminal
    threads = _listener_threads(namespace)
    assert len(threads) == 1, threads
    time.sleep(0.3)  # idle inside its wait
    started = time.perf_counter()
    app.close()
    took = time.perf_counter() - started
    assert took < CLOSE_BOUND_S, f"App.close() took {took * 1000:.1f} ms"
    assert not threads[0].is_alive()


def test_a_message_still_wakes_a_waiter_after_quiet_time(redis_url: str) -> None:
    namespace = "c" + uuid.uuid4().hex[:12]
    with (
        qw.open(redis_url, namespace=namespace) as worker,
        qw.open(redis_url, namespace=namespace) as producer,
    ):
        assert worker.claim(["q"], worker="w") == []
        time.sleep(1.5)  # past a select timeout: the health check ran in between
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(worker.wait(["q"], timeout=5)))
        waiter.start()
        time.sleep(0.05)
        sent = time.perf_counter()
        producer.enqueue_one("q", {"n": 1})
        waiter.join(5)
        assert got == [True]
        assert time.perf_counter() - sent < 0.5
        assert len(worker.claim(["q"], worker="w")) == 1
