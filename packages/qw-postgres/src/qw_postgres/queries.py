"""Every statement the backend runs, rendered once per schema.

Each operation on plain jobs is one statement (data-modifying CTEs where a
transition, its outbox event and its wake-up must commit together), so it is
one round trip and atomic under autocommit; the workflow statements run
inside the one transaction of a write that ends steps (backend._StepEnds).
Values are always bound parameters; the only thing composed into the text is
the validated schema, as an identifier.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from psycopg import sql

__all__ = ["CLAIM_SEQ", "CLAIM_TOKEN", "JOB_COLUMNS", "JOB_FIELDS", "Queries"]

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
    # Workflow steps only (NULL in a plain job's row, read as Job's defaults).
    "workflow",
    "parents",
    "children",
    "on_parent_failure",
    "failed_parents",
)
#: Where the claim's RETURNING puts the lease token and the FIFO seq.
CLAIM_TOKEN = len(JOB_FIELDS)
CLAIM_SEQ = CLAIM_TOKEN + 1
JOB_COLUMNS = ", ".join(JOB_FIELDS)
_J_COLUMNS = ", ".join(f"j.{c}" for c in JOB_FIELDS)
# A waiting step holds its dedupe key too (the same list as jobs_dedupe's
# predicate, so the planner can read that index).
_LIVE = "('waiting', 'queued', 'running')"
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
def _apply(fence: str, *, events: bool = True) -> str:
    ev = (
        """, ev AS (
    INSERT INTO {s}.events (namespace, job_id, type, data, created_at)
    SELECT %(ns)s, u.id, u.ev_type, u.ev_data, statement_timestamp() FROM upd u
    WHERE u.ev_type IS NOT NULL ORDER BY u.ord
)"""
        if events
        else ""
    )
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
        run_at = coalesce(statement_timestamp() + i.run_in * interval '1 second', j.run_at),
        result = coalesce(i.result, j.result),
        error = coalesce(i.error, j.error),
        finished_at = CASE WHEN i.finished THEN statement_timestamp() ELSE j.finished_at END,
        finished_by = i.finished_by,
        worker = NULL, lease_expires_at = NULL, cancel_requested = false, token = NULL
    FROM input i
    WHERE j.namespace = %(ns)s AND j.id = i.id AND {fence}
    RETURNING i.ord, j.id, j.queue, j.status, j.workflow, cardinality(j.children) AS kids,
              i.ev_type, i.ev_data
){ev}, woke AS (
    SELECT count(pg_notify(%(channel)s, q.queue)) AS n
    FROM (SELECT DISTINCT queue FROM upd WHERE status = 'queued') q
)"""


_FENCE_LEASE = "j.token = i.token AND j.status = 'running' AND j.attempts = i.attempt"
_ENDS = "('succeeded', 'failed', 'cancelled')"

# Only finishes that did not apply (usually none) are looked up, each by its
# primary key: OFFSET 0 keeps the planner from turning the lookups into a
# scan of the whole namespace. ``racing``: the job was still held by that
# lease in this statement's snapshot, so another session moved it meanwhile.
_PRIOR = """, prior AS (
    SELECT i.ord, p.status, p.finished_by, p.workflow,
           (p.status = 'running' AND p.token = i.token AND p.attempts = i.attempt) AS racing,
           (p.workflow IS NOT NULL AND i.status IN @ENDS@) AS step_end
    FROM input i
    CROSS JOIN LATERAL (
        SELECT j.status, j.finished_by, j.token, j.attempts, j.workflow FROM {s}.jobs j
        WHERE j.namespace = %(ns)s AND j.id = i.id OFFSET 0
    ) p
    WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.ord = i.ord)
)""".replace("@ENDS@", _ENDS)

