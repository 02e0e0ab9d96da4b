"""The /metrics endpoint over a real socket: the worker's, the entry point's, a producer's."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points

import httpx
import pytest
from conftest import Setup, wait_until
from prometheus_client import CollectorRegistry

import qw
import qw_metrics
from qw_metrics import Metrics, MetricsPlugin, Settings


def _scrape(port: int) -> str:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_the_worker_serves_its_metrics(
    url: str, make_setup: Callable[..., Setup], namespace: str
) -> None:
    setup = make_setup(url, Settings(port=0, addr="127.0.0.1", counts_s=0.1))
    answer = setup.app.tasks["mx.ok"].enqueue(1)
    with setup.worker():
        wait_until(lambda: setup.client.get(answer.id).status.is_terminal, what="the job")
        server = setup.plugin.server
        assert server is not None
        assert server.address[0] == "127.0.0.1"
        line = f'qw_queue_jobs{{namespace="{namespace}",queue="mx",status="succeeded"}} 1.0'

        def scraped() -> str | None:
            text = _scrape(server.port)
            return text if line in text else None

        text = wait_until(scraped, what=line)
    assert 'qw_jobs_finished_total{outcome="succeeded",queue="mx",task="mx.ok"} 1.0' in text
    assert 'qw_job_run_seconds_count{queue="mx",task="mx.ok"} 1.0' in text
    assert f'qw_workers{{namespace="{namespace}"}} 1.0' in text
    # Served for the process's life, not only its workers'.
    assert "qw_jobs_started_total" in _scrape(server.port)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_busy_port_is_a_warning(
    sqlite_url: str,
    make_setup: Callable[..., Setup],
    registry: CollectorRegistry,
    busy_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="qw_metrics")
    setup = make_setup(sqlite_url, Settings(port=busy_port, addr="127.0.0.1", counts_s=None))
    answer = setup.app.tasks["mx.ok"].enqueue(1)
    with setup.worker():
        wait_until(lambda: setup.client.get(answer.id).status.is_terminal, what="the job")
    assert setup.plugin.server is None
    assert f"cannot serve metrics on 127.0.0.1:{busy_port}" in caplog.text
    # The worker ran and counted all the same.
    labels = {"queue": "mx", "task": "mx.ok", "outcome": "succeeded"}
    assert registry.get_sample_value("qw_jobs_finished_total", labels) == 1


def test_a_bad_port_in_the_environment_is_a_warning(
    sqlite_url: str,
    make_setup: Callable[..., Setup],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    registry: CollectorRegistry,
) -> None:
    caplog.set_level(logging.WARNING, logger="qw_metrics")
    monkeypatch.setenv("QW_METRICS_PORT", "nine")
    monkeypatch.setenv("QW_METRICS_COUNTS_S", "-3")
    setup = make_setup(sqlite_url, None)  # settings from the environment
    answer = setup.app.tasks["mx.ok"].enqueue(1)
    with setup.worker():
        wait_until(lambda: setup.client.get(answer.id).status.is_terminal, what="the job")
    assert setup.plugin.server is None
    assert "QW_METRICS_PORT must be a port number" in caplog.text
    assert "'nine'" in caplog.text
    assert "QW_METRICS_COUNTS_S must be seconds > 0" in caplog.text
    labels = {"queue": "mx", "task": "mx.ok", "outcome": "succeeded"}
    assert registry.get_sample_value("qw_jobs_finished_total", labels) == 1


def test_the_installed_entry_point(
    sqlite_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ep,) = [ep for ep in entry_points(group="qw.plugins") if ep.name == "metrics"]
    assert ep.value == "qw_metrics.plugin"
    from qw_metrics import plugin

    monkeypatch.setenv("QW_METRICS_PORT", "0")
    monkeypatch.setenv("QW_METRICS_ADDR", "127.0.0.1")
    monkeypatch.setenv("QW_METRICS_COUNTS_S", "off")
    plugin.PLUGIN.close()
    labels = {"queue": "mxep", "task": "mx.ep", "outcome": "succeeded"}
    registry = qw_metrics.default_metrics().registry
    assert registry is not None
    before = registry.get_sample_value("qw_jobs_finished_total", labels) or 0
    # The app's client and its worker load every installed qw.plugins entry point.
    app = qw.App(sqlite_url, namespace)

    @app.task(name="mx.ep", queue="mxep")
    def ep_task() -> str:
        return "ok"

    try:
        answer = ep_task.enqueue()
        worker = app.worker(["mxep"], poll_interval=0.05, tune_gc=False)
        worker.start()
        try:
            wait_until(lambda: app.client.get(answer.id).status.is_terminal, what="the job")
            server = plugin.server()
            assert isinstance(server, qw_metrics.MetricsServer)
            text = _scrape(server.port)
        finally:
            worker.stop(timeout=30)
    finally:
        app.close()
        plugin.PLUGIN.close()
    line = f'qw_jobs_finished_total{{outcome="succeeded",queue="mxep",task="mx.ep"}} {before + 1}'
    assert line in text
    enqueued = 'qw_jobs_enqueued_total{queue="mxep",task="mx.ep"}'
    assert enqueued in text
    assert registry.get_sample_value("qw_jobs_finished_total", labels) == before + 1


def test_serve_and_asgi_app_in_a_producer(
    sqlite_url: str, namespace: str, metrics: Metrics, registry: CollectorRegistry
) -> None:
    from qw.plugin.manager import QwPluginManager

    plugins = QwPluginManager()
    plugins.register(MetricsPlugin(metrics))
    with qw.open(sqlite_url, namespace=namespace, plugins=plugins) as client:
        client.enqueue([qw.NewJob("web", {"task": "web.send", "args": []}) for _ in range(3)])
    line = 'qw_jobs_enqueued_total{queue="web",task="web.send"} 3.0'
    server = qw_metrics.serve(0, "127.0.0.1", registry=registry)
    try:
        assert line in _scrape(server.port)
    finally:
        server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=2)

    async def via_asgi() -> httpx.Response:
        transport = httpx.ASGITransport(app=qw_metrics.asgi_app(registry=registry))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as web:
            return await web.get("/")

    response = asyncio.run(via_asgi())
    assert response.status_code == 200
    assert line in response.text


def test_serve_raises_on_a_busy_port(busy_port: int, registry: CollectorRegistry) -> None:
    with pytest.raises(OSError):
        qw_metrics.serve(busy_port, "127.0.0.1", registry=registry)
