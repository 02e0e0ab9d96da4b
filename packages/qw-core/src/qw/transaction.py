"""The application's own connection, as the DB-API connection a backend writes through.

``client.enqueue(jobs, connection=conn)`` (and ``create_workflow``,
``finish``) accept what applications hold: a driver's connection (a psycopg 3
``Connection``, a ``sqlite3.Connection``), an SQLAlchemy ``Connection`` or
``Session``, or a Django connection (``django.db.connection`` or
``connections[alias]``). :func:`dbapi_connection` unwraps it once, here,
without importing any of those libraries; each backend then checks that the
driver connection is one it can write through.
"""

from __future__ import annotations

from typing import Any

from qw.errors import InvalidInput

__all__ = ["dbapi_connection"]


def _library(obj: object) -> str:
    return type(obj).__module__.partition(".")[0]


def dbapi_connection(connection: object) -> Any:
    """The driver connection behind ``connection`` (returned as it is when it is one).

    An SQLAlchemy ``Session`` is asked for its connection (which begins its
    transaction, as any statement would); a Django connection is connected
    first. Raises :class:`~qw.errors.InvalidInput` for None.
    """
    if connection is None:
        raise InvalidInput("connection= needs the application's open connection, not None")
    library = _library(connection)
    if library == "sqlalchemy":
        if callable(getattr(connection, "connection", None)):
            # An ORM Session: its connection() joins (or begins) its transaction.
            connection = connection.connection()  # type: ignore[attr-defined]
        fairy = connection.connection  # type: ignore[attr-defined]
        raw = getattr(fairy, "driver_connection", None)
        return raw if raw is not None else fairy.dbapi_connection
    if library == "django" and hasattr(connection, "ensure_connection"):
        connection.ensure_connection()
        return connection.connection  # type: ignore[attr-defined]
    return connection