# Fenced by the lease: its token and its attempt, while the job runs. A
# transition that ends a workflow step is not applied here: its settle must
# lock the workflow's row before the step's (see backend._StepEnds), so such
# a row comes back as 'w' and is finished by FINISH_STEPS in a transaction.
# A plain job pays one null check for this.
FINISH = (
    _apply(f"{_FENCE_LEASE} AND (j.workflow IS NULL OR i.status NOT IN {_ENDS})")
    + _PRIOR
    + """
SELECT 'u', ord, NULL::text, NULL::text FROM upd
UNION ALL SELECT 'p', ord, status, finished_by FROM prior
UNION ALL SELECT 'r', ord, status, finished_by FROM prior WHERE racing AND NOT step_end
UNION ALL SELECT 'w', ord, status, workflow FROM prior WHERE racing AND step_end
UNION ALL SELECT 'n', n, NULL, NULL FROM woke
"""
)

# The steps FINISH left: the same fence, inside the transaction that holds
# their workflows' rows. 'u' rows carry the step's status and workflow.
FINISH_STEPS = (
    _apply(_FENCE_LEASE)
    + _PRIOR
    + """
SELECT 'u', ord, status, workflow, id, kids FROM upd
UNION ALL SELECT 'p', ord, status, finished_by, NULL, NULL FROM prior
UNION ALL SELECT 'r', ord, status, finished_by, NULL, NULL FROM prior WHERE racing
UNION ALL SELECT 'n', n, NULL, NULL, NULL, NULL FROM woke
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
SELECT id, token, attempts, max_attempts, queue, workflow FROM {s}.jobs
WHERE namespace = %(ns)s AND status = 'running' AND lease_expires_at <= now()
ORDER BY id
FOR UPDATE SKIP LOCKED
"""

_FENCE_EXPIRED = "j.token = i.token AND j.status = 'running' AND j.lease_expires_at <= now()"

RECLAIM = (
    _apply(_FENCE_EXPIRED)
    + """
SELECT (SELECT count(*) FROM upd), (SELECT n FROM woke)
"""
)

# Steps whose reclaim ends them, read again (and locked) once their
# workflows' rows are held; then applied by the same compare-and-set.
RECLAIM_STEPS_READ = """
SELECT id, token, attempts, max_attempts, queue, workflow FROM {s}.jobs
WHERE namespace = %(ns)s AND id = ANY(%(ids)s::text[]) AND status = 'running'
  AND lease_expires_at <= now()
ORDER BY id
FOR UPDATE SKIP LOCKED
"""

# What an apply to steps returns: each applied row, and the wake-ups sent.
_STEPS_APPLIED = """
SELECT ord, id, status, workflow, kids, (SELECT n FROM woke) FROM upd
"""

RECLAIM_STEPS = _apply(_FENCE_EXPIRED) + _STEPS_APPLIED

# Cancel: a running job is only flagged; any other job's status and queue
# come back ('s'), and a queued one then gets CANCEL_QUEUED.
CANCEL = """
WITH flagged AS (
    UPDATE {s}.jobs j SET cancel_requested = true
    WHERE j.namespace = %(ns)s AND j.id = %(id)s AND j.status = 'running'
    RETURNING j.status, j.queue, j.workflow
)
SELECT 'f', status, queue, workflow FROM flagged
UNION ALL SELECT 's', status, queue, workflow FROM {s}.jobs
WHERE namespace = %(ns)s AND id = %(id)s AND NOT EXISTS (SELECT 1 FROM flagged)
"""

CANCEL_QUEUED = (
    _apply("j.status = 'queued'")
    + """
SELECT (SELECT count(*) FROM upd), (SELECT n FROM woke)
"""
)

# A queued or waiting step, inside the transaction holding its workflow's row.
CANCEL_STEP = _apply("j.status IN ('waiting', 'queued')") + _STEPS_APPLIED

GET = f"SELECT {JOB_COLUMNS} FROM {{s}}.jobs WHERE namespace = %(ns)s AND id = %(id)s"

GET_MANY = f"""
SELECT k.ord, {_J_COLUMNS}
FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS k(id, ord)
JOIN {{s}}.jobs j ON j.namespace = %(ns)s AND j.id = k.id
"""

LIST_JOBS = f"""
SELECT {JOB_COLUMNS} FROM {{s}}.jobs
WHERE namespace = %(ns)s
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(after)s::text IS NULL OR id > %(after)s::text)
ORDER BY id
LIMIT %(limit)s
"""

# A workflow's steps, through jobs_workflow (namespace, workflow, id).
LIST_STEPS = f"""
SELECT {JOB_COLUMNS} FROM {{s}}.jobs
WHERE namespace = %(ns)s AND workflow = %(workflow)s::text
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
      AND workflow IS NULL
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

# -- workflows -------------------------------------------------------------------
#
# A workflow's row is locked before any job row of it by every write that
# ends one of its steps, adds steps or cancels it (backend._StepEnds): those
# writes serialise per workflow (each would wait on the row anyway, to count
# live steps), so children locked in any order can never deadlock.

# A workflow's steps as one JSON document, one array per step: [id, queue,
# priority, run_at, delay, max_attempts, dedupe_key, payload, status,
# parents, children, on_parent_failure]; parents and children are array
# literals (qw_postgres.batches.step_document).
_STEP_INPUT = """
    SELECT v->>0 AS id, v->>1 AS queue, (v->>2)::int4 AS priority,
           (v->>3)::timestamptz AS run_at, (v->>4)::float8 AS delay,
           (v->>5)::int4 AS max_attempts, v->>6 AS dedupe_key, (v->>7)::json AS payload,
           v->>8 AS status, (v->>9)::text[] AS parents, (v->>10)::text[] AS children,
           v->>11 AS on_parent_failure, ord
    FROM jsonb_array_elements(%(batch)s::jsonb) WITH ORDINALITY AS e(v, ord)
"""

_STEP_INSERT = """
    INSERT INTO {s}.jobs (namespace, id, queue, status, priority, run_at, max_attempts,
                          payload, dedupe_key, created_at, workflow, parents, children,
                          on_parent_failure, failed_parents, pending)
    SELECT %(ns)s, i.id, i.queue, i.status, i.priority,
           coalesce(i.run_at, now() + coalesce(i.delay, 0) * interval '1 second'),
           i.max_attempts, i.payload, i.dedupe_key, now(), %(workflow)s, i.parents,
           i.children, i.on_parent_failure, '{}', cardinality(i.parents)
    FROM input i
"""

_STEP_WOKE = """
    SELECT count(pg_notify(%(channel)s, q.queue)) AS n
    FROM (SELECT DISTINCT queue FROM input WHERE status = 'queued') q
"""

# One statement, so one round trip under autocommit: the workflow's row and
# its steps, or (the id exists: ON CONFLICT) nothing. A step id that exists
# fails the statement on jobs_pkey (DuplicateJob); a dedupe key a racing
# producer took, on jobs_dedupe.
CREATE_WORKFLOW = (
    "WITH input AS ("
    + _STEP_INPUT
    + """), wf AS (
    INSERT INTO {s}.workflows (namespace, id, state, output, created_at, live)
    VALUES (%(ns)s, %(workflow)s, 'running', %(output)s, now(), %(live)s)
    ON CONFLICT (namespace, id) DO NOTHING
    RETURNING id
), ins AS ("""
    + _STEP_INSERT
    + """    WHERE EXISTS (SELECT 1 FROM wf)
    ORDER BY i.ord
), woke AS ("""
    + _STEP_WOKE
    + """    WHERE EXISTS (SELECT 1 FROM wf)
)
SELECT (SELECT count(*) FROM wf), (SELECT n FROM woke)
"""
)

# add_steps, after LOCK_WORKFLOWS and ADD_STEPS_FENCE: the steps, the leased
# step's new children, and the workflow's live steps.
ADD_STEPS = (
    "WITH input AS ("
    + _STEP_INPUT
    + "), ins AS ("
    + _STEP_INSERT
    + """    ORDER BY i.ord
), par AS (
    UPDATE {s}.jobs SET children = coalesce(children, '{}') || %(kids)s::text[]
    WHERE namespace = %(ns)s AND id = %(parent)s AND cardinality(%(kids)s::text[]) > 0
    RETURNING 1
), wf AS (
    UPDATE {s}.workflows SET live = live + %(live)s
    WHERE namespace = %(ns)s AND id = %(workflow)s
    RETURNING 1
), woke AS ("""
    + _STEP_WOKE
    + """)
