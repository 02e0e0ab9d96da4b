"""qw-postgres: the PostgreSQL backend of qw.

>>> import qw
>>> client = qw.open("postgresql://postgres@127.0.0.1:5432/test?schema=qw")  # doctest: +SKIP

:func:`migrate` creates or upgrades the schema a URL names (``qw migrate``);
opening a backend does the same on first use unless ``auto_migrate=false``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["PostgresBackend", "migrate", "__version__"]

if TYPE_CHECKING:
    from qw_postgres.backend import PostgresBackend, migrate


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the plugin module does not import psycopg.
    if name in ("PostgresBackend", "migrate"):
        from qw_postgres import backend

        return getattr(backend, name)
    raise AttributeError(f"module 'qw_postgres' has no attribute {name!r}")
