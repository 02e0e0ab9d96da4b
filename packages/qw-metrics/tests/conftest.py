"""Stores, an isolated registry, and an app whose client and worker report to one plugin.

``sqlite`` always runs; ``postgres`` and ``redis`` run when their packages
are installed and their servers answer, and skip loudly otherwise (failing
instead when ``QW_REQUIRE_BACKENDS`` names them). Every test counts into a
``CollectorRegistry`` of its own, never prometheus_client's default one.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import qw
from qw.plugin.manager import QwPluginManager
from qw_metrics import Metrics, MetricsPlugin, Settings
from qw_testkit.servers import store_url

BACKENDS = ["sqlite", "postgres", "redis"]
#: Short leases and polls, so a test does not sit waiting.
FAST: dict[str, Any] = {
    "poll_interval": 0.05,
    "lease_s": 1.5,
    "heartbeat_s": 0.5,
    "reclaim_s": 0.3,
    "grace_s": 5.0,
    "tune_gc": False,
}
#: No HTTP server and no sampler unless a test asks for them.
QUIET = Settings(port=None, counts_s=None)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return store_url("sqlite", tmp_path)


@pytest.fixture
def namespace() -> str:
    return f"mx{secrets.token_hex(5)}"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


class Setup:
    """One plugin on one manager, used by the app's client (enqueues) and its workers."""

    def __init__(self, url: str, namespace: str, metrics: Metrics, settings: Settings) -> None:
        self.plugin = MetricsPlugin(metrics, settings=settings)
        self.plugins = QwPluginManager()
        self.plugins.register(self.plugin, name="metrics")
        self.client = qw.open(url, namespace=namespace, plugins=self.plugins)
        self.app = qw.App(client=self.client)
        register_tasks(self.app)

    @contextmanager
    def worker(self, **options: Any) -> Iterator[qw.Worker]:
        """A real worker on the app, reporting to the plugin, for the block."""
        config = {**FAST, "concurrency": 4, **options}
        worker = self.app.worker(["mx"], plugins=self.plugins, load_plugins=False, **config)
        thread = worker.start()
        try:
            yield worker
        finally:
            worker.stop(timeout=30)
            thread.join(30)
            assert not thread.is_alive(), "worker did not stop"

    def close(self) -> None:
        self.plugin.close()
        self.client.close()


@pytest.fixture
def make_setup(namespace: str, metrics: Metrics) -> Iterator[Callable[..., Setup]]:
    made: list[Setup] = []

    def make(url: str, settings: Settings = QUIET) -> Setup:
        setup = Setup(url, namespace, metrics, settings)
        made.append(setup)
        return setup

    yield make
    for setup in made:
        setup.close()


@pytest.fixture
def setup(url: str, make_setup: Callable[..., Setup]) -> Setup:
    return make_setup(url)


#: Set by a test to let ``mx.gate`` return.
GATES: dict[str, threading.Event] = {}


def register_tasks(app: qw.App) -> None:
    @app.task(name="mx.ok", queue="mx")
    def ok(x: int) -> int:
        return x

    @app.task(name="mx.aok", queue="mx")
    async def aok(x: int) -> int:
        await asyncio.sleep(0)
        return x

    @app.task(name="mx.boom", queue="mx", max_attempts=1)
    def boom() -> None:
        raise ValueError("boom")

    @app.task(name="mx.flaky", queue="mx", max_attempts=2, backoff=0.05)
    def flaky(marker: str) -> str:
        path = Path(marker)
        if not path.exists():
            path.write_text("failed once")
            raise RuntimeError("first attempt fails")
        return "second attempt"

    @app.task(name="mx.cooperative", queue="mx")
    def cooperative() -> str:
        job = qw.current_job()
        for _ in range(600):
            job.raise_if_cancelled()
            time.sleep(0.02)
        return "never cancelled"

    @app.task(name="mx.sleep", queue="mx", max_attempts=2)
    def sleep(seconds: float) -> str:
        time.sleep(seconds)
        return "slept"


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """One sample's value from a real collection of ``registry``."""
    return registry.get_sample_value(name, labels)