SELECT (SELECT count(*) FROM wf), (SELECT n FROM woke)
"""
)

# The step a lease holds (locked), and whether the batch's first step exists.
STEP_OF = "SELECT workflow FROM {s}.jobs WHERE namespace = %(ns)s AND id = %(id)s"

ADD_STEPS_FENCE = """
SELECT id FROM {s}.jobs
WHERE namespace = %(ns)s AND id = %(id)s AND token = %(token)s AND status = 'running'
  AND attempts = %(attempt)s
FOR UPDATE
"""

JOB_EXISTS = "SELECT 1 FROM {s}.jobs WHERE namespace = %(ns)s AND id = %(id)s"

# Always in id order, so writes that touch several workflows lock them alike.
LOCK_WORKFLOWS = """
SELECT id, state, cancel_requested, live, failed, cancelled FROM {s}.workflows
WHERE namespace = %(ns)s AND id = ANY(%(ids)s::text[])
ORDER BY id
FOR UPDATE
"""

# StepGraph.count_ended: one statement per ended parent, whatever its
# fan-out. The children's rows are found by primary key from the parent's
# ``children`` (locked in id order by the index scan); those that reached
# zero come back in the parent's order, with how many children they have.
COUNT_ENDED = """
WITH p AS (
    SELECT children FROM {s}.jobs WHERE namespace = %(ns)s AND id = %(parent)s
), upd AS (
    UPDATE {s}.jobs c SET
        pending = c.pending - 1,
        failed_parents = CASE WHEN %(failed)s::boolean
                              THEN c.failed_parents || %(parent)s::text
                              ELSE c.failed_parents END
    WHERE c.namespace = %(ns)s AND c.id = ANY((SELECT children FROM p)::text[])
      AND c.status = 'waiting'
    RETURNING c.id, c.queue, c.on_parent_failure, c.failed_parents, c.pending,
              cardinality(c.children) AS kids
)
SELECT u.id, u.queue, u.on_parent_failure, u.failed_parents, u.kids
FROM upd u
JOIN unnest((SELECT children FROM p)) WITH ORDINALITY AS k(id, ord) ON k.id = u.id
WHERE u.pending = 0
ORDER BY k.ord
"""

# The end of one write that ended steps: the settled steps' transitions (by
# compare-and-set on their status: queued ones become claimable, and their
# queues are woken), running steps flagged (cancel_workflow), each touched
# workflow's counters and state as decided in Python under its row lock, and
# the events, step events first and workflow events last.
ENDS = (
    _apply("j.status IN ('waiting', 'queued')", events=False)
    + """, flag AS (
    UPDATE {s}.jobs SET cancel_requested = true
    WHERE namespace = %(ns)s AND id = ANY(%(flag)s::text[]) AND status = 'running'
    RETURNING 1
), flows AS (
    SELECT v->>0 AS id, (v->>1)::int4 AS live, (v->>2)::int4 AS failed,
           (v->>3)::int4 AS cancelled, v->>4 AS state, (v->>5)::boolean AS cancel_requested,
           (v->>6)::boolean AS finished, v->>7 AS ev_type, (v->>8)::json AS ev_data, ord
    FROM jsonb_array_elements(%(flows)s::jsonb) WITH ORDINALITY AS e(v, ord)
), wupd AS (
    UPDATE {s}.workflows w SET
        live = f.live, failed = f.failed, cancelled = f.cancelled, state = f.state,
        cancel_requested = f.cancel_requested,
        finished_at = CASE WHEN f.finished THEN statement_timestamp() ELSE w.finished_at END
    FROM flows f
    WHERE w.namespace = %(ns)s AND w.id = f.id
    RETURNING 1
), ev AS (
    INSERT INTO {s}.events (namespace, job_id, type, data, created_at)
    SELECT %(ns)s, x.id, x.ev_type, x.ev_data, statement_timestamp() FROM (
        SELECT 1 AS part, u.ord, u.id, u.ev_type, u.ev_data FROM upd u
        WHERE u.ev_type IS NOT NULL
        UNION ALL
        SELECT 2, f.ord, f.id, f.ev_type, f.ev_data FROM flows f WHERE f.ev_type IS NOT NULL
    ) x
    ORDER BY x.part, x.ord
)
SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM flag), (SELECT count(*) FROM wupd),
       (SELECT n FROM woke)
