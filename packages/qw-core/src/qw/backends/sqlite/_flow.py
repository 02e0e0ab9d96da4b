"""Flow control inside one claim's write transaction: limit keys, fair clocks, parking.

A claim reads due queued jobs in claim order ``(priority, fair_rank, seq)``,
a chunk at a time, and :func:`qw.limits.plan_claim` chooses among each chunk
given what :class:`Keys` read of their keys in the same transaction: the
running count, the recent starts and the operators' limit. A job held back
is passed over, so a throttled key never stops the jobs behind it. Nothing
here re-decides what :mod:`qw.limits` decides.

**Parking** keeps a long throttled backlog from being read by every claim.
When a claim holds a job back, its key is full for the job's limit (and
stays full until a job of the key leaves ``running``, or a rate window
reopens): the job is *parked*, flagged out of the claim index, with the
other jobs of its key and queue (its group) that claims held back. A ``qw_parked`` row says
when to look again: ``wake`` is set to 0 by the write in which a job of the
key leaves ``running`` or a queued one is cancelled, to the store time at
which a rate window may reopen, or NULL (nothing but those writes; a pause).
A claim first looks again at the due rows of its queues and brings back
the first ``room`` parked jobs of the group in claim order, ``room`` being
what the key's limit leaves now. The first ``room`` jobs of the whole group
in claim order, which are all :func:`~qw.limits.plan_claim` may take of it,
are then visible: parking changes what a claim reads, never what it returns.
:meth:`SqliteBackend.set_limit` brings a key's jobs back outright.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from qw.backends.sqlite import _rows
from qw.limits import Candidate, effective_limit, plan_claim, rate_window_start
from qw.model import Limit

__all__ = ["SCAN_BUDGET", "Keys", "claim", "free", "free_jobs", "unpark"]

#: Candidates a claim reads past held-back ones once it has taken a job: it
#: returns fewer than asked rather than read on without bound. With nothing
#: taken yet it reads on until it takes one or runs out.
SCAN_BUDGET = 5000
#: The most candidates one read takes (the first reads ``limit``).
SCAN_CHUNK = 1000
#: Values per ``IN (...)`` list, well under SQLite's bound-parameter limit.
_IN_CHUNK = 500
#: Up to this room, a group's jobs come back in rounds shared by every group
#: (one statement a round); a larger room takes a statement of its own.
_ROUNDS = 4

_CANDIDATES = (
    "SELECT seq, priority, fair_rank, queue, limit_key, concurrency, rate, rate_per, has_limit, "
    "fair FROM qw_jobs WHERE namespace = ? AND status = 'queued' AND parked = 0 "
    "AND queue IN ({marks}) AND run_at <= ? {after}ORDER BY priority, fair_rank, seq LIMIT ?"
)
_AFTER = "AND (priority, fair_rank, seq) > (?, ?, ?) "
# A candidate's columns.
_SEQ, _PRIORITY, _RANK, _QUEUE, _KEY, _FAIR = 0, 1, 2, 3, 4, 9
# A (queue, key)'s queued jobs.
_GROUP = "namespace = ? AND limit_key = ? AND queue = ? AND status = 'queued'"
_FORGET = "DELETE FROM qw_parked WHERE namespace = ? AND key = ? AND queue = ?"

Row = tuple[Any, ...]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _own(row: Row) -> Limit | None:
    return _rows.limit(*row[5:9])


def claim(
    conn: sqlite3.Connection,
    ns: str,
    queues: Sequence[str],
    now: float,
    limit: int,
    take: Callable[[list[int]], list[Row]],
) -> list[Row]:
    """Choose a claim's jobs in claim order and ``take`` them (by seq); what ``take`` returned."""
    keys = Keys(conn, ns, now)
    keys.wake(queues)
    taken: list[Row] = []
    chosen: list[Row] = []
    size, scanned = limit, 0
    after: tuple[Any, ...] = ()
    while True:
        rows = conn.execute(
            _CANDIDATES.format(marks=_marks(len(queues)), after=_AFTER if after else ""),
            (ns, *queues, now, *after, size),
        ).fetchall()
        picks, held = keys.plan(rows, limit - len(chosen))
        if picks:
            taken += take([r[_SEQ] for r in picks])
            chosen += picks
        if held:
            keys.park(held)
        scanned += len(rows)
        if len(chosen) >= limit or len(rows) < size or (chosen and scanned >= SCAN_BUDGET):
            break
        last = rows[-1]
        after = (last[_PRIORITY], last[_RANK], last[_SEQ])
        size = min(size * 4, SCAN_CHUNK)
    keys.started(chosen)
    return taken


