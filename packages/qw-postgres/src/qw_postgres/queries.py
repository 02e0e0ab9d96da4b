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

__all__ = [
    "CLAIM_RANK",
    "CLAIM_SEQ",
    "CLAIM_TOKEN",
    "JOB_COLUMNS",
    "JOB_FIELDS",
    "KEYED_JOB",
    "Queries",
]

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
    # Flow control (NULL / false for a job without a key).
    "limit_key",
    "limit",
    "fair",
    # Progress (migration 4; NULL until the running task reports).
    "progress_fraction",
    "progress_message",
    "progress_at",
)
#: Where the claim's RETURNING puts the lease token, the fair rank and the FIFO seq.
CLAIM_TOKEN = len(JOB_FIELDS)
CLAIM_RANK = CLAIM_TOKEN + 1
CLAIM_SEQ = CLAIM_TOKEN + 2
# A job's own limit is three columns, and has_limit tells a declared Limit()
# (every field NULL) from none; it is read as one float8[] (or NULL).
_LIMIT = (
    "CASE WHEN {p}has_limit THEN ARRAY[{p}concurrency::float8, {p}rate::float8, {p}rate_per] END"
)


def _columns(prefix: str) -> str:
    return ", ".join(
        _LIMIT.format(p=prefix) if c == "limit" else f"{prefix}{c}" for c in JOB_FIELDS
    )


