"""Leases: renewal, loss, expiry on the store's clock, reclaim, and fencing after it."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest

import qw
from qw.contract import Abort, Complete, Fail, Release
from qw.model import EventSpec, JobStatus
from qw_testkit.base import ContractBase, OpenClient, snapshot
from qw_testkit.gates import requires

#: Short, real leases: long enough to act within, short enough to keep the suite fast.
SHORT = 0.2
#: How long to wait, after a short claim returned, before its lease is surely expired.
PAST_SHORT = SHORT + 0.15


class LeaseTests(ContractBase):
    def test_renew_extends_the_lease(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        claim = client.claim(["q"], worker="w", lease_s=5)[0]
        renewed = client.renew(claim.lease, lease_s=600)
        assert renewed.job_id == claim.lease.job_id
        assert renewed.token == claim.lease.token
        assert renewed.expires_at >= claim.lease.expires_at + timedelta(seconds=590)
        job = client.get(claim.job.id)
        assert job.lease_expires_at is not None
        assert abs((job.lease_expires_at - renewed.expires_at).total_seconds()) < 0.01
        assert job.status is JobStatus.RUNNING
        assert job.attempts == 1

    def test_renewal_keeps_a_short_lease_alive(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        claim = client.claim(["q"], worker="w", lease_s=SHORT)[0]
        end = time.monotonic() + 2 * PAST_SHORT
        while time.monotonic() < end:
            client.renew(claim.lease, lease_s=SHORT * 2)
            time.sleep(SHORT / 3)
            assert client.reclaim_expired() == 0
        assert client.complete(claim.lease) is JobStatus.SUCCEEDED

    def test_renew_of_a_stale_token_is_lost(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1, max_attempts=5)
        old = self.claim_one(client).lease
        client.release(old)
        new = self.claim_one(client).lease
        with pytest.raises(qw.LeaseLost):
            client.renew(old)
        answers = client.renew_many([old, new], lease_s=100)
        assert answers[0] is None
        assert answers[1] is not None
        assert answers[1].token == new.token

    def test_renew_after_finishing_is_lost(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        lease = self.claim_one(client).lease
        client.complete(lease)
        with pytest.raises(qw.LeaseLost):
            client.renew(lease)
        assert client.get(lease.job_id).status is JobStatus.SUCCEEDED

    def test_renew_of_a_made_up_token_is_lost(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        lease = self.claim_one(client).lease
        forged = replace(lease, token="not-" + lease.token)
        with pytest.raises(qw.LeaseLost):
            client.renew(forged)
        with pytest.raises(qw.LeaseLost):
            client.renew(replace(lease, job_id="no-such-job"))
        assert client.complete(lease) is JobStatus.SUCCEEDED

    def test_live_leases_are_not_reclaimed(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        claim = client.claim(["q"], worker="w", lease_s=60)[0]
        assert client.reclaim_expired() == 0
        assert client.get(claim.job.id).status is JobStatus.RUNNING

    def test_expired_lease_is_reclaimed_to_queued(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=3)
        claim = client.claim(["q"], worker="w", lease_s=SHORT)[0]
        self.sleep_past(time.monotonic() + PAST_SHORT)
        assert client.reclaim_expired() == 1
        job = client.get(answer.id)
        assert job.status is JobStatus.QUEUED
        assert job.attempts == 1  # the expired attempt stays counted
        assert job.worker is None
        assert job.lease_expires_at is None
        assert client.fetch_events() == []
        again = self.claim_one(client)
        assert again.job.attempts == 2
        assert again.lease.token != claim.lease.token
        assert client.reclaim_expired() == 0

    def test_expired_lease_with_attempts_used_up_fails_the_job(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=1)
        client.claim(["q"], worker="w", lease_s=SHORT)
        self.sleep_past(time.monotonic() + PAST_SHORT)
        assert client.reclaim_expired() == 1
        job = client.get(answer.id)
        assert job.status is JobStatus.FAILED
        assert job.attempts == 1
        assert job.error == {"reason": "lease_expired"}
        assert job.finished_at is not None
        events = client.fetch_events()
        assert [(e.job_id, e.type, e.data) for e in events] == [
            (answer.id, "job.failed", {"queue": "q", "reason": "lease_expired", "attempts": 1})
        ]
        assert client.reclaim_expired() == 0
        assert len(client.fetch_events()) == 1

    def test_old_token_is_fenced_after_reclaim(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1, max_attempts=5)
        old = client.claim(["q"], worker="w", lease_s=SHORT)[0].lease
        self.sleep_past(time.monotonic() + PAST_SHORT)
        assert client.reclaim_expired() == 1
        new = self.claim_one(client).lease
        before = snapshot(client)
        spec = EventSpec("x.done", {"stale": True})
        for outcome in (
            Complete(old, "r", spec),
            Fail(old, "e", None, spec),
            Fail(old, "e", 0.0, spec),
            Abort(old, "a", spec),
            Release(old),
        ):
            assert client.finish([outcome]) == [None], outcome
        with pytest.raises(qw.LeaseLost):
            client.renew(old)
        with pytest.raises(qw.LeaseLost):
            client.complete(old, event=spec)
        assert snapshot(client) == before
        assert client.complete(new) is JobStatus.SUCCEEDED

    def test_old_token_is_fenced_after_reclaim_while_still_queued(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=5)
        old = client.claim(["q"], worker="w", lease_s=SHORT)[0].lease
        self.sleep_past(time.monotonic() + PAST_SHORT)
        assert client.reclaim_expired() == 1
        before = snapshot(client)
        for outcome in (Complete(old), Fail(old), Fail(old, None, 0.0), Abort(old), Release(old)):
            assert client.finish([outcome]) == [None], outcome
        assert snapshot(client) == before
        assert client.get(answer.id).status is JobStatus.QUEUED

    def test_reclaim_never_overwrites_a_completed_job(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=1)
        lease = client.claim(["q"], worker="w", lease_s=SHORT)[0].lease
        assert client.complete(lease, "done") is JobStatus.SUCCEEDED
        self.sleep_past(time.monotonic() + PAST_SHORT)
        assert client.reclaim_expired() == 0
        job = client.get(answer.id)
        assert job.status is JobStatus.SUCCEEDED
        assert job.result == "done"
        assert client.fetch_events() == []

    @requires("thread_safe")
    def test_complete_racing_reclaim_is_one_or_the_other(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        n = 60
        ids = self.enqueue_n(client, "q", n, max_attempts=1)
        leases = [c.lease for c in client.claim(["q"], worker="w", lease_s=SHORT, limit=n)]
        assert len(leases) == n
        reaper = open_client(client.namespace)
        start = threading.Barrier(2)
        completed: dict[str, bool] = {}
        reclaimed: list[int] = []

        def complete_all() -> None:
            start.wait()
            for lease in leases:
                try:
                    client.complete(lease, "won", event=EventSpec("x.done"))
                    completed[lease.job_id] = True
                except qw.LeaseLost:
                    completed[lease.job_id] = False

        def reclaim_repeatedly() -> None:
            start.wait()
            end = time.monotonic() + SHORT + 0.3
            while time.monotonic() < end:
                reclaimed.append(reaper.reclaim_expired())

        # Start both near the expiry, so that some completes win and some lose.
        self.sleep_past(time.monotonic() + SHORT * 0.8)
        threads = [
            threading.Thread(target=complete_all),
            threading.Thread(target=reclaim_repeatedly),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # A store may refuse an expired-but-unreclaimed token; then the job is reclaimed now.
        reclaimed.append(reaper.reclaim_expired())
        assert set(completed) == set(ids)
        assert sum(reclaimed) == sum(1 for won in completed.values() if not won)
        events: dict[str, list[str]] = {}
        for e in client.fetch_events(limit=10_000):
            events.setdefault(e.job_id, []).append(e.type)
        for job_id, won in completed.items():
            job = client.get(job_id)
            if won:
                assert job.status is JobStatus.SUCCEEDED
                assert job.result == "won"
                assert events.get(job_id) == ["x.done"]
            else:
                assert job.status is JobStatus.FAILED
                assert job.error == {"reason": "lease_expired"}
                assert events.get(job_id) == ["job.failed"]

    @requires("thread_safe")
    def test_reclaim_from_many_threads_counts_each_job_once(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        n = 80
        requeue = self.enqueue_n(client, "q", n // 2, max_attempts=3)
        exhaust = self.enqueue_n(client, "q", n // 2, max_attempts=1)
        assert len(client.claim(["q"], worker="w", lease_s=SHORT, limit=n)) == n
        reapers = [open_client(client.namespace) for _ in range(4)]
        self.sleep_past(time.monotonic() + PAST_SHORT)
        start = threading.Barrier(len(reapers))
        totals: list[int] = []

        def reap(reaper: qw.Client) -> None:
            start.wait()
            totals.append(sum(reaper.reclaim_expired() for _ in range(3)))

        threads = [threading.Thread(target=reap, args=(r,)) for r in reapers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sum(totals) == n
        for job_id in requeue:
            job = client.get(job_id)
            assert (job.status, job.attempts) == (JobStatus.QUEUED, 1)
        for job_id in exhaust:
            job = client.get(job_id)
            assert (job.status, job.attempts) == (JobStatus.FAILED, 1)
        events = client.fetch_events(limit=10_000)
        assert sorted(e.job_id for e in events) == sorted(exhaust)
        assert {e.type for e in events} == {"job.failed"}
