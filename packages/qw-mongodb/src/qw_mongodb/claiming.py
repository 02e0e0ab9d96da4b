"""One claim under flow control: plan with :func:`qw.limits.plan_claim`, hold gates, claim jobs.

A claim reads the due queued jobs in claim order (``(priority, rank,
seq)``), a page at a time, with the gates and operators' limits of their
keys, and asks :func:`~qw.limits.plan_claim` which to take, going on past
held-back jobs until it has enough. For the keyed jobs chosen it holds
slots in their keys' gates (see :mod:`qw_mongodb.flow`), then claims every
chosen job by compare-and-set on ``queued``, and gives back the slots of
jobs another claimer took first. Jobs without a key need no gate.

It plans a few more jobs than it needs (:data:`SPARE`), tried in claim
order when earlier ones are lost to other claimers, so that racing workers
do not come back empty while due jobs remain; and it plans again, from a
fresh read, up to :data:`CLAIM_ROUNDS` times.

A namespace that never had a keyed job claims as before flow control, by
:func:`claim_unkeyed`: no plan, one write for a claim of one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from qw.limits import Candidate, effective_limit, plan_claim, rate_window_start
from qw.model import Limit
from qw_mongodb import documents as d
from qw_mongodb import flow as f
from qw_mongodb.clock import as_utc

__all__ = ["CLAIM_ROUNDS", "PAGE", "PROBE", "SPARE", "Claimer", "claim_unkeyed"]

log = logging.getLogger("qw.mongodb")

#: Fresh plans a claim makes at most when jobs it chose were taken by others.
CLAIM_ROUNDS = 3
#: Candidates read per page while planning, past the short first read.
PAGE = 200
#: The short first read: this many candidates per job the plan looks for.
PROBE = 2
#: Jobs planned beyond those needed, to try when chosen ones are lost.
SPARE = 4
#: A gate write the server refused for the document's size: the key's gate
#: holds as many slots and starts as 16 MiB allows; it takes no more.
_TOO_LARGE = frozenset({10334, 17419, 17420})


def claim_unkeyed(
    jobs: Collection[Any],
    *,
    queues: Sequence[str],
    now: datetime,
    token: str,
    update: Mapping[str, Any],
    limit: int,
) -> list[Mapping[str, Any]]:
    """Claim up to ``limit`` jobs without a key, in claim order (no gate, no plan).

    For a namespace with no keyed job: the filter's ``limit_key: None``
    leaves out a keyed job that an enqueue racing the first keyed job's
    marker (see the backend's ``claim``) made visible meanwhile; it is
    claimed, under its gate, by the next claim.
    """
    unkeyed = {**d.claim_filter(queues, now), "limit_key": None}
    if limit == 1:
        doc = jobs.find_one_and_update(
            unkeyed, update, sort=d.CLAIM_SORT, return_document=ReturnDocument.AFTER
        )
        return [] if doc is None else [doc]
    candidates: list[str] = []
    stamped = 0
    for _ in range(CLAIM_ROUNDS):
        ids = [
            doc["_id"]
            for doc in jobs.find(unkeyed, {"_id": 1}, sort=d.CLAIM_SORT, limit=limit - stamped)
        ]
        if not ids:
            break
        candidates.extend(ids)
        won = jobs.update_many(
            {**d.stamp_filter(ids, queues, now, token), "limit_key": None}, update
        )
        stamped += won.modified_count
        if won.modified_count == len(ids) or stamped >= limit:
            break
    if not stamped:
        return []
    return list(jobs.find({"_id": {"$in": candidates}, "token": token}, sort=d.CLAIM_SORT))


class Pick(NamedTuple):
    """A candidate the plan took, and the limit it is held to."""

    doc: Mapping[str, Any]
    key: str | None
    limit: Limit | None

    @property
    def id(self) -> str:
        job_id: str = self.doc["_id"]
        return job_id

    @property
    def rated(self) -> bool:
        return self.limit is not None and self.limit.rate is not None and self.limit.per is not None


class Claimer:
    """One call of :meth:`~qw_mongodb.MongoBackend.claim` (see the module docstring)."""

    def __init__(
        self,
        *,
        jobs: Collection[Any],
        gates: Collection[Any],
        limits: Collection[Any],
        queues: Sequence[str],
        now: datetime,
        token: str,
        update: Mapping[str, Any],
    ) -> None:
        self._jobs = jobs
        self._gates_coll = gates
        self._limits = limits
        self._queues = list(queues)
        self._now = now
        self._token = token
        self._update = dict(update)
        self._gates: dict[str, f.Gate] = {}
        self._overrides: dict[str, Limit] = {}
        self._looked_up: set[str] = set()
        self.won: list[Mapping[str, Any]] = []

    def run(self, limit: int) -> list[Mapping[str, Any]]:
        """Claim up to ``limit`` jobs; their documents (after the claim), in claim order."""
        for _ in range(CLAIM_ROUNDS):
            need = limit - len(self.won)
            if need <= 0:
                break
            picks, more = self._plan(need)
            if not picks:
                break
            if not self._take_all(picks, limit) and not more:
                break  # nothing lost, and nothing left to plan
        return sorted(self.won, key=d.claim_order)

    # -- planning --------------------------------------------------------------

    def _plan(self, need: int) -> tuple[list[Pick], bool]:
        """The picks of a fresh plan, and whether candidates were left unread.

        A short read first (``PROBE`` times the goal): it is enough unless
        held-back jobs lie ahead. Then the rest, a page at a time, past
        the jobs the short read saw.
        """
        goal = need + min(need, SPARE)
        self._gates = {}  # each plan reads the gates afresh
        picks: list[Pick] = []
        running: dict[str, int] = {}
        starts: dict[str, list[datetime]] = {}
        query = d.claim_filter(self._queues, self._now)
        probe = list(
            self._jobs.find(query, d.CANDIDATE_PROJECTION, sort=d.CLAIM_SORT, limit=PROBE * goal)
        )
        self._plan_page(probe, picks, goal, running, starts)
        if len(picks) >= goal or len(probe) < PROBE * goal:
            return picks, len(picks) >= goal
        seen = {doc["_id"] for doc in probe}
        page: list[Mapping[str, Any]] = []
        cursor = self._jobs.find(query, d.CANDIDATE_PROJECTION, sort=d.CLAIM_SORT, batch_size=PAGE)
        try:
            for doc in cursor:
                if doc["_id"] in seen:
                    continue  # planned from the short read
                page.append(doc)
                if len(page) == PAGE:
                    self._plan_page(page, picks, goal, running, starts)
                    page = []
                    if len(picks) >= goal:
                        return picks, True
            if page:
                self._plan_page(page, picks, goal, running, starts)
        finally:
            cursor.close()
        return picks, len(picks) >= goal

    def _plan_page(
        self,
        page: Sequence[Mapping[str, Any]],
        picks: list[Pick],
        goal: int,
        running: dict[str, int],
        starts: dict[str, list[datetime]],
    ) -> None:
        """Extend ``picks`` from one page, counting what earlier pages took as taken."""
        keys = {doc["limit_key"] for doc in page if doc.get("limit_key") is not None}
        fresh = sorted(keys - set(self._gates))
        if fresh:
            self._read_keys(fresh)
            for key in fresh:
                gate = self._gates[key]
                running[key] = gate.n
                starts[key] = gate.times()
        candidates = [Candidate(doc.get("limit_key"), d.limit_of(doc.get("limit"))) for doc in page]
        for i in plan_claim(
            candidates,
            running=running,
            starts=starts,
            overrides=self._overrides,
            now=self._now,
            limit=goal - len(picks),
        ):
            key, own = candidates[i]
            picks.append(Pick(page[i], key, effective_limit(key, own, self._overrides)))
            if key is not None:
                # As plan_claim counts its own picks: one more running, one more start.
                running[key] += 1
                starts[key].append(self._now)

    def _read_keys(self, keys: list[str]) -> None:
        found = {
            doc["_id"]: f.gate_of(doc)
            for doc in self._gates_coll.find({"_id": {"$in": keys}}, f.GATE_PROJECTION)
        }
        for key in keys:
            self._gates[key] = found.get(key) or f.Gate()
        unseen = [k for k in keys if k not in self._looked_up]
        if unseen:
            for doc in self._limits.find({"_id": {"$in": unseen}}):
                limit = d.limit_of(doc.get("limit"))
                if limit is not None:
                    self._overrides[doc["_id"]] = limit
            self._looked_up.update(unseen)

    # -- taking ----------------------------------------------------------------

    def _take_all(self, picks: list[Pick], limit: int) -> bool:
        """Try the picks in claim order until ``limit`` are won; whether any was lost."""
        pending = list(picks)
        lost = False
        while pending and len(self.won) < limit:
            n = limit - len(self.won)
            batch, pending = pending[:n], pending[n:]
            won, pending = self._take(batch, pending)
            lost = lost or won < len(batch)
        return lost

    def _take(self, batch: list[Pick], pending: list[Pick]) -> tuple[int, list[Pick]]:
        """Hold gates for the keyed picks of ``batch`` and claim them; how many were won."""
        groups: dict[str, list[Pick]] = {}
        for p in batch:
            if p.key is not None:
                groups.setdefault(p.key, []).append(p)
        held: set[str] = set()
        for key, group in groups.items():
            held.update(p.id for p in self._hold(key, group))
        chosen = [p for p in batch if p.key is None or p.id in held]
        if not chosen:
            return 0, pending
        if len(chosen) == 1:
            ids = [chosen[0].id]
            if chosen[0].key is None:
                # Racing claimers all read the same head: let the store hand this
                # one the first of the following keyless picks still queued.
                for p in pending:
                    if p.key is not None:
                        break
                    ids.append(p.id)
            doc = self._jobs.find_one_and_update(
                d.stamp_filter(ids, self._queues, self._now, self._token),
                self._update,
                sort=d.CLAIM_SORT,
                return_document=ReturnDocument.AFTER,
            )
            docs = [] if doc is None else [doc]
            if doc is not None and doc["_id"] != ids[0]:
                pending = [p for p in pending if p.id != doc["_id"]]
        else:
            ids = [p.id for p in chosen]
            self._jobs.update_many(
                d.stamp_filter(ids, self._queues, self._now, self._token), self._update
            )
            docs = list(self._jobs.find({"_id": {"$in": ids}, "token": self._token}))
        got = {doc["_id"] for doc in docs}
        for p in chosen:
            if p.key is not None and p.id not in got:
                self._give_back(p)
        self.won.extend(docs)
        return len(docs), pending

    def _hold(self, key: str, group: list[Pick]) -> list[Pick]:
        """Hold a slot of ``key``'s gate for each pick of ``group`` it may still take."""
        try:
            if not any(p.rated for p in group):
                return self._hold_counted(key, group)
            return self._hold_rated(key, group)
        except OperationFailure as exc:
            if exc.code not in _TOO_LARGE:
                raise
            log.warning("qw-mongodb: the gate of key %r is full to its size limit: %r", key, exc)
            return []

    def _hold_counted(self, key: str, group: list[Pick]) -> list[Pick]:
        # Every pick fits while n + (its place in the group) < its concurrency.
        bound: int | None = None
        for i, p in enumerate(group):
            if p.limit is not None and p.limit.concurrency is not None:
                most = p.limit.concurrency - 1 - i
                bound = most if bound is None else min(bound, most)
        if bound is not None and bound < 0:
            return []
        held = [f.held_entry(p.id, self._token, self._now) for p in group]
        try:
            self._gates_coll.update_one(*f.gate_take(key, held, at_most=bound), upsert=True)
        except DuplicateKeyError:
            return []  # the gate exists and is full (or was made meanwhile): plan again
        self._gates.setdefault(key, f.Gate()).known = False
        return group

    def _hold_rated(self, key: str, group: list[Pick]) -> list[Pick]:
        gate = self._gates.get(key) or f.Gate()
        if not gate.known:
            return []
        # The plan again, on the gate as read; the write holds only if it is unchanged.
        ok = plan_claim(
            [Candidate(key, p.limit) for p in group],
            running={key: gate.n},
            starts={key: gate.times()},
            overrides={},
            now=self._now,
            limit=len(group),
        )
        chosen = [group[i] for i in ok]
        if not chosen:
            return []
        starts = gate.starts
        windows = [p.limit.per for p in chosen if p.rated and p.limit and p.limit.per]
        if windows:
            since = rate_window_start(self._now, max(windows))
            starts = [s for s in gate.starts if as_utc(s["a"]) > since]
            starts += [
                f.start_entry(d.lease_token(self._token, p.id), self._now)
                for p in chosen
                if p.rated
            ]
        held = [f.held_entry(p.id, self._token, self._now) for p in chosen]
        version = f.new_version()
        if gate.v is None:
            try:
                self._gates_coll.insert_one(f.gate_document(key, held, starts, version))
            except DuplicateKeyError:
                return []  # made meanwhile: plan again
        elif not self._gates_coll.update_one(
            *f.gate_cas(key, gate.v, held, starts, version)
        ).modified_count:
            return []  # changed since read: plan again
        self._gates[key] = f.Gate(version, gate.n + len(chosen), starts)
        return chosen

    def _give_back(self, p: Pick) -> None:
        """Free the slot (and take back the start) of a pick another claimer took first."""
        assert p.key is not None
        start = d.lease_token(self._token, p.id) if p.rated else None
        try:
            self._gates_coll.update_one(*f.gate_give_back(p.key, p.id, self._token, start=start))
            if p.rated:
                # Read the gate again, so that a spare pick of the key can still
                # be decided on it in this plan (the give-back changed its version).
                self._gates[p.key] = f.gate_of(
                    self._gates_coll.find_one({"_id": p.key}, f.GATE_PROJECTION)
                )
        except PyMongoError as exc:
            # The sweep frees it: the job does not run under this token.
            log.warning("qw-mongodb: slot of key %r not given back yet: %r", p.key, exc)
            self._gates.setdefault(p.key, f.Gate()).known = False