JOB_COLUMNS = _columns("")
_J_COLUMNS = _columns("j.")
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
)@FAIR@, ins AS (
    INSERT INTO {s}.jobs AS j (namespace, id, queue, status, priority, run_at,
                               max_attempts, payload, dedupe_key, created_at@COLS@)
    SELECT %(ns)s, i.id, i.queue, 'queued', i.priority,
           coalesce(i.run_at, now() + coalesce(i.delay, 0) * interval '1 second'),
           i.max_attempts, i.payload, i.dedupe_key, now()@VALS@
    FROM input i@JOIN@
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

# The flow-control columns an insert writes, from ``input`` (i) and, for
# fair jobs, ``ranked`` (rk).
_FLOW_COLS = ", limit_key, concurrency, rate, rate_per, has_limit, fair, fair_rank"
_FLOW_VALS = ", i.limit_key, i.concurrency, i.rate, i.rate_per, i.has_limit, i.fair, @RANK@"


def _fair_ranks(guard: str) -> str:
    """CTEs giving each fair job of ``input`` its rank (``ranked``), all at once.

    Per (queue, key) with n fair jobs in the batch, the upsert moves the
    stored next rank to ``max(next, clock) + n`` (under its row lock, so
    racing producers get disjoint ranks; rows in (queue, key) order, so
    they never deadlock) and returns it; the batch's jobs of that pair take
    the n ranks below it in batch order: qw.limits.fair_rank applied n
    times. ``guard`` is the condition the jobs are inserted under.
    """
    return f""", fin AS (
    SELECT queue, limit_key, count(*) AS n FROM input WHERE fair GROUP BY queue, limit_key
), ranks AS (
    INSERT INTO {{s}}.fair_ranks AS r (namespace, queue, key, next)
    SELECT %(ns)s, f.queue, f.limit_key,
           coalesce((SELECT c.clock FROM {{s}}.fair_clocks c
                     WHERE c.namespace = %(ns)s AND c.queue = f.queue), 0) + f.n
    FROM fin f
    WHERE {guard}
    ORDER BY f.queue, f.limit_key
    ON CONFLICT (namespace, queue, key) DO UPDATE SET next = greatest(
        r.next + (SELECT f.n FROM fin f
                  WHERE f.queue = EXCLUDED.queue AND f.limit_key = EXCLUDED.key),
        EXCLUDED.next)
    RETURNING r.queue, r.key, r.next
), ranked AS (
    SELECT i.id, k.next - f.n - 1
           + row_number() OVER (PARTITION BY i.queue, i.limit_key ORDER BY i.ord) AS rank
    FROM input i
    JOIN fin f ON f.queue = i.queue AND f.limit_key = i.limit_key
    JOIN ranks k ON k.queue = i.queue AND k.key = i.limit_key
    WHERE i.fair
)"""


def _enqueue(source: str, *, keyed: bool, fair: bool) -> str:
    """The insert reading ``source``; with ``keyed``, its flow-control columns too."""
    text = _ENQUEUE.replace("@INPUT@", source)
    if not keyed:
        return (
            text.replace("@FAIR@", "")
            .replace("@COLS@", "")
            .replace("@VALS@", "")
            .replace("@JOIN@", "")
        )
    rank = "coalesce(rk.rank, 0)" if fair else "0"
    return (
        text.replace("@FAIR@", _fair_ranks("NOT EXISTS (SELECT 1 FROM dup)") if fair else "")
        .replace("@COLS@", _FLOW_COLS)
        .replace("@VALS@", _FLOW_VALS.replace("@RANK@", rank))
        .replace("@JOIN@", " LEFT JOIN ranked rk ON rk.id = i.id" if fair else "")
    )


# Small batches: one JSON document, one round trip. A batch without limit
# keys keeps the 0.2 document and statement; one with keys carries six more
# fields per job (qw_postgres.batches.enqueue_document).
_DOC = """SELECT v->>0 AS id, v->>1 AS queue, (v->>2)::int4 AS priority,
           (v->>3)::timestamptz AS run_at, (v->>4)::float8 AS delay,
           (v->>5)::int4 AS max_attempts, v->>6 AS dedupe_key, (v->>7)::json AS payload,
           @FLOW@ord
    FROM jsonb_array_elements(%(batch)s::jsonb) WITH ORDINALITY AS e(v, ord)"""
_DOC_FLOW = """v->>8 AS limit_key, (v->>9)::int4 AS concurrency, (v->>10)::int4 AS rate,
           (v->>11)::float8 AS rate_per, (v->>12)::boolean AS has_limit,
           (v->>13)::boolean AS fair, """
ENQUEUE = _enqueue(_DOC.replace("@FLOW@", ""), keyed=False, fair=False)
ENQUEUE_KEYED = _enqueue(_DOC.replace("@FLOW@", _DOC_FLOW), keyed=True, fair=False)
ENQUEUE_FAIR = _enqueue(_DOC.replace("@FLOW@", _DOC_FLOW), keyed=True, fair=True)

# One job (not fair, no skipped ids to check): the most common call, as plain
# parameters. The planner sees one VALUES row, so after five executions the
# prepared statement keeps a generic plan; the document statement above is
# planned afresh on every execution (PostgreSQL never finds its generic plan
# cheaper), which with the jsonb split made it half as fast at 16 producers
# (1,250-1,750 vs 3,100-3,450 statements/s). A duplicate id fails jobs_pkey
# and a taken dedupe key jobs_dedupe, as in the batch statement; its wake-up
# is the same one NOTIFY, in the same statement. Unkeyed jobs write the flow
# columns' defaults, so the row is the one the batch statement stores.
ENQUEUE_ONE = """
WITH ins AS (
    INSERT INTO {s}.jobs (namespace, id, queue, status, priority, run_at, max_attempts,
                          payload, dedupe_key, created_at, limit_key, concurrency, rate,
                          rate_per, has_limit)
    VALUES (%(ns)s, %(id)s, %(queue)s, 'queued', %(priority)s::int4,
            coalesce(%(run_at)s::timestamptz,
                     now() + coalesce(%(delay)s::float8, 0) * interval '1 second'),
            %(max_attempts)s::int4, %(payload)s::json, %(dedupe_key)s, now(),
            %(limit_key)s, %(concurrency)s::int4, %(rate)s::int4, %(rate_per)s::float8,
            %(has_limit)s::bool)
    RETURNING queue
)
SELECT 'n', count(pg_notify(%(channel)s, ins.queue))::text FROM ins
"""

# Large batches: rows arrive first by binary COPY into a session-local table
# (emptied at commit), then the same statement reads them from there.
ENQUEUE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS qw_enqueue_in (
    id text, queue text, priority int4, run_at timestamptz, delay float8,
    max_attempts int4, dedupe_key text, payload text, ord int8,
    limit_key text, concurrency int4, rate int4, rate_per float8, has_limit bool, fair bool
) ON COMMIT DELETE ROWS
"""
# The bound path's own emptying: in the application's transaction, the
# commit that would empty the table may be far off.
ENQUEUE_UNSTAGE = "DELETE FROM pg_temp.qw_enqueue_in"
ENQUEUE_COPY = (
    "COPY pg_temp.qw_enqueue_in (id, queue, priority, run_at, delay, max_attempts,"
    " dedupe_key, payload, ord, limit_key, concurrency, rate, rate_per, has_limit, fair)"
    " FROM STDIN (FORMAT BINARY)"
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
    "text",
    "int4",
    "int4",
    "float8",
    "bool",
    "bool",
)
_STAGED = """SELECT id, queue, priority, run_at, delay, max_attempts, dedupe_key,
           payload::json AS payload, ord, limit_key, concurrency, rate, rate_per,
           has_limit, fair
    FROM pg_temp.qw_enqueue_in"""
ENQUEUE_STAGED = _enqueue(_STAGED, keyed=False, fair=False)
ENQUEUE_STAGED_KEYED = _enqueue(_STAGED, keyed=True, fair=False)
ENQUEUE_STAGED_FAIR = _enqueue(_STAGED, keyed=True, fair=True)

# The live holders of a batch's dedupe keys (at most one each: jobs_dedupe),
# read before the batch is planned. Batches without keys skip this.
LIVE_KEYS = f"""
SELECT dedupe_key, id FROM {{s}}.jobs
WHERE namespace = %(ns)s AND dedupe_key = ANY(%(keys)s::text[]) AND status IN {_LIVE}
"""

_CLAIM_LEASE = """
UPDATE {s}.jobs j SET
    status = 'running', attempts = j.attempts + 1, started_at = now(),
    worker = %(worker)s, lease_expires_at = now() + %(lease_s)s * interval '1 second',
    cancel_requested = false, token = gen_random_uuid()::text, parked = false"""
_CLAIM_SET = (
    _CLAIM_LEASE
    + """
FROM picked
WHERE j.namespace = picked.namespace AND j.id = picked.id"""
)
_CLAIM_RETURNING = f"""
RETURNING {_J_COLUMNS}, j.token, j.fair_rank, j.seq"""
#: Columns of a claimed row: the job's, then token, fair_rank and seq.
_CLAIM_WIDTH = len(JOB_FIELDS) + 3

# The claim of jobs without limit keys, one statement: it takes the first N
# due jobs in claim order unless one of them has a key or a parked key of
# these queues is due a look (``flow``). Then it takes none, and answers one
# row of NULLs: the caller claims by the keyed path instead (backend.py,
# _claim_keyed). So a namespace without keys pays an EXISTS over the rows
# it read and one probe of an empty index for flow control.
_CLAIM_FAST = (
    """
WITH picked AS (
    SELECT namespace, id, limit_key FROM {s}.jobs
    WHERE namespace = %(ns)s AND @QUEUE@ AND status = 'queued' AND NOT parked
      AND run_at <= now()
    ORDER BY priority, fair_rank, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), flow AS (
    SELECT EXISTS (SELECT 1 FROM picked WHERE limit_key IS NOT NULL)
        OR EXISTS (SELECT 1 FROM {s}.parked_keys p
                   WHERE p.namespace = %(ns)s AND @PQUEUE@ AND p.check_at <= now()) AS keyed
), upd AS ("""
    + _CLAIM_SET
    + """ AND NOT (SELECT keyed FROM flow)"""
    + _CLAIM_RETURNING
    + """
)
SELECT * FROM upd
UNION ALL SELECT """
    + ", ".join(["NULL"] * _CLAIM_WIDTH)
    + """ FROM flow WHERE keyed
"""
)
_ONE_OPEN = "queue = %(queue)s AND " + _OPEN.replace("{q}", "%(queue)s")
_MANY_OPEN = (
    "queue = ANY(ARRAY(SELECT q FROM unnest(%(queues)s::text[]) AS q WHERE "
    + _OPEN.replace("{q}", "q")
    + "))"
)

# One queue: the partial index yields rows already in (priority, fair_rank,
# seq) order, so LIMIT stops after N index entries.
CLAIM_ONE = _CLAIM_FAST.replace("@QUEUE@", _ONE_OPEN).replace("@PQUEUE@", "p." + _ONE_OPEN)
CLAIM_MANY = _CLAIM_FAST.replace("@QUEUE@", _MANY_OPEN).replace("@PQUEUE@", "p." + _MANY_OPEN)

# -- the keyed claim (backend._claim_keyed): one transaction per round ---------
#
# 1. CLAIM_CANDIDATES takes the first ``fetch`` due, unparked jobs after the
#    position ``after`` (p, r, s) in claim order, FOR UPDATE SKIP LOCKED,
#    and leases them all at once ('c' rows: the lease as a claim writes it),
#    speculatively: a lock and an update in one pass, as the plain claim
#    does. It locks the parked keys of these queues due a look ('q') and
#    the first ``pfetch`` parked jobs of each ('p', locked only); then it
#    takes the advisory lock of every key among them, in hash order ('l');
#    and last, it calls claim_state (schema.py, migration 3), whose own
#    snapshot, taken with those locks held, reads each key's running count
#    (leaving out this transaction's own leases), operators' limit, starts
#    and parked rows ('n', 'r', 'o', 's', 'w', 'e'). UNION ALL runs its
#    parts in order, so each comes after the one before.
# 2. qw.limits.plan_claim decides in Python. When it takes every 'c' row and
#    nothing else is to be written (most rounds), the COMMIT alone follows.
# 3. Else CLAIM_APPLY gives the 'c' rows not taken back their exact former
#    state (queued, the attempt not counted, started_at as it was; parked
#    if held back), leases the 'p' rows taken, parks more of each full key
#    and records the starts; PARK_LOCK / PARK_SET / PARK_DROP keep
#    parked_keys and FAIR_CLOCK moves the fair clocks; all sent with the
#    COMMIT. Nothing outside the transaction ever sees a lease given back.
#
# A row: kind, old_started, tid, has_limit, concurrency, rate, rate_per,
# then the claim's RETURNING (JOB_FIELDS, token, fair_rank, seq). State rows
# put their key in limit_key, their queue in queue, a count in seq, a limit
# in concurrency/rate/rate_per and a time in old_started.
_FLOW = "j.has_limit, j.concurrency, j.rate, j.rate_per"
#: Where a keyed round's row has the claim's RETURNING columns.
KEYED_JOB = 7
_KEYED_WIDTH = KEYED_JOB + _CLAIM_WIDTH
_KEY_AT = KEYED_JOB + JOB_FIELDS.index("limit_key")
_QUEUE_AT = KEYED_JOB + JOB_FIELDS.index("queue")


def _row(kind: str, values: dict[int, str]) -> str:
    """A keyed round's row of NULLs but for ``values`` (position: expression)."""
    cells = [kind] + ["NULL"] * (_KEYED_WIDTH - 1)
    for at, expr in values.items():
        cells[at] = expr
    return ", ".join(cells)


_AFTER = "(j.priority, j.fair_rank, j.seq) > (%(ap)s::int4, %(ar)s::int8, %(as)s::int8)"
_SEQ_AT = _KEYED_WIDTH - 1
_CLAIM_CANDIDATES = (
    f"""
WITH open AS (
    SELECT q FROM unnest(%(queues)s::text[]) AS q WHERE {_OPEN.replace("{q}", "q")}
), cand AS (
    SELECT j.namespace, j.id, j.started_at AS old_started
    FROM {{s}}.jobs j
    WHERE j.namespace = %(ns)s AND @QUEUE@ AND j.status = 'queued' AND NOT j.parked
      AND j.run_at <= now() AND {_AFTER}
    ORDER BY j.priority, j.fair_rank, j.seq
    LIMIT %(fetch)s
    FOR UPDATE SKIP LOCKED
), took AS ("""
    + _CLAIM_LEASE
    + f"""
    FROM cand WHERE j.namespace = cand.namespace AND j.id = cand.id
    RETURNING 'c'::text AS kind, cand.old_started, j.ctid::text AS tid, {_FLOW},
              {_J_COLUMNS}, j.token, j.fair_rank, j.seq
), ready AS (
    SELECT p.key, p.queue FROM {{s}}.parked_keys p
    WHERE p.namespace = %(ns)s AND p.queue IN (SELECT q FROM open) AND p.check_at <= now()
    ORDER BY p.check_at
    LIMIT %(probe)s
), pcand AS (
    SELECT x.* FROM ready r CROSS JOIN LATERAL (
        SELECT 'p'::text AS kind, NULL::timestamptz AS old_started, j.ctid::text AS tid,
               {_FLOW}, {_J_COLUMNS}, NULL::text AS token, j.fair_rank, j.seq
        FROM {{s}}.jobs j
        WHERE j.namespace = %(ns)s AND j.limit_key = r.key AND j.queue = r.queue
          AND j.status = 'queued' AND j.parked AND {_AFTER}
        ORDER BY j.priority, j.fair_rank, j.seq
        LIMIT %(pfetch)s
        FOR UPDATE SKIP LOCKED
    ) x
), kp AS (
    -- Each key met, with the longest rate window its candidates declare.
    SELECT k AS key, max(per) AS per FROM (
        SELECT limit_key, CASE WHEN has_limit AND rate IS NOT NULL THEN rate_per END FROM took
        UNION ALL
        SELECT limit_key, CASE WHEN has_limit AND rate IS NOT NULL THEN rate_per END FROM pcand
        UNION ALL
        SELECT key, NULL FROM ready
    ) ks(k, per)
    WHERE k IS NOT NULL
    GROUP BY k
), locks AS MATERIALIZED (
    SELECT pg_advisory_xact_lock(h)::text AS done FROM (
        SELECT DISTINCT hashtextextended(%(ns)s || chr(31) || key, 0) AS h FROM kp ORDER BY h
    ) x
)
SELECT * FROM took
UNION ALL SELECT * FROM pcand
UNION ALL SELECT {_row("'q'", {_QUEUE_AT: "r.queue", _KEY_AT: "r.key"})} FROM ready r
UNION ALL SELECT {_row("'l'", {_SEQ_AT: "count(*)"})} FROM locks
UNION ALL SELECT {
        _row(
            "st.kind",
            {
                1: "st.at",
                4: "st.c",
                5: "st.r",
                6: "st.per",
                _QUEUE_AT: "st.queue",
                _KEY_AT: "st.key",
                _SEQ_AT: "st.n",
            },
        )
    }
FROM {{s}}.claim_state(
    %(ns)s,
    ARRAY(SELECT key FROM kp ORDER BY key), ARRAY(SELECT per FROM kp ORDER BY key),
    ARRAY(SELECT key FROM ready ORDER BY key, queue),
    ARRAY(SELECT queue FROM ready ORDER BY key, queue),
    ARRAY(SELECT id FROM pcand)
) st
WHERE EXISTS (SELECT 1 FROM kp)
"""
)
CLAIM_CANDIDATES_ONE = _CLAIM_CANDIDATES.replace("@QUEUE@", "j.queue = %(queue)s")
CLAIM_CANDIDATES_MANY = _CLAIM_CANDIDATES.replace(
    "@QUEUE@", "j.queue = ANY(ARRAY(SELECT q FROM open))"
)

# Rows are found by the ctid they have in this transaction (``*tids``):
# they are locked by it (or its own new versions), so nothing moves them,
# and a TID scan is the plan whatever the table's statistics say (a scan of
# the namespace, chosen on a table not analyzed yet, cost more than the
# rest of the claim). Their ids and namespace are checked too, as filters
# no index can take. ``back``: the leased rows not taken (``bids``), given
# back their former state; ``bpark`` parks those held back. ``ids``: the
# parked rows taken, leased. ``ahead``: per (key ``ak``, queue ``aq``)
# found full, up to ``ahead`` more of its due queued jobs are parked,
# through jobs_key, if held to the same limit as the job held back (``ao``:
# the key has an operators' limit, so all are; else the same own limit
# ``ah``/``ac``/``ar``/``ap``): they would be held back too, and parked
# they leave the claim index now rather than being read past, a batch per
# claim. The starts: ``sn[i]`` of key ``sk[i]`` at ``now``, whose window is
# ``sp[i]`` seconds (older starts of the key are deleted).
CLAIM_APPLY = (
    """
WITH back AS (
    UPDATE {s}.jobs j SET
        status = 'queued', attempts = j.attempts - 1, started_at = x.started, worker = NULL,
        lease_expires_at = NULL, cancel_requested = false, token = NULL, parked = x.park
    FROM unnest(%(bids)s::text[], %(bstarted)s::timestamptz[], %(bpark)s::boolean[])
         AS x(id, started, park)
    WHERE j.ctid = ANY(%(btids)s::tid[]) AND j.id = x.id
      AND (j.namespace = %(ns)s) IS TRUE AND j.status = 'running'
), ahead AS (
    UPDATE {s}.jobs j SET parked = true
    FROM unnest(%(ak)s::text[], %(aq)s::text[], %(ao)s::boolean[], %(ah)s::boolean[],
                %(ac)s::int4[], %(ar)s::int4[], %(ap)s::float8[])
         AS x(k, q, anyone, has_limit, c, r, per)
    CROSS JOIN LATERAL (
        SELECT i.id FROM {s}.jobs i
        WHERE i.namespace = %(ns)s AND i.limit_key = x.k AND i.status = 'queued'
          AND NOT i.parked AND i.queue = x.q AND i.run_at <= now()
          AND (x.anyone OR (i.has_limit = x.has_limit
                            AND i.concurrency IS NOT DISTINCT FROM x.c
                            AND i.rate IS NOT DISTINCT FROM x.r
                            AND i.rate_per IS NOT DISTINCT FROM x.per))
        LIMIT %(ahead)s
        FOR UPDATE SKIP LOCKED
    ) a
    WHERE j.namespace = %(ns)s AND j.id = a.id
), st AS (
    INSERT INTO {s}.limit_starts AS s (namespace, key, at, n)
    SELECT %(ns)s, x.k, %(now)s::timestamptz, x.n
    FROM unnest(%(sk)s::text[], %(sn)s::int4[]) AS x(k, n)
    ON CONFLICT (namespace, key, at) DO UPDATE SET n = s.n + EXCLUDED.n
), prune AS (
    DELETE FROM {s}.limit_starts s USING unnest(%(sk)s::text[], %(sp)s::float8[]) AS x(k, per)
    WHERE s.namespace = %(ns)s AND s.key = x.k
      AND s.at <= %(now)s::timestamptz - x.per * interval '1 second'
), upd AS ("""
    + _CLAIM_LEASE
    + """
    WHERE j.ctid = ANY(%(tids)s::tid[]) AND j.id = ANY(%(ids)s::text[])
      AND (j.namespace = %(ns)s) IS TRUE AND j.status = 'queued'"""
    + _CLAIM_RETURNING
    + """
)
SELECT * FROM upd
"""
)

# parked_keys rows are written in (key, queue) order, as the finishes that
# wake them lock them, so the two never deadlock: PARK_LOCK locks the
# existing ones, then PARK_SET upserts and PARK_DROP deletes. PARK_SET only
# moves check_at while ``wakes`` is what claim_state read: a job of the key
# that left running since keeps its wake. A NULL time is never (a pause).
PARK_LOCK = """
SELECT 1 FROM {s}.parked_keys p
JOIN unnest(%(k)s::text[], %(q)s::text[]) AS x(k, q) ON p.key = x.k AND p.queue = x.q
WHERE p.namespace = %(ns)s
ORDER BY p.key, p.queue
FOR UPDATE OF p
"""

PARK_SET = """
INSERT INTO {s}.parked_keys AS p (namespace, key, queue, check_at, wakes)
SELECT %(ns)s, x.k, x.q, coalesce(x.t, 'infinity'), x.w
FROM unnest(%(k)s::text[], %(q)s::text[], %(t)s::timestamptz[], %(w)s::int8[]) AS x(k, q, t, w)
ORDER BY x.k, x.q
ON CONFLICT (namespace, key, queue) DO UPDATE SET check_at = EXCLUDED.check_at
WHERE p.wakes = EXCLUDED.wakes
"""

PARK_DROP = """
DELETE FROM {s}.parked_keys p USING unnest(%(k)s::text[], %(q)s::text[]) AS x(k, q)
WHERE p.namespace = %(ns)s AND p.key = x.k AND p.queue = x.q
"""

# The fair clock of each queue moves up to the highest rank claimed in it;
# last in the transaction, so the row is held only until the COMMIT.
FAIR_CLOCK = """
INSERT INTO {s}.fair_clocks AS c (namespace, queue, clock)
SELECT %(ns)s, x.q, x.r FROM unnest(%(q)s::text[], %(r)s::int8[]) AS x(q, r)
ORDER BY x.q
ON CONFLICT (namespace, queue) DO UPDATE SET clock = EXCLUDED.clock
WHERE c.clock < EXCLUDED.clock
"""

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
# When a row it moved is now terminal it sends ONE notification on the
# namespace's "done" channel (``done``, payload '*', which PostgreSQL folds
# with every equal one of the transaction): wait_finished wakes on it. A
# finish of a hundred jobs sends one, as does a finish of one. Only while
# a session of the namespace is registered in result_listeners (one index
# probe of a table of a few rows): a NOTIFY serialises its transaction's
# commit with every other notifying one, which cost 8-thread finishing a
# third of its throughput when every finish sent one.
def _apply(fence: str, *, events: bool = True, wake: bool = False) -> str:
    # ``wake``: the fence holds only running jobs, so every row it moves
    # leaves running and frees a slot of its key: the key's parked rows are
    # due a look (locked in (key, queue) order, as claims write them), and
    # their queues are woken: there wait the jobs the key held back (every
    # one is parked). A key with none held back wakes nobody: a NOTIFY
    # serialises its transaction's commit with every other notifying one.
    wk = (
        """, wk AS (
    SELECT p.namespace, p.key, p.queue FROM {s}.parked_keys p
    WHERE p.namespace = %(ns)s
      AND p.key = ANY(ARRAY(SELECT DISTINCT u.limit_key FROM upd u
                            WHERE u.limit_key IS NOT NULL))
    ORDER BY p.key, p.queue
    FOR UPDATE
), wup AS (
    UPDATE {s}.parked_keys p SET check_at = '-infinity', wakes = p.wakes + 1
    FROM wk WHERE p.namespace = wk.namespace AND p.key = wk.key AND p.queue = wk.queue
    RETURNING p.queue
)"""
        if wake
        else ""
    )
    woken = (
        "SELECT queue FROM upd WHERE status = 'queued' UNION SELECT queue FROM wup"
        if wake
        else "SELECT DISTINCT queue FROM upd WHERE status = 'queued'"
    )
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
              i.ev_type, i.ev_data, j.limit_key
){ev}{wk}, woke AS (
    SELECT count(pg_notify(%(channel)s, q.queue)) + (
        SELECT count(pg_notify(%(done)s, '*')) FROM (
            SELECT 1 FROM upd u WHERE u.status IN {_TERMINAL} LIMIT 1
        ) d
        WHERE EXISTS (SELECT 1 FROM {{s}}.result_listeners l WHERE l.namespace = %(ns)s)
    ) AS n
    FROM ({woken}) q
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
    _apply(f"{_FENCE_LEASE} AND (j.workflow IS NULL OR i.status NOT IN {_ENDS})", wake=True)
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
    _apply(_FENCE_LEASE, wake=True)
    + _PRIOR
    + """
SELECT 'u', ord, status, workflow, id, kids FROM upd
UNION ALL SELECT 'p', ord, status, finished_by, NULL, NULL FROM prior
UNION ALL SELECT 'r', ord, status, finished_by, NULL, NULL FROM prior WHERE racing
UNION ALL SELECT 'n', n, NULL, NULL, NULL, NULL FROM woke
"""
)