def free(conn: sqlite3.Connection, ns: str, keys: Iterable[str]) -> set[str]:
    """Mark the parked groups of ``keys`` to be looked at again; the queues they wait in.

    Called in the write in which a job of each key left ``running`` or a
    queued one was cancelled: the key may have room. The queues are to wake.
    """
    queues: set[str] = set()
    unique = sorted(set(keys))
    for start in range(0, len(unique), _IN_CHUNK):
        chunk = unique[start : start + _IN_CHUNK]
        queues.update(
            q
            for (q,) in conn.execute(
                "UPDATE qw_parked SET wake = 0 WHERE namespace = ? "
                f"AND key IN ({_marks(len(chunk))}) RETURNING queue",
                (ns, *chunk),
            )
        )
    return queues


def free_jobs(conn: sqlite3.Connection, ns: str, job_ids: Sequence[str]) -> set[str]:
    """:func:`free` for the keys of these jobs, read in the same statement.

    A finish need not read a job's key back: with nothing parked in the
    namespace this reads one entry of ``qw_parked``'s index.
    """
    queues: set[str] = set()
    if (
        conn.execute("SELECT 1 FROM qw_parked WHERE namespace = ? LIMIT 1", (ns,)).fetchone()
        is None
    ):
        return queues
    for start in range(0, len(job_ids), _IN_CHUNK):
        chunk = job_ids[start : start + _IN_CHUNK]
        queues.update(
            q
            for (q,) in conn.execute(
                "UPDATE qw_parked SET wake = 0 WHERE namespace = ? AND key IN "
                "(SELECT limit_key FROM qw_jobs WHERE namespace = ? "
                f"AND id IN ({_marks(len(chunk))})) RETURNING queue",
                (ns, ns, *chunk),
            )
        )
    return queues


def unpark(conn: sqlite3.Connection, ns: str, key: str) -> None:
    """Bring every parked job of ``key`` back (its operators' limit changed)."""
    conn.execute(
        "UPDATE qw_jobs SET parked = 0 WHERE namespace = ? AND limit_key = ? "
        "AND status = 'queued' AND parked = 1",
        (ns, key),
    )
    conn.execute("DELETE FROM qw_parked WHERE namespace = ? AND key = ?", (ns, key))


