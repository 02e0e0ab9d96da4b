"""qw-dashboard: a web UI for qw, served by ``qw dashboard`` against any store URL.

Read and act: namespaces, queues with their counts and ON/OFF switches,
jobs (filtered, searched by id, retried, cancelled), workers, the event
stream, workflows drawn as a graph, and limit keys, refreshed live. See
docs/dashboard.md for the security model.
"""

from __future__ import annotations

__version__ = "0.2.0"

from qw_dashboard.app import create_app

__all__ = ["__version__", "create_app"]