# set_progress: fenced as a finish is (token, running, attempt); the job's
# progress and its outbox event in one statement, so both commit or neither.
SET_PROGRESS = """
WITH upd AS (
    UPDATE {s}.jobs j SET
        progress_fraction = %(fraction)s::float8, progress_message = %(message)s::text,
        progress_at = statement_timestamp()
    WHERE j.namespace = %(ns)s AND j.id = %(id)s AND j.token = %(token)s
      AND j.status = 'running' AND j.attempts = %(attempt)s
    RETURNING j.id
), ev AS (
    INSERT INTO {s}.events (namespace, job_id, type, data, created_at)
    SELECT %(ns)s, u.id, %(type)s, %(data)s::json, statement_timestamp() FROM upd u
)
SELECT count(*) FROM upd
"""

# The results listener's registration (listening.make_results_listen): rows
# of sessions gone are cleared, its own row written; then it waits until no
# transaction that began before that row committed is still open (one of
# them may have ended jobs without seeing the row, so without notifying).
RESULTS_REGISTER = """
WITH gone AS (
    DELETE FROM {s}.result_listeners l
    WHERE l.namespace = %(ns)s AND l.pid NOT IN (SELECT pid FROM pg_stat_activity)
)
INSERT INTO {s}.result_listeners (namespace, pid) VALUES (%(ns)s, pg_backend_pid())
ON CONFLICT (namespace, pid) DO UPDATE SET since = clock_timestamp()
RETURNING since
"""