class Keys:
    """The limit keys one claim meets, read in its transaction.

    ``running`` and ``starts`` count what the claim took so far, so that a
    chunk is planned after the ones taken before it (as one
    :func:`~qw.limits.plan_claim` over every chunk would count them: any
    job taken counts against a rate too). ``_recorded`` holds the starts as
    they will be stored (only jobs held to a rate leave one): whether a key
    is full once the claim commits, which is what parking goes by.
    """

    def __init__(self, conn: sqlite3.Connection, ns: str, now: float) -> None:
        self._conn = conn
        self._ns = ns
        self._now = now
        self._when = _rows.ts(now)
        self.running: dict[str, int] = {}
        self.starts: dict[str, list[datetime]] = {}
        self.overrides: dict[str, Limit] = {}
        self._recorded: dict[str, list[datetime]] = {}
        # The groups this claim parked, and the limits they were parked under.
        self._parked: dict[tuple[str, str], list[Limit]] = {}
        self._known: set[str] = set()

    def load(self, keys: Iterable[str]) -> None:
        """Read the running count, starts and operators' limit of the keys not read yet."""
        conn, ns = self._conn, self._ns
        new = sorted(set(keys) - self._known)
        for start in range(0, len(new), _IN_CHUNK):
            chunk = new[start : start + _IN_CHUNK]
            marks = _marks(len(chunk))
            self.running.update(
                conn.execute(
                    "SELECT limit_key, count(*) FROM qw_jobs WHERE namespace = ? "
                    f"AND limit_key IN ({marks}) AND status = 'running' GROUP BY limit_key",
                    (ns, *chunk),
                ).fetchall()
            )
            for key, c, rate, per in conn.execute(
                "SELECT key, concurrency, rate, rate_per FROM qw_limits WHERE namespace = ? "
                f"AND key IN ({marks})",
                (ns, *chunk),
            ):
                self.overrides[key] = Limit(c, rate, per)
            for key, at in conn.execute(
                f"SELECT key, at FROM qw_starts WHERE namespace = ? AND key IN ({marks})",
                (ns, *chunk),
            ):
                self.starts.setdefault(key, []).append(_rows.ts(at))
                self._recorded.setdefault(key, []).append(_rows.ts(at))
        self._known.update(new)

    def plan(self, rows: Sequence[Row], wanted: int) -> tuple[list[Row], list[Row]]:
        """The candidates to take (at most ``wanted``), and those held back before the last one."""
        keyed = {r[_KEY] for r in rows if r[_KEY] is not None}
        if not keyed:
            return list(rows[:wanted]), []
        self.load(keyed)
        picks = plan_claim(
            [Candidate(r[_KEY], _own(r)) for r in rows],
            running=self.running,
            starts=self.starts,
            overrides=self.overrides,
            now=self._when,
            limit=wanted,
        )
        for i in picks:
            if (key := rows[i][_KEY]) is not None:
                self.running[key] = self.running.get(key, 0) + 1
                self.starts.setdefault(key, []).append(self._when)
                lim = effective_limit(key, _own(rows[i]), self.overrides)
                if lim is not None and lim.per is not None:
                    self._recorded.setdefault(key, []).append(self._when)
        # plan_claim stops at the wanted-th pick: the candidates after it were not weighed.
        seen = picks[-1] + 1 if len(picks) >= wanted else len(rows)
        picked = set(picks)
        held = [rows[i] for i in range(seen) if i not in picked]
        return [rows[i] for i in picks], held

    def park(self, held: Sequence[Row]) -> None:
        """Park the jobs held back, with this claim's picks already ``running``.

        A job held back only because this claim took jobs of its key that
        record no start (see the class) is left as it is: its key has room
        once the claim commits.
        """
        conn, ns = self._conn, self._ns
        groups: dict[tuple[str, str], dict[tuple[Any, ...], Limit]] = {}
        seqs: list[int] = []
        for r in held:
            key = r[_KEY]
            lim = effective_limit(key, _own(r), self.overrides)
            assert lim is not None, "only a job with a limit is held back"
            if self._room(key, lim) > 0:
                continue
            kind = ("override", None, None, None) if key in self.overrides else ("own", *r[5:8])
            groups.setdefault((r[_QUEUE], key), {})[kind] = lim
            seqs.append(r[_SEQ])
        for start in range(0, len(seqs), _IN_CHUNK):
            chunk = seqs[start : start + _IN_CHUNK]
            conn.execute(
                f"UPDATE qw_jobs SET parked = 1 WHERE seq IN ({_marks(len(chunk))})", chunk
            )
        upserts = []
        for (queue, key), kinds in groups.items():
            known = [w for lim in kinds.values() if (w := self._wake_at(key, lim)) is not None]
            kind = next(iter(kinds)) if len(kinds) == 1 else ("mixed", None, None, None)
            self._parked.setdefault((queue, key), []).extend(kinds.values())
            upserts.append((ns, queue, key, *kind, min(known, default=None)))
        conn.executemany(
            "INSERT INTO qw_parked (namespace, queue, key, kind, concurrency, rate, rate_per, "
            "wake) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, queue, key) "
            "DO UPDATE SET kind = CASE WHEN kind = excluded.kind "
            "AND concurrency IS excluded.concurrency AND rate IS excluded.rate "
            "AND rate_per IS excluded.rate_per THEN kind ELSE 'mixed' END, "
            # The earlier wake; NULL (never by itself) only if both are.
            "wake = coalesce(min(wake, excluded.wake), wake, excluded.wake)",
            upserts,
        )

    def wake(self, queues: Sequence[str]) -> None:
        """Look again at the parked groups of ``queues`` that are due: bring back what may go.

        The groups are handled together, a few statements for all of them:
        a claim after many finishes has as many groups to look at.
        """
        conn, ns = self._conn, self._ns
        rows = conn.execute(
            "SELECT queue, key, kind, concurrency, rate, rate_per FROM qw_parked "
            f"WHERE namespace = ? AND queue IN ({_marks(len(queues))}) AND wake <= ?",
            (ns, *queues, self._now),
        ).fetchall()
        if not rows:
            return
        self.load(r[1] for r in rows)
        looked: list[tuple[str, str, Limit]] = []
        rooms: dict[int, list[tuple[str, str]]] = {}
        for queue, key, kind, *own in rows:
            override = self.overrides.get(key)
            lim = {"own": Limit(*own), "override": override}.get(kind)
            room = math.inf if lim is None else self._room(key, lim)
            if lim is None or room == math.inf or (kind == "override") != (override is not None):
                # Several limits, or the operators' changed: every job comes back.
                group = (ns, key, queue)
                conn.execute(f"UPDATE qw_jobs SET parked = 0 WHERE {_GROUP} AND parked = 1", group)
                conn.execute(_FORGET, group)
                continue
            looked.append((queue, key, lim))
            if room > _ROUNDS:
                conn.execute(
                    "UPDATE qw_jobs SET parked = 0 WHERE seq IN (SELECT seq FROM qw_jobs "
                    f"INDEXED BY qw_jobs_parked WHERE {_GROUP} AND parked = 1 "
                    "ORDER BY priority, fair_rank, seq LIMIT ?)",
                    (ns, key, queue, room),
                )
            elif room > 0:
                rooms.setdefault(int(room), []).append((key, queue))
        # The first ``room`` of each group in claim order come back, one per
        # round: round r brings back the first parked job of each group with
        # room for r. (Jobs of a group still visible need not be parked
        # first: the group's first ``room`` lie among these and those.)
        for r in range(1, _ROUNDS + 1):
            groups = [g for room, gs in rooms.items() if room >= r for g in gs]
            if not groups:
                break
            for start in range(0, len(groups), _IN_CHUNK // 2):
                self._first_back(groups[start : start + _IN_CHUNK // 2])
        keep = self._with_parked([(key, queue) for queue, key, _ in looked])
        conn.executemany(
            "UPDATE qw_parked SET wake = ? WHERE namespace = ? AND key = ? AND queue = ?",
            [(self._wake_at(k, lim), ns, k, q) for q, k, lim in looked if (k, q) in keep],
        )
        conn.executemany(_FORGET, [(ns, k, q) for q, k, _ in looked if (k, q) not in keep])

    def _first_back(self, groups: Sequence[tuple[str, str]]) -> None:
        """Bring back the first parked job, in claim order, of each (key, queue) of ``groups``."""
        self._conn.execute(
            "UPDATE qw_jobs SET parked = 0 WHERE seq IN (SELECT (SELECT j.seq FROM qw_jobs j "
            "INDEXED BY qw_jobs_parked WHERE j.namespace = ? AND j.limit_key = g.column1 "
            "AND j.queue = g.column2 AND j.status = 'queued' AND j.parked = 1 "
            "ORDER BY j.priority, j.fair_rank, j.seq LIMIT 1) "
            f"FROM (VALUES {', '.join(['(?, ?)'] * len(groups))}) AS g)",
            (self._ns, *(v for g in groups for v in g)),
        )

    def _with_parked(self, groups: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (key, queue) of ``groups`` that still have parked jobs."""
        found: set[tuple[str, str]] = set()
        for start in range(0, len(groups), _IN_CHUNK // 2):
            chunk = groups[start : start + _IN_CHUNK // 2]
            found.update(
                self._conn.execute(
                    "SELECT g.column1, g.column2 FROM "
                    f"(VALUES {', '.join(['(?, ?)'] * len(chunk))}) AS g WHERE EXISTS "
                    "(SELECT 1 FROM qw_jobs j INDEXED BY qw_jobs_parked WHERE j.namespace = ? "
                    "AND j.limit_key = g.column1 AND j.queue = g.column2 "
                    "AND j.status = 'queued' AND j.parked = 1)",
                    (*(v for g in chunk for v in g), self._ns),
                ).fetchall()
            )
        return found

    def _room(self, key: str, lim: Limit) -> float:
        """How many more jobs of ``key`` its limit lets start once the claim commits (inf: any)."""
        room = math.inf
        if lim.concurrency is not None:
            room = lim.concurrency - self.running.get(key, 0)
        if lim.rate is not None and lim.per is not None:
            since = rate_window_start(self._when, lim.per)
            inside = sum(1 for t in self._recorded.get(key, ()) if t > since)
            room = min(room, lim.rate - inside)
        return room

    def _wake_at(self, key: str, lim: Limit) -> float | None:
        """The earliest store time at which ``key`` may have room under ``lim`` with no job leaving.

        None if only a job leaving ``running`` can give it room. Starts added
        later leave the window later, so the oldest start inside it now
        gives the time.
        """
        if lim.concurrency is not None and self.running.get(key, 0) >= lim.concurrency:
            return None
        if lim.rate is None or lim.per is None:
            return None
        since = rate_window_start(self._when, lim.per)
        inside = [t for t in self._recorded.get(key, ()) if t > since]
        return (min(inside).timestamp() if inside else self._now) + lim.per

    def started(self, chosen: Sequence[Row]) -> None:
        """Record the starts of the claimed jobs held to a rate; move their queues' fair clocks.

        A key's starts older than its window are deleted as one is added: as
        the memory backend does job by job, the shortest window of the
        key's jobs claimed here counts.
        """
        conn, ns, now = self._conn, self._ns, self._now
        windows: dict[str, float] = {}
        clocks: dict[str, int] = {}
        for c in chosen:
            key = c[_KEY]
            if key is None:
                continue
            lim = effective_limit(key, _own(c), self.overrides)
            if lim is not None and lim.per is not None:
                conn.execute(
                    "INSERT INTO qw_starts (namespace, key, at) VALUES (?, ?, ?)", (ns, key, now)
                )
                windows[key] = min(windows.get(key, math.inf), lim.per)
            if c[_FAIR]:
                clocks[c[_QUEUE]] = max(clocks.get(c[_QUEUE], 0), c[_RANK])
        for key, per in windows.items():
            conn.execute(
                "DELETE FROM qw_starts WHERE namespace = ? AND key = ? AND at <= ?",
                (ns, key, now - per),
            )
            since = rate_window_start(self._when, per)
            self._recorded[key] = [t for t in self._recorded.get(key, ()) if t > since]
        # A group parked before a shorter window pruned its key's starts may
        # have room once this commits: the next claim looks again.
        for (queue, key), parked in self._parked.items():
            if key in windows and any(self._room(key, lim) > 0 for lim in parked):
                conn.execute(
                    "UPDATE qw_parked SET wake = 0 WHERE namespace = ? AND key = ? AND queue = ?",
                    (ns, key, queue),
                )
        for queue, rank in clocks.items():
            clock = conn.execute(
                "INSERT INTO qw_fair_clocks (namespace, queue, clock) VALUES (?, ?, ?) "
                "ON CONFLICT (namespace, queue) DO UPDATE SET clock = max(clock, excluded.clock) "
                "RETURNING clock",
                (ns, queue, rank),
            ).fetchone()[0]
            # A rank row at or below the clock says nothing the clock does not.
            conn.execute(
                "DELETE FROM qw_fair_ranks WHERE namespace = ? AND queue = ? AND next <= ?",
                (ns, queue, clock),
            )