"""
)

# cancel_workflow: the steps not ended, locked in id order (its row is held).
WORKFLOW_LIVE_STEPS = """
SELECT id, queue, status, seq FROM {s}.jobs
WHERE namespace = %(ns)s AND workflow = %(workflow)s
  AND status IN ('waiting', 'queued', 'running')
ORDER BY id
FOR UPDATE
"""

_WORKFLOW_SELECT = """
SELECT w.id, w.state, w.created_at, w.output, w.finished_at, w.cancel_requested,
       c.statuses, c.counts
FROM {s}.workflows w
CROSS JOIN LATERAL (
    SELECT array_agg(g.status) AS statuses, array_agg(g.n) AS counts FROM (
        SELECT j.status, count(*) AS n FROM {s}.jobs j
        WHERE j.namespace = w.namespace AND j.workflow = w.id
        GROUP BY j.status
    ) g
) c
"""

GET_WORKFLOW = _WORKFLOW_SELECT + "WHERE w.namespace = %(ns)s AND w.id = %(workflow)s\n"

LIST_WORKFLOWS = (
    _WORKFLOW_SELECT
    + """WHERE w.namespace = %(ns)s
  AND (%(state)s::text IS NULL OR w.state = %(state)s::text)
  AND (%(after)s::text IS NULL OR w.id > %(after)s::text)
