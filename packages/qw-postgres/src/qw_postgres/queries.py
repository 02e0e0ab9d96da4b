"""Every statement the backend runs, rendered once per schema.

Each operation is one statement (data-modifying CTEs where a transition, its
outbox event and its wake-up must commit together), so it is one round trip
and atomic under autocommit. Values are always bound parameters; the only
thing composed into the text is the validated schema, as an identifier.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from psycopg import sql

__all__ = ["JOB_COLUMNS", "Queries"]

JOB_FIELDS = (
    "id",
    "queue",
    "payload",
    "priority",
    "run_at",
    "max_attempts",
    "attempts",
    "status",
    "created_at",
    "dedupe_key",
    "result",
    "error",
    "started_at",
    "finished_at",
    "worker",
    "lease_expires_at",
    "cancel_requested",
)
JOB_COLUMNS = ", ".join(JOB_FIELDS)
_J_COLUMNS = ", ".join(f"j.{c}" for c in JOB_FIELDS)
_LIVE = "('queued', 'running')"
_TERMINAL = "('succeeded', 'failed', 'cancelled')"
# A queue (or, as '', the whole namespace) switched OFF.
_OPEN = (
    "NOT EXISTS (SELECT 1 FROM {s}.switches w WHERE w.namespace = %(ns)s"
    " AND w.queue IN ('', {q}) AND NOT w.enabled)"
)

# Which jobs to insert is decided beforehand (qw.transitions.plan_enqueue);
# this statement only writes them. Jobs answered by a dedupe key are not in
# ``input``, so their ids are checked here (``skipped_ids``): an id already
# present refuses the whole call. The inserted rows' ids are checked by the
# primary key, and their dedupe keys by jobs_dedupe, which fails the
# statement (and the caller plans again) if a racing producer took one.
_ENQUEUE = """
WITH input AS (
    @INPUT@
), dup AS (
    SELECT p.id FROM unnest(%(skipped_ids)s::text[]) AS k(id)
    CROSS JOIN LATERAL (
        SELECT j.id FROM {s}.jobs j WHERE j.namespace = %(ns)s AND j.id = k.id OFFSET 0
    ) p
), ins AS (
    INSERT INTO {s}.jobs AS j (namespace, id, queue, status, priority, run_at,
                               max_attempts, payload, dedupe_key, created_at)
    SELECT %(ns)s, i.id, i.queue, 'queued', i.priority,
           coalesce(i.run_at, now() + coalesce(i.delay, 0) * interval '1 second'),
           i.max_attempts, i.payload, i.dedupe_key, now()
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM dup)
    ORDER BY i.ord
), woke AS (
    SELECT count(pg_notify(%(channel)s, q.queue)) AS n
    FROM (SELECT DISTINCT queue FROM input) q
    WHERE NOT EXISTS (SELECT 1 FROM dup)
)
SELECT 'd', id FROM dup
UNION ALL SELECT 'n', n::text FROM woke
"""

# Small batches: one JSON document, one round trip.
ENQUEUE = _ENQUEUE.replace(
    "@INPUT@",
    """SELECT v->>0 AS id, v->>1 AS queue, (v->>2)::int4 AS priority,
           (v->>3)::timestamptz AS run_at, (v->>4)::float8 AS delay,
           (v->>5)::int4 AS max_attempts, v->>6 AS dedupe_key, (v->>7)::json AS payload,
           ord
    FROM jsonb_array_elements(%(batch)s::jsonb) WITH ORDINALITY AS e(v, ord)""",
)

# Large batches: rows arrive first by binary COPY into a session-local table
# (emptied at commit), then the same statement reads them from there.
ENQUEUE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS qw_enqueue_in (
    id text, queue text, priority int4, run_at timestamptz, delay float8,
    max_attempts int4, dedupe_key text, payload text, ord int8
) ON COMMIT DELETE ROWS
"""
ENQUEUE_COPY = (
    "COPY pg_temp.qw_enqueue_in (id, queue, priority, run_at, delay, max_attempts,"
    " dedupe_key, payload, ord) FROM STDIN (FORMAT BINARY)"
)
ENQUEUE_COPY_TYPES = (
    "text",
    "text",
    "int4",
    "timestamptz",
    "float8",
    "int4",
    "text",
    "text",
    "int8",
)
ENQUEUE_STAGED = _ENQUEUE.replace(
    "@INPUT@",
    """SELECT id, queue, priority, run_at, delay, max_attempts, dedupe_key,
           payload::json AS payload, ord
    FROM pg_temp.qw_enqueue_in""",
)

