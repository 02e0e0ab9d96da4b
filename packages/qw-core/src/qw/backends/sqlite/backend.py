"""The ``sqlite`` backend: one local file, many namespaces, many processes.

Semantics are those of :mod:`qw.backends.memory`, made durable: every write
is one ``BEGIN IMMEDIATE`` transaction (see :mod:`._db`), so a claim, a
fenced finish and its outbox event, or a reclaim is atomic and exactly-once
across threads and processes on this machine. Times come from SQLite's
clock. No status is decided here: :mod:`qw.transitions` decides every job
transition and this module applies it whole, by compare-and-set.

Workflow steps are rows of ``qw_jobs`` with a ``workflow``; a step's end is
settled (:func:`qw.transitions.settle` over :class:`_Steps`) and counted
against its workflow in the transaction that ends it.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar, Self

from qw.backends.sqlite import _flow, _rows
from qw.backends.sqlite._db import NOW_SQL, Database
from qw.backends.sqlite._schema import LIVE_STATUSES
from qw.backends.sqlite._url import DEFAULT_POLL_INTERVAL, SqliteOptions, parse_url
from qw.backends.sqlite._wakeup import ALL_QUEUES, ChangeWatch, bump, shared_done, shared_hub
from qw.capabilities import Capabilities
from qw.contract import Finish, Insert, Switches, WorkflowInsert
from qw.errors import DuplicateJob
from qw.limits import fair_rank, key_state
from qw.model import (
    PROGRESS_EVENT,
    TERMINAL,
    Claim,
    Enqueued,
    Event,
    Job,
    JobStatus,
    KeyState,
    Lease,
    Limit,
    ParentFailure,
    PurgeResult,
    Schedule,
    WorkerInfo,
    Workflow,
    WorkflowState,
)
from qw.transitions import (
    Ready,
    Transition,
    plan_cancel_queued,
    plan_enqueue,
    plan_reclaim,
    plan_retry,
    plan_workflow_end,
    repeat_status,
    settle,
    workflow_event,
)
from qw.validation import encode_json, validate_namespace

__all__ = ["SqliteBackend"]

#: Rows per ``IN (...)`` list, well under SQLite's bound-parameter limit.
_CHUNK = 500
#: Rows one purge transaction deletes, so purging never holds the lock long.
PURGE_BATCH = 1000
_TERMINAL = "(" + ", ".join(sorted(f"'{s.value}'" for s in TERMINAL)) + ")"
# The compare-and-set each kind of transition is applied under.
_IF_HELD = "status = 'running' AND token = ? AND attempts = ?"
_IF_EXPIRED = "status = 'running' AND token = ? AND lease_expires_at <= ?"
_IF_QUEUED = "status = 'queued'"
_IF_WAITING = "status = 'waiting'"
_IF_RETRYABLE = "status = ? AND attempts = ?"
#: What a job's status must be for cancel (and cancel_workflow) to apply
#: plan_cancel_queued, by the status it read.
_CANCEL_GUARDS = {JobStatus.QUEUED: _IF_QUEUED, JobStatus.WAITING: _IF_WAITING}
#: A step's lease tokens start with this (a plain job's are lower-case hex),
#: so finish knows that a step ended without reading the row back: a
#: ``RETURNING`` would cost every plain finish half again as much.
STEP_TOKEN_PREFIX = "w"
_JOB_FIELDS = (
    "namespace, id, queue, payload, priority, run_at, max_attempts, status, created_at, dedupe_key"
)
_STEP_FIELDS = ", workflow, on_parent_failure, pending"
# Only a batch with a keyed job names these: the others leave them to their defaults.
_KEY_FIELDS = ", limit_key, concurrency, rate, rate_per, has_limit, fair, fair_rank"
# The waiting children of a parent, counted as having one parent fewer to wait for.
_COUNT_ENDED = (
    "UPDATE qw_jobs SET pending = pending - 1 WHERE seq IN (SELECT j.seq FROM qw_edges e "
    "JOIN qw_jobs j ON j.namespace = e.namespace AND j.id = e.child "
    "WHERE e.namespace = ? AND e.parent = ? AND j.status = 'waiting') "
    "RETURNING seq, id, queue, on_parent_failure, pending"
)


@functools.cache
def _apply_statement(
    guard: str,
    attempts: bool,
    run_at: bool,
    result: bool,
    error: bool,
    finished: bool,
    returning: bool,
    max_attempts: bool = False,
    reopened: bool = False,
) -> str:
    """The UPDATE applying a transition with these fields set, under ``guard``.

    Only the columns a transition changes are SET: SQLite maintains every
    index over a SET column, changed or not, and ``run_at`` is in the claim
    index (a finish that set every column cost half again as much). Only a
    transition ``returning`` the job's queue (to wake it) has a ``RETURNING``,
    which costs an UPDATE here about as much again as the UPDATE.
    """
    sets = ["status = ?"]
    for on, column in (
        (attempts, "attempts"),
        (run_at, "run_at"),
        (result, "result"),
        (error, "error"),
        (finished, "finished_at"),
        (max_attempts, "max_attempts"),
    ):
        if on:
            sets.append(f"{column} = ?")
    if reopened:
        sets.append("started_at = NULL, finished_at = NULL")
    sets.append("finished_by = ?")
    sets.append("worker = NULL, lease_expires_at = NULL, cancel_requested = 0, token = NULL")
    return f"UPDATE qw_jobs SET {', '.join(sets)} WHERE namespace = ? AND id = ? AND {guard}" + (
        " RETURNING queue" if returning else ""
    )


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    items = list(values)
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _apply(
    conn: sqlite3.Connection,
    guard: str,
    t: Transition,
    now: float,
    key: tuple[str, str],
    values: tuple[Any, ...],
    requeued: set[str],
) -> bool:
    """Apply ``t`` and its event to job ``key`` (namespace, id) if ``guard`` holds for ``values``.

    Whether it applied; a job that went back to ``queued`` adds its queue to ``requeued``.
    """
    requeues = t.status is JobStatus.QUEUED
    statement = _apply_statement(
        guard,
        t.attempts is not None,
        t.run_in is not None,
        t.result is not None,
        t.error is not None,
        t.finished,
        requeues,
        t.max_attempts is not None,
        t.reopened,
    )
    params: list[Any] = [t.status.value]
    if t.attempts is not None:
        params.append(t.attempts)
    if t.run_in is not None:
        params.append(now + t.run_in)
    if t.result is not None:
        params.append(t.result)
    if t.error is not None:
        params.append(t.error)
    if t.finished:
        params.append(now)
    if t.max_attempts is not None:
        params.append(t.max_attempts)
    cursor = conn.execute(statement, (*params, t.finished_by, *key, *values))
    if requeues:
        rows = cursor.fetchall()
        if not rows:
            return False
        requeued.add(rows[0][0])
    elif cursor.rowcount != 1:
        return False
    if t.event_type is not None:
        conn.execute(
            "INSERT INTO qw_events (namespace, job_id, type, data, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (*key, t.event_type, "null" if t.event_data is None else t.event_data, now),
        )
    return True


def _refuse_taken_ids(conn: sqlite3.Connection, ns: str, jobs: Sequence[Insert]) -> None:
    for chunk in _chunks(new.id for new in jobs):
        found = conn.execute(
            f"SELECT id FROM qw_jobs WHERE namespace = ? AND id IN ({_marks(len(chunk))})",
            (ns, *chunk),
        ).fetchone()
        if found is not None:
            raise DuplicateJob(f"job id {found[0]!r} already exists")


def _live_keys(conn: sqlite3.Connection, ns: str, jobs: Sequence[Insert]) -> dict[str, str]:
    """The dedupe keys of ``jobs`` that live jobs hold, and the holders' ids."""
    live: dict[str, str] = {}
    keys = {new.dedupe_key for new in jobs if new.dedupe_key is not None}
    for chunk in _chunks(keys):
        live.update(
            conn.execute(
                "SELECT dedupe_key, id FROM qw_jobs WHERE namespace = ? "
                f"AND dedupe_key IN ({_marks(len(chunk))}) AND status IN {LIVE_STATUSES}",
                (ns, *chunk),
            ).fetchall()
        )
    return live