RESULTS_SETTLED = """
SELECT NOT EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
      AND a.xact_start < %(since)s::timestamptz
)
"""

RESULTS_UNREGISTER = """
DELETE FROM {s}.result_listeners WHERE namespace = %(ns)s AND pid = pg_backend_pid()
"""

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
    _apply(_FENCE_EXPIRED, wake=True)
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

RECLAIM_STEPS = _apply(_FENCE_EXPIRED, wake=True) + _STEPS_APPLIED

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

# What qw.transitions.plan_retry decides from: the job, and the live job
# (another one) that holds its dedupe key now, through jobs_dedupe.
RETRY_READ = f"""
SELECT j.status, j.attempts, j.max_attempts, j.queue, j.workflow,
       (SELECT h.id FROM {{s}}.jobs h
        WHERE h.namespace = j.namespace AND h.dedupe_key = j.dedupe_key
          AND h.status IN {_LIVE} AND h.id <> j.id
        LIMIT 1)
FROM {{s}}.jobs j WHERE j.namespace = %(ns)s AND j.id = %(id)s
"""

# plan_retry's transition, by compare-and-set on the (status, attempts) read,
# with its event and its queue's NOTIFY in the same statement. The job
# leaves the terminal statuses, so it takes its dedupe key back: a key taken
# since the read fails the statement on jobs_dedupe (the caller reads again).
# ``parked`` is only ever true for a queued job; cleared all the same.
RETRY = """
WITH upd AS (
    UPDATE {s}.jobs j SET
        status = %(to)s,
        run_at = statement_timestamp() + %(run_in)s * interval '1 second',
        result = %(result)s::json,
        max_attempts = %(max_attempts)s,
        started_at = NULL, finished_at = NULL, finished_by = NULL,
        worker = NULL, lease_expires_at = NULL, cancel_requested = false, token = NULL,
        parked = false
    WHERE j.namespace = %(ns)s AND j.id = %(id)s
      AND j.status = %(status)s AND j.attempts = %(attempts)s
    RETURNING j.id, j.queue
), ev AS (
    INSERT INTO {s}.events (namespace, job_id, type, data, created_at)
    SELECT %(ns)s, u.id, %(ev_type)s, %(ev_data)s::json, statement_timestamp() FROM upd u
), woke AS (
    SELECT count(pg_notify(%(channel)s, u.queue)) AS n FROM upd u
)
SELECT (SELECT count(*) FROM upd), (SELECT n FROM woke)
"""

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
  AND (%(key)s::text IS NULL OR limit_key = %(key)s::text)
  AND (%(after)s::text IS NULL OR id > %(after)s::text)