# The live holders of a batch's dedupe keys (at most one each: jobs_dedupe),
# read before the batch is planned. Batches without keys skip this.
LIVE_KEYS = f"""
SELECT dedupe_key, id FROM {{s}}.jobs
WHERE namespace = %(ns)s AND dedupe_key = ANY(%(keys)s::text[]) AND status IN {_LIVE}
"""

_CLAIM_SET = f"""
UPDATE {{s}}.jobs j SET
    status = 'running', attempts = j.attempts + 1, started_at = now(),
    worker = %(worker)s, lease_expires_at = now() + %(lease_s)s * interval '1 second',
    cancel_requested = false, token = gen_random_uuid()::text
FROM picked
WHERE j.namespace = picked.namespace AND j.id = picked.id
RETURNING {_J_COLUMNS}, j.token, j.seq
"""

# One queue: the partial index yields rows already in (priority, seq) order,
# so LIMIT stops after N index entries.
CLAIM_ONE = (
    """
WITH picked AS (
    SELECT namespace, id FROM {s}.jobs
    WHERE namespace = %(ns)s AND queue = %(queue)s AND status = 'queued'
      AND run_at <= now() AND """
    + _OPEN.replace("{q}", "%(queue)s")
    + """
    ORDER BY priority, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)"""
    + _CLAIM_SET
)

CLAIM_MANY = (
    """
WITH picked AS (
    SELECT namespace, id FROM {s}.jobs
    WHERE namespace = %(ns)s AND status = 'queued' AND run_at <= now()
      AND queue = ANY(ARRAY(
          SELECT q FROM unnest(%(queues)s::text[]) AS q WHERE """
    + _OPEN.replace("{q}", "q")
    + """))
    ORDER BY priority, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)"""
    + _CLAIM_SET
)

RENEW = """
UPDATE {s}.jobs j SET lease_expires_at = now() + %(lease_s)s * interval '1 second'
FROM (
    SELECT v->>0 AS id, v->>1 AS token, (v->>2)::int4 AS attempt, ord
    FROM jsonb_array_elements(%(batch)s::jsonb) WITH ORDINALITY AS e(v, ord)
) i
WHERE j.namespace = %(ns)s AND j.id = i.id AND j.token = i.token AND j.status = 'running'
  AND j.attempts = i.attempt
RETURNING i.ord, j.lease_expires_at, j.cancel_requested
"""


# Applying decided transitions (qw.transitions): one row of the batch per job,
# [id, token, attempt, status, attempts, run_in, result, error, finished,
# finished_by, event_type, event_data] (qw_postgres.batches). A null field
# leaves the column as it is; every transition takes the job off its lease.
# The statement decides nothing: ``fence`` says which rows it may touch.
def _apply(fence: str) -> str:
    return f"""
WITH input AS (
    SELECT v->>0 AS id, v->>1 AS token, (v->>2)::int4 AS attempt, v->>3 AS status,
           (v->>4)::int4 AS attempts, (v->>5)::float8 AS run_in, (v->>6)::json AS result,
           (v->>7)::json AS error, (v->>8)::boolean AS finished, v->>9 AS finished_by,
           v->>10 AS ev_type, (v->>11)::json AS ev_data, ord
    FROM jsonb_array_elements(%(batch)s::jsonb) WITH ORDINALITY AS e(v, ord)
), upd AS (
    UPDATE {{s}}.jobs j SET
        status = i.status,
        attempts = coalesce(i.attempts, j.attempts),
        run_at = coalesce(now() + i.run_in * interval '1 second', j.run_at),
        result = coalesce(i.result, j.result),
        error = coalesce(i.error, j.error),
        finished_at = CASE WHEN i.finished THEN now() ELSE j.finished_at END,
        finished_by = i.finished_by,
        worker = NULL, lease_expires_at = NULL, cancel_requested = false, token = NULL
    FROM input i
    WHERE j.namespace = %(ns)s AND j.id = i.id AND {fence}
    RETURNING i.ord, j.id, j.queue, j.status, i.ev_type, i.ev_data
), ev AS (
    INSERT INTO {{s}}.events (namespace, job_id, type, data, created_at)
    SELECT %(ns)s, u.id, u.ev_type, u.ev_data, now() FROM upd u
    WHERE u.ev_type IS NOT NULL ORDER BY u.ord
), woke AS (
    SELECT count(pg_notify(%(channel)s, q.queue)) AS n
    FROM (SELECT DISTINCT queue FROM upd WHERE status = 'queued') q
)"""