@functools.cache
def _insert_statement(steps: bool, keyed: bool) -> str:
    fields = _JOB_FIELDS + (_STEP_FIELDS if steps else "") + (_KEY_FIELDS if keyed else "")
    return f"INSERT INTO qw_jobs ({fields}) VALUES ({_marks(fields.count(',') + 1)})"


def _insert_jobs(
    conn: sqlite3.Connection, ns: str, now: float, jobs: Sequence[Insert], *, steps: bool
) -> None:
    """Insert the rows of ``jobs`` (checked already), in order; fair jobs get their ranks."""
    keyed = any(new.limit_key is not None for new in jobs)
    ranks = _fair_ranks(conn, ns, jobs) if keyed else None
    rows = []
    for i, new in enumerate(jobs):
        row: tuple[Any, ...] = (
            ns,
            new.id,
            new.queue,
            new.payload,
            new.priority,
            new.run_at.timestamp() if new.run_at else now + (new.delay or 0),
            new.max_attempts,
            new.status.value,
            now,
            new.dedupe_key,
        )
        if steps:
            row += (new.workflow, new.on_parent_failure.value, len(new.parents))
        if ranks is not None:
            row += (new.limit_key, *_rows.limit_values(new.limit), int(new.fair), ranks[i])
        rows.append(row)
    conn.executemany(_insert_statement(steps, keyed), rows)


def _fair_ranks(conn: sqlite3.Connection, ns: str, jobs: Sequence[Insert]) -> list[int]:
    """Each job's fair rank (0 unless it is fair); moves its (queue, key)'s next rank past it."""
    slots = {(new.queue, new.limit_key) for new in jobs if new.fair and new.limit_key is not None}
    if not slots:
        return [0] * len(jobs)
    queues = sorted({queue for queue, _ in slots})
    clocks: dict[str, int] = dict(
        conn.execute(
            f"SELECT queue, clock FROM qw_fair_clocks WHERE namespace = ? "
            f"AND queue IN ({_marks(len(queues))})",
            (ns, *queues),
        ).fetchall()
    )
    nexts: dict[tuple[str, str], int] = {}
    for queue in queues:
        keys = [key for q, key in slots if q == queue]
        for chunk in _chunks(keys):
            for key, rank in conn.execute(
                "SELECT key, next FROM qw_fair_ranks WHERE namespace = ? AND queue = ? "
                f"AND key IN ({_marks(len(chunk))})",
                (ns, queue, *chunk),
            ):
                nexts[queue, key] = rank
    ranks = []
    for new in jobs:
        if not new.fair or new.limit_key is None:
            ranks.append(0)
            continue
        slot = (new.queue, new.limit_key)
        rank = fair_rank(nexts.get(slot, 0), clocks.get(new.queue, 0))
        nexts[slot] = rank + 1
        ranks.append(rank)
    conn.executemany(
        "INSERT INTO qw_fair_ranks (namespace, queue, key, next) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (namespace, queue, key) DO UPDATE SET next = excluded.next",
        [(ns, queue, key, nexts[queue, key]) for queue, key in sorted(slots)],
    )
    return ranks


def _insert_steps(conn: sqlite3.Connection, ns: str, now: float, steps: Sequence[Insert]) -> None:
    """Insert workflow steps and their edges, all or none.

    The parents are steps of the batch or (add_steps) the leased step. Edges
    are written in step order, each step's in the order of its parents.
    """
    _refuse_taken_ids(conn, ns, steps)
    answers, _ = plan_enqueue(steps, _live_keys(conn, ns, steps))
    held = [a.id for a in answers if not a.created]
    if held:
        raise DuplicateJob(f"a live job already holds the dedupe key of step(s) {held}")
    _insert_jobs(conn, ns, now, steps, steps=True)
    conn.executemany(
        "INSERT INTO qw_edges (namespace, parent, child) VALUES (?, ?, ?)",
        [(ns, parent, new.id) for new in steps for parent in new.parents],
    )


def _lists(
    conn: sqlite3.Connection, ns: str, table: str, key: str, value: str, ids: Sequence[str]
) -> dict[str, list[str]]:
    """``value`` of ``table``'s rows, per ``key`` among ``ids``, each list in seq order."""
    lists: dict[str, list[str]] = {}
    for chunk in _chunks(ids):
        rows = conn.execute(
            f"SELECT {key}, {value} FROM {table} WHERE namespace = ? "
            f"AND {key} IN ({_marks(len(chunk))}) ORDER BY seq",
            (ns, *chunk),
        )
        for k, v in rows:
            lists.setdefault(k, []).append(v)
    return lists


def _failed_parents(conn: sqlite3.Connection, ns: str, ids: Sequence[str]) -> dict[str, list[str]]:
    return _lists(conn, ns, "qw_failed_parents", "child", "parent", ids)


