"""Flow control's exact documents, filters and updates, checked without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qw.contract import Insert
from qw.model import Limit, Schedule
from qw_mongodb import documents as d
from qw_mongodb import flow as f

NOW = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
TOKEN = "ab" * 16


def keyed(id: str, key: str | None, limit: Limit | None = None, *, fair: bool = False) -> Insert:
    return Insert(id, "q", "1", 0, None, None, 3, None, limit_key=key, limit=limit, fair=fair)


@pytest.mark.parametrize(
    "limit",
    [
        Limit(),
        Limit(concurrency=0),
        Limit(concurrency=3),
        Limit(rate=2, per=0.5),
        Limit(concurrency=1, rate=10, per=60),
    ],
)
def test_a_limit_is_stored_with_exactly_its_declared_fields(limit: Limit) -> None:
    stored = d.limit_document(limit)
    declared = {k for k in ("concurrency", "rate", "per") if getattr(limit, k) is not None}
    assert set(stored) == declared
    assert d.limit_of(stored) == limit
    assert type(d.limit_of(stored).per) is type(limit.per)  # type: ignore[union-attr]


def test_a_job_without_a_key_stores_no_flow_field_but_its_rank() -> None:
    doc = d.job_document(keyed("a", None), seq=1, now=NOW)
    assert doc["rank"] == 0
    assert not {"limit_key", "limit", "fair", "voided"} & set(doc)


def test_a_keyed_job_stores_its_key_limit_fairness_and_rank() -> None:
    doc = d.job_document(keyed("a", "k", Limit(concurrency=2), fair=True), seq=1, now=NOW, rank=7)
    assert (doc["limit_key"], doc["limit"], doc["fair"], doc["rank"]) == (
        "k",
        {"concurrency": 2},
        True,
        7,
    )
    plain = d.job_document(keyed("b", "k"), seq=2, now=NOW)
    assert not {"limit", "fair"} & set(plain)


def test_a_document_from_before_schema_3_reads_as_a_job_without_a_key() -> None:
    doc = d.job_document(keyed("a", None), seq=1, now=NOW)
    del doc["rank"]
    job = d.job_from_document(doc)
    assert (job.limit_key, job.limit, job.fair) == (None, None, False)
    assert d.claim_order(doc) == (0, 0, 1), "a missing rank is rank 0"


def test_a_slot_is_taken_only_while_the_count_is_within_the_bound() -> None:
    held = [f.held_entry("j1", TOKEN, NOW), f.held_entry("j2", TOKEN, NOW)]
    query, update = f.gate_take("k", held, at_most=1)
    assert query == {"_id": "k", "n": {"$lte": 1}}
    assert update["$push"] == {"held": {"$each": held}}
    assert update["$inc"] == {"n": 2}
    assert set(update["$set"]) == {"v"}, "a new version: rated claims that read it must not write"
    query, _ = f.gate_take("k", held, at_most=None)
    assert query == {"_id": "k"}, "no concurrency: the slot is only a record of running"


def test_a_rated_claim_writes_its_gate_only_as_read() -> None:
    starts = [f.start_entry("t.j1", NOW)]
    query, update = f.gate_cas("k", "v1", [f.held_entry("j1", TOKEN, NOW)], starts, "v2")
    assert query == {"_id": "k", "v": "v1"}
    assert update["$set"] == {"v": "v2", "starts": starts}
    assert update["$inc"] == {"n": 1}


def test_giving_a_slot_back_pulls_exactly_that_holder_once() -> None:
    query, update = f.gate_give_back("k", "j1", TOKEN)
    # Filtered on the holder being there: a second give-back decrements nothing.
    assert query == {"_id": "k", "held": {"$elemMatch": {"j": "j1", "t": TOKEN}}}
    assert update == {"$pull": {"held": {"j": "j1", "t": TOKEN}}, "$inc": {"n": -1}}
    _, lost = f.gate_give_back("k", "j1", TOKEN, start="t.j1")
    assert lost["$pull"]["starts"] == {"t": "t.j1"}, "a lost claim never started"
    assert set(lost["$set"]) == {"v"}


def test_voiding_a_claim_token_spares_a_job_running_under_it() -> None:
    query, update = f.void_claim("j1", TOKEN)
    assert query == {"_id": "j1", "token": {"$ne": TOKEN}}
    assert update == {"$push": {"voided": {"$each": [TOKEN], "$slice": -f.VOIDED_KEEP}}}
    assert d.stamp_filter(["j1"], ["q"], NOW, TOKEN)["voided"] == {"$ne": TOKEN}


def test_fair_counters_of_a_queue_and_of_its_keys_never_share_an_id() -> None:
    assert f.fair_clock_id("q") == "q"
    assert f.fair_next_id("q", "k") == "q\nk"
    assert f.fair_next_id("q", "") != f.fair_clock_id("q")


def test_a_schedule_advances_only_to_a_later_tick_at_millisecond_precision() -> None:
    tick = NOW + timedelta(microseconds=456)
    query, update = f.schedule_advance("s", tick)
    at = NOW  # NOW has whole milliseconds; the 456 µs are below BSON's precision
    assert query == {"_id": "s", "$or": [{"last_tick": None}, {"last_tick": {"$lt": at}}]}
    assert update == {"$set": {"last_tick": at}}


def test_saving_a_schedule_keeps_its_stored_tick() -> None:
    s = Schedule("s", "*/5 * * * *", "UTC", "q", "app.task", last_tick=NOW)
    query, update = f.schedule_save(s)
    assert query == {"_id": "s"}
    assert "last_tick" not in update["$set"]
    assert update["$setOnInsert"] == {"last_tick": None}
    doc = {"_id": "s", **update["$set"], "last_tick": NOW}
    assert f.schedule_of(doc) == s
