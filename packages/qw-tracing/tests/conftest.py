"""One tracer provider for the whole session, an exporter cleared per test, and stores to run on.

The global tracer provider can be set only once per process, so it is set
here, at collection, before any test runs; each test starts from an empty
:class:`InMemorySpanExporter`. The no-provider behaviour is tested in a
subprocess of its own.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import qw
import qw_tracing.plugin
from qw.plugin.manager import QwPluginManager
from qw_testkit.servers import store_url

EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_provider)

#: Short leases and polls, so that a test does not sit waiting.
FAST: dict[str, Any] = {
    "poll_interval": 0.05,
    "lease_s": 1.5,
    "heartbeat_s": 0.5,
    "reclaim_s": 0.3,
    "grace_s": 5.0,
    "concurrency": 4,
}

BACKENDS = ["sqlite", "postgres", "redis"]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return store_url("sqlite", tmp_path)


@pytest.fixture
def plugins() -> QwPluginManager:
    """A manager with only the tracing plugin: what both the producer and the worker use."""
    manager = QwPluginManager()
    manager.register(qw_tracing.plugin, name="tracing")
    return manager


@pytest.fixture
def spans() -> Iterator[Spans]:
    EXPORTER.clear()
    yield Spans()
    EXPORTER.clear()


def make_app(url: str, plugins: QwPluginManager) -> qw.App:
    """An app in a namespace of its own, its client calling ``plugins``' enqueue hooks."""
    return qw.App(client=qw.open(url, namespace=f"tr{secrets.token_hex(5)}", plugins=plugins))


@contextmanager
def running(app: qw.App, plugins: QwPluginManager, **options: Any) -> Iterator[qw.Worker]:
    """A worker on ``app`` with ``plugins`` running in a thread for the block."""
    config = {**FAST, **options}
    queues = config.pop("queues", ["tr"])
    worker = app.worker(queues, plugins=plugins, load_plugins=False, **config)
    thread = worker.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=30)
        thread.join(30)
        assert not thread.is_alive(), "worker did not stop"


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


class Spans:
    """The finished spans the exporter holds, and ways to pick them out."""

    def all(self) -> list[ReadableSpan]:
        return list(EXPORTER.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r} in {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return [s.name for s in self.all()]

    def attempts(self, job_id: str) -> list[ReadableSpan]:
        """``job_id``'s attempt spans, by attempt number."""
        found = [
            s
            for s in self.all()
            if s.kind is trace.SpanKind.CONSUMER and (s.attributes or {}).get("qw.job.id") == job_id
        ]
        return sorted(found, key=lambda s: (s.attributes or {})["qw.attempt"])  # type: ignore[arg-type,return-value]

    def wait_attempts(self, job_id: str, count: int) -> list[ReadableSpan]:
        wait_until(lambda: len(self.attempts(job_id)) >= count, what=f"{count} attempt spans")
        return self.attempts(job_id)