def _jobs(conn: sqlite3.Connection, ns: str, rows: Sequence[tuple[Any, ...]]) -> list[Job]:
    """Jobs from rows selected as :data:`_rows.JOB_COLUMNS`; steps get their lists read here."""
    steps = [r[0] for r in rows if r[17] is not None]
    if not steps:
        return [_rows.job(r) for r in rows]
    lists = _rows.StepLists(
        _lists(conn, ns, "qw_edges", "child", "parent", steps),
        _lists(conn, ns, "qw_edges", "parent", "child", steps),
        _failed_parents(conn, ns, steps),
    )
    return [_rows.job(r, lists) for r in rows]


class _Steps:
    """:class:`qw.transitions.StepGraph` over one write transaction of one namespace.

    ``ended`` collects the statuses of the steps that :func:`~qw.transitions.settle`
    ended (cancelled), for the workflow's accounting.
    """

    def __init__(self, conn: sqlite3.Connection, ns: str, now: float, requeued: set[str]) -> None:
        self._conn = conn
        self._ns = ns
        self._now = now
        self._requeued = requeued
        self.ended: list[JobStatus] = []

    def count_ended(self, parent: str, status: JobStatus) -> list[Ready]:
        conn, ns = self._conn, self._ns
        rows = conn.execute(_COUNT_ENDED, (ns, parent)).fetchall()
        if not rows:
            return []
        # RETURNING comes in no promised order; a parent's children were
        # inserted in the order they were added, so seq is that order.
        rows.sort()
        if status is not JobStatus.SUCCEEDED:
            conn.executemany(
                "INSERT INTO qw_failed_parents (namespace, child, parent) VALUES (?, ?, ?)",
                [(ns, r[1], parent) for r in rows],
            )
        ready = [r for r in rows if r[4] == 0]
        failed = _failed_parents(conn, ns, [r[1] for r in ready]) if ready else {}
        return [
            Ready(child, queue, ParentFailure(policy), tuple(failed.get(child, ())))
            for _, child, queue, policy, _ in ready
        ]

    def apply_settled(self, step: Ready, transition: Transition) -> None:
        key = (self._ns, step.id)
        applied = _apply(self._conn, _IF_WAITING, transition, self._now, key, (), self._requeued)
        assert applied, f"step {step.id} was counted as waiting but is not"
        if transition.status.is_terminal:
            self.ended.append(transition.status)


def _steps_ended(
    conn: sqlite3.Connection,
    ns: str,
    now: float,
    workflow: str,
    ended: Sequence[tuple[str, JobStatus]],
    requeued: set[str],
    *,
    settle_children: bool = True,
) -> None:
    """Settle the children of steps of ``workflow`` that just ended, and count every end.

    ``ended`` are the ``(step id, status)`` the caller's transitions ended;
    the steps that settling cancels are counted too. When the workflow's
    last live step ended, its state is :func:`~qw.transitions.plan_workflow_end`
    and its event is written, all in the caller's transaction.
    """
    statuses = [status for _, status in ended]
    if settle_children:
        graph = _Steps(conn, ns, now, requeued)
        settle(graph, ended)
        statuses += graph.ended
    row = conn.execute(
        "UPDATE qw_workflows SET live = live - ?, failed = failed + ?, cancelled = cancelled + ? "
        "WHERE namespace = ? AND id = ? RETURNING live, state, failed, cancelled, cancel_requested",
        (
            len(statuses),
            statuses.count(JobStatus.FAILED),
            statuses.count(JobStatus.CANCELLED),
            ns,
            workflow,
        ),
    ).fetchone()
    assert row is not None, f"step of unknown workflow {workflow}"
    live, state, failed, cancelled, cancel_requested = row
    if live != 0 or state != WorkflowState.RUNNING.value:
        return
    end = plan_workflow_end(
        failed=failed, cancelled=cancelled, cancel_requested=bool(cancel_requested)
    )
    conn.execute(
        "UPDATE qw_workflows SET state = ?, finished_at = ? WHERE namespace = ? AND id = ?",
        (end.value, now, ns, workflow),
    )
    event_type, event_data = workflow_event(workflow, end)
    conn.execute(
        "INSERT INTO qw_events (namespace, job_id, type, data, created_at) VALUES (?, ?, ?, ?, ?)",
        (ns, workflow, event_type, event_data, now),
    )


def _step_ended(
    conn: sqlite3.Connection,
    ns: str,
    now: float,
    job_id: str,
    status: JobStatus,
    requeued: set[str],
) -> None:
    """:func:`_steps_ended` for one step that a finish ended (its workflow read here)."""
    row = conn.execute(
        "SELECT workflow FROM qw_jobs WHERE namespace = ? AND id = ?", (ns, job_id)
    ).fetchone()
    if row is not None and row[0] is not None:
        _steps_ended(conn, ns, now, row[0], [(job_id, status)], requeued)


def _counts(
    conn: sqlite3.Connection, ns: str, workflows: Sequence[str]
) -> dict[str, dict[JobStatus, int]]:
    """Each workflow's steps per status, from the steps themselves."""
    counts: dict[str, dict[JobStatus, int]] = {w: {} for w in workflows}
    for chunk in _chunks(workflows):
        # Without the hint SQLite groups by walking the namespace's whole
        # (namespace, status, id) index, which spares it a sort.
        rows = conn.execute(
            "SELECT workflow, status, count(*) FROM qw_jobs INDEXED BY qw_jobs_workflow "
            "WHERE namespace = ? AND workflow IS NOT NULL "
            f"AND workflow IN ({_marks(len(chunk))}) GROUP BY workflow, status",
            (ns, *chunk),
        ).fetchall()
        for workflow, status, n in rows:
            counts[workflow][JobStatus(status)] = n
    return counts


def _workflow(conn: sqlite3.Connection, ns: str, workflow_id: str) -> Workflow | None:
    row = conn.execute(
        f"SELECT {_rows.WORKFLOW_COLUMNS} FROM qw_workflows WHERE namespace = ? AND id = ?",
        (ns, workflow_id),
    ).fetchone()
    if row is None:
        return None
    return _rows.workflow(row, _counts(conn, ns, [workflow_id])[workflow_id])


#: A lease token marks a step (``w``) and a job with a limit key (``k``), so
#: that finish knows what more to do without reading the row.
_TOKEN = (
    f"CASE WHEN workflow IS NULL THEN '' ELSE '{STEP_TOKEN_PREFIX}' END "
    "|| CASE WHEN limit_key IS NULL THEN '' ELSE 'k' END || lower(hex(randomblob(16)))"
)
_CLAIM_UPDATE = (
    "UPDATE qw_jobs SET status = 'running', attempts = attempts + 1, started_at = ?, "
    f"worker = ?, lease_expires_at = ?, cancel_requested = 0, token = {_TOKEN} "
    # seq alone: the candidates were read from this namespace, and with a
    # namespace test SQLite walks the namespace's (namespace, id) index instead.
    "WHERE seq IN ({marks}) "
    f"RETURNING priority, fair_rank, seq, token, {_rows.JOB_COLUMNS}"
)


