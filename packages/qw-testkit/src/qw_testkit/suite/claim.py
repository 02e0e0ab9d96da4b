"""claim: order, due times, limits, attempts, fresh tokens, one live lease per job."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import qw
from qw.model import JobStatus, NewJob
from qw_testkit.base import ContractBase
from qw_testkit.gates import requires


class ClaimTests(ContractBase):
    def test_nothing_to_claim_returns_empty(self, client: qw.Client) -> None:
        assert client.claim(["q"], worker="w") == []

    def test_priority_first_then_fifo(self, client: qw.Client) -> None:
        order = [5, 0, 5, -1, 0, 3, -1, 5]
        ids = [client.enqueue_one("q", i, priority=p).id for i, p in enumerate(order)]
        batch = [NewJob("q", 100 + i, priority=p) for i, p in enumerate([0, -1, 5])]
        ids += [a.id for a in client.enqueue(batch)]
        order += [0, -1, 5]
        expected = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (order[i], i))]
        got = [self.claim_one(client).job.id for _ in ids]
        assert got == expected

    def test_one_claim_returns_jobs_in_order_up_to_limit(self, client: qw.Client) -> None:
        jobs = [NewJob("q", i, priority=i % 3) for i in range(10)]
        client.enqueue(jobs)
        expected = [j.id for j in sorted(jobs, key=lambda j: j.priority)]  # stable: FIFO
        first = client.claim(["q"], worker="w", limit=4)
        second = client.claim(["q"], worker="w", limit=100)
        assert [c.job.id for c in first] == expected[:4]
        assert [c.job.id for c in second] == expected[4:]
        assert client.claim(["q"], worker="w", limit=5) == []

    @requires("cross_queue_atomic")
    def test_claim_spans_the_queues_asked_for_only(self, client: qw.Client) -> None:
        a = client.enqueue_one("a", 1, priority=2).id
        b = client.enqueue_one("b", 2, priority=1).id
        client.enqueue_one("c", 3, priority=0)
        claims = client.claim(["a", "b"], worker="w", limit=10)
        assert [c.job.id for c in claims] == [b, a]
        assert client.counts()["c"][JobStatus.QUEUED] == 1

    def test_claim_marks_running_and_counts_the_attempt(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", {"p": 1}, max_attempts=4)
        before = client.now()
        claim = client.claim(["q"], worker="worker-1", lease_s=60, limit=1)[0]
        after = client.now()
        job = client.get(answer.id)
        for seen in (claim.job, job):
            assert seen.status is JobStatus.RUNNING
            assert seen.attempts == 1
            assert seen.worker == "worker-1"
            assert seen.payload == {"p": 1}
            assert seen.started_at is not None
        assert claim.lease.job_id == answer.id
        assert claim.lease.token
        assert claim.lease.cancel_requested is False
        slack = timedelta(seconds=2)
        low, high = before + timedelta(seconds=60) - slack, after + timedelta(seconds=60) + slack
        assert low <= claim.lease.expires_at <= high
        assert job.lease_expires_at is not None
        assert abs((job.lease_expires_at - claim.lease.expires_at).total_seconds()) < 0.01

    def test_each_claim_hands_out_a_fresh_token(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1, max_attempts=100)
        tokens = []
        for _ in range(5):
            claim = self.claim_one(client)
            assert claim.job.attempts == 1  # released attempts are given back
            tokens.append(claim.lease.token)
            client.release(claim.lease)
        claims = client.claim(["q"], worker="w")
        tokens.append(claims[0].lease.token)
        assert len(set(tokens)) == len(tokens)

    def test_tokens_are_unique_across_jobs(self, client: qw.Client) -> None:
        self.enqueue_n(client, "q", 50)
        claims = client.claim(["q"], worker="w", limit=50)
        assert len({c.lease.token for c in claims}) == 50

    def test_a_leased_job_is_not_claimed_again(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        self.claim_one(client)
        assert client.claim(["q"], worker="other", limit=10) == []

    def test_future_run_at_is_never_claimed_early(self, client: qw.Client) -> None:
        later = datetime.now(UTC) + timedelta(hours=1)
        client.enqueue_one("q", 1, run_at=later)
        due = client.enqueue_one("q", 2, priority=10).id
        claims = client.claim(["q"], worker="w", limit=10)
        assert [c.job.id for c in claims] == [due]

    def test_delayed_job_becomes_claimable_when_due(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, delay=0.4)
        enqueued = time.monotonic()
        job = client.get(answer.id)
        assert job.run_at > job.created_at
        claims: list[qw.Claim] = []
        while not claims and time.monotonic() < enqueued + 0.3:
            claims = client.claim(["q"], worker="w")
            time.sleep(0.05)
        # A call that reached the store after run_at may take the job (a slow
        # first call on a loaded machine), so the check is the invariant
        # itself, on the store's clock: the lease began no earlier than due.
        if not claims:
            self.sleep_past(enqueued + 0.6)
            claims = [self.claim_one(client)]
        [claim] = claims
        assert claim.job.id == answer.id
        assert claim.job.started_at is not None
        assert claim.job.started_at >= claim.job.run_at, "leased before it was due"

    def test_delay_is_measured_on_the_store_clock(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, delay=3600)
        job = client.get(answer.id)
        gap = (job.run_at - client.now()).total_seconds()
        assert 3590 < gap <= 3600.5
        assert client.claim(["q"], worker="w") == []
