"""The tables one SQLite file holds for every namespace, and their version.

Every table leads with ``namespace`` and every statement filters on it, so
one file serves many namespaces without them seeing each other. Times are
REAL seconds since the Unix epoch on SQLite's clock.
"""

from __future__ import annotations

import sqlite3

from qw.errors import SchemaError

__all__ = ["LIVE_STATUSES", "QW_TABLES", "SCHEMA_VERSION", "ensure_schema"]

#: The layout this code reads and writes; a file with a newer one is refused.
SCHEMA_VERSION = 4
#: Every table qw creates; any other table in a file means it is not qw's alone.
QW_TABLES = frozenset(
    {
        "qw_meta",
        "qw_jobs",
        "qw_events",
        "qw_workers",
        "qw_wakeups",
        "qw_switches",
        "qw_workflows",
        "qw_edges",
        "qw_failed_parents",
        "qw_limits",
        "qw_starts",
        "qw_fair_ranks",
        "qw_fair_clocks",
        "qw_schedules",
        "qw_parked",
    }
)
#: The statuses in which a job's dedupe key is held (JobStatus.is_live). The
#: dedupe index's condition and every query meant to use it spell it this way.
LIVE_STATUSES = "('waiting', 'queued', 'running')"

# Version 1 is 0.1.0's layout. A fresh file is created at version 1 and then
# migrated like an old one, so there is one definition of every table and index.
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

# Version 2: workflows (0.2.0). Jobs that 0.1.0 wrote become plain jobs
# (workflow NULL). A step's own row stays small: pending (its parents not yet
# ended) is decremented once per parent, and SQLite rewrites a whole row on
# every UPDATE, so a list of thousands of parents on it would make a wide
# fan-in quadratic. The edges, and the parents that ended failed or
# cancelled, are rows of their own, in the order they were written.
_DDL_V2 = f"""
ALTER TABLE qw_jobs ADD COLUMN workflow TEXT;
ALTER TABLE qw_jobs ADD COLUMN on_parent_failure TEXT;
ALTER TABLE qw_jobs ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
-- A waiting step holds its dedupe key too.
DROP INDEX qw_jobs_dedupe;
CREATE UNIQUE INDEX qw_jobs_dedupe ON qw_jobs (namespace, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN {LIVE_STATUSES};
-- A workflow's steps, by id. Plain jobs are not in it (they pay a NULL test).
CREATE INDEX qw_jobs_workflow ON qw_jobs (namespace, workflow, id)
    WHERE workflow IS NOT NULL;

-- live counts the workflow's steps that have not ended, failed and cancelled
-- the ended ones in those statuses (what plan_workflow_end reads).
CREATE TABLE qw_workflows (
    namespace        TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    created_at       REAL    NOT NULL,
    output           TEXT,
    state            TEXT    NOT NULL DEFAULT 'running',
    finished_at      REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    live             INTEGER NOT NULL,
    failed           INTEGER NOT NULL DEFAULT 0,
    cancelled        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;
CREATE INDEX qw_workflows_state ON qw_workflows (namespace, state, id);
CREATE INDEX qw_workflows_finished ON qw_workflows (namespace, finished_at)
    WHERE finished_at IS NOT NULL;

-- child has parent among its parents. seq orders a child's parents as given
-- and a parent's children as added (an index entry ends with the rowid).
CREATE TABLE qw_edges (
    seq       INTEGER PRIMARY KEY,
    namespace TEXT    NOT NULL,
    parent    TEXT    NOT NULL,
    child     TEXT    NOT NULL
);
CREATE INDEX qw_edges_parent ON qw_edges (namespace, parent);
CREATE INDEX qw_edges_child ON qw_edges (namespace, child);

-- parent ended failed or cancelled while child waited; seq is the order they ended.
CREATE TABLE qw_failed_parents (
    seq       INTEGER PRIMARY KEY,
    namespace TEXT    NOT NULL,
    child     TEXT    NOT NULL,
    parent    TEXT    NOT NULL
);
CREATE INDEX qw_failed_parents_child ON qw_failed_parents (namespace, child);
"""

