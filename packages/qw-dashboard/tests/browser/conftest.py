"""Fixtures of the browser tests: a real store, ``qw dashboard``, ``qw worker`` and Chromium.

Without Debian's ``chromium`` and ``chromium-driver`` every test here is
skipped with that reason, unless ``QW_REQUIRE_BROWSER=1`` (CI sets it): then
each fails. Stores come from ``QW_TEST_POSTGRES_URL`` / ``QW_TEST_REDIS_URL``
(this machine's defaults otherwise) and skip or fail by ``QW_REQUIRE_BACKENDS``
like every other store test. Each test gets a namespace of its own, and on
PostgreSQL a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from browser_harness import (
    Dashboard,
    Store,
    Worker,
    browser_missing,
    browser_required,
    chrome,
    unique_namespace,
)

import qw
from qw_testkit.servers import require_server, server_url

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver


def pytest_configure(config: pytest.Config) -> None:
    # Selenium Manager must never download a browser or a driver.
    os.environ["SE_OFFLINE"] = "true"


def _probe(url: str) -> None:
    qw.open(url, namespace="probe").close()


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _drop_redis_namespace(url: str, namespace: str) -> None:
    import redis

    with redis.Redis.from_url(url) as r:
        names = list(r.scan_iter(match=f"qw:{{{namespace}}}:*", count=1000))
        if names:
            r.delete(*names)


def _open_store(backend: str) -> Iterator[Store]:
    base = require_server(backend, server_url(backend), _probe)
    namespace = unique_namespace()
    url = base
    schema = None
    if backend == "postgres":
        schema = f"qw_test_e2e_{secrets.token_hex(6)}"
        url = _with_schema(base, schema)
    client = qw.open(url, namespace=namespace)
    try:
        yield Store(backend, url, namespace, client)
    finally:
        client.close()
        if schema is not None:
            _drop_schema(base, schema)
        if backend == "redis":
            _drop_redis_namespace(base, namespace)


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """PostgreSQL by default; ``@pytest.mark.parametrize("store", [...], indirect=True)`` picks."""
    yield from _open_store(getattr(request, "param", "postgres"))


def need_browser() -> None:
    """Skip without Chromium and its driver; with QW_REQUIRE_BROWSER=1, fail instead."""
    reason = browser_missing()
    if reason is not None:
        if browser_required():
            pytest.fail(f"{reason}, and QW_REQUIRE_BROWSER=1 requires the browser", pytrace=False)
        pytest.skip(f"SKIPPED LOUDLY: {reason}")


@pytest.fixture(autouse=True)
def _needs_browser() -> None:
    """Decided before any store or process of the test is set up."""
    need_browser()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the session (a fresh profile); tests start from a blank page."""
    need_browser()
    driver = chrome(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def driver(browser: WebDriver) -> Iterator[WebDriver]:
    """The session's browser with no cookies and a blank page (dashboards share 127.0.0.1)."""
    browser.get("about:blank")
    browser.delete_all_cookies()
    yield browser
    browser.get("about:blank")
    browser.delete_all_cookies()


@pytest.fixture
def start_dashboard(store: Store) -> Iterator[Callable[..., Dashboard]]:
    """Start ``qw dashboard`` on the test's store; stopped (and checked) after the test."""
    started: list[Dashboard] = []

    def start(**options: object) -> Dashboard:
        dash = Dashboard(store.url, store.namespace, **options)  # type: ignore[arg-type]
        started.append(dash)
        return dash

    yield start
    for dash in started:
        code = dash.stop()
        # uvicorn shuts down cleanly on SIGTERM, then re-raises it (exit -15).
        assert code in (0, -signal.SIGTERM), f"qw dashboard exited with {code}:\n{dash.output()}"
        assert "Application shutdown complete" in dash.output(), dash.output()
        assert "Traceback" not in dash.output(), dash.output()


@pytest.fixture
def dashboard(start_dashboard: Callable[..., Dashboard]) -> Dashboard:
    """``qw dashboard`` on the test's store and namespace, without a token."""
    return start_dashboard()


@pytest.fixture
def start_worker(store: Store) -> Iterator[Callable[..., Worker]]:
    """Start ``qw worker e2e_app:app`` on the test's namespace; stopped (and checked) after."""
    started: list[Worker] = []

    def start(**options: object) -> Worker:
        child = Worker(store.url, store.namespace, store.client, **options)  # type: ignore[arg-type]
        started.append(child)
        return child

    yield start
    for child in started:
        code = child.stop()
        assert code == 0, f"qw worker exited with {code}:\n{child.output()}"


@pytest.fixture
def worker(start_worker: Callable[..., Worker]) -> Worker:
    """A worker on the queues ``work`` and ``other``, four slots."""
    return start_worker()
