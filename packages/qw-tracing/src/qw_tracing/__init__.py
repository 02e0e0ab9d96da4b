"""OpenTelemetry tracing for qw: a span per job attempt, linked to the enqueue that made it.

Installing the distribution is all it takes: its ``qw.plugins`` entry point
(:mod:`qw_tracing.plugin`) is loaded by every :class:`qw.Client` and worker.
Spans go to the tracer provider the application configured; with none, the
plugin records nothing and costs next to nothing.
"""

from __future__ import annotations

__all__ = ["TRACER_NAME", "__version__"]

__version__ = "0.2.0"
#: The instrumentation scope of every span the plugin starts.
TRACER_NAME = "qw_tracing"