# Version 3: flow control and schedules (0.3.0). Jobs written before it have no
# limit key (NULL), are not fair, and rank 0: they read back as unlimited.
_DDL_V3 = """
-- The job's own limit is its three fields; has_limit tells a declared Limit()
-- (every field NULL) from no limit at all. fair_rank orders fair jobs among
-- equal priorities (0 for every other job).
ALTER TABLE qw_jobs ADD COLUMN limit_key TEXT;
ALTER TABLE qw_jobs ADD COLUMN concurrency INTEGER;
ALTER TABLE qw_jobs ADD COLUMN rate INTEGER;
ALTER TABLE qw_jobs ADD COLUMN rate_per REAL;
ALTER TABLE qw_jobs ADD COLUMN has_limit INTEGER NOT NULL DEFAULT 0;
ALTER TABLE qw_jobs ADD COLUMN fair INTEGER NOT NULL DEFAULT 0;
ALTER TABLE qw_jobs ADD COLUMN fair_rank INTEGER NOT NULL DEFAULT 0;
-- parked = 1: a queued job of a key that was full for its limit, kept out of
-- the claim index until the key may have room (see qw_parked). It means
-- nothing in any other status.
ALTER TABLE qw_jobs ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;
-- Claim order is (priority, fair_rank, seq); parked jobs are not candidates.
DROP INDEX qw_jobs_claim;
CREATE INDEX qw_jobs_claim ON qw_jobs (namespace, queue, priority, fair_rank, seq, run_at)
    WHERE status = 'queued' AND parked = 0;
-- A key's running and queued jobs (the claim counts them, keys() lists them).
CREATE INDEX qw_jobs_key ON qw_jobs (namespace, limit_key, status)
    WHERE limit_key IS NOT NULL;
-- A key's parked jobs of a queue in claim order: the first come back first.
CREATE INDEX qw_jobs_parked ON qw_jobs (namespace, limit_key, queue, priority, fair_rank, seq)
    WHERE status = 'queued' AND parked = 1;

-- A (queue, key) with parked jobs, and when the claim must look at it again:
-- wake is a store time (a rate window may reopen), 0 when a job of the key
-- left running or a queued one was cancelled, NULL for nothing but those.
-- kind 'own': the jobs parked are held to their own limit, the one stored
-- here; 'override': to the operators' limit; 'mixed': to several limits
-- (they all come back at once).
CREATE TABLE qw_parked (
    namespace   TEXT    NOT NULL,
    queue       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    concurrency INTEGER,
    rate        INTEGER,
    rate_per    REAL,
    wake        REAL,
    PRIMARY KEY (namespace, queue, key)
) WITHOUT ROWID;
CREATE INDEX qw_parked_key ON qw_parked (namespace, key);
CREATE INDEX qw_parked_wake ON qw_parked (namespace, queue, wake) WHERE wake IS NOT NULL;

-- The operators' limits (set_limit), by key.
CREATE TABLE qw_limits (
    namespace   TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    concurrency INTEGER,
    rate        INTEGER,
    rate_per    REAL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;

-- The claim times of a key's recent starts under a rate limit; a claim that
-- adds one deletes those that left the window.
CREATE TABLE qw_starts (
    seq       INTEGER PRIMARY KEY,
    namespace TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    at        REAL    NOT NULL
);
CREATE INDEX qw_starts_key ON qw_starts (namespace, key, at);

-- Fair claiming: the next rank of each (queue, key), and each queue's clock.
-- A rank row at or below its queue's clock says nothing the clock does not
-- (a new rank is the larger of the two), so the claim moving the clock
-- deletes them: the table holds the keys with fair jobs ahead of the clock.
CREATE TABLE qw_fair_ranks (
    namespace TEXT    NOT NULL,
    queue     TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    next      INTEGER NOT NULL,
    PRIMARY KEY (namespace, queue, key)
) WITHOUT ROWID;
CREATE INDEX qw_fair_ranks_next ON qw_fair_ranks (namespace, queue, next);
CREATE TABLE qw_fair_clocks (
    namespace TEXT    NOT NULL,
    queue     TEXT    NOT NULL,
    clock     INTEGER NOT NULL,
    PRIMARY KEY (namespace, queue)
) WITHOUT ROWID;

-- Periodic schedules; last_tick is whole microseconds since the epoch (UTC),
-- exact where a REAL would round.
CREATE TABLE qw_schedules (
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    spec      TEXT    NOT NULL,
    tz        TEXT    NOT NULL,
    queue     TEXT    NOT NULL,
    task      TEXT    NOT NULL,
    last_tick INTEGER,
    PRIMARY KEY (namespace, name)
) WITHOUT ROWID;
"""

# Version 4: progress reports (0.4.0). progress_at is NULL until a task
# reports: jobs written before it read back with no progress.
_DDL_V4 = """
ALTER TABLE qw_jobs ADD COLUMN progress_fraction REAL;
ALTER TABLE qw_jobs ADD COLUMN progress_message TEXT;
ALTER TABLE qw_jobs ADD COLUMN progress_at REAL;
"""

#: The statements taking a file from version ``n - 1`` to ``n``.
_MIGRATIONS = {2: _DDL_V2, 3: _DDL_V3, 4: _DDL_V4}


_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


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
    """Whether the file is ready (True), needs creating or migrating (False), or is refused."""
    if version is None:
        return False
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{path} has qw schema version {version}, newer than this qw "
            f"(which knows version {SCHEMA_VERSION}); upgrade qw-core"
        )
    if version < 1:
        raise SchemaError(f"{path} has qw schema version {version}, which has no migration")
    return version == SCHEMA_VERSION


def _run(conn: sqlite3.Connection, ddl: str) -> None:
    # Comments go first, so that a ';' in one does not split a statement (no
    # literal in qw's DDL holds "--").
    code = "\n".join(line.partition("--")[0] for line in ddl.splitlines())
    for statement in code.split(";"):
        if statement.strip():
            conn.execute(statement)


def _migrate(conn: sqlite3.Connection, path: str, version: int) -> None:
    """Take the file to ``version`` inside the caller's transaction."""
    try:
        _run(conn, _MIGRATIONS[version])
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _BUSY:
            raise  # retried by the caller
        raise SchemaError(
            f"cannot migrate the qw tables in {path} to schema version {version} ({exc}); "
            "the file is left as it was"
        ) from exc


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables on a fresh file, migrate an older one, or check the version.

    Creation and migration run in one ``BEGIN IMMEDIATE`` transaction after
    re-reading the version under the write lock, so processes opening a file
    at the same time create or migrate it exactly once; a migration that
    fails leaves the file as it was. ``conn`` is in autocommit mode.
    """
    if _check(_stored_version(conn), path):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _stored_version(conn)
        if not _check(version, path):
            if version is None:
                _run(conn, _DDL_V1)
                conn.execute("INSERT INTO qw_meta (key, value) VALUES ('schema_version', '1')")
                version = 1
            for step in range(version + 1, SCHEMA_VERSION + 1):
                _migrate(conn, path, step)
            conn.execute(
                "UPDATE qw_meta SET value = ? WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
