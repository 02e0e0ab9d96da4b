"""psycopg's exceptions, translated into qw's hierarchy at the backend's edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pg_errors

from qw.errors import (
    BackendError,
    BackendUnavailable,
    DuplicateJob,
    InvalidInput,
    InvalidPayload,
    QwError,
    SchemaError,
)

__all__ = ["translate_errors"]

_SCHEMA_ERRORS = (
    pg_errors.UndefinedTable,
    pg_errors.UndefinedColumn,
    pg_errors.UndefinedFunction,
    pg_errors.InvalidSchemaName,
    pg_errors.UndefinedObject,
)


@contextmanager
def translate_errors(what: str = "postgres") -> Iterator[None]:
    """Re-raise any psycopg error inside the block as the matching qw error.

    The driver exception stays reachable as ``__cause__`` for debugging; it
    never escapes as the exception a caller has to catch.
    """
    try:
        yield
    except QwError:
        raise
    except pg_errors.UniqueViolation as exc:
        raise DuplicateJob(f"{what}: {_message(exc)}") from exc
    except _SCHEMA_ERRORS as exc:
        raise SchemaError(
            f"{what}: the qw schema is missing or broken ({_message(exc)}); run `qw migrate`"
        ) from exc
    except psycopg.DataError as exc:
        raise InvalidInput(f"{what}: the store refused a value: {_message(exc)}") from exc
    except psycopg.OperationalError as exc:
        raise BackendUnavailable(f"{what}: {_message(exc)}") from exc
    except psycopg.InterfaceError as exc:
        raise BackendUnavailable(f"{what}: {_message(exc)}") from exc
    except psycopg.Error as exc:
        raise BackendError(f"{what}: {type(exc).__name__}: {_message(exc)}") from exc
    except UnicodeEncodeError as exc:
        # A lone surrogate survives json.dumps but cannot be sent as UTF-8.
        raise InvalidPayload(f"{what}: text that is not valid Unicode: {exc}") from exc


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