def _ended(answers: Sequence[JobStatus | None]) -> bool:
    """Whether a finish may have ended a job (a repeat counts: a spurious wake is harmless)."""
    return any(a is not None and a.is_terminal for a in answers)


def _keyed_token(token: str) -> bool:
    return "k" in token[:2]


class SqliteBackend:
    """A namespace in a SQLite file; see the module docstring and docs/backends/sqlite.md."""

    name: ClassVar[str] = "sqlite"
    capabilities = Capabilities(
        thread_safe=True,
        multi_process=True,
        native_wakeup=False,
        durable=True,
        limits=True,
        schedules=True,
        progress=True,
        result_wakeup=True,
        retry=True,
        transactional=True,
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str,
        busy_timeout_ms: int = 5000,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        synchronous: str = "FULL",
        shared: bool = False,
    ) -> None:
        self._namespace = validate_namespace(namespace)
        options = SqliteOptions(
            path=os.fspath(path),
            busy_timeout_ms=busy_timeout_ms,
            poll_interval=poll_interval,
            synchronous=synchronous,
            shared=shared,
        )
        self._db = Database(options)
        self._hub = shared_hub(self._db.key, self._namespace)
        self._done = shared_done(self._db.key, self._namespace)
        self._watch = ChangeWatch(self._db, self._namespace)

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> Self:
        validate_namespace(namespace)
        options = parse_url(url)
        return cls(
            options.path,
            namespace=namespace,
            busy_timeout_ms=options.busy_timeout_ms,
            poll_interval=options.poll_interval,
            synchronous=options.synchronous,
            shared=options.shared,
        )

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def path(self) -> str:
        """The database file, absolute."""
        return self._db.path

    def __repr__(self) -> str:
        return f"<SqliteBackend {self._db.path} namespace={self._namespace!r}>"

    def close(self) -> None:
        self._watch.close()
        self._db.close()

    def now(self) -> datetime:
        return _rows.ts(self._db.now())

    # -- producing ---------------------------------------------------------

    def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        answers, woken = self._db.write(functools.partial(self._enqueue, jobs))
        self._hub.notify(woken)
        return answers

    def enqueue_in(self, connection: object, jobs: Sequence[Insert]) -> list[Enqueued]:
        # No in-process signal: the app may roll back. Its commit carries the
        # qw_wakeups bump, which every waiter's data_version poll sees.
        answers, _ = self._db.write_in(connection, functools.partial(self._enqueue, jobs))
        return answers

    def _enqueue(
        self, jobs: Sequence[Insert], conn: sqlite3.Connection, now: float
    ) -> tuple[list[Enqueued], set[str]]:
        """The enqueue's writes, in the caller's transaction; the answers and the queues to wake."""
        ns = self._namespace
        _refuse_taken_ids(conn, ns, jobs)
        answers, insert = plan_enqueue(jobs, _live_keys(conn, ns, jobs))
        new_jobs = [jobs[i] for i in insert]
        _insert_jobs(conn, ns, now, new_jobs, steps=False)
        woken = {new.queue for new in new_jobs}
        bump(conn, ns, woken)
        return answers, woken

    def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        created, woken = self._db.write(functools.partial(self._create_workflow, workflow, steps))
        if woken:
            self._hub.notify(woken)
        return created

    def create_workflow_in(
        self, connection: object, workflow: WorkflowInsert, steps: Sequence[Insert]
    ) -> bool:
        # Woken by the commit's qw_wakeups bump, as enqueue_in.
        created, _ = self._db.write_in(
            connection, functools.partial(self._create_workflow, workflow, steps)
        )
        return created

    def _create_workflow(
        self,
        workflow: WorkflowInsert,
        steps: Sequence[Insert],
        conn: sqlite3.Connection,
        now: float,
    ) -> tuple[bool, set[str]]:
        """The workflow's writes, in the caller's transaction; whether created, queues to wake."""
        ns = self._namespace
        exists = conn.execute(
            "SELECT 1 FROM qw_workflows WHERE namespace = ? AND id = ?", (ns, workflow.id)
        ).fetchone()
        if exists is not None:
            return False, set()
        conn.execute(
            "INSERT INTO qw_workflows (namespace, id, created_at, output, live) "
            "VALUES (?, ?, ?, ?, ?)",
            (ns, workflow.id, now, workflow.output, len(steps)),
        )
        _insert_steps(conn, ns, now, steps)
        woken = {s.queue for s in steps if s.status is JobStatus.QUEUED}
        bump(conn, ns, woken)
        return True, woken

    def add_steps(self, lease: Lease, steps: Sequence[Insert]) -> bool | None:
        ns = self._namespace
        woken: set[str] = set()

        def work(conn: sqlite3.Connection, now: float) -> bool | None:
            woken.clear()
            held = conn.execute(
                f"SELECT workflow FROM qw_jobs WHERE namespace = ? AND id = ? AND {_IF_HELD}",
                (ns, lease.job_id, lease.token, lease.attempt),
            ).fetchone()
            if held is None or held[0] is None:
                return None
            workflow = held[0]
            flow = conn.execute(
                "SELECT cancel_requested FROM qw_workflows WHERE namespace = ? AND id = ?",
                (ns, workflow),
            ).fetchone()
            if flow is None or flow[0] or any(s.workflow != workflow for s in steps):
                return None
            exists = conn.execute(
                "SELECT 1 FROM qw_jobs WHERE namespace = ? AND id = ?", (ns, steps[0].id)
            ).fetchone()
            if exists is not None:
                return False
            _insert_steps(conn, ns, now, steps)
            conn.execute(
                "UPDATE qw_workflows SET live = live + ? WHERE namespace = ? AND id = ?",
                (len(steps), ns, workflow),
            )
            woken.update(s.queue for s in steps if s.status is JobStatus.QUEUED)
            bump(conn, ns, woken)
            return True

        added = self._db.write(work)
        if woken:
            self._hub.notify(woken)
        return added

    # -- working -----------------------------------------------------------

    def claim(
        self, queues: Sequence[str], *, worker: str, lease_s: float, limit: int
    ) -> list[Claim]:
        # Arm both wake-up sources before or while reading, so no later signal is lost.
        self._hub.arm(queues)
        ns = self._namespace

        def work(conn: sqlite3.Connection, now: float) -> list[Claim]:
            self._watch.mark(conn, queues)
            switches = self._switches(conn)
            open_queues = [q for q in queues if switches.queue_enabled(q)]
            if not open_queues:
                return []
            expires = now + lease_s

            def take(seqs: list[int]) -> list[tuple[Any, ...]]:
                rows: list[tuple[Any, ...]] = []
                for start in range(0, len(seqs), _CHUNK):
                    chunk = seqs[start : start + _CHUNK]
                    rows += conn.execute(
                        _CLAIM_UPDATE.format(marks=_marks(len(chunk))),
                        (now, worker, expires, *chunk),
                    ).fetchall()
                return rows

            rows = _flow.claim(conn, ns, open_queues, now, limit, take)
            if not rows:
                return []
            # RETURNING comes in no promised order.
            rows.sort(key=lambda r: (r[0], r[1], r[2]))
            lease_end = _rows.ts(expires)
            jobs = _jobs(conn, ns, [r[4:] for r in rows])
            return [Claim(j, Lease(j.id, r[3], lease_end)) for j, r in zip(jobs, rows, strict=True)]

        return self._db.write(work)

    def renew(self, leases: Sequence[Lease], lease_s: float) -> list[Lease | None]:
        ns = self._namespace

        def work(conn: sqlite3.Connection, now: float) -> list[Lease | None]:
            expires = now + lease_s
            answers: list[Lease | None] = []
            for lease in leases:
                row = conn.execute(
                    "UPDATE qw_jobs SET lease_expires_at = ? WHERE namespace = ? AND id = ? "
                    "AND token = ? AND attempts = ? AND status = 'running' "
                    "RETURNING cancel_requested",
                    (expires, ns, lease.job_id, lease.token, lease.attempt),
                ).fetchall()
                answers.append(
                    replace(lease, expires_at=_rows.ts(expires), cancel_requested=bool(row[0][0]))
                    if row
                    else None
                )
            return answers

        return self._db.write(work)

    def finish(self, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        answers, requeued = self._db.write(functools.partial(self._finish, finishes))
        if requeued:
            self._hub.notify(requeued)
        if _ended(answers):
            self._done.notify()
        return answers

    def finish_in(self, connection: object, finishes: Sequence[Finish]) -> list[JobStatus | None]:
        # Nothing is signalled in-process: the app may roll back. Its commit
        # carries the qw_wakeups bump (requeued work), and every waiter polls
        # data_version, which any commit changes (ended jobs).
        answers, _ = self._db.write_in(connection, functools.partial(self._finish, finishes))
        return answers

    def _finish(
        self, finishes: Sequence[Finish], conn: sqlite3.Connection, now: float
    ) -> tuple[list[JobStatus | None], set[str]]:
        """The finishes' writes, steps settled, in the caller's transaction; queues to wake."""
        ns = self._namespace
        requeued: set[str] = set()
        keyed: list[str] = []
        answers: list[JobStatus | None] = []
        for finish in finishes:
            lease, t = finish.lease, finish.transition
            key = (ns, lease.job_id)
            held = (lease.token, lease.attempt)
            if _apply(conn, _IF_HELD, t, now, key, held, requeued):
                answers.append(t.status)
                if _keyed_token(lease.token):
                    keyed.append(lease.job_id)
                if t.status.is_terminal and lease.token.startswith(STEP_TOKEN_PREFIX):
                    _step_ended(conn, ns, now, lease.job_id, t.status, requeued)
                continue
            row = conn.execute(
                "SELECT status, finished_by FROM qw_jobs WHERE namespace = ? AND id = ?", key
            ).fetchone()
            answers.append(None if row is None else repeat_status(t, JobStatus(row[0]), row[1]))
        if keyed:
            # Their keys' slots freed: parked jobs of those keys may go.
            requeued.update(_flow.free_jobs(conn, ns, keyed))
        if requeued:
            bump(conn, ns, requeued)
        return answers, requeued

    def reclaim_expired(self) -> int:
        ns = self._namespace
        requeued: set[str] = set()

        def work(conn: sqlite3.Connection, now: float) -> int:
            requeued.clear()
            freed: list[str] = []
            expired = conn.execute(
                "SELECT id, token, attempts, max_attempts, queue, workflow, limit_key FROM qw_jobs "
                "WHERE namespace = ? AND status = 'running' AND lease_expires_at <= ? "
                "ORDER BY seq",
                (ns, now),
            ).fetchall()
            count = 0
            for job_id, token, attempts, max_attempts, queue, workflow, key in expired:
                t = plan_reclaim(attempts=attempts, max_attempts=max_attempts, queue=queue)
                if not _apply(conn, _IF_EXPIRED, t, now, (ns, job_id), (token, now), requeued):
                    continue
                if key is not None:
                    freed.append(key)
                count += 1
                if workflow is not None and t.status.is_terminal:
                    _steps_ended(conn, ns, now, workflow, [(job_id, t.status)], requeued)
            if freed:
                requeued.update(_flow.free(conn, ns, freed))
            if requeued:
                bump(conn, ns, requeued)
            return count

        count = self._db.write(work)
        if requeued:
            self._hub.notify(requeued)
        if count:
            # Some may have failed for good (out of attempts).
            self._done.notify()
        return count

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self._watch.wait(self._hub, queues, timeout)

    # -- progress and results ------------------------------------------------

    def set_progress(
        self, lease: Lease, fraction: float | None, message: str | None, event_data: str
    ) -> bool:
        ns = self._namespace

        def work(conn: sqlite3.Connection, now: float) -> bool:
            held = conn.execute(
                "UPDATE qw_jobs SET progress_fraction = ?, progress_message = ?, progress_at = ? "
                f"WHERE namespace = ? AND id = ? AND {_IF_HELD}",
                (fraction, message, now, ns, lease.job_id, lease.token, lease.attempt),
            ).rowcount
            if held != 1:
                return False
            conn.execute(
                "INSERT INTO qw_events (namespace, job_id, type, data, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (ns, lease.job_id, PROGRESS_EVENT, event_data, now),
            )
            return True

        return self._db.write(work)

    def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        # Both signals are read before the job, so an end committed after the
        # read moves one of them: in-process ends move the shared generation
        # at once, any commit (another process's, the app's) data_version
        # within a poll interval.
        deadline = time.monotonic() + timeout
        poll = self._db.options.poll_interval
        generation = self._done.generation
        version = self._watch.data_version()
        job = self.get(job_id)
        while job is not None and not job.status.is_terminal:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            seen = generation
            generation = self._done.wait(seen, min(poll, remaining))
            changed = generation != seen
            if not changed:
                latest = self._watch.data_version()
                changed, version = latest != version, latest
            if changed:
                job = self.get(job_id)
        return job

    # -- workers and switches ----------------------------------------------

    def heartbeat(self, worker: WorkerInfo) -> None:
        ns = self._namespace
        started = worker.started_at.timestamp() if worker.started_at is not None else None
        queues = encode_json(list(worker.queues), what="queues")

        def work(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                "INSERT INTO qw_workers (namespace, id, queues, host, pid, concurrency, "
                "started_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (namespace, id) DO UPDATE SET queues = excluded.queues, "
                "host = excluded.host, pid = excluded.pid, concurrency = excluded.concurrency, "
                "last_seen = excluded.last_seen",
                (
                    ns,
                    worker.id,
                    queues,
                    worker.host,
                    worker.pid,
                    worker.concurrency,
                    started if started is not None else now,
                    now,
                ),
            )

        self._db.write(work)

    def remove_worker(self, worker_id: str) -> None:
        ns = self._namespace
        self._db.write(
            lambda conn, _now: conn.execute(
                "DELETE FROM qw_workers WHERE namespace = ? AND id = ?", (ns, worker_id)
            )
        )

    def workers(self) -> list[WorkerInfo]:
        rows = self._db.read(
            lambda conn: conn.execute(
                f"SELECT {_rows.WORKER_COLUMNS} FROM qw_workers WHERE namespace = ? ORDER BY id",
                (self._namespace,),
            ).fetchall()
        )
        return [_rows.worker(r) for r in rows]

    def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        ns = self._namespace

        def work(conn: sqlite3.Connection, _now: float) -> None:
            conn.execute(
                "INSERT INTO qw_switches (namespace, queue, enabled) VALUES (?, ?, ?) "
                "ON CONFLICT (namespace, queue) DO UPDATE SET enabled = excluded.enabled",
                (ns, queue or ALL_QUEUES, int(enabled)),
            )
            if enabled:
                bump(conn, ns, [queue or ALL_QUEUES])

        self._db.write(work)
        if enabled:
            self._hub.notify_all()

    def switches(self) -> Switches:
        return self._db.read(self._switches)

    def _switches(self, conn: sqlite3.Connection) -> Switches:
        rows = conn.execute(
            "SELECT queue, enabled FROM qw_switches WHERE namespace = ?", (self._namespace,)
        ).fetchall()
        queues = {q: bool(on) for q, on in rows if q}
        enabled = next((bool(on) for q, on in rows if not q), True)
        return Switches(enabled, queues)

    # -- inspection and operations -----------------------------------------

    def get(self, job_id: str) -> Job | None:
        ns = self._namespace
        jobs = self._db.read(
            lambda conn: _jobs(
                conn,
                ns,
                conn.execute(
                    f"SELECT {_rows.JOB_COLUMNS} FROM qw_jobs WHERE namespace = ? AND id = ?",
                    (ns, job_id),
                ).fetchall(),
            )
        )
        return jobs[0] if jobs else None

    def counts(self) -> dict[str, dict[JobStatus, int]]:
        rows = self._db.read(
            lambda conn: conn.execute(
                "SELECT queue, status, count(*) FROM qw_jobs WHERE namespace = ? "
                "GROUP BY queue, status",
                (self._namespace,),
            ).fetchall()
        )
        counts: dict[str, dict[JobStatus, int]] = {}
        for queue, status, n in rows:
            counts.setdefault(queue, {})[JobStatus(status)] = n
        return counts

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        workflow: str | None = None,
        key: str | None = None,
    ) -> list[Job]:
        where = ["namespace = ?"]
        params: list[Any] = [self._namespace]
        for clause, value in (
            ("queue = ?", queue),
            ("workflow = ?", workflow),
            ("limit_key = ?", key),
            ("status = ?", status),
            ("id > ?", after),
        ):
            if value is not None:
                where.append(clause)
                params.append(str(value))
        params.append(limit)
        ns = self._namespace
        return self._db.read(
            lambda conn: _jobs(
                conn,
                ns,
                conn.execute(
                    f"SELECT {_rows.JOB_COLUMNS} FROM qw_jobs WHERE {' AND '.join(where)} "
                    "ORDER BY id LIMIT ?",
                    params,
                ).fetchall(),
            )
        )

    def cancel(self, job_id: str) -> JobStatus | None:
        ns = self._namespace
        requeued: set[str] = set()

        def work(conn: sqlite3.Connection, now: float) -> JobStatus | None:
            requeued.clear()
            row = conn.execute(
                "SELECT status, queue, workflow, limit_key FROM qw_jobs "
                "WHERE namespace = ? AND id = ?",
                (ns, job_id),
            ).fetchone()
            if row is None:
                return None
            status, queue, workflow, key = JobStatus(row[0]), row[1], row[2], row[3]
            guard = _CANCEL_GUARDS.get(status)
            if guard is not None:
                t = plan_cancel_queued(queue=queue)
                if _apply(conn, guard, t, now, (ns, job_id), (), requeued):
                    if workflow is not None:
                        # Settling may queue children whose policy is to run anyway.
                        _steps_ended(conn, ns, now, workflow, [(job_id, t.status)], requeued)
                    if key is not None and status is JobStatus.QUEUED:
                        # A job its key's room was kept for is gone: parked ones may go.
                        requeued.update(_flow.free(conn, ns, [key]))
                    if requeued:
                        bump(conn, ns, requeued)
                    return t.status
            elif status is JobStatus.RUNNING:
                conn.execute(
                    "UPDATE qw_jobs SET cancel_requested = 1 WHERE namespace = ? AND id = ?",
                    (ns, job_id),
                )
            return status

        status = self._db.write(work)
        if requeued:
            self._hub.notify(requeued)
        if status is not None and status.is_terminal:
            self._done.notify()
        return status

    def retry(self, job_id: str) -> JobStatus | None:
        ns = self._namespace
        woken: set[str] = set()

        def work(conn: sqlite3.Connection, now: float) -> JobStatus | None:
            woken.clear()
            row = conn.execute(
                "SELECT status, attempts, max_attempts, queue, workflow, dedupe_key FROM qw_jobs "
                "WHERE namespace = ? AND id = ?",
                (ns, job_id),
            ).fetchone()
            if row is None:
                return None
            status, attempts, max_attempts, queue, workflow, key = row
            holder = None
            if key is not None:
                found = conn.execute(
                    "SELECT id FROM qw_jobs WHERE namespace = ? AND dedupe_key = ? "
                    f"AND status IN {LIVE_STATUSES} AND id <> ?",
                    (ns, key, job_id),
                ).fetchone()
                holder = None if found is None else found[0]
            t = plan_retry(
                JobStatus(status),
                attempts,
                max_attempts,
                workflow,
                job_id=job_id,
                queue=queue,
                holder=holder,
            )
            if t is None:
                return JobStatus(status)
            # BEGIN IMMEDIATE holds the write lock since the read: the guard always holds.
            _apply(conn, _IF_RETRYABLE, t, now, (ns, job_id), (status, attempts), woken)
            bump(conn, ns, woken)
            return t.status

        status = self._db.write(work)
        self._hub.notify(woken)
        return status

    # -- the outbox --------------------------------------------------------

    def fetch_events(self, limit: int = 100) -> list[Event]:
        rows = self._db.read(
            lambda conn: conn.execute(
                f"SELECT {_rows.EVENT_COLUMNS} FROM qw_events WHERE namespace = ? AND acked = 0 "
                "ORDER BY cursor LIMIT ?",
                (self._namespace, limit),
            ).fetchall()
        )
        return [_rows.event(r) for r in rows]

    def ack_events(self, cursors: Sequence[int]) -> int:
        ns = self._namespace
        unique = sorted(set(cursors))

        def work(conn: sqlite3.Connection, _now: float) -> int:
            newly = 0
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                newly += conn.execute(
                    "UPDATE qw_events SET acked = 1 WHERE namespace = ? AND acked = 0 "
                    f"AND cursor IN ({_marks(len(chunk))})",
                    (ns, *chunk),
                ).rowcount
            return newly

        return self._db.write(work) if unique else 0

    def purge(self, older_than: float) -> PurgeResult:
        cutoff = self._db.now() - older_than
        # Plain jobs; a workflow's steps go only with their workflow, below.
        jobs = self._purge_batches(
            "DELETE FROM qw_jobs WHERE seq IN (SELECT seq FROM qw_jobs WHERE namespace = ? "
            f"AND finished_at IS NOT NULL AND finished_at < ? AND status IN {_TERMINAL} "
            "AND workflow IS NULL LIMIT ?)",
            cutoff,
        )
        jobs += self._purge_workflows(cutoff)
        events = self._purge_batches(
            "DELETE FROM qw_events WHERE cursor IN (SELECT cursor FROM qw_events "
            "WHERE namespace = ? AND acked = 1 AND created_at < ? LIMIT ?)",
            cutoff,
        )
        return PurgeResult(jobs=jobs, events=events)

    def _purge_workflows(self, cutoff: float) -> int:
        """Delete the workflows that ended before ``cutoff`` with all their steps; count the steps.

        Each transaction deletes at most PURGE_BATCH steps, and a workflow's
        record goes in the transaction that deletes its last steps.
        """
        ns = self._namespace

        def work(conn: sqlite3.Connection, _now: float) -> tuple[int, bool]:
            ended = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM qw_workflows WHERE namespace = ? AND finished_at IS NOT NULL "
                    "AND finished_at < ? ORDER BY finished_at, id LIMIT ?",
                    (ns, cutoff, _CHUNK),
                )
            ]
            if not ended:
                return 0, True
            marks = _marks(len(ended))
            steps = [
                r[0]
                for r in conn.execute(
                    "DELETE FROM qw_jobs WHERE seq IN (SELECT seq FROM qw_jobs WHERE namespace = ? "
                    f"AND workflow IN ({marks}) LIMIT ?) RETURNING id",
                    (ns, *ended, PURGE_BATCH),
                )
            ]
            # Every edge and failed parent is a step's (as child): they go with it.
            for chunk in _chunks(steps):
                for table in ("qw_edges", "qw_failed_parents"):
                    conn.execute(
                        f"DELETE FROM {table} WHERE namespace = ? "
                        f"AND child IN ({_marks(len(chunk))})",
                        (ns, *chunk),
                    )
            deleted = len(steps)
            if deleted == PURGE_BATCH:
                return deleted, False
            conn.execute(
                f"DELETE FROM qw_workflows WHERE namespace = ? AND id IN ({marks})", (ns, *ended)
            )
            return deleted, len(ended) < _CHUNK

        total = 0
        while True:
            deleted, done = self._db.write(work)
            total += deleted
            if done:
                return total

    def _purge_batches(self, statement: str, cutoff: float) -> int:
        """Run a bounded DELETE until it deletes less than a batch; each batch commits."""
        params = (self._namespace, cutoff, PURGE_BATCH)
        total = 0
        while True:
            deleted = self._db.write(lambda conn, _now: conn.execute(statement, params).rowcount)
            total += deleted
            if deleted < PURGE_BATCH:
                return total

    # -- workflows ---------------------------------------------------------

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        ns = self._namespace
        return self._db.read(lambda conn: _workflow(conn, ns, workflow_id))

    def list_workflows(
        self, *, state: WorkflowState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Workflow]:
        ns = self._namespace
        where = ["namespace = ?"]
        params: list[Any] = [ns]
        for clause, value in (("state = ?", state), ("id > ?", after)):
            if value is not None:
                where.append(clause)
                params.append(str(value))
        params.append(limit)

        def work(conn: sqlite3.Connection) -> list[Workflow]:
            rows = conn.execute(
                f"SELECT {_rows.WORKFLOW_COLUMNS} FROM qw_workflows WHERE {' AND '.join(where)} "
                "ORDER BY id LIMIT ?",
                params,
            ).fetchall()
            counts = _counts(conn, ns, [r[0] for r in rows])
            return [_rows.workflow(r, counts[r[0]]) for r in rows]

        return self._db.read(work)

    def cancel_workflow(self, workflow_id: str) -> Workflow | None:
        ns = self._namespace
        woken: set[str] = set()

        def work(conn: sqlite3.Connection, now: float) -> Workflow | None:
            row = conn.execute(
                "UPDATE qw_workflows SET cancel_requested = 1 "
                "WHERE namespace = ? AND id = ? AND state = 'running' RETURNING id",
                (ns, workflow_id),
            ).fetchone()
            if row is not None:
                steps = conn.execute(
                    "SELECT id, queue, status, limit_key FROM qw_jobs WHERE namespace = ? "
                    "AND workflow = ? AND status IN ('waiting', 'queued') ORDER BY seq",
                    (ns, workflow_id),
                ).fetchall()
                ended: list[tuple[str, JobStatus]] = []
                freed: set[str] = set()
                for step_id, queue, status, key in steps:
                    t = plan_cancel_queued(queue=queue)
                    guard = _CANCEL_GUARDS[JobStatus(status)]
                    if _apply(conn, guard, t, now, (ns, step_id), (), set()):
                        ended.append((step_id, t.status))
                        if key is not None and status == JobStatus.QUEUED.value:
                            freed.add(key)
                # Jobs their keys' room was kept for are gone: parked ones may go.
                woken.clear()
                woken.update(_flow.free(conn, ns, freed))
                if woken:
                    bump(conn, ns, woken)
                conn.execute(
                    "UPDATE qw_jobs SET cancel_requested = 1 WHERE namespace = ? AND workflow = ? "
                    "AND status = 'running'",
                    (ns, workflow_id),
                )
                if ended:
                    # Every waiting step was cancelled here: nothing is left to settle.
                    _steps_ended(conn, ns, now, workflow_id, ended, set(), settle_children=False)
            return _workflow(conn, ns, workflow_id)

        flow = self._db.write(work)
        if woken:
            self._hub.notify(woken)
        if flow is not None:
            self._done.notify()
        return flow

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        ns = self._namespace

        def work(conn: sqlite3.Connection) -> dict[str, Job]:
            rows: list[tuple[Any, ...]] = []
            for chunk in _chunks(dict.fromkeys(job_ids)):
                rows += conn.execute(
                    f"SELECT {_rows.JOB_COLUMNS} FROM qw_jobs WHERE namespace = ? "
                    f"AND id IN ({_marks(len(chunk))})",
                    (ns, *chunk),
                ).fetchall()
            return {job.id: job for job in _jobs(conn, ns, rows)}

        jobs = self._db.read(work) if job_ids else {}
        return [jobs.get(job_id) for job_id in job_ids]

    # -- limits ------------------------------------------------------------

    def set_limit(self, key: str, limit: Limit | None) -> None:
        ns = self._namespace

        def work(conn: sqlite3.Connection, _now: float) -> None:
            # The parked jobs were held to the limit that changes: they all come back.
            _flow.unpark(conn, ns, key)
            if limit is None:
                conn.execute("DELETE FROM qw_limits WHERE namespace = ? AND key = ?", (ns, key))
                bump(conn, ns, [ALL_QUEUES])
                return
            conn.execute(
                "INSERT INTO qw_limits (namespace, key, concurrency, rate, rate_per) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, key) DO UPDATE SET "
                "concurrency = excluded.concurrency, rate = excluded.rate, "
                "rate_per = excluded.rate_per",
                (ns, key, limit.concurrency, limit.rate, limit.per),
            )
            # A raised limit may let held-back jobs go: waiters claim again.
            bump(conn, ns, [ALL_QUEUES])

        self._db.write(work)
        self._hub.notify_all()

    def limits(self) -> dict[str, Limit]:
        rows = self._db.read(
            lambda conn: conn.execute(
                "SELECT key, concurrency, rate, rate_per FROM qw_limits WHERE namespace = ? "
                "ORDER BY key",
                (self._namespace,),
            ).fetchall()
        )
        return {key: Limit(c, rate, per) for key, c, rate, per in rows}

    def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        ns = self._namespace
        since = "" if after is None else "AND limit_key > ? "
        params: tuple[Any, ...] = (ns,) if after is None else (ns, after)

        def work(conn: sqlite3.Connection) -> list[KeyState]:
            now = float(conn.execute(f"SELECT {NOW_SQL}").fetchone()[0])
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT limit_key FROM qw_jobs WHERE namespace = ? AND limit_key IS NOT NULL "
                    f"{since}AND status IN ('queued', 'running') "
                    "UNION SELECT key FROM qw_limits WHERE namespace = ? "
                    f"{since.replace('limit_key', 'key')}ORDER BY 1 LIMIT ?",
                    (*params, *params, limit),
                )
            ]
            counts: dict[tuple[str, str], int] = {}
            own: dict[str, Limit | None] = {}
            keys = _flow.Keys(conn, ns, now)
            keys.load(names)
            marks = _marks(len(names))
            for key, status, n in conn.execute(
                "SELECT limit_key, status, count(*) FROM qw_jobs WHERE namespace = ? "
                f"AND limit_key IN ({marks}) AND status IN ('queued', 'running') "
                "GROUP BY limit_key, status",
                (ns, *names),
            ):
                counts[key, status] = n
            # The limit of the oldest live job that declares one (min() picks its row).
            for key, _, c, rate, per in conn.execute(
                "SELECT limit_key, min(seq), concurrency, rate, rate_per FROM qw_jobs "
                f"WHERE namespace = ? AND limit_key IN ({marks}) "
                "AND status IN ('queued', 'running') AND has_limit = 1 GROUP BY limit_key",
                (ns, *names),
            ):
                own[key] = Limit(c, rate, per)
            when = _rows.ts(now)
            return [
                key_state(
                    key,
                    queued=counts.get((key, "queued"), 0),
                    running=counts.get((key, "running"), 0),
                    own=own.get(key),
                    overrides=keys.overrides,
                    starts=keys.starts.get(key, ()),
                    now=when,
                )
                for key in names
            ]

        return self._db.read(work)

    # -- schedules ---------------------------------------------------------

    def save_schedule(self, schedule: Schedule) -> None:
        s = schedule
        self._db.write(
            lambda conn, _now: conn.execute(
                "INSERT INTO qw_schedules (namespace, name, spec, tz, queue, task) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, name) DO UPDATE SET "
                "spec = excluded.spec, tz = excluded.tz, queue = excluded.queue, "
                "task = excluded.task",
                (self._namespace, s.name, s.spec, s.tz, s.queue, s.task),
            )
        )

    def advance_schedule(self, name: str, tick: datetime) -> bool:
        at = _rows.tick(tick)
        moved: int = self._db.write(
            lambda conn, _now: (
                conn.execute(
                    "UPDATE qw_schedules SET last_tick = ? WHERE namespace = ? AND name = ? "
                    "AND (last_tick IS NULL OR last_tick < ?)",
                    (at, self._namespace, name, at),
                ).rowcount
            )
        )
        return moved == 1

    def schedules(self) -> list[Schedule]:
        rows = self._db.read(
            lambda conn: conn.execute(
                f"SELECT {_rows.SCHEDULE_COLUMNS} FROM qw_schedules WHERE namespace = ? "
                "ORDER BY name",
                (self._namespace,),
            ).fetchall()
        )
        return [_rows.schedule(r) for r in rows]

    def remove_schedule(self, name: str) -> bool:
        removed: int = self._db.write(
            lambda conn, _now: (
                conn.execute(
                    "DELETE FROM qw_schedules WHERE namespace = ? AND name = ?",
                    (self._namespace, name),
                ).rowcount
            )
        )
        return removed == 1
