"""UUIDv7 job ids: valid, unique, and sortable in creation order."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from qw import ids
from qw.ids import new_job_id
from qw.model import NewJob


def _ms(job_id: str) -> int:
    return uuid.UUID(job_id).int >> 80


def test_ids_are_uuid_version_7_rfc_variant() -> None:
    value = uuid.UUID(new_job_id())
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_timestamp_is_now_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    stamp = _ms(new_job_id())
    after = time.time_ns() // 1_000_000
    assert before <= stamp <= after + 1


def test_ids_sort_in_creation_order_and_are_unique() -> None:
    made = [new_job_id() for _ in range(20_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_ids_are_unique_across_threads() -> None:
    per_thread: list[list[str]] = [[] for _ in range(8)]

    def make(out: list[str]) -> None:
        out.extend(new_job_id() for _ in range(2_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for out in per_thread for i in out]
    assert len(set(everything)) == len(everything)
    for out in per_thread:
        assert out == sorted(out)  # each thread sees increasing ids


def test_order_holds_when_the_clock_stands_still_or_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = (time.time_ns() // 1_000_000 + 10_000) * 1_000_000
    clock = iter([base] * 5_000 + [base - 5_000_000_000] * 10 + [base + 1_000_000] * 3)
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(clock))
    made = [new_job_id() for _ in range(5_013)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    # 4096 ids fit one millisecond's counter; the rest spill into the next ms.
    assert _ms(made[0]) == base // 1_000_000
    assert _ms(made[4_096]) == base // 1_000_000 + 1
    # A clock that stepped back does not send ids back in time.
    assert min(_ms(i) for i in made[5_000:5_010]) >= _ms(made[4_999])


def test_new_jobs_get_fresh_ids_by_default() -> None:
    a, b = NewJob("q"), NewJob("q")
    assert a.id != b.id
    assert a.id < b.id