# Fenced by the lease: its token and its attempt, while the job runs.
FINISH = (
    _apply("j.token = i.token AND j.status = 'running' AND j.attempts = i.attempt")
    + """, prior AS (
    -- Only finishes that did not apply (usually none) are looked up, each by
    -- its primary key: OFFSET 0 keeps the planner from turning the lookups
    -- into a scan of the whole namespace.
    SELECT i.ord, p.status, p.finished_by,
           (p.status = 'running' AND p.token = i.token AND p.attempts = i.attempt) AS racing
    FROM input i
    CROSS JOIN LATERAL (
        SELECT j.status, j.finished_by, j.token, j.attempts FROM {s}.jobs j
        WHERE j.namespace = %(ns)s AND j.id = i.id OFFSET 0
    ) p
    WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.ord = i.ord)
)
SELECT 'u', ord, NULL::text, NULL::text FROM upd
UNION ALL SELECT 'p', ord, status, finished_by FROM prior
UNION ALL SELECT 'r', ord, status, finished_by FROM prior WHERE racing
UNION ALL SELECT 'n', n, NULL, NULL FROM woke
"""
)

# Re-read after a race, by a new statement that sees the winner's commit.
FINISHED_BY = """
SELECT i.ord, j.status, j.finished_by
FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS i(id, ord)
JOIN {s}.jobs j ON j.namespace = %(ns)s AND j.id = i.id
"""

# Reclaim reads the expired leases (locking them, so that sweepers running at
# once split the work), plans each in Python, and applies the plans in the
# same transaction, by compare-and-set on the token it read and the expiry.
RECLAIM_EXPIRED = """
SELECT id, token, attempts, max_attempts, queue FROM {s}.jobs
WHERE namespace = %(ns)s AND status = 'running' AND lease_expires_at <= now()
ORDER BY id
FOR UPDATE SKIP LOCKED
"""

RECLAIM = (
    _apply("j.token = i.token AND j.status = 'running' AND j.lease_expires_at <= now()")
    + """
SELECT (SELECT count(*) FROM upd), (SELECT n FROM woke)
"""
)

# Cancel: a running job is only flagged; any other job's status and queue
# come back ('s'), and a queued one then gets CANCEL_QUEUED.
CANCEL = """
WITH flagged AS (
    UPDATE {s}.jobs j SET cancel_requested = true
    WHERE j.namespace = %(ns)s AND j.id = %(id)s AND j.status = 'running'
    RETURNING j.status, j.queue
)
SELECT 'f', status, queue FROM flagged
UNION ALL SELECT 's', status, queue FROM {s}.jobs
WHERE namespace = %(ns)s AND id = %(id)s AND NOT EXISTS (SELECT 1 FROM flagged)
"""

CANCEL_QUEUED = (
    _apply("j.status = 'queued'")
    + """
SELECT (SELECT count(*) FROM upd), (SELECT n FROM woke)
"""
)

GET = f"SELECT {JOB_COLUMNS} FROM {{s}}.jobs WHERE namespace = %(ns)s AND id = %(id)s"

LIST_JOBS = f"""
SELECT {JOB_COLUMNS} FROM {{s}}.jobs
WHERE namespace = %(ns)s
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(after)s::text IS NULL OR id > %(after)s::text)
ORDER BY id
LIMIT %(limit)s
"""

COUNTS = """
SELECT queue, status, count(*) FROM {s}.jobs WHERE namespace = %(ns)s GROUP BY queue, status
"""

