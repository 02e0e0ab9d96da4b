"""The example against the real stores: PostgreSQL and Redis, a fresh namespace per test.

Server URLs come from ``QW_TEST_POSTGRES_URL`` / ``QW_TEST_REDIS_URL`` (this
machine's defaults otherwise). A missing server skips with its reason, or
fails when ``QW_REQUIRE_BACKENDS`` names the backend.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

import imageshop.tasks
import qw
import qw.testing
from qw_testkit.servers import require_server, server_url

BACKENDS = ["postgres", "redis"]


def _probe(url: str) -> None:
    qw.open(url, namespace="probe").close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> tuple[str, str]:
    """A reachable store URL and a namespace no other test uses."""
    name: str = request.param
    url = require_server(name, server_url(name), _probe)
    return url, f"fastapi{secrets.token_hex(5)}"


@pytest.fixture
def shop(store: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[qw.App]:
    """The example's qw app on the test store, with a real worker running its tasks."""
    url, namespace = store
    app = imageshop.tasks.app
    monkeypatch.setattr(imageshop.tasks, "RESIZE_PHASE_S", 0.0)
    app.configure(url=url, namespace=namespace)
    try:
        with qw.testing.run_worker(app, concurrency=4, lease_s=10.0):
            yield app
    finally:
        app.close()