ORDER BY id
LIMIT %(limit)s
"""

# A key's jobs, through jobs_key (namespace, limit_key, status).
LIST_KEY_JOBS = f"""
SELECT {JOB_COLUMNS} FROM {{s}}.jobs
WHERE namespace = %(ns)s AND limit_key = %(key)s::text
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(after)s::text IS NULL OR id > %(after)s::text)
ORDER BY id
LIMIT %(limit)s
"""

# -- limits ----------------------------------------------------------------------

# set_limit: the row (or its removal, ``remove``), and every parked row of
# the key is due a look (in (key, queue) order, as everywhere); wakes the
# namespace's waiters, as switching a queue ON does.
SET_LIMIT = """
WITH up AS (
    INSERT INTO {s}.limits AS l (namespace, key, concurrency, rate, per)
    SELECT %(ns)s, %(key)s, %(concurrency)s, %(rate)s, %(per)s WHERE NOT %(remove)s
    ON CONFLICT (namespace, key) DO UPDATE
        SET concurrency = EXCLUDED.concurrency, rate = EXCLUDED.rate, per = EXCLUDED.per
), gone AS (
    DELETE FROM {s}.limits WHERE namespace = %(ns)s AND key = %(key)s AND %(remove)s
), wk AS (
    SELECT namespace, key, queue FROM {s}.parked_keys
    WHERE namespace = %(ns)s AND key = %(key)s
    ORDER BY key, queue
    FOR UPDATE
), wup AS (
    UPDATE {s}.parked_keys p SET check_at = '-infinity', wakes = p.wakes + 1
    FROM wk WHERE p.namespace = wk.namespace AND p.key = wk.key AND p.queue = wk.queue
)
SELECT pg_notify(%(channel)s, '*')
"""

LIMITS = """
SELECT key, concurrency, rate, per FROM {s}.limits WHERE namespace = %(ns)s ORDER BY key
"""

# keys(): the first ``limit`` keys after ``after`` that have queued or
# running jobs or an operators' limit, with their counts, the limit of one
# of their live jobs that declares one (``own``, as JSON), the operators'
# limit, and the store's clock. Counts are grouped from the jobs (jobs_key).
KEYS = """
WITH live AS (
    SELECT limit_key AS key,
           count(*) FILTER (WHERE status = 'queued') AS queued,
           count(*) FILTER (WHERE status = 'running') AS running,
           (array_agg(json_build_array(concurrency, rate, rate_per)::text)
                FILTER (WHERE has_limit))[1] AS own
    FROM {s}.jobs
    WHERE namespace = %(ns)s AND limit_key IS NOT NULL AND status IN ('queued', 'running')
      AND (%(after)s::text IS NULL OR limit_key > %(after)s::text)
    GROUP BY limit_key
), names AS (
    SELECT key FROM live
    UNION
    SELECT key FROM {s}.limits
    WHERE namespace = %(ns)s AND (%(after)s::text IS NULL OR key > %(after)s::text)
)
SELECT n.key, coalesce(l.queued, 0), coalesce(l.running, 0), l.own,
       o.key IS NOT NULL, o.concurrency, o.rate, o.per, now()
