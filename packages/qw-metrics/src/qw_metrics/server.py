"""Exposing the metrics: prometheus_client's own HTTP server, or its ASGI app."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import make_asgi_app, start_http_server
from prometheus_client.registry import REGISTRY, Collector

from qw_metrics.settings import DEFAULT_ADDR, DEFAULT_PORT

__all__ = ["MetricsServer", "asgi_app", "serve"]


class MetricsServer:
    """A running ``/metrics`` HTTP server (prometheus_client's, on a daemon thread)."""

    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) bound; the port is the real one when 0 was asked for."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    def close(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)

    def __repr__(self) -> str:
        host, port = self.address
        return f"<qw_metrics.MetricsServer http://{host}:{port}/metrics>"


def serve(
    port: int = DEFAULT_PORT, addr: str = DEFAULT_ADDR, *, registry: Collector = REGISTRY
) -> MetricsServer:
    """Serve ``registry`` (the default: prometheus_client's) on ``addr:port`` in this process.

    For a producer process that has no worker; a worker serves by itself
    (``QW_METRICS_PORT``). Raises ``OSError`` if the port is taken.
    """
    httpd, thread = start_http_server(port, addr, registry=registry)
    return MetricsServer(httpd, thread)


def asgi_app(*, registry: Collector = REGISTRY) -> Callable[..., Any]:
    """prometheus_client's ASGI app for ``registry``: mount it in your web app (``/metrics``)."""
    return make_asgi_app(registry)
