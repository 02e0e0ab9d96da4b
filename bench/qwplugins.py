"""The plugins qw's own bench processes run with: those of a plain qw-core install.

The bench venv also holds qw-metrics and qw-tracing (for the plugins phase),
and a worker or client loads every installed plugin by default; every other
phase measures qw as most users run it, so each passes this explicitly.
"""

from __future__ import annotations

from qw.plugin.manager import QwPluginManager


def baseline() -> QwPluginManager:
    """A manager with what qw-core alone installs: its ``logging`` plugin."""
    import qw.plugins.logging

    plugins = QwPluginManager()
    plugins.register(qw.plugins.logging, name="logging")
    return plugins