NOW = "SELECT now()"

HEARTBEAT = """
INSERT INTO {s}.workers AS w (namespace, id, queues, host, pid, concurrency,
                              started_at, last_seen)
VALUES (%(ns)s, %(id)s, %(queues)s::text[], %(host)s, %(pid)s, %(concurrency)s,
        coalesce(%(started_at)s::timestamptz, now()), now())
ON CONFLICT (namespace, id) DO UPDATE SET
    queues = EXCLUDED.queues, host = EXCLUDED.host, pid = EXCLUDED.pid,
    concurrency = EXCLUDED.concurrency, last_seen = now()
"""

REMOVE_WORKER = "DELETE FROM {s}.workers WHERE namespace = %(ns)s AND id = %(id)s"

WORKERS = """
SELECT id, queues, host, pid, concurrency, started_at, last_seen
FROM {s}.workers WHERE namespace = %(ns)s ORDER BY id
"""

SET_SWITCH = """
WITH up AS (
    INSERT INTO {s}.switches (namespace, queue, enabled) VALUES (%(ns)s, %(queue)s, %(enabled)s)
    ON CONFLICT (namespace, queue) DO UPDATE SET enabled = EXCLUDED.enabled
    RETURNING enabled
)
SELECT count(pg_notify(%(channel)s, '*')) FROM up WHERE enabled
"""

SWITCHES = "SELECT queue, enabled FROM {s}.switches WHERE namespace = %(ns)s"

FETCH_EVENTS = """
SELECT cursor, job_id, type, data, created_at FROM {s}.events
WHERE namespace = %(ns)s AND acked_at IS NULL
ORDER BY cursor LIMIT %(limit)s
"""

ACK_EVENTS = """
UPDATE {s}.events SET acked_at = now()
WHERE namespace = %(ns)s AND cursor = ANY(%(cursors)s::int8[]) AND acked_at IS NULL
"""

# Bounded batches keep each delete's locks and WAL small on a busy table.
PURGE_JOBS = f"""
WITH victims AS (
    SELECT namespace, id FROM {{s}}.jobs
    WHERE namespace = %(ns)s AND status IN {_TERMINAL}
      AND finished_at < now() - %(older_than)s * interval '1 second'
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {{s}}.jobs j USING victims v
WHERE j.namespace = v.namespace AND j.id = v.id
"""

PURGE_EVENTS = """
WITH victims AS (
    SELECT namespace, cursor FROM {s}.events
    WHERE namespace = %(ns)s AND acked_at IS NOT NULL
      AND created_at < now() - %(older_than)s * interval '1 second'
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {s}.events e USING victims v
WHERE e.namespace = v.namespace AND e.cursor = v.cursor
"""

SERVER_SETTINGS = """
SELECT current_setting('synchronous_commit'), current_setting('fsync'),
       current_setting('full_page_writes')
"""


@dataclass(frozen=True, slots=True)
class Queries:
    """The statements above with the schema filled in, ready to execute."""

    enqueue: bytes
    enqueue_stage: bytes
    enqueue_copy: bytes
    enqueue_staged: bytes
    live_keys: bytes
    claim_one: bytes
    claim_many: bytes
    renew: bytes
    finish: bytes
    finished_by: bytes
    reclaim_expired: bytes
    reclaim: bytes
    cancel: bytes
    cancel_queued: bytes
    get: bytes
    list_jobs: bytes
    counts: bytes
    now: bytes
    heartbeat: bytes
    remove_worker: bytes
    workers: bytes
    set_switch: bytes
    switches: bytes
    fetch_events: bytes
    ack_events: bytes
    purge_jobs: bytes
    purge_events: bytes
    server_settings: bytes

    @classmethod
    def for_schema(cls, schema: str) -> Queries:
        """Render every statement for ``schema`` (an already validated name)."""
        ident = sql.Identifier(schema).as_string(None)
        rendered = {}
        for f in fields(cls):
            template: str = globals()[f.name.upper()]
            # str.replace, not str.format: the statements contain JSON braces.
            rendered[f.name] = template.replace("{s}", ident).encode()
        return cls(**rendered)
