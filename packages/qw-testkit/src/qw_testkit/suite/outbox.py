"""The outbox: an event exists iff its transition happened; cursor order; ack; at-least-once."""

from __future__ import annotations

import time

import pytest

import qw
from qw.contract import Abort, Complete, Fail, Outcome
from qw.model import EventSpec, JobStatus
from qw_testkit.base import ContractBase


class OutboxTests(ContractBase):
    def test_no_events_at_first(self, client: qw.Client) -> None:
        assert client.fetch_events() == []

    def test_complete_with_event_writes_exactly_that_event(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1)
        lease = self.claim_one(client).lease
        before = client.now()
        client.complete(lease, "r", event=EventSpec("order.paid", {"amount": 5, "tags": ["a"]}))
        (event,) = client.fetch_events()
        assert event.job_id == answer.id
        assert event.type == "order.paid"
        assert event.data == {"amount": 5, "tags": ["a"]}
        assert event.created_at.tzinfo is not None
        assert abs((event.created_at - before).total_seconds()) < 5

    @pytest.mark.parametrize(
        ("kind", "status"),
        [
            ("fail", JobStatus.FAILED),
            ("retry", JobStatus.QUEUED),
            ("abort", JobStatus.CANCELLED),
        ],
    )
    def test_other_outcomes_write_their_event(
        self, client: qw.Client, kind: str, status: JobStatus
    ) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=3)
        lease = self.claim_one(client).lease
        spec = EventSpec(f"job.{kind}", {"k": kind})
        outcomes: dict[str, Outcome] = {
            "fail": Fail(lease, "e", None, spec),
            "retry": Fail(lease, "e", 3600.0, spec),
            "abort": Abort(lease, "e", spec),
        }
        outcome = outcomes[kind]
        assert client.finish([outcome]) == [status]
        events = client.fetch_events()
        assert [(e.job_id, e.type, e.data) for e in events] == [(answer.id, spec.type, spec.data)]

    def test_no_event_without_an_event_spec(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        client.complete(self.claim_one(client).lease)
        assert client.fetch_events() == []

    def test_event_iff_transition_under_repeats_and_stale_tokens(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1, max_attempts=5)
        old = self.claim_one(client).lease
        client.release(old)
        lease = self.claim_one(client).lease
        spec = EventSpec("job.done")
        # A stale token: no transition, so no event.
        assert client.finish([Complete(old, None, spec)]) == [None]
        assert client.fetch_events() == []
        # The transition: exactly one event, however often it is repeated.
        for _ in range(3):
            assert client.finish([Complete(lease, None, spec)]) == [JobStatus.SUCCEEDED]
        assert [e.type for e in client.fetch_events()] == ["job.done"]
        # Another outcome on the finished job: stale, so still one event.
        assert client.finish([Fail(lease, None, None, EventSpec("job.failed"))]) == [None]
        assert [e.type for e in client.fetch_events()] == ["job.done"]

    def test_events_come_in_cursor_order(self, client: qw.Client) -> None:
        self.enqueue_n(client, "q", 30)
        claims = client.claim(["q"], worker="w", limit=30)
        for i, claim in enumerate(claims):
            client.complete(claim.lease, event=EventSpec("e", i))
        events = client.fetch_events(limit=1000)
        assert [e.data for e in events] == list(range(30))
        cursors = [e.cursor for e in events]
        assert cursors == sorted(cursors)
        assert len(set(cursors)) == 30
        assert [e.job_id for e in events] == [c.job.id for c in claims]

    def test_fetch_respects_limit_and_order(self, client: qw.Client) -> None:
        self.enqueue_n(client, "q", 10)
        for i, claim in enumerate(client.claim(["q"], worker="w", limit=10)):
            client.complete(claim.lease, event=EventSpec("e", i))
        first = client.fetch_events(limit=4)
        assert [e.data for e in first] == [0, 1, 2, 3]
        client.ack_events([e.cursor for e in first])
        assert [e.data for e in client.fetch_events(limit=4)] == [4, 5, 6, 7]

    def test_unacked_events_are_delivered_again(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        client.complete(self.claim_one(client).lease, event=EventSpec("e"))
        first = client.fetch_events()
        assert client.fetch_events() == first
        assert len(first) == 1

    def test_acked_events_are_not_fetched_again(self, client: qw.Client) -> None:
        self.enqueue_n(client, "q", 3)
        for i, claim in enumerate(client.claim(["q"], worker="w", limit=3)):
            client.complete(claim.lease, event=EventSpec("e", i))
        events = client.fetch_events()
        assert client.ack_events([events[1].cursor]) == 1
        assert [e.data for e in client.fetch_events()] == [0, 2]
        assert client.ack_events([events[1].cursor]) == 0
        assert client.ack_events([events[0].cursor, events[2].cursor, events[0].cursor]) == 2
        assert client.fetch_events() == []
        assert client.ack_events([]) == 0

    def test_acking_unknown_cursors_acks_nothing(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        client.complete(self.claim_one(client).lease, event=EventSpec("e"))
        (event,) = client.fetch_events()
        # Cursors are ints in [1, 2**63 - 1] (a negative one is refused: bad_input.py).
        assert client.ack_events([event.cursor + 10_000, 2**63 - 1]) == 0
        assert client.fetch_events() == [event]

    def test_cursors_keep_increasing_after_acks(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        client.enqueue_one("q", 2)
        client.complete(self.claim_one(client).lease, event=EventSpec("e", 1))
        (first,) = client.fetch_events()
        client.ack_events([first.cursor])
        client.purge(0)
        time.sleep(0.01)
        client.complete(self.claim_one(client).lease, event=EventSpec("e", 2))
        (second,) = client.fetch_events()
        assert second.cursor > first.cursor

    def test_cancel_of_a_queued_job_writes_its_event(self, client: qw.Client) -> None:
        answer = client.enqueue_one("jobs", 1)
        assert client.cancel(answer.id) is JobStatus.CANCELLED
        events = client.fetch_events()
        assert [(e.job_id, e.type, e.data) for e in events] == [
            (answer.id, "job.cancelled", {"queue": "jobs", "reason": "cancelled"})
        ]
