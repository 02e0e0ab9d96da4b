"""The tables qw keeps in PostgreSQL, and the versioned migrations that make them.

Migrations run under a transaction-scoped advisory lock keyed by the schema
name, so two processes starting at once serialise: the second finds the work
done. Every migration is one transaction together with its version row.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import psycopg
from psycopg import sql

from qw.errors import SchemaError

__all__ = ["LATEST_VERSION", "MIGRATIONS", "apply_migrations", "installed_version"]

log = logging.getLogger("qw_postgres")

_STATUS_CHECK = "CHECK (status IN ('queued','running','succeeded','failed','cancelled'))"
_STATUS_CHECK_2 = (
    "CHECK (status IN ('waiting','queued','running','succeeded','failed','cancelled'))"
)
_STATE_CHECK = "CHECK (state IN ('running','succeeded','failed','cancelled'))"

#: Migration N is MIGRATIONS[N - 1]; each is a list of statements with
#: ``{s}`` standing for the schema identifier. Never edit a released one.
MIGRATIONS: list[list[str]] = [
    [
        f"""
        CREATE TABLE {{s}}.jobs (
            namespace        text COLLATE "C" NOT NULL,
            id               text COLLATE "C" NOT NULL,
            seq              bigint GENERATED ALWAYS AS IDENTITY,
            queue            text COLLATE "C" NOT NULL,
            status           text COLLATE "C" NOT NULL {_STATUS_CHECK},
            priority         integer NOT NULL,
            run_at           timestamptz NOT NULL,
            attempts         integer NOT NULL DEFAULT 0,
            max_attempts     integer NOT NULL,
            payload          json,
            dedupe_key       text COLLATE "C",
            result           json,
            error            json,
            created_at       timestamptz NOT NULL DEFAULT now(),
            started_at       timestamptz,
            finished_at      timestamptz,
            worker           text,
            lease_expires_at timestamptz,
            cancel_requested boolean NOT NULL DEFAULT false,
            token            text COLLATE "C",
            finished_by      text COLLATE "C",
            PRIMARY KEY (namespace, id)
        ) WITH (fillfactor = 80)
        """,
        # The claim index holds only queued jobs: a job leaves it when claimed
        # and never returns once terminal, so it stays as small as the backlog.
        """
        CREATE INDEX jobs_claim ON {s}.jobs (namespace, queue, priority, seq)
            INCLUDE (run_at) WHERE status = 'queued'
        """,
        """
        CREATE INDEX jobs_leases ON {s}.jobs (namespace, lease_expires_at)
            WHERE status = 'running'
        """,
        """
        CREATE UNIQUE INDEX jobs_dedupe ON {s}.jobs (namespace, dedupe_key)
            WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running')
        """,
        """
        CREATE INDEX jobs_finished ON {s}.jobs (namespace, finished_at)
            WHERE status IN ('succeeded', 'failed', 'cancelled')
        """,
        """
        CREATE TABLE {s}.events (
            namespace  text COLLATE "C" NOT NULL,
            cursor     bigint GENERATED ALWAYS AS IDENTITY,
            job_id     text COLLATE "C" NOT NULL,
            type       text NOT NULL,
            data       json,
            created_at timestamptz NOT NULL DEFAULT now(),
            acked_at   timestamptz,
            PRIMARY KEY (namespace, cursor)
        )
        """,
        """
        CREATE INDEX events_pending ON {s}.events (namespace, cursor)
            WHERE acked_at IS NULL
        """,
        """
        CREATE INDEX events_acked ON {s}.events (namespace, created_at)
            WHERE acked_at IS NOT NULL
        """,
        """
        CREATE TABLE {s}.workers (
            namespace   text COLLATE "C" NOT NULL,
            id          text COLLATE "C" NOT NULL,
            queues      text[] NOT NULL,
            host        text NOT NULL,
            pid         integer NOT NULL,
            concurrency integer NOT NULL,
            started_at  timestamptz NOT NULL,
            last_seen   timestamptz NOT NULL,
            PRIMARY KEY (namespace, id)
        )
        """,
        # queue '' is the namespace's own switch; queue names are never empty.
        """
        CREATE TABLE {s}.switches (
            namespace text COLLATE "C" NOT NULL,
            queue     text COLLATE "C" NOT NULL,
            enabled   boolean NOT NULL,
            PRIMARY KEY (namespace, queue)
        )
        """,
    ],
    # 2 (qw 0.2.0): workflows. Every new jobs column is nullable without a
    # default, so adding it rewrites nothing and a plain job (workflow NULL,
    # every one an 0.1.0 store holds) stores only null bits for them.
    [
        f"""
        ALTER TABLE {{s}}.jobs
            DROP CONSTRAINT jobs_status_check,
            ADD CONSTRAINT jobs_status_check {_STATUS_CHECK_2},
            ADD COLUMN workflow          text COLLATE "C",
            ADD COLUMN parents           text[] COLLATE "C",
            ADD COLUMN children          text[] COLLATE "C",
            ADD COLUMN on_parent_failure text COLLATE "C",
            ADD COLUMN failed_parents    text[] COLLATE "C",
            ADD COLUMN pending           integer
        """,
        # A waiting step holds its dedupe key as a queued one does; the index
        # keeps its name, which qw_postgres.errors maps to a dedupe race.
        "DROP INDEX {s}.jobs_dedupe",
        """
        CREATE UNIQUE INDEX jobs_dedupe ON {s}.jobs (namespace, dedupe_key)
            WHERE dedupe_key IS NOT NULL AND status IN ('waiting', 'queued', 'running')
        """,
        # A workflow's steps, by id: list_jobs(workflow=), get_workflow's
        # counts, cancel_workflow and purge. Plain jobs are not in it.
        """
        CREATE INDEX jobs_workflow ON {s}.jobs (namespace, workflow, id)
            WHERE workflow IS NOT NULL
        """,
        f"""
        CREATE TABLE {{s}}.workflows (
            namespace        text COLLATE "C" NOT NULL,
            id               text COLLATE "C" NOT NULL,
            state            text COLLATE "C" NOT NULL {_STATE_CHECK},
            output           text COLLATE "C",
            created_at       timestamptz NOT NULL DEFAULT now(),
            finished_at      timestamptz,
            cancel_requested boolean NOT NULL DEFAULT false,
            live             integer NOT NULL,
            failed           integer NOT NULL DEFAULT 0,
            cancelled        integer NOT NULL DEFAULT 0,
            PRIMARY KEY (namespace, id)
        )
        """,
        """
        CREATE INDEX workflows_finished ON {s}.workflows (namespace, finished_at)
            WHERE state <> 'running'
        """,
    ],
    # 3 (qw 0.3.0): flow control and schedules. The nullable columns rewrite
    # nothing; the NOT NULL ones have constant defaults, which PostgreSQL 11+
    # keeps in the catalog instead of rewriting rows: an 0.2.0 row reads as
    # no key, no limit, not fair, rank 0, not parked. Every new index is
    # partial on a key or on parked, so a job without a key is in none of
    # them and its claims and finishes maintain no more index entries.
    [
        """
        ALTER TABLE {s}.jobs
            ADD COLUMN limit_key   text COLLATE "C",
            ADD COLUMN concurrency integer,
            ADD COLUMN rate        integer,
            ADD COLUMN rate_per    float8,
            ADD COLUMN has_limit   boolean NOT NULL DEFAULT false,
            ADD COLUMN fair        boolean NOT NULL DEFAULT false,
            ADD COLUMN fair_rank   bigint NOT NULL DEFAULT 0,
            ADD COLUMN parked      boolean NOT NULL DEFAULT false
        """,
        # Claim order is (priority, fair_rank, seq). A parked job (held back
        # by a full key, see docs/backends/postgres.md "Parking") is not in
        # it, so claims do not walk past a throttled key's backlog.
        "DROP INDEX {s}.jobs_claim",
        """
        CREATE INDEX jobs_claim ON {s}.jobs (namespace, queue, priority, fair_rank, seq)
            INCLUDE (run_at) WHERE status = 'queued' AND NOT parked
        """,
        # A key's jobs by status: its running count at every keyed claim, its
        # queued count for keys(), list_jobs(key=), and (with parked) the
        # queued jobs a claim finding the key full parks at once.
        """
        CREATE INDEX jobs_key ON {s}.jobs (namespace, limit_key, status, parked)
            WHERE limit_key IS NOT NULL
        """,
        # Parked jobs in claim order per (key, queue), claimed from here once
        # the key has room again.
        """
        CREATE INDEX jobs_parked ON {s}.jobs
            (namespace, limit_key, queue, priority, fair_rank, seq)
            WHERE status = 'queued' AND parked
        """,
        # The operators' limits (set_limit); NULL fields are "no such limit".
        """
        CREATE TABLE {s}.limits (
            namespace   text COLLATE "C" NOT NULL,
            key         text COLLATE "C" NOT NULL,
            concurrency integer,
            rate        integer,
            per         float8,
            PRIMARY KEY (namespace, key)
        )
        """,
        # A key's recent starts under a rate: n claims at the store time at,
        # one row per claim statement; a claim deletes those out of the window.
        """
        CREATE TABLE {s}.limit_starts (
            namespace text COLLATE "C" NOT NULL,
            key       text COLLATE "C" NOT NULL,
            at        timestamptz NOT NULL,
            n         integer NOT NULL,
            PRIMARY KEY (namespace, key, at)
        )
        """,
        """
        CREATE TABLE {s}.fair_ranks (
            namespace text COLLATE "C" NOT NULL,
            queue     text COLLATE "C" NOT NULL,
            key       text COLLATE "C" NOT NULL,
            next      bigint NOT NULL,
            PRIMARY KEY (namespace, queue, key)
        )
        """,
        """
        CREATE TABLE {s}.fair_clocks (
            namespace text COLLATE "C" NOT NULL,
            queue     text COLLATE "C" NOT NULL,
            clock     bigint NOT NULL,
            PRIMARY KEY (namespace, queue)
        )
        """,
        # One row per (key, queue) that has parked jobs: when a claim should
        # look at them again. A job of the key leaving running sets check_at
        # to -infinity and counts up wakes (which a claim parking them
        # compares, so that it never overwrites a wake it did not see).
        """
        CREATE TABLE {s}.parked_keys (
            namespace text COLLATE "C" NOT NULL,
            key       text COLLATE "C" NOT NULL,
            queue     text COLLATE "C" NOT NULL,
            check_at  timestamptz NOT NULL,
            wakes     bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (namespace, key, queue)
        )
        """,
        "CREATE INDEX parked_keys_due ON {s}.parked_keys (namespace, queue, check_at)",
        # What a keyed claim counts once it holds its keys' advisory locks:
        # called by the statement that took them (queries.CLAIM_CANDIDATES),
        # as its last part. A statement of a VOLATILE function runs with a
        # snapshot of its own, taken when it starts, so it sees every claim
        # that committed while this one waited for a lock (the calling
        # statement's snapshot is older). PL/pgSQL, not SQL: it keeps its
        # statement's plan for the session, where a SQL function's body is
        # parsed and planned on every call (1.5-2.5 ms, more than a claim).
        # Rows: 'n' the store's clock; per key, 'r' its running count
        # (without this transaction's own rows: the calling statement leased
        # its candidates speculatively, and age(xmin) is 0 exactly for the
        # row versions this transaction wrote), 'o' its operators' limit,
        # 's' its starts in the window (the longest of p_pers, or the
        # operators' per); 'w' each parked row's wakes;
        # 'e' the probed (key, queue) pairs with parked jobs other than
        # p_mine. Each key is looked up by its own index probe (LATERAL):
        # the plan PL/pgSQL keeps is a generic one, which cannot know that
        # p_keys holds hundreds of keys and, for "= ANY(p_keys)", filtered
        # whole scans with it (9 ms for 300 keys, 3 ms as probes). The
        # running count's status test is a range so that it reads jobs_key
        # (key, then status): as an equality it also matches jobs_leases'
        # predicate, which a table not analyzed yet makes look cheap, and
        # that index holds every running job of the namespace.
        """
        CREATE FUNCTION {s}.claim_state(
            p_ns text, p_keys text[], p_pers float8[], p_rk text[], p_rq text[], p_mine text[]
        ) RETURNS TABLE (kind text, key text, queue text, n bigint, c integer, r integer,
                         per float8, at timestamptz)
        LANGUAGE plpgsql VOLATILE AS $fn$
        #variable_conflict use_column
        BEGIN
        RETURN QUERY
        WITH t AS MATERIALIZED (SELECT clock_timestamp() AS now)
        SELECT 'n'::text, NULL::text, NULL::text, NULL::bigint, NULL::integer, NULL::integer,
               NULL::float8, t.now
        FROM t
        UNION ALL
        SELECT 'r', k.key, NULL, n.n, NULL, NULL, NULL, NULL
        FROM unnest(p_keys) AS k(key)
        CROSS JOIN LATERAL (
            SELECT count(*) AS n FROM {s}.jobs j
            WHERE j.namespace = p_ns AND j.limit_key = k.key
              AND j.status >= 'running' AND j.status <= 'running' AND age(j.xmin) <> 0
        ) n
        WHERE n.n > 0
        UNION ALL
        SELECT 'o', l.key, NULL, NULL, l.concurrency, l.rate, l.per, NULL
        FROM unnest(p_keys) AS k(key)
        CROSS JOIN LATERAL (
            SELECT * FROM {s}.limits l WHERE l.namespace = p_ns AND l.key = k.key
        ) l
        UNION ALL
        SELECT 's', s.key, NULL, s.n, NULL, NULL, NULL, s.at
        FROM unnest(p_keys, p_pers) AS k(key, per)
        LEFT JOIN {s}.limits o ON o.namespace = p_ns AND o.key = k.key
        JOIN {s}.limit_starts s ON s.namespace = p_ns AND s.key = k.key
        WHERE s.at > (SELECT t.now FROM t)
                     - CASE WHEN o.key IS NULL THEN k.per ELSE o.per END * interval '1 second'
        UNION ALL
        SELECT 'w', p.key, p.queue, p.wakes, NULL, NULL, NULL, NULL
        FROM unnest(p_keys) AS k(key)
        CROSS JOIN LATERAL (
            SELECT * FROM {s}.parked_keys p WHERE p.namespace = p_ns AND p.key = k.key
        ) p
        UNION ALL
        SELECT 'e', x.key, x.queue, NULL, NULL, NULL, NULL, NULL
        FROM unnest(p_rk, p_rq) AS x(key, queue)
        WHERE EXISTS (
            SELECT 1 FROM {s}.jobs j
            WHERE j.namespace = p_ns AND j.limit_key = x.key AND j.queue = x.queue
              AND j.status = 'queued' AND j.parked AND j.id <> ALL(p_mine)
        );
        END
        $fn$
        """,
        """
        CREATE TABLE {s}.schedules (
            namespace text COLLATE "C" NOT NULL,
            name      text COLLATE "C" NOT NULL,
            spec      text NOT NULL,
            tz        text NOT NULL,
            queue     text COLLATE "C" NOT NULL,
            task      text NOT NULL,
            last_tick timestamptz,
            PRIMARY KEY (namespace, name)
        )
        """,
    ],
    # 4 (qw 0.4.0): progress. Nullable columns without a default: adding
    # them rewrites nothing, and a row written before reads as no progress.
    [
        """
        ALTER TABLE {s}.jobs
            ADD COLUMN progress_fraction float8,
            ADD COLUMN progress_message  text,
            ADD COLUMN progress_at       timestamptz
        """,
    ],
    # 5 (qw 0.4.0): result wake-ups. A table of its own; jobs untouched.
    [
        # The sessions LISTENing to a namespace's done channel (by their
        # server pid): a write that ends jobs notifies it only while one is
        # there, since a NOTIFY serialises its commit with every other
        # notifying one. A dead session's row costs only notifications;
        # the next registration of the namespace deletes it.
        """
        CREATE TABLE {s}.result_listeners (
            namespace text COLLATE "C" NOT NULL,
            pid       integer NOT NULL,
            since     timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (namespace, pid)
        )
        """,
    ],
]

LATEST_VERSION = len(MIGRATIONS)


def _lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"qw-migrate:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _compose(template: str, schema: str) -> sql.Composed:
    return sql.SQL(template).format(s=sql.Identifier(schema))


def installed_version(conn: psycopg.Connection[Any], schema: str) -> int:
    """The schema's migration version; 0 when qw's tables are not there yet."""
    row = conn.execute(
        "SELECT to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL", (schema,)
    ).fetchone()
    if row is None or not row[0]:
        return 0
    got = conn.execute(
        _compose("SELECT coalesce(max(version), 0) FROM {s}.schema_version", schema)
    ).fetchone()
    return int(got[0]) if got else 0


def apply_migrations(conn: psycopg.Connection[Any], schema: str) -> int:
    """Bring ``schema`` to :data:`LATEST_VERSION`; return the version it ends at.

    Safe to call from many processes at once (an advisory lock serialises
    them) and a no-op when the schema is current. Raises SchemaError when
    the schema is newer than this code.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        conn.execute(_compose("CREATE SCHEMA IF NOT EXISTS {s}", schema))
        conn.execute(
            _compose(
                "CREATE TABLE IF NOT EXISTS {s}.schema_version ("
                " version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                schema,
            )
        )
        current = installed_version(conn, schema)
        if current > LATEST_VERSION:
            raise SchemaError(
                f"schema {schema!r} is at version {current}, newer than this qw-postgres "
                f"(which knows up to {LATEST_VERSION}); upgrade qw-postgres"
            )
        for version in range(current + 1, LATEST_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(_compose(statement, schema))
            conn.execute(
                _compose("INSERT INTO {s}.schema_version (version) VALUES (%s)", schema),
                (version,),
            )
            log.info("qw_postgres: schema %r migrated to version %d", schema, version)
    return LATEST_VERSION
