"""Connections to one SQLite file: set-up, a small pool, transactions, errors.

Writes run in ``BEGIN IMMEDIATE`` transactions: the write lock is taken
before anything is read, so a read-then-write (a claim, a fenced finish) can
never race another connection, in this process or another one. The store's
clock is read once per transaction, from SQLite.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from qw.backends.sqlite._schema import QW_TABLES, ensure_schema
from qw.backends.sqlite._url import SqliteOptions
from qw.errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    DuplicateJob,
    InvalidInput,
    QwError,
    SchemaError,
)
from qw.translate import DEDUPE_RACE, ErrorTable, by_constraint, to
from qw.translate import translate as translate_with

__all__ = ["ERRORS", "NOW_SQL", "Database", "translate"]

T = TypeVar("T")

#: SQLite's clock as Unix seconds, to the millisecond it keeps.
NOW_SQL = "round((julianday('now') - 2440587.5) * 86400.0, 3)"

_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_BROKEN_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
#: Idle connections kept for reuse; more are closed when handed back.
_MAX_IDLE = 16

# One writer per file per process. SQLite admits one writer at a time anyway;
# threads queued on a lock are woken in turn instead of polling the file lock.
_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(key: str) -> threading.Lock:
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.Lock())


#: The savepoint the application-transaction writes run in.
_SAVEPOINT = "qw_write_in"
#: sqlite3.LEGACY_TRANSACTION_CONTROL (Python 3.12+): isolation_level decides.
_LEGACY = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)


def _implicit_transactions(conn: sqlite3.Connection) -> bool:
    """Whether Python begins transactions implicitly on ``conn`` (its legacy mode).

    Then a write must begin one itself, or the app's ``commit()`` has
    nothing to commit. ``autocommit=False`` (3.12+) keeps a transaction open
    at all times; ``autocommit=True`` and ``isolation_level=None`` have none.
    """
    return conn.isolation_level is not None and getattr(conn, "autocommit", _LEGACY) == _LEGACY


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", -1)) & 0xFF


def _is_busy(exc: sqlite3.Error) -> bool:
    return _code(exc) in _BUSY_CODES or "locked" in str(exc) or "busy" in str(exc)


def _closed(exc: BaseException, path: str) -> QwError | None:
    if "closed" in str(exc):
        return BackendUnavailable(f"the sqlite backend on {path} is closed")
    return None


def _by_code(exc: BaseException, path: str) -> QwError | None:
    assert isinstance(exc, sqlite3.Error)  # the table's entry is for sqlite3.Error
    if _is_busy(exc):
        return BackendUnavailable(
            f"{path} stayed locked by another connection past busy_timeout ({exc}); "
            "raise ?busy_timeout= or shorten the other writers' transactions"
        )
    if _code(exc) in _BROKEN_CODES:
        return SchemaError(f"{path} is not a usable SQLite database: {exc}")
    if "no such table" in str(exc) or "no such column" in str(exc):
        return SchemaError(f"the qw tables in {path} are missing or altered: {exc}")
    return None


def _unique_columns(exc: BaseException) -> str | None:
    # SQLite names a unique constraint by its columns: "UNIQUE constraint failed: t.a, t.b".
    _, sep, columns = str(exc).partition("UNIQUE constraint failed: ")
    return columns.strip() if sep else None


#: The unique constraints of qw's tables whose violation has a meaning. The
#: enqueue looks ids and keys up under the write lock first, so reaching
#: these means a bug, not a caller's mistake, but the answer is still exact.
UNIQUE_CONSTRAINTS: dict[str, type[QwError]] = {
    "qw_jobs.namespace, qw_jobs.id": DuplicateJob,
    "qw_jobs.namespace, qw_jobs.dedupe_key": DEDUPE_RACE,
}

#: ``translate``'s context is the database file's path.
ERRORS: ErrorTable = {
    sqlite3.ProgrammingError: _closed,
    sqlite3.Error: _by_code,
    sqlite3.IntegrityError: by_constraint(_unique_columns, UNIQUE_CONSTRAINTS),
    sqlite3.OperationalError: to(BackendUnavailable, "sqlite error on {context}: {text}"),
    # Not {text}: the driver error's repr, as before, names its class.
    Exception: lambda exc, path: BackendError(f"sqlite error on {path}: {exc!r}"),
}


def translate(exc: sqlite3.Error, path: str) -> QwError:
    """The qw error for a sqlite3 exception raised while using ``path``."""
    error = translate_with(ERRORS, exc, path)
    assert error is not None  # the table ends with a catch-all
    return error


class Database:
    """One SQLite file, opened with qw's pragmas; thread-safe."""

    def __init__(self, options: SqliteOptions) -> None:
        if sqlite3.sqlite_version_info < (3, 35):
            raise BackendUnavailable(
                f"qw's sqlite backend needs SQLite 3.35 or newer (for RETURNING); "
                f"this Python links {sqlite3.sqlite_version}"
            )
        self.options = options
        self.path = os.path.abspath(options.path)
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise BackendUnavailable(
                f"cannot open {self.path}: directory {directory} does not exist "
                "(qw does not create it)"
            )
        if os.path.isdir(self.path):
            raise BackendUnavailable(f"cannot open {self.path}: it is a directory")
        #: The file's identity in this process (symlinks resolved).
        self.key = os.path.realpath(self.path)
        self._write_lock = _write_lock(self.key)
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False
        conn = self.connect()
        try:
            self.retry(lambda: self._prepare_file(conn))
        except BaseException:
            conn.close()
            raise
        self._idle.append(conn)

    @property
    def closed(self) -> bool:
        return self._closed

    def connect(self) -> sqlite3.Connection:
        """A new connection with qw's per-connection pragmas, in autocommit mode."""
        if self._closed:
            raise BackendUnavailable(f"the sqlite backend on {self.path} is closed")
        try:
            conn = sqlite3.connect(
                self.path,
                # SQLite's own busy handler sleeps up to 100 ms between tries,
                # so a process can lose every race to a busy neighbour until
                # busy_timeout passes; retry() waits in short jittered steps.
                timeout=0,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        try:
            # synchronous is one of a fixed set (checked in SqliteOptions). The
            # pragma reads the schema, which waits while another process
            # creates the file.
            self.retry(lambda: conn.execute(f"PRAGMA synchronous = {self.options.synchronous}"))
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare_file(self, conn: sqlite3.Connection) -> None:
        foreign = self._foreign_tables(conn)
        if foreign and not self.options.shared:
            raise SchemaError(
                f"{self.path} holds tables that are not qw's ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); qw does not take over another "
                "application's database: give qw a file of its own, or add ?shared=true "
                "to the URL to keep qw's tables beside them (the file must then be in WAL mode)"
            )
        if foreign:
            # The journal mode belongs to the file's owner; qw only checks it.
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigurationError(
                    f"{self.path} is shared (?shared=true) but in journal mode {mode!r}; "
                    "qw needs WAL and leaves a shared file's mode to its owner: "
                    "run PRAGMA journal_mode=WAL on it once"
                )
        else:
            # WAL is a property of the file: set once, kept by every later open.
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise BackendUnavailable(
                    f"{self.path} cannot use WAL journaling (got {mode!r}); "
                    "qw needs a local file system"
                )
        ensure_schema(conn, self.path)

    @staticmethod
    def _foreign_tables(conn: sqlite3.Connection) -> list[str]:
        """Names of the file's schema objects that belong to neither qw nor SQLite."""
        rows = conn.execute(
            "SELECT DISTINCT tbl_name FROM sqlite_master "
            "WHERE tbl_name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY tbl_name"
        ).fetchall()
        return [str(name) for (name,) in rows if name not in QW_TABLES]

    def retry(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt``, again while SQLite reports the file busy, up to busy_timeout.

        The steps stay short (about a millisecond) because a writer holds the
        lock for about that long: a waiter that slept longer would keep
        missing the gap between a busy neighbour's transactions.
        """
        deadline = time.monotonic() + self.options.busy_timeout_ms / 1000
        while True:
            try:
                return attempt()
            except sqlite3.Error as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise translate(exc, self.path) from exc
            # Jitter keeps processes that collided from colliding again.
            time.sleep(random.uniform(0.0002, 0.002))

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise BackendUnavailable(f"the sqlite backend on {self.path} is closed")
            if self._pid != os.getpid():
                # A forked child must not use (or close) its parent's connections:
                # SQLite's file locks belong to the parent. Abandon them.
                self._idle, self._pid = [], os.getpid()
            conn = self._idle.pop() if self._idle else None
            owner = self._pid
        if conn is None:
            conn = self.connect()
        try:
            yield conn
        finally:
            with self._lock:
                mine = owner == os.getpid()
                keep = mine and not self._closed and len(self._idle) < _MAX_IDLE
                if keep:
                    self._idle.append(conn)
            if mine and not keep:
                conn.close()

    def write(self, work: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run ``work(conn, now)`` in one ``BEGIN IMMEDIATE`` transaction; commit or roll back.

        ``now`` is the store's clock at the start of the transaction. Busy
        errors retry the whole transaction, so ``work`` must only touch the
        database (its effects elsewhere belong after this returns).
        """
        with self._connection() as conn, self._write_lock:

            def attempt() -> T:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    now = float(conn.execute(f"SELECT {NOW_SQL}").fetchone()[0])
                    result = work(conn, now)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result

            return self.retry(attempt)

    def write_in(self, conn: object, work: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run ``work(conn, now)`` in the application's connection, inside its transaction.

        ``conn`` must be a ``sqlite3.Connection`` on this very file (checked
        before any write: :class:`~qw.errors.InvalidInput` otherwise). The
        statements run inside a savepoint of qw's own: released on success,
        rolled back to on failure, so a failed call leaves the application's
        transaction as it was. The application's transaction is never
        committed nor rolled back here. When ``conn`` is in Python's legacy
        implicit-transaction mode and no transaction is open, one is begun
        (``BEGIN IMMEDIATE``: the write lock is about to be taken anyway) so
        that the writes wait for the application's ``commit()``; a bare
        savepoint would be committed by its own release. In autocommit mode
        (``isolation_level=None`` and no ``BEGIN``) the release commits, as
        any statement does there. Busy errors are raised, translated, not
        retried: the transaction is the application's to retry.
        """
        self._check_same_file(conn)
        assert isinstance(conn, sqlite3.Connection)  # checked above
        begun = False
        try:
            if not conn.in_transaction and _implicit_transactions(conn):
                conn.execute("BEGIN IMMEDIATE")
                begun = True
            conn.execute(f"SAVEPOINT {_SAVEPOINT}")
            try:
                now = float(conn.execute(f"SELECT {NOW_SQL}").fetchone()[0])
                result = work(conn, now)
            except BaseException:
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
                    conn.execute(f"RELEASE {_SAVEPOINT}")
                    if begun:
                        # It holds nothing but the savepoint undone: not the app's to keep.
                        conn.execute("ROLLBACK")
                raise
            conn.execute(f"RELEASE {_SAVEPOINT}")
        except sqlite3.Error as exc:
            if _is_busy(exc):
                raise BackendUnavailable(
                    f"{self.path} is locked by another connection ({exc}), so the "
                    "application's transaction cannot write now; roll it back and run it "
                    "again (BEGIN IMMEDIATE takes the write lock up front)"
                ) from exc
            raise translate(exc, self.path) from exc
        return result

    def _check_same_file(self, conn: object) -> None:
        """Refuse (InvalidInput) all but an open ``sqlite3.Connection`` whose main file is ours."""
        if not isinstance(conn, sqlite3.Connection):
            raise InvalidInput(
                "connection= for the sqlite backend is a sqlite3.Connection (or an SQLAlchemy "
                f"or Django connection over one), not {type(conn).__module__}."
                f"{type(conn).__qualname__}"
            )
        try:
            rows = conn.execute("PRAGMA database_list").fetchall()
        except sqlite3.Error as exc:
            # A closed connection, or one made in another thread.
            raise InvalidInput(f"connection= cannot be used: {exc}") from exc
        main = next((str(file or "") for _, name, file in rows if name == "main"), "")
        if not main or os.path.realpath(main) != self.key:
            raise InvalidInput(
                f"connection= is open on {main or 'a temporary or in-memory database'!r}, "
                f"not on this backend's file {self.path}: qw can only join a transaction "
                "on the file it stores its jobs in"
            )

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(conn)`` in one read transaction (one consistent snapshot)."""
        with self._connection() as conn:

            def attempt() -> T:
                conn.execute("BEGIN DEFERRED")
                try:
                    return work(conn)
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")

            return self.retry(attempt)

    def now(self) -> float:
        """The store's clock as Unix seconds."""
        return self.read(lambda conn: float(conn.execute(f"SELECT {NOW_SQL}").fetchone()[0]))

    def close(self) -> None:
        """Close idle connections now and busy ones when they are handed back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