FROM names n
LEFT JOIN live l ON l.key = n.key
LEFT JOIN {s}.limits o ON o.namespace = %(ns)s AND o.key = n.key
ORDER BY n.key
LIMIT %(limit)s
"""

KEY_STARTS = """
SELECT key, at, n FROM {s}.limit_starts
WHERE namespace = %(ns)s AND key = ANY(%(keys)s::text[])
"""

# -- schedules -------------------------------------------------------------------

# The definition replaces the stored one; the stored last_tick stays.
SAVE_SCHEDULE = """
INSERT INTO {s}.schedules AS c (namespace, name, spec, tz, queue, task, last_tick)
VALUES (%(ns)s, %(name)s, %(spec)s, %(tz)s, %(queue)s, %(task)s, NULL)
ON CONFLICT (namespace, name) DO UPDATE
    SET spec = EXCLUDED.spec, tz = EXCLUDED.tz, queue = EXCLUDED.queue, task = EXCLUDED.task
"""

# One compare-and-set: racers with the same tick wait on the row, and each
# one after the first sees its last_tick already there (READ COMMITTED
# re-checks the WHERE on the row it waited for).
ADVANCE_SCHEDULE = """
UPDATE {s}.schedules SET last_tick = %(tick)s
WHERE namespace = %(ns)s AND name = %(name)s
  AND (last_tick IS NULL OR last_tick < %(tick)s::timestamptz)
