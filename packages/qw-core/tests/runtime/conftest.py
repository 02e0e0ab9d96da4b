"""Backends the runtime tests run on, and a worker started for the length of a test.

``memory`` and ``sqlite`` always run; ``postgres`` and ``redis`` run when their
distributions are installed and their servers reachable, and skip loudly
otherwise (failing instead when ``QW_REQUIRE_BACKENDS`` names them).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import qw

sys.path.insert(0, str(Path(__file__).parent))

from runtime_app import register

HERE = Path(__file__).parent

ALL_BACKENDS = ["memory", "sqlite", "postgres", "redis"]
PROCESS_BACKENDS = ["sqlite", "postgres", "redis"]

#: Fast settings: short leases and polls, so a test does not sit waiting.
FAST = {
    "poll_interval": 0.05,
    "lease_s": 1.5,
    "heartbeat_s": 0.5,
    "reclaim_s": 0.3,
    "grace_s": 5.0,
}


def store_url(name: str, tmp_path: Path) -> str:
    """A URL for backend ``name``, or a loud skip when it is not here."""
    if name == "memory":
        return "memory://runtime"
    from qw_testkit.servers import store_url as kit_store_url

    return kit_store_url(name, tmp_path)


@pytest.fixture
def namespace() -> str:
    return f"rt{secrets.token_hex(5)}"


@pytest.fixture(params=ALL_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


@pytest.fixture(params=PROCESS_BACKENDS)
def process_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


@pytest.fixture
def app(url: str, namespace: str) -> Iterator[qw.App]:
    application = qw.App(url, namespace)
    register(application)
    yield application
    application.close()


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    directory = tmp_path / "notes"
    directory.mkdir()
    return directory


def read_lines(directory: Path, name: str) -> list[str]:
    path = directory / name
    return path.read_text().splitlines() if path.exists() else []


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


@contextmanager
def running(app: qw.App, plugin: object = None, **options: Any) -> Iterator[qw.Worker]:
    """A worker on ``app`` (with ``plugin`` registered) running in a thread for the block."""
    config = {**FAST, "concurrency": 4, **options}
    queues = config.pop("queues", ["rt"])
    worker = app.worker(queues, **config)
    if plugin is not None:
        worker.plugins.register(plugin)
    thread = worker.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=30)
        thread.join(30)
        assert not thread.is_alive(), "worker did not stop"


def terminal(app: qw.App, job_id: str) -> qw.Job | None:
    job = app.client.get(job_id)
    return job if job.status.is_terminal else None


def events_by_job(app: qw.App) -> dict[str, list[qw.Event]]:
    by_job: dict[str, list[qw.Event]] = {}
    while batch := app.client.fetch_events(1000):
        for event in batch:
            by_job.setdefault(event.job_id, []).append(event)
        app.client.ack_events([e.cursor for e in batch])
    return by_job


class Workers:
    """Starts ``qw worker runtime_app:app`` subprocesses and cleans up after them."""

    def __init__(self, url: str, namespace: str, logs: Path) -> None:
        self.url, self.namespace, self.logs = url, namespace, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *options: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        log = (self.logs / f"worker-{len(self.procs)}.log").open("wb")
        cmd = [
            sys.executable, "-c", "from qw.cli import main; main(prog_name='qw')",
            "worker", "runtime_app:app", "--url", self.url, "--namespace", self.namespace,
            "--queues", "rt", "--lease", "1.5", "--poll-interval", "0.05",
            "--reclaim-interval", "0.3", "--log-level", "info", *options,
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.logs / f"worker-{self.procs.index(proc)}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def process_app(process_url: str, namespace: str) -> Iterator[qw.App]:
    """An app on a store that worker processes share."""
    application = qw.App(process_url, namespace)
    register(application)
    yield application
    application.close()


@pytest.fixture
def workers(process_url: str, namespace: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(process_url, namespace, tmp_path)
    yield pool
    pool.stop_all()
