"""psycopg's exceptions, translated into qw's hierarchy at the backend's edge."""

from __future__ import annotations

from contextlib import AbstractContextManager

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
from qw.translate import DEDUPE_RACE, ErrorTable, by_constraint, map_exceptions, to

__all__ = ["ERRORS", "UNIQUE_CONSTRAINTS", "translate_errors"]

#: The unique constraints of qw's tables whose violation has a meaning.
UNIQUE_CONSTRAINTS: dict[str, type[QwError]] = {
    "jobs_pkey": DuplicateJob,
    # A producer took a key between the enqueue's look-up and its insert; the
    # enqueue plans again on this, so it escapes only after ENQUEUE_TRIES losses.
    "jobs_dedupe": DEDUPE_RACE,
}


def _constraint(exc: BaseException) -> str | None:
    return exc.diag.constraint_name if isinstance(exc, psycopg.Error) else None


ERRORS: ErrorTable = {
    pg_errors.UniqueViolation: by_constraint(_constraint, UNIQUE_CONSTRAINTS),
    (
        pg_errors.UndefinedTable,
        pg_errors.UndefinedColumn,
        pg_errors.UndefinedFunction,
        pg_errors.InvalidSchemaName,
        pg_errors.UndefinedObject,
    ): to(
        SchemaError, "{context}: the qw schema is missing or broken ({message}); run `qw migrate`"
    ),
    psycopg.DataError: to(InvalidInput, "{context}: the store refused a value: {message}"),
    (psycopg.OperationalError, psycopg.InterfaceError): BackendUnavailable,
    psycopg.Error: to(BackendError, "{context}: {type}: {message}"),
    # A lone surrogate survives json.dumps but cannot be sent as UTF-8.
    UnicodeEncodeError: to(InvalidPayload, "{context}: text that is not valid Unicode: {message}"),
}


def translate_errors(what: str = "postgres") -> AbstractContextManager[None]:
    """Re-raise any psycopg error inside the block as the matching qw error.

    The driver exception stays reachable as ``__cause__`` for debugging; it
    never escapes as the exception a caller has to catch.
    """
    return map_exceptions(ERRORS, what)
