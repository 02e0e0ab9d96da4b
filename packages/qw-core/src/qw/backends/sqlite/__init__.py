"""The ``sqlite`` backend: qw's embedded default, a durable queue in one local file.

``qw.open("sqlite:///jobs.db")`` opens it; see docs/backends/sqlite.md. The
backend class lives in :mod:`qw.backends.sqlite.backend` and is imported
only when the backend is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qw.plugin import hookimpl

if TYPE_CHECKING:
    from qw.backends.sqlite.backend import SqliteBackend

__all__ = ["SqliteBackend"]


def __getattr__(name: str) -> Any:
    if name == "SqliteBackend":
        from qw.backends.sqlite.backend import SqliteBackend

        return SqliteBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def qw_register_backends() -> list[type[SqliteBackend]]:
    from qw.backends.sqlite.backend import SqliteBackend

    return [SqliteBackend]
