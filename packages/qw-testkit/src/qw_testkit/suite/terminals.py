"""Terminal writes: complete, fail (with and without retry), abort, release; fenced, idempotent."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from datetime import timedelta

import pytest

import qw
from qw.contract import Abort, Complete, Fail, Outcome, Release
from qw.model import EventSpec, JobStatus, Lease
from qw_testkit.base import ContractBase, snapshot


def _outcomes(lease: Lease) -> dict[str, Outcome]:
    spec = EventSpec("x.happened", {"by": lease.token[:4]})
    return {
        "complete": Complete(lease, {"r": 1}, spec),
        "fail": Fail(lease, {"e": 1}, None, spec),
        "fail_retry": Fail(lease, {"e": 1}, 3600.0, spec),
        "abort": Abort(lease, {"a": 1}, spec),
        "release": Release(lease),
    }


EXPECTED = {
    "complete": JobStatus.SUCCEEDED,
    "fail": JobStatus.FAILED,
    "fail_retry": JobStatus.QUEUED,
    "abort": JobStatus.CANCELLED,
    "release": JobStatus.QUEUED,
}


def _facade_call(client: qw.Client, outcome: Outcome) -> JobStatus:
    """The one-outcome Client method a user would call for ``outcome``."""
    if isinstance(outcome, Complete):
        return client.complete(outcome.lease, outcome.result, event=outcome.event)
    if isinstance(outcome, Fail):
        return client.fail(
            outcome.lease, outcome.error, retry_in=outcome.retry_in, event=outcome.event
        )
    if isinstance(outcome, Abort):
        return client.abort(outcome.lease, outcome.error, event=outcome.event)
    return client.release(outcome.lease)


class TerminalTests(ContractBase):
    def test_complete_stores_the_result(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1)
        claim = self.claim_one(client)
        assert client.complete(claim.lease, {"answer": [4, 2]}) is JobStatus.SUCCEEDED
        job = client.get(answer.id)
        assert job.status is JobStatus.SUCCEEDED
        assert job.result == {"answer": [4, 2]}
        assert job.finished_at is not None
        assert job.started_at is not None
        assert job.finished_at >= job.started_at - timedelta(seconds=1)
        assert job.worker is None
        assert job.lease_expires_at is None
        assert job.attempts == 1

    def test_fail_without_retry_is_final(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=5)
        lease = self.claim_one(client).lease
        assert client.fail(lease, {"why": "boom"}) is JobStatus.FAILED
        job = client.get(answer.id)
        assert (job.status, job.error, job.attempts) == (JobStatus.FAILED, {"why": "boom"}, 1)
        assert job.finished_at is not None
        assert client.claim(["q"], worker="w") == []

    def test_fail_with_retry_requeues_and_waits_until_due(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=3)
        lease = self.claim_one(client).lease
        failed_at = time.monotonic()
        assert client.fail(lease, "transient", retry_in=0.4) is JobStatus.QUEUED
        job = client.get(answer.id)
        assert (job.status, job.attempts, job.error) == (JobStatus.QUEUED, 1, "transient")
        assert job.worker is None
        assert job.lease_expires_at is None
        assert job.run_at > client.now() - timedelta(seconds=0.05)
        while time.monotonic() < failed_at + 0.3:
            assert client.claim(["q"], worker="w") == []
            time.sleep(0.05)
        self.sleep_past(failed_at + 0.6)
        again = self.claim_one(client)
        assert again.job.id == answer.id
        assert again.job.attempts == 2

    def test_retry_in_is_measured_on_the_store_clock(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=3)
        client.fail(self.claim_one(client).lease, retry_in=3600)
        gap = (client.get(answer.id).run_at - client.now()).total_seconds()
        assert 3590 < gap <= 3600.5

    def test_fail_with_retry_but_no_attempts_left_is_final(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=2)
        client.fail(self.claim_one(client).lease, "1", retry_in=0)
        lease = self.claim_one(client).lease
        assert client.fail(lease, "2", retry_in=0) is JobStatus.FAILED
        job = client.get(answer.id)
        assert (job.status, job.attempts, job.error) == (JobStatus.FAILED, 2, "2")

    def test_abort_cancels(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1)
        assert client.abort(self.claim_one(client).lease, "stop") is JobStatus.CANCELLED
        job = client.get(answer.id)
        assert (job.status, job.error) == (JobStatus.CANCELLED, "stop")
        assert job.finished_at is not None

    def test_release_gives_the_attempt_back(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=1)
        lease = self.claim_one(client).lease
        assert client.release(lease) is JobStatus.QUEUED
        job = client.get(answer.id)
        assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)
        assert job.worker is None
        assert job.lease_expires_at is None
        again = self.claim_one(client)
        assert again.job.attempts == 1
        # max_attempts=1 still leaves this attempt: the released one did not count.
        assert client.fail(again.lease, retry_in=0) is JobStatus.FAILED

    def test_released_job_keeps_its_place_and_is_claimable_at_once(self, client: qw.Client) -> None:
        first = client.enqueue_one("q", 1).id
        client.enqueue_one("q", 2)
        client.release(self.claim_one(client).lease)
        assert self.claim_one(client).job.id == first

    @pytest.mark.parametrize("kind", sorted(EXPECTED))
    def test_repeating_an_outcome_is_an_idempotent_no_op(
        self, client: qw.Client, kind: str
    ) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=3)
        lease = self.claim_one(client).lease
        outcome = _outcomes(lease)[kind]
        assert client.finish([outcome]) == [EXPECTED[kind]]
        after_first = snapshot(client)
        for _ in range(3):
            assert client.finish([outcome]) == [EXPECTED[kind]]
        assert snapshot(client) == after_first
        events = client.fetch_events()
        assert len(events) == (0 if kind == "release" else 1)
        assert client.get(answer.id).status is EXPECTED[kind]

    @pytest.mark.parametrize("kind", sorted(EXPECTED))
    def test_a_stale_token_changes_nothing(self, client: qw.Client, kind: str) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=5)
        old = self.claim_one(client).lease
        client.release(old)
        current = self.claim_one(client).lease
        before = snapshot(client)
        outcome = _outcomes(old)[kind]
        assert client.finish([outcome]) == [None]
        with pytest.raises(qw.LeaseLost):
            _facade_call(client, outcome)
        assert snapshot(client) == before
        job = client.get(answer.id)
        assert (job.status, job.attempts) == (JobStatus.RUNNING, 1)
        assert client.complete(current) is JobStatus.SUCCEEDED

    @pytest.mark.parametrize(
        ("first", "second"), list(itertools.permutations(["complete", "fail", "abort"], 2))
    )
    def test_a_different_outcome_after_the_end_is_stale(
        self, client: qw.Client, first: str, second: str
    ) -> None:
        client.enqueue_one("q", 1, max_attempts=3)
        lease = self.claim_one(client).lease
        outcomes = _outcomes(lease)
        client.finish([outcomes[first]])
        before = snapshot(client)
        assert client.finish([outcomes[second]]) == [None]
        assert snapshot(client) == before

    def test_made_up_tokens_and_unknown_jobs_are_stale(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        lease = self.claim_one(client).lease
        before = snapshot(client)
        forged = replace(lease, token=lease.token[::-1] + "x")
        ghost = replace(lease, job_id="no-such-job")
        for bad in (forged, ghost):
            for outcome in _outcomes(bad).values():
                assert client.finish([outcome]) == [None]
        assert snapshot(client) == before

    def test_a_lease_for_another_attempt_is_stale(self, client: qw.Client) -> None:
        # The client decides a finish by the lease's attempt: a store must apply
        # it only to that attempt, or a forged attempt could rewrite the count.
        client.enqueue_one("q", 1, max_attempts=3)
        lease = self.claim_one(client).lease
        assert lease.attempt == 1
        before = snapshot(client)
        for outcome in _outcomes(replace(lease, attempt=2)).values():
            assert client.finish([outcome]) == [None]
        assert snapshot(client) == before
        assert client.complete(lease, "ok") is JobStatus.SUCCEEDED

    def test_outcomes_in_one_call_are_independent(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1, max_attempts=5)
        b = client.enqueue_one("q", 2).id
        old = self.claim_one(client).lease
        client.release(old)
        first, second = client.claim(["q"], worker="w", limit=2)
        answers = client.finish(
            [Complete(old, "stale"), Complete(second.lease, "ok"), Fail(first.lease, "no")]
        )
        assert answers == [None, JobStatus.SUCCEEDED, JobStatus.FAILED]
        assert client.get(b).result == "ok"