"""

SCHEDULES = """
SELECT name, spec, tz, queue, task, last_tick FROM {s}.schedules
WHERE namespace = %(ns)s ORDER BY name
"""

REMOVE_SCHEDULE = "DELETE FROM {s}.schedules WHERE namespace = %(ns)s AND name = %(name)s"

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
# parents, children, on_parent_failure, limit_key, concurrency, rate,
# rate_per, has_limit, fair]; parents and children are array literals
# (qw_postgres.batches.step_document).
_STEP_INPUT = """
    SELECT v->>0 AS id, v->>1 AS queue, (v->>2)::int4 AS priority,
           (v->>3)::timestamptz AS run_at, (v->>4)::float8 AS delay,
           (v->>5)::int4 AS max_attempts, v->>6 AS dedupe_key, (v->>7)::json AS payload,
           v->>8 AS status, (v->>9)::text[] AS parents, (v->>10)::text[] AS children,
           v->>11 AS on_parent_failure, v->>12 AS limit_key, (v->>13)::int4 AS concurrency,
           (v->>14)::int4 AS rate, (v->>15)::float8 AS rate_per,
           (v->>16)::boolean AS has_limit, (v->>17)::boolean AS fair, ord
    FROM jsonb_array_elements(%(batch)s::jsonb) WITH ORDINALITY AS e(v, ord)
