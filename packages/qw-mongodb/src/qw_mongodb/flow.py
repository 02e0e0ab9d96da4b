"""Flow control's documents: a gate per limit key, operators' limits, fair ranks, schedules.

Pure functions, as in :mod:`qw_mongodb.documents`: every filter and update
the backend sends for flow control, unit-tested without a server.

**Gates.** MongoDB changes one document atomically, and a claim of a keyed
job changes two: the key's count and the job. The count lives in one *gate*
document per limit key (collection ``gates``)::

    {_id: key, n, held: [{j, t, a}], starts: [{a, t}], v}

``held`` lists the claims holding the key's slots: job id ``j``, claim
token ``t``, and ``a``, when it was taken (or last found live by the
sweep); ``n`` is its length. ``starts`` holds the key's recent starts
(claim time ``a``, lease token ``t``) of jobs whose limit has a rate. ``v``
is a random version, new at every write that adds to ``n`` or changes
``starts``.
Every keyed claim holds a slot, whatever its limit, so that a limit set
later counts the jobs already running.

A claim takes its slots in the gate first, by one conditional update, then
claims the jobs by their own compare-and-set, and gives back the slots of
the jobs it lost to other claimers (and their starts). Every exit from
``running`` gives back the job's slot after the job's own write. Which
candidates to take is :func:`qw.limits.plan_claim` on the gates as read;
the gate write then makes the decision hold against the gate as it is:

- without a rate: the filter ``n <= bound``, where ``bound`` is the most
  jobs running with which every chosen job still fits its concurrency: exact
  whatever the limits of the key's other jobs, and whatever changed since
  the read (no bound without a concurrency);
- with a rate: the decision is made again on the gate as read, and written
  by compare-and-set on ``v``, the starts pruned to the window.

Slot numbers (one document per slot under a unique index) were the other
design; they are only safe while every claimer agrees on the key's
concurrency, which jobs declaring different limits, or an operator changing
it while jobs run, break.

**Crash windows.** A claimer dying between its gate write and its job
write, or a worker between a job's exit and giving its slot back, leaves a
slot held with no job running under it. ``reclaim_expired`` sweeps holders
older than :data:`GATE_GRACE`: one whose job is running under its token is
kept (its age refreshed); any other is first *voided* on its job (the claim
token pushed into the job's ``voided``, which every claim's compare-and-set
excludes), so that a claimer that was only slow can no longer claim under
it, and then freed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo import IndexModel

from qw.model import Schedule
from qw_mongodb.clock import as_utc, to_millis
from qw_mongodb.documents import Doc, limit_document

__all__ = [
    "GATE_GRACE",
    "GATE_PROJECTION",
    "IDLE_GATES",
    "VOIDED_KEEP",
    "Gate",
]

#: Age after which the sweep looks at a slot's holder (a claimer is between
#: its two writes for far less; a live holder's age is refreshed).
GATE_GRACE = timedelta(seconds=30)
#: Claim tokens voided on one job that it remembers (a claimer slow past the
#: grace more than this many times over, on one job, is not a case).
VOIDED_KEEP = 8
#: What a claim reads of a gate: its count, its starts and its version.
GATE_PROJECTION: Doc = {"n": 1, "starts": 1, "v": 1}
#: Gates with nothing held and no start: the same as no gate (purge drops them).
IDLE_GATES: Doc = {"n": 0, "starts.0": {"$exists": False}}


def new_version() -> str:
    """A gate's version after a write: random, so a dropped and remade gate never repeats one."""
    return secrets.token_hex(8)


@dataclass
class Gate:
    """A key's gate as a claim read it (``v`` None: there was no document)."""

    v: str | None = None
    n: int = 0
    starts: list[Doc] = field(default_factory=list)
    #: False once this claim wrote to it without a compare-and-set on ``v``:
    #: what it holds now is then unknown (a rated decision must read again).
    known: bool = True

    def times(self) -> list[datetime]:
        """The start times, as :func:`qw.limits.plan_claim` takes them."""
        return [as_utc(s["a"]) for s in self.starts]


def gate_of(doc: Mapping[str, Any] | None) -> Gate:
    if doc is None:
        return Gate()
    return Gate(doc.get("v"), int(doc.get("n", 0)), list(doc.get("starts") or ()))


def gate_indexes() -> list[IndexModel]:
    """The indexes of the ``gates`` collection (``_id`` is the key)."""
    return [IndexModel([("held.a", 1)], name="held_age")]


def held_entry(job_id: str, claim_token: str, now: datetime) -> Doc:
    return {"j": job_id, "t": claim_token, "a": now}


def start_entry(lease_token: str, now: datetime) -> Doc:
    """A start, named by the lease token so that a claim that lost its job can take it back."""
    return {"a": now, "t": lease_token}


