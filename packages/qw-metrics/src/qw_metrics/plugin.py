"""The ``qw.plugins`` entry point ``metrics``: qw's metrics on prometheus_client's REGISTRY.

Installed, it is loaded by every worker (which then serves ``/metrics`` on
``QW_METRICS_PORT`` and samples the store's counts every
``QW_METRICS_COUNTS_S``) and by every :class:`qw.Client` (which counts its
enqueues). One :class:`~qw_metrics.hooks.MetricsPlugin` per process.
"""

from __future__ import annotations

from qw_metrics.hooks import MetricsPlugin
from qw_metrics.server import MetricsServer

__all__ = ["PLUGIN", "server"]

#: The process's plugin, counting into :func:`qw_metrics.default_metrics`.
PLUGIN = MetricsPlugin()

# pluggy registers this module: its hooks are the plugin's bound methods.
qw_jobs_enqueued = PLUGIN.qw_jobs_enqueued
qw_worker_started = PLUGIN.qw_worker_started
qw_worker_stopped = PLUGIN.qw_worker_stopped
qw_job_claimed = PLUGIN.qw_job_claimed
qw_job_finished = PLUGIN.qw_job_finished
qw_job_released = PLUGIN.qw_job_released
qw_lease_lost = PLUGIN.qw_lease_lost
qw_jobs_reclaimed = PLUGIN.qw_jobs_reclaimed


def server() -> MetricsServer | None:
    """The HTTP server this process's first worker started, or None."""
    return PLUGIN.server
