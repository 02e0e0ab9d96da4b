"""qw.translate: one table per backend turns driver exceptions into qw errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from qw.backends.sqlite._db import ERRORS as SQLITE_ERRORS
from qw.errors import (
    BackendConflict,
    BackendError,
    BackendUnavailable,
    DuplicateJob,
    InvalidInput,
    QwError,
)
from qw.translate import DEDUPE_RACE, by_constraint, map_exceptions, to, translate


class DriverError(Exception):
    pass


class Unique(DriverError):
    def __init__(self, message: str, constraint: str | None) -> None:
        super().__init__(message)
        self.constraint = constraint


def _name(exc: BaseException) -> str | None:
    return exc.constraint if isinstance(exc, Unique) else None


TABLE = {
    Unique: by_constraint(_name, {"jobs_pkey": DuplicateJob, "jobs_dedupe": DEDUPE_RACE}),
    KeyError: to(InvalidInput, "{context} refused {type}: {message}"),
    DriverError: BackendUnavailable,
}


def test_the_first_matching_entry_wins_with_the_message_and_the_cause() -> None:
    original = DriverError("connection refused\nsecond line")
    with pytest.raises(BackendUnavailable) as caught, map_exceptions(TABLE, "store: open"):
        raise original
    assert str(caught.value) == "store: open: connection refused"
    assert caught.value.__cause__ is original


def test_a_template_names_context_type_and_message() -> None:
    expected = r"^enqueue refused KeyError: 'k'$"
    with pytest.raises(InvalidInput, match=expected), map_exceptions(TABLE, "enqueue"):
        raise KeyError("k")


@pytest.mark.parametrize(
    ("constraint", "error"),
    [("jobs_pkey", DuplicateJob), ("jobs_dedupe", BackendConflict), ("events_pkey", BackendError)],
)
def test_unique_violations_are_told_apart_by_constraint_name(
    constraint: str, error: type[QwError]
) -> None:
    with pytest.raises(QwError) as caught, map_exceptions(TABLE):
        raise Unique("duplicate key value", constraint)
    assert type(caught.value) is error
    assert constraint in str(caught.value)


def test_an_unnamed_unique_violation_is_a_backend_error_not_a_duplicate() -> None:
    with pytest.raises(QwError) as caught, map_exceptions(TABLE):
        raise Unique("duplicate key value", None)
    assert type(caught.value) is BackendError


def test_qw_errors_and_unmapped_exceptions_pass_untouched() -> None:
    mine = DuplicateJob("already there")
    with pytest.raises(DuplicateJob) as caught, map_exceptions(TABLE):
        raise mine
    assert caught.value is mine
    with pytest.raises(ZeroDivisionError), map_exceptions(TABLE):
        _ = 1 / 0


def test_a_rule_returning_none_lets_later_entries_try() -> None:
    table = {DriverError: lambda exc, context: None, Exception: BackendError}
    assert type(translate(table, DriverError("x"))) is BackendError
    assert translate({DriverError: BackendError}, ValueError("x")) is None


def _jobs_db(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.executescript(
        "CREATE TABLE qw_jobs (namespace, id, dedupe_key, status, UNIQUE (namespace, id));"
        "CREATE UNIQUE INDEX qw_jobs_dedupe ON qw_jobs (namespace, dedupe_key)"
        " WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');"
        "CREATE TABLE other (a UNIQUE);"
        "INSERT INTO qw_jobs VALUES ('ns', 'a', 'k', 'queued'); INSERT INTO other VALUES (1);"
    )
    return conn


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("INSERT INTO qw_jobs VALUES ('ns', 'a', NULL, 'queued')", DuplicateJob),
        ("INSERT INTO qw_jobs VALUES ('ns', 'b', 'k', 'queued')", BackendConflict),
        ("INSERT INTO other VALUES (1)", BackendError),
    ],
)
def test_sqlite_maps_its_real_unique_violations_by_constraint(
    tmp_path: Path, statement: str, error: type[QwError]
) -> None:
    conn = _jobs_db(tmp_path)
    try:
        with pytest.raises(QwError) as caught, map_exceptions(SQLITE_ERRORS, "t.db"):
            conn.execute(statement)
        assert type(caught.value) is error
        assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    finally:
        conn.close()


def test_sqlite_reports_a_closed_connection_as_unavailable(tmp_path: Path) -> None:
    conn = _jobs_db(tmp_path)
    conn.close()
    with pytest.raises(BackendUnavailable, match="is closed"), map_exceptions(SQLITE_ERRORS, "t"):
        conn.execute("SELECT 1")
