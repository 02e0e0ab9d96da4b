"""Prometheus metrics for qw: jobs, run and wait times, queue depth, workers.

Installed, the ``metrics`` plugin counts in every worker and producer of
the process, and a worker serves them on ``QW_METRICS_PORT`` (9808). See
docs/metrics.md for every metric.

In a process without a worker::

    import qw_metrics

    qw_metrics.serve(9808)  # or mount qw_metrics.asgi_app() in your web app
    qw_metrics.watch(client, every=15.0)  # queue depth, oldest job, workers
"""

from __future__ import annotations

from qw_metrics.hooks import MetricsPlugin
from qw_metrics.metrics import (
    MAX_SERIES,
    NO_TASK,
    OTHER,
    RUN_BUCKETS,
    WAIT_BUCKETS,
    Metrics,
    Snapshot,
    default_metrics,
)
from qw_metrics.sampler import Sampler, read_snapshot, watch
from qw_metrics.server import MetricsServer, asgi_app, serve
from qw_metrics.settings import DEFAULT_ADDR, DEFAULT_COUNTS_S, DEFAULT_PORT, Settings

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_COUNTS_S",
    "DEFAULT_PORT",
    "MAX_SERIES",
    "NO_TASK",
    "OTHER",
    "RUN_BUCKETS",
    "WAIT_BUCKETS",
    "Metrics",
    "MetricsPlugin",
    "MetricsServer",
    "Sampler",
    "Settings",
    "Snapshot",
    "asgi_app",
    "default_metrics",
    "read_snapshot",
    "serve",
    "watch",
]
