"""Registers the ``postgres`` backend with qw (entry point ``qw.backends``).

psycopg is imported only when the hook runs, so that merely having this
distribution installed costs ``import qw`` nothing.
"""

from __future__ import annotations

from typing import Any

from qw.plugin import hookimpl


@hookimpl
def qw_register_backends() -> list[type[Any]]:
    from qw_postgres.backend import PostgresBackend

    return [PostgresBackend]
