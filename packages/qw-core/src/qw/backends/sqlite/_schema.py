"""The tables one SQLite file holds for every namespace, and their version.

Every table leads with ``namespace`` and every statement filters on it, so
one file serves many namespaces without them seeing each other. Times are
REAL seconds since the Unix epoch on SQLite's clock.
"""

from __future__ import annotations

import sqlite3

from qw.errors import SchemaError

__all__ = ["QW_TABLES", "SCHEMA_VERSION", "ensure_schema"]

#: The layout this code reads and writes; a file with a newer one is refused.
SCHEMA_VERSION = 1
#: Every table qw creates; any other table in a file means it is not qw's alone.
QW_TABLES = frozenset(
    {"qw_meta", "qw_jobs", "qw_events", "qw_workers", "qw_wakeups", "qw_switches"}
)

_DDL_V1 = """
CREATE TABLE IF NOT EXISTS qw_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- seq is the store-side receive order (FIFO among equal priorities),
-- AUTOINCREMENT keeps it increasing even after purges free the top rows.
CREATE TABLE qw_jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace        TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    run_at           REAL    NOT NULL,
    max_attempts     INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    status           TEXT    NOT NULL,
    created_at       REAL    NOT NULL,
    dedupe_key       TEXT,
    result           TEXT    NOT NULL DEFAULT 'null',
    error            TEXT    NOT NULL DEFAULT 'null',
    started_at       REAL,
    finished_at      REAL,
    worker           TEXT,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    token            TEXT,
    finished_by      TEXT,
    UNIQUE (namespace, id)
);
-- Claim: due queued jobs of a queue in (priority, seq) order, and run_at rides
-- along so the due test needs no table lookup.
CREATE INDEX qw_jobs_claim ON qw_jobs (namespace, queue, priority, seq, run_at)
    WHERE status = 'queued';
-- A dedupe key is held by at most one live job per namespace.
CREATE UNIQUE INDEX qw_jobs_dedupe ON qw_jobs (namespace, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX qw_jobs_leases ON qw_jobs (namespace, lease_expires_at)
    WHERE status = 'running';
CREATE INDEX qw_jobs_queue_status ON qw_jobs (namespace, queue, status);
CREATE INDEX qw_jobs_status_id ON qw_jobs (namespace, status, id);
CREATE INDEX qw_jobs_finished ON qw_jobs (namespace, finished_at)
    WHERE finished_at IS NOT NULL;

-- cursor increases within the file, hence within every namespace.
CREATE TABLE qw_events (
    cursor     INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace  TEXT    NOT NULL,
    job_id     TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    acked      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX qw_events_pending ON qw_events (namespace, cursor) WHERE acked = 0;
CREATE INDEX qw_events_acked ON qw_events (namespace, created_at) WHERE acked = 1;

CREATE TABLE qw_workers (
    namespace   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    queues      TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at  REAL    NOT NULL,
    last_seen   REAL    NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;

-- Bumped in the transaction that makes work claimable on a queue, so a
-- waiter in another process can tell "new work" from any other commit.
-- queue '' is the whole namespace (a switch turned ON).
CREATE TABLE qw_wakeups (
    namespace TEXT    NOT NULL,
    queue     TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (namespace, queue)
) WITHOUT ROWID;

-- queue '' is the namespace's own switch (no queue name is empty).
CREATE TABLE qw_switches (
    namespace TEXT    NOT NULL,
    queue     TEXT    NOT NULL,
    enabled   INTEGER NOT NULL,
    PRIMARY KEY (namespace, queue)
) WITHOUT ROWID;
"""


def _stored_version(conn: sqlite3.Connection) -> int | None:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'qw_meta'"
    ).fetchone()
    if exists is None:
        return None
    row = conn.execute("SELECT value FROM qw_meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise SchemaError("qw_meta has no schema_version: the qw tables in this file are broken")
    try:
        return int(row[0])
    except ValueError:
        raise SchemaError(f"qw_meta.schema_version is not a number: {row[0]!r}") from None


def _check(version: int | None, path: str) -> bool:
    """Whether the file is ready (True), needs creating (False), or is refused."""
    if version is None:
        return False
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{path} has qw schema version {version}, newer than this qw "
            f"(which knows version {SCHEMA_VERSION}); upgrade qw-core"
        )
    if version < SCHEMA_VERSION:  # pragma: no cover - no older version exists yet
        raise SchemaError(f"{path} has qw schema version {version}, which has no migration")
    return True


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables on a fresh file, or check the version of an existing one.

    Creation runs in one ``BEGIN IMMEDIATE`` transaction after re-reading the
    version under the write lock, so processes opening a fresh file at the
    same time create it exactly once. ``conn`` is in autocommit mode.
    """
    if _check(_stored_version(conn), path):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _check(_stored_version(conn), path):
            for statement in _DDL_V1.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO qw_meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
