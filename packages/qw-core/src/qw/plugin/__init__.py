"""qw's plugin system, on pluggy.

Two entry-point groups:

``qw.backends``
    One entry point per backend name (``redis = "qw_redis.plugin"``). The
    module it names implements :func:`~qw.plugin.spec.qw_register_backends`.
    Only the named backend's module is imported, when that name is asked for.
``qw.plugins``
    Plugins that observe or wrap work: they implement the lifecycle hooks of
    :mod:`qw.plugin.spec`, and the worker runtime loads them all at start.

Write hook implementations with :data:`hookimpl`::

    from qw.plugin import hookimpl

    @hookimpl
    def qw_job_finished(job, status, duration_s):
        print(job.id, status, duration_s)
"""

from __future__ import annotations

import pluggy

__all__ = ["NAME", "hookimpl", "hookspec"]

NAME = "qw"
#: Marks a hook specification (used by :mod:`qw.plugin.spec` only).
hookspec = pluggy.HookspecMarker(NAME)
#: Marks a hook implementation in a plugin module or class.
hookimpl = pluggy.HookimplMarker(NAME)