"""

_STEP_INSERT = """
    INSERT INTO {s}.jobs (namespace, id, queue, status, priority, run_at, max_attempts,
                          payload, dedupe_key, created_at, workflow, parents, children,
                          on_parent_failure, failed_parents, pending, limit_key,
                          concurrency, rate, rate_per, has_limit, fair, fair_rank)
    SELECT %(ns)s, i.id, i.queue, i.status, i.priority,
           coalesce(i.run_at, now() + coalesce(i.delay, 0) * interval '1 second'),
           i.max_attempts, i.payload, i.dedupe_key, now(), %(workflow)s, i.parents,
           i.children, i.on_parent_failure, '{}', cardinality(i.parents), i.limit_key,
           i.concurrency, i.rate, i.rate_per, i.has_limit, i.fair, @RANK@
    FROM input i@JOIN@
"""


def _step_insert(fair: bool) -> str:
    if not fair:
        return _STEP_INSERT.replace("@RANK@", "0").replace("@JOIN@", "")
    return _STEP_INSERT.replace("@RANK@", "coalesce(rk.rank, 0)").replace(
        "@JOIN@", " LEFT JOIN ranked rk ON rk.id = i.id"
    )


_STEP_WOKE = """
    SELECT count(pg_notify(%(channel)s, q.queue)) AS n
    FROM (SELECT DISTINCT queue FROM input WHERE status = 'queued') q
"""


# One statement, so one round trip under autocommit: the workflow's row and
# its steps, or (the id exists: ON CONFLICT) nothing. A step id that exists
# fails the statement on jobs_pkey (DuplicateJob); a dedupe key a racing
# producer took, on jobs_dedupe. Fair steps get their ranks in it too.
def _create_workflow(fair: bool) -> str:
    return (
        "WITH input AS ("
        + _STEP_INPUT
        + """), wf AS (
    INSERT INTO {s}.workflows (namespace, id, state, output, created_at, live)
    VALUES (%(ns)s, %(workflow)s, 'running', %(output)s, now(), %(live)s)
    ON CONFLICT (namespace, id) DO NOTHING
    RETURNING id
)"""
        + (_fair_ranks("EXISTS (SELECT 1 FROM wf)") if fair else "")
        + """, ins AS ("""
        + _step_insert(fair)
        + """    WHERE EXISTS (SELECT 1 FROM wf)
    ORDER BY i.ord
), woke AS ("""
        + _STEP_WOKE
        + """    WHERE EXISTS (SELECT 1 FROM wf)
)
SELECT (SELECT count(*) FROM wf), (SELECT n FROM woke)
"""
    )


CREATE_WORKFLOW = _create_workflow(fair=False)
CREATE_WORKFLOW_FAIR = _create_workflow(fair=True)


# add_steps, after LOCK_WORKFLOWS and ADD_STEPS_FENCE: the steps, the leased
# step's new children, and the workflow's live steps.
def _add_steps(fair: bool) -> str:
    return (
        "WITH input AS ("
        + _STEP_INPUT
        + ")"
        + (_fair_ranks("true") if fair else "")
        + ", ins AS ("
        + _step_insert(fair)
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


ADD_STEPS = _add_steps(fair=False)
ADD_STEPS_FAIR = _add_steps(fair=True)

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
    enqueue_unstage: bytes
    enqueue_copy: bytes
    enqueue_staged: bytes
    enqueue_keyed: bytes
    enqueue_fair: bytes
    enqueue_one: bytes
    enqueue_staged_keyed: bytes
    enqueue_staged_fair: bytes
    live_keys: bytes
    claim_one: bytes
    claim_many: bytes
    claim_candidates_one: bytes
    claim_candidates_many: bytes
    claim_apply: bytes
    park_lock: bytes
    park_set: bytes
    park_drop: bytes
    fair_clock: bytes
    renew: bytes
    set_progress: bytes
    results_register: bytes
    results_settled: bytes
    results_unregister: bytes
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
    retry_read: bytes
    retry: bytes
    get: bytes
    get_many: bytes
    list_jobs: bytes
    list_steps: bytes
    list_key_jobs: bytes
    set_limit: bytes
    limits: bytes
    keys: bytes
    key_starts: bytes
    save_schedule: bytes
    advance_schedule: bytes
    schedules: bytes
    remove_schedule: bytes
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
    create_workflow_fair: bytes
    add_steps: bytes
    add_steps_fair: bytes
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
