"""Closing is prompt: the LISTEN threads end at once, not after a polling tick."""

from __future__ import annotations

import threading
import time
import uuid

import qw

from .conftest import with_query

#: The bound the issue sets; the listeners used to poll ``stopping`` every 0.25 s.
CLOSE_BOUND_S = 0.05


def _listener_threads(namespace: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith(f":{namespace}")]


def test_app_close_returns_at_once_with_both_listeners_running(pg_url: str) -> None:
    namespace = "c" + uuid.uuid4().hex[:12]
    app = qw.App(with_query(pg_url, "schema=qw_test"), namespace)
    client = app.client
    # A claim starts the wake-up listener, a result wait the results listener.
    assert client.claim(["q"], worker="w") == []
    job = client.enqueue_one("q", {"n": 1})
    assert not client.wait_finished(job.id, timeout=0.01).status.is_terminal
    threads = _listener_threads(namespace)
    assert len(threads) == 2, threads
    time.sleep(0.3)  # both now idle inside their wait
    started = time.perf_counter()
    app.close()
    took = time.perf_counter() - started
    assert took < CLOSE_BOUND_S, f"App.close() took {took * 1000:.1f} ms"
    assert not any(t.is_alive() for t in threads)


def test_a_notification_still_wakes_a_waiter_after_quiet_time(pg_url: str) -> None:
    namespace = "c" + uuid.uuid4().hex[:12]
    url = with_query(pg_url, "schema=qw_test")
    with qw.open(url, namespace=namespace) as worker, qw.open(url, namespace=namespace) as producer:
        assert worker.claim(["q"], worker="w") == []
        time.sleep(0.3)  # the listener sleeps in select, with no tick to wake it
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
