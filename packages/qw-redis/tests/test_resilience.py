"""Restarts and dropped connections, on Redis servers these tests start themselves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

import qw
from qw.model import JobStatus, NewJob
from qw_redis import RedisBackend
from qw_testkit.base import new_namespace

from .servers import need_binaries, single_server


def test_acknowledged_jobs_survive_a_crash_with_appendfsync_always(tmp_path: Path) -> None:
    need_binaries()
    args = ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
    with single_server(tmp_path, args) as server:
        client = qw.open(server.url, namespace="durable")
        try:
            ids = [a.id for a in client.enqueue([NewJob("q", {"i": i}) for i in range(300)])]
            ids += [client.enqueue_one("q", {"one": i}).id for i in range(30)]
            ids += [client.enqueue_one("later", 1, delay=0.2).id]
            # SIGKILL: the server gets no chance to flush anything at shutdown.
            assert server.process is not None
            server.process.kill()
            server.process.wait()
            server.process = None
            server.start()
            time.sleep(0.25)
            # The same client object carries on: its pool reconnects.
            claimed: list[str] = []
            while batch := client.claim(["q", "later"], worker="w", limit=100):
                claimed += [c.job.id for c in batch]
            assert sorted(claimed) == sorted(ids)
            assert len(claimed) == len(set(claimed))
            assert client.counts()["q"][JobStatus.RUNNING] == 330
        finally:
            client.close()


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A single server of our own, so killing pub/sub clients disturbs nobody else."""
    need_binaries()
    with single_server(tmp_path_factory.mktemp("redis-own"), ["--save", ""]) as server:
        yield server.url


@pytest.fixture(params=["single", "cluster"])
def wake_url(request: pytest.FixtureRequest) -> str:
    fixture = "own_server" if request.param == "single" else "cluster_url"
    return str(request.getfixturevalue(fixture))


def _kill_subscribers(url: str) -> int:
    """``CLIENT KILL TYPE pubsub`` on every primary behind ``url``; how many were killed."""
    if url.startswith("redis+cluster://"):
        cluster = RedisCluster.from_url(url.replace("redis+cluster://", "redis://"))
        try:
            nodes = [(n.host, n.port) for n in cluster.get_primaries()]
        finally:
            cluster.close()
    else:
        parsed = redis.Redis.from_url(url).connection_pool.connection_kwargs
        nodes = [(parsed["host"], parsed["port"])]
    killed = 0
    for host, port in nodes:
        node = redis.Redis(host=host, port=port)
        try:
            killed += int(node.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
        finally:
            node.close()
    return killed


def _until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_dropped_subscription_reconnects_and_the_worker_still_gets_work(
    wake_url: str,
) -> None:
    namespace = new_namespace()
    # A 30 s poll interval: pick-up within seconds can only come from the
    # reconnected channel, never from the degraded poll.
    backend = RedisBackend.from_url(f"{wake_url}?poll_interval=30", namespace=namespace)
    worker = qw.Client(backend)
    producer = qw.open(wake_url, namespace=namespace)
    got: dict[str, Any] = {}

    def work() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            claims = worker.claim(["q"], worker="w")
            if claims:
                got["claim"], got["at"] = claims[0], time.monotonic()
                return
            worker.wait(["q"], timeout=10)

    try:
        assert worker.claim(["q"], worker="w") == []
        assert backend._hub.connected
        listener = backend._listener
        assert listener is not None
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        time.sleep(0.3)  # the worker is now blocked in wait()
        assert _kill_subscribers(wake_url) >= 1
        assert _until(lambda: listener.reconnects >= 1, 5), "the listener never saw the drop"
        assert _until(lambda: backend._hub.connected, 10), "the listener never reconnected"
        enqueued_at = time.monotonic()
        job_id = producer.enqueue_one("q", "after the drop").id
        thread.join(15)
        assert "claim" in got, "the job enqueued after the drop was never picked up"
        assert got["claim"].job.id == job_id
        assert got["at"] - enqueued_at < 3.0
        # And the channel pushes again: a wait ends well before the poll would.
        assert worker.claim(["q"], worker="w") == []
        start = time.monotonic()
        threading.Timer(0.2, lambda: producer.enqueue_one("q", "again")).start()
        assert worker.wait(["q"], timeout=10) is True
        assert time.monotonic() - start < 3.0
    finally:
        worker.close()
        producer.close()