def gate_take(key: str, held: Sequence[Doc], *, at_most: int | None) -> tuple[Doc, Doc]:
    """Hold slots for ``held`` while at most ``at_most`` are held (None: always). Upsert it.

    A gate that exists and refuses the filter makes the upsert raise a
    duplicate-key error: the key is full.
    """
    query: Doc = {"_id": key}
    if at_most is not None:
        query["n"] = {"$lte": at_most}
    return query, {
        "$push": {"held": {"$each": list(held)}},
        "$inc": {"n": len(held)},
        "$set": {"v": new_version()},
    }


def gate_cas(
    key: str, read: str, held: Sequence[Doc], starts: Sequence[Doc], version: str
) -> tuple[Doc, Doc]:
    """Hold slots and write the starts, only if the gate is still as read (version ``read``)."""
    return {"_id": key, "v": read}, {
        "$push": {"held": {"$each": list(held)}},
        "$inc": {"n": len(held)},
        "$set": {"v": version, "starts": list(starts)},
    }


def gate_document(key: str, held: Sequence[Doc], starts: Sequence[Doc], version: str) -> Doc:
    """A new gate (inserted when the claim read none: a duplicate means it is no longer so)."""
    return {"_id": key, "n": len(held), "held": list(held), "starts": list(starts), "v": version}


def gate_give_back(
    key: str, job_id: str, claim_token: str, *, start: str | None = None
) -> tuple[Doc, Doc]:
    """Free the slot ``job_id`` holds under ``claim_token`` (a no-op once freed).

    ``start`` (a lease token) also takes back the start of a claim that
    lost its job: it never started. A job that leaves ``running`` keeps its
    start.
    """
    update: Doc = {"$pull": {"held": {"j": job_id, "t": claim_token}}, "$inc": {"n": -1}}
    if start is not None:
        # A new version: a rated claim that read the start must not write it back.
        # (A freed slot alone needs none: a decision on the higher count stays safe.)
        update["$pull"]["starts"] = {"t": start}
        update["$set"] = {"v": new_version()}
    return {"_id": key, "held": {"$elemMatch": {"j": job_id, "t": claim_token}}}, update


def gate_refresh(key: str, job_id: str, claim_token: str, now: datetime) -> tuple[Doc, Doc]:
    """The sweep found the holder live: look at it again only a grace from now."""
    return (
        {"_id": key, "held": {"$elemMatch": {"j": job_id, "t": claim_token}}},
        {"$set": {"held.$.a": now}},
    )


def aged_gates(cutoff: datetime) -> Doc:
    """Gates with a holder not looked at since ``cutoff``; served by ``held_age``."""
    return {"held.a": {"$lt": cutoff}}


def void_claim(job_id: str, claim_token: str) -> tuple[Doc, Doc]:
    """Make ``claim_token`` unable to claim the job, unless the job runs under it already."""
    return (
        {"_id": job_id, "token": {"$ne": claim_token}},
        {"$push": {"voided": {"$each": [claim_token], "$slice": -VOIDED_KEEP}}},
    )


# -- operators' limits ---------------------------------------------------------


def override_document(key: str, limit: Any) -> Doc:
    return {"_id": key, "limit": limit_document(limit)}


# -- fair ranks ----------------------------------------------------------------


def fair_next_id(queue: str, key: str) -> str:
    """The next fair rank of (queue, key); queue names and keys never hold a newline."""
    return f"{queue}\n{key}"


def fair_clock_id(queue: str) -> str:
    """The queue's fair clock (no newline: never a (queue, key) counter's id)."""
    return queue


# -- schedules -------------------------------------------------------------------


def schedule_save(schedule: Schedule) -> tuple[Doc, Doc]:
    """Create or replace the definition; a stored tick is kept (upsert)."""
    return {"_id": schedule.name}, {
        "$set": {
            "spec": schedule.spec,
            "tz": schedule.tz,
            "queue": schedule.queue,
            "task": schedule.task,
        },
        "$setOnInsert": {"last_tick": None},
    }


def schedule_advance(name: str, tick: datetime) -> tuple[Doc, Doc]:
    """The one compare-and-set: ``last_tick := tick`` iff none yet or ``tick`` is later.

    Compared at BSON's millisecond precision, the precision it is stored at.
    """
    at = to_millis(tick)
    return (
        {"_id": name, "$or": [{"last_tick": None}, {"last_tick": {"$lt": at}}]},
        {"$set": {"last_tick": at}},
    )


def schedule_of(doc: Mapping[str, Any]) -> Schedule:
    tick = doc.get("last_tick")
    return Schedule(
        name=doc["_id"],
        spec=doc["spec"],
        tz=doc["tz"],
        queue=doc["queue"],
        task=doc["task"],
        last_tick=None if tick is None else as_utc(tick),
    )