ORDER BY w.id
LIMIT %(limit)s
"""
)

# Ended workflows past retention, a bounded number per statement, each with
# all its steps.
PURGE_WORKFLOWS = """
WITH victims AS (
    SELECT namespace, id FROM {s}.workflows
    WHERE namespace = %(ns)s AND state <> 'running'
      AND finished_at < now() - %(older_than)s * interval '1 second'
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), steps AS (
    DELETE FROM {s}.jobs j USING victims v
    WHERE j.namespace = v.namespace AND j.workflow = v.id
    RETURNING 1
), flows AS (
    DELETE FROM {s}.workflows w USING victims v
    WHERE w.namespace = v.namespace AND w.id = v.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM flows), (SELECT count(*) FROM steps)
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
    finish_steps: bytes
    finished_by: bytes
    reclaim_expired: bytes
    reclaim: bytes
    reclaim_steps_read: bytes
    reclaim_steps: bytes
    cancel: bytes
    cancel_queued: bytes
    cancel_step: bytes
    get: bytes
    get_many: bytes
    list_jobs: bytes
    list_steps: bytes
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
    create_workflow: bytes
    add_steps: bytes
    step_of: bytes
    add_steps_fence: bytes
    job_exists: bytes
    lock_workflows: bytes
    count_ended: bytes
    ends: bytes
    workflow_live_steps: bytes
    get_workflow: bytes
    list_workflows: bytes
    purge_workflows: bytes
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
