"""enqueue: batches, all-or-nothing, dedupe keys, duplicate ids, payload round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

import qw
from qw.model import JobStatus, JSONValue, NewJob
from qw_testkit.base import ContractBase, snapshot
from qw_testkit.gates import requires
from qw_testkit.suite.inspection import finish_as

PAYLOADS: list[JSONValue] = [
    None,
    True,
    0,
    -(2**53),
    2**53,
    3.5,
    "",
    "héllo ☃ \u0000 \"quoted\" 'single' ; DROP TABLE jobs; --",
    [],
    {},
    [1, "two", None, {"three": [3.0]}],
    {"nested": {"a": [1, 2, {"b": None}]}, "unicode": "日本語", "empty": ""},
]


class EnqueueTests(ContractBase):
    def test_enqueue_creates_a_queued_job(self, client: qw.Client) -> None:
        before = client.now()
        answer = client.enqueue_one("q", {"x": 1}, priority=7, max_attempts=5)
        after = client.now()
        assert answer.created is True
        job = client.get(answer.id)
        assert job.id == answer.id
        assert job.queue == "q"
        assert job.payload == {"x": 1}
        assert job.priority == 7
        assert job.max_attempts == 5
        assert job.attempts == 0
        assert job.status is JobStatus.QUEUED
        assert job.created_at.tzinfo is not None
        assert job.run_at.tzinfo is not None
        assert before - timedelta(seconds=1) <= job.created_at <= after + timedelta(seconds=1)
        assert job.run_at <= after + timedelta(seconds=1)
        assert job.result is None
        assert job.error is None
        assert job.worker is None

    @pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
    def test_payload_round_trips_as_json(self, client: qw.Client, payload: JSONValue) -> None:
        answer = client.enqueue_one("q", payload)
        assert client.get(answer.id).payload == payload
        claimed = self.claim_one(client)
        assert claimed.job.payload == payload

    def test_caller_mutating_its_payload_does_not_edit_the_job(self, client: qw.Client) -> None:
        payload = {"list": [1]}
        answer = client.enqueue_one("q", payload)
        payload["list"].append(2)
        assert client.get(answer.id).payload == {"list": [1]}

    def test_batch_answers_one_per_job_in_order(self, client: qw.Client) -> None:
        jobs = [NewJob("q", i) for i in range(50)]
        answers = client.enqueue(jobs)
        assert [a.id for a in answers] == [j.id for j in jobs]
        assert all(a.created for a in answers)
        assert client.counts() == {
            "q": {s: (50 if s is JobStatus.QUEUED else 0) for s in JobStatus}
        }

    def test_empty_batch_writes_nothing(self, client: qw.Client) -> None:
        assert client.enqueue([]) == []
        assert client.counts() == {}

    @pytest.mark.parametrize("position", [0, 5, 9])
    @pytest.mark.parametrize(
        ("bad", "error"),
        [
            (NewJob("q", {1, 2}), qw.InvalidPayload),  # type: ignore[arg-type]
            (NewJob("bad queue!", 1), qw.InvalidName),
            (NewJob("q", 1, max_attempts=0), qw.InvalidInput),
        ],
        ids=["payload", "queue", "max_attempts"],
    )
    def test_a_bad_job_anywhere_writes_nothing(
        self, client: qw.Client, position: int, bad: NewJob, error: type[Exception]
    ) -> None:
        client.enqueue_one("q", "existing")
        before = snapshot(client)
        batch = [NewJob("q", i) for i in range(9)]
        batch.insert(position, bad)
        with pytest.raises(error):
            client.enqueue(batch)
        assert snapshot(client) == before

    @requires("cross_queue_atomic")
    def test_existing_id_raises_duplicate_and_writes_nothing(self, client: qw.Client) -> None:
        first = NewJob("q", "original")
        client.enqueue([first])
        before = snapshot(client)
        fresh = NewJob("q", "fresh")
        clash = NewJob("other", "clash", id=first.id)
        with pytest.raises(qw.DuplicateJob):
            client.enqueue([fresh, clash])
        assert snapshot(client) == before
        assert client.find(fresh.id) is None
        assert client.get(first.id).payload == "original"

    def test_same_id_twice_in_a_batch_raises_duplicate(self, client: qw.Client) -> None:
        job = NewJob("q", 1)
        with pytest.raises(qw.DuplicateJob):
            client.enqueue([job, NewJob("q", 2, id=job.id)])
        assert client.counts() == {}

    def test_duplicate_id_after_the_job_finished_still_raises(self, client: qw.Client) -> None:
        job = NewJob("q", 1)
        client.enqueue([job])
        client.complete(self.claim_one(client).lease)
        with pytest.raises(qw.DuplicateJob):
            client.enqueue([NewJob("q", 2, id=job.id)])
        assert client.get(job.id).status is JobStatus.SUCCEEDED

    def test_live_dedupe_key_returns_the_existing_job(self, client: qw.Client) -> None:
        first = client.enqueue_one("q", 1, dedupe_key="k")
        again = client.enqueue_one("q", 2, dedupe_key="k")
        assert first.created is True
        assert again == qw.Enqueued(first.id, created=False)
        assert client.get(first.id).payload == 1
        assert len(client.list_jobs()) == 1

    def test_running_job_still_holds_its_dedupe_key(self, client: qw.Client) -> None:
        first = client.enqueue_one("q", 1, dedupe_key="k")
        self.claim_one(client)
        again = client.enqueue_one("q", 2, dedupe_key="k")
        assert again == qw.Enqueued(first.id, created=False)

    @pytest.mark.parametrize("how", ["complete", "fail", "abort", "cancel"])
    def test_finished_holder_frees_the_dedupe_key(self, client: qw.Client, how: str) -> None:
        first = client.enqueue_one("q", 1, dedupe_key="k")
        if how == "cancel":
            client.cancel(first.id)
        else:
            lease = self.claim_one(client).lease
            finish_as(client, how, lease)
        second = client.enqueue_one("q", 2, dedupe_key="k")
        assert second.created is True
        assert second.id != first.id
        assert client.get(second.id).status is JobStatus.QUEUED
        assert client.enqueue_one("q", 3, dedupe_key="k") == qw.Enqueued(second.id, False)

    def test_first_job_with_a_key_in_a_batch_wins(self, client: qw.Client) -> None:
        jobs = [
            NewJob("q", "a", dedupe_key="k"),
            NewJob("q", "b"),
            NewJob("q", "c", dedupe_key="k"),
            NewJob("q", "d", dedupe_key="other"),
            NewJob("q", "e", dedupe_key="k"),
        ]
        answers = client.enqueue(jobs)
        assert [a.created for a in answers] == [True, True, False, True, False]
        assert answers[2].id == answers[4].id == jobs[0].id
        assert sorted(j.payload for j in client.list_jobs()) == ["a", "b", "d"]  # type: ignore[type-var]

    @requires("cross_queue_atomic")
    def test_dedupe_key_is_not_scoped_by_queue_payload_or_priority(self, client: qw.Client) -> None:
        first = client.enqueue_one("q1", 1, dedupe_key="k")
        assert client.enqueue_one("q2", 2, dedupe_key="k", priority=-5).id == first.id

    def test_run_at_in_the_past_is_due_now(self, client: qw.Client) -> None:
        past = datetime.now(UTC) - timedelta(hours=1)
        answer = client.enqueue_one("q", 1, run_at=past)
        assert self.claim_one(client).job.id == answer.id

    def test_run_at_keeps_the_instant_whatever_the_timezone(self, client: qw.Client) -> None:
        # A year ahead, not a fixed far date: run_at may be at most MAX_DELAY_S (10 years) ahead.
        ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(days=365)
        when = ahead.astimezone(timezone(timedelta(hours=5)))
        answer = client.enqueue_one("q", 1, run_at=when)
        stored = client.get(answer.id).run_at
        assert abs((stored - when).total_seconds()) < 0.01
