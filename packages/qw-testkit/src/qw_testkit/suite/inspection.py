"""Inspection and operations: get, list, counts, cancel, purge, the worker registry, the clock."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest

import qw
from qw.model import EventSpec, JobStatus, NewJob, WorkerInfo
from qw_testkit.base import ContractBase, snapshot
from qw_testkit.gates import requires


class InspectionTests(ContractBase):
    def test_now_is_the_store_clock_in_utc(self, client: qw.Client) -> None:
        first = client.now()
        second = client.now()
        assert first.tzinfo is not None
        assert first.utcoffset() == timedelta(0)
        assert second >= first - timedelta(milliseconds=1)
        assert abs((first - datetime.now(UTC)).total_seconds()) < 300

    def test_get_unknown_job(self, client: qw.Client) -> None:
        with pytest.raises(qw.JobNotFound):
            client.get("no-such-job")
        assert client.find("no-such-job") is None

    def test_list_jobs_by_id_with_filters_and_paging(self, client: qw.Client) -> None:
        a = self.enqueue_n(client, "a", 7)
        b = self.enqueue_n(client, "b", 5)
        client.complete(self.claim_one(client, "a").lease)
        everything = client.list_jobs(limit=1000)
        assert [j.id for j in everything] == sorted(a + b)
        assert [j.id for j in client.list_jobs(queue="b")] == sorted(b)
        succeeded = client.list_jobs(status=JobStatus.SUCCEEDED)
        assert [j.id for j in succeeded] == [a[0]]
        assert [j.id for j in client.list_jobs(queue="a", status="queued")] == sorted(a[1:])
        pages: list[str] = []
        after: str | None = None
        for _ in range(10):  # bounded: a store that ignores `after` must fail, not hang
            page = client.list_jobs(limit=5, after=after)
            if not page:
                break
            assert len(page) <= 5
            pages.extend(j.id for j in page)
            after = page[-1].id
        assert pages == sorted(a + b)

    def test_counts_cover_every_status(self, client: qw.Client) -> None:
        assert client.counts() == {}
        self.enqueue_n(client, "q", 6, max_attempts=1)
        client.enqueue_one("other", 1)
        c1, c2, c3, c4 = client.claim(["q"], worker="w", limit=4)
        client.complete(c1.lease)
        client.fail(c2.lease)
        client.abort(c3.lease)
        counts = client.counts()
        assert counts["q"] == {
            JobStatus.WAITING: 0,
            JobStatus.QUEUED: 2,
            JobStatus.RUNNING: 1,
            JobStatus.SUCCEEDED: 1,
            JobStatus.FAILED: 1,
            JobStatus.CANCELLED: 1,
        }
        assert counts["other"][JobStatus.QUEUED] == 1
        assert counts == self.tally(client.list_jobs(limit=1000))
        assert c4.job.status is JobStatus.RUNNING

    @requires("cross_queue_atomic")
    def test_counts_never_drift_under_a_mixed_workload(self, client: qw.Client) -> None:
        rnd = random.Random(1234)
        ids: list[str] = []
        leases: list[qw.Lease] = []
        for step in range(300):
            op = rnd.random()
            if op < 0.3 or not ids:
                batch = [
                    NewJob(
                        rnd.choice("abc"),
                        step,
                        priority=rnd.randint(-2, 2),
                        max_attempts=rnd.randint(1, 3),
                        dedupe_key=rnd.choice([None, None, "k1", "k2"]),
                    )
                    for _ in range(rnd.randint(1, 4))
                ]
                ids.extend(a.id for a in client.enqueue(batch) if a.created)
            elif op < 0.55:
                claims = client.claim(rnd.sample("abc", 2), worker="w", limit=rnd.randint(1, 3))
                leases.extend(c.lease for c in claims)
            elif op < 0.85 and leases:
                lease = leases.pop(rnd.randrange(len(leases)))
                action = rnd.choice(["complete", "fail", "retry", "abort", "release", "twice"])
                try:
                    if action == "complete":
                        client.complete(lease, step)
                    elif action == "fail":
                        client.fail(lease, step)
                    elif action == "retry":
                        client.fail(lease, step, retry_in=0)
                    elif action == "abort":
                        client.abort(lease)
                    elif action == "release":
                        client.release(lease)
                    else:
                        client.complete(lease)
                        client.complete(lease)
                except qw.LeaseLost:
                    pass
            elif op < 0.95:
                client.cancel(rnd.choice(ids))
            else:
                client.set_enabled(rnd.random() < 0.7)
        client.set_enabled(True)
        listed = client.list_jobs(limit=10_000)
        assert sorted(j.id for j in listed) == sorted(ids)
        by_get = [client.get(job_id) for job_id in ids]
        assert client.counts() == self.tally(listed) == self.tally(by_get)
        for status in JobStatus:
            expected = sum(1 for j in by_get if j.status is status)
            assert len(client.list_jobs(status=status, limit=10_000)) == expected

    def test_cancel_a_queued_job(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, delay=3600)
        assert client.cancel(answer.id) is JobStatus.CANCELLED
        job = client.get(answer.id)
        assert job.status is JobStatus.CANCELLED
        assert job.finished_at is not None
        assert client.claim(["q"], worker="w") == []
        assert client.cancel(answer.id) is JobStatus.CANCELLED
        assert len(client.fetch_events()) == 1

    def test_cancel_a_running_job_flags_it(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1)
        lease = self.claim_one(client).lease
        assert client.cancel(answer.id) is JobStatus.RUNNING
        job = client.get(answer.id)
        assert job.status is JobStatus.RUNNING
        assert job.cancel_requested is True
        renewed = client.renew(lease)
        assert renewed.cancel_requested is True
        assert client.fetch_events() == []
        assert client.abort(renewed, "cancelled by operator") is JobStatus.CANCELLED
        assert client.get(answer.id).cancel_requested is False

    def test_cancel_flag_does_not_survive_into_the_next_attempt(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1, max_attempts=3)
        lease = self.claim_one(client).lease
        client.cancel(answer.id)
        client.fail(lease, retry_in=0)
        again = self.claim_one(client)
        assert again.job.cancel_requested is False
        assert client.renew(again.lease).cancel_requested is False

    @pytest.mark.parametrize("how", ["complete", "fail", "abort"])
    def test_cancel_leaves_a_terminal_job_alone(self, client: qw.Client, how: str) -> None:
        answer = client.enqueue_one("q", 1)
        lease = self.claim_one(client).lease
        finish_as(client, how, lease)
        before = snapshot(client)
        assert client.cancel(answer.id) is client.get(answer.id).status
        assert snapshot(client) == before

    def test_cancel_unknown_job(self, client: qw.Client) -> None:
        before = snapshot(client)
        with pytest.raises(qw.JobNotFound):
            client.cancel("no-such-job")
        assert snapshot(client) == before

    def test_purge_removes_old_terminal_jobs_and_acked_events_only(self, client: qw.Client) -> None:
        self.enqueue_n(client, "q", 6, max_attempts=1)
        queued_id = client.enqueue_one("q", "stays queued", delay=3600).id
        c = client.claim(["q"], worker="w", limit=6)
        client.complete(c[0].lease, event=EventSpec("e", "acked"))
        client.fail(c[1].lease, event=EventSpec("e", "unacked"))
        client.abort(c[2].lease)
        running = {c[3].job.id, c[4].job.id, c[5].job.id}
        client.cancel(c[4].job.id)  # running: flagged, stays live
        acked = [e for e in client.fetch_events() if e.data == "acked"]
        client.ack_events([e.cursor for e in acked])
        assert client.purge(3600) == qw.PurgeResult(jobs=0, events=0)
        time.sleep(0.1)
        result = client.purge(0.05)
        assert result == qw.PurgeResult(jobs=3, events=1)
        left = {j.id for j in client.list_jobs(limit=100)}
        assert left == running | {queued_id}
        assert [e.data for e in client.fetch_events()] == ["unacked"]
        assert client.purge(0.05) == qw.PurgeResult(jobs=0, events=0)

    def test_purge_keeps_recent_terminal_jobs(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        client.complete(self.claim_one(client).lease)
        assert client.purge(3600).jobs == 0
        assert len(client.list_jobs()) == 1

    def test_worker_registry(self, client: qw.Client) -> None:
        assert client.workers() == []
        before = client.now()
        info = WorkerInfo("w-2", queues=("a", "b"), host="host-1", pid=4321, concurrency=8)
        client.heartbeat(info)
        client.heartbeat(WorkerInfo("w-1", queues=("a",)))
        (w1, w2) = client.workers()
        assert (w1.id, w2.id) == ("w-1", "w-2")
        assert (w2.queues, w2.host, w2.pid, w2.concurrency) == (("a", "b"), "host-1", 4321, 8)
        assert w2.last_seen is not None
        assert w2.started_at is not None
        assert w2.last_seen >= before - timedelta(seconds=1)
        time.sleep(0.02)
        client.heartbeat(info)
        refreshed = client.workers()[1]
        assert refreshed.last_seen is not None
        assert refreshed.last_seen >= w2.last_seen
        assert refreshed.started_at == w2.started_at
        client.remove_worker("w-2")
        assert [w.id for w in client.workers()] == ["w-1"]
        client.remove_worker("never-registered")
        assert [w.id for w in client.workers()] == ["w-1"]


def finish_as(client: qw.Client, how: str, lease: qw.Lease) -> JobStatus:
    """Finish ``lease`` by ``how``: "complete", "fail" or "abort"."""
    if how == "complete":
        return client.complete(lease)
    if how == "fail":
        return client.fail(lease)
    return client.abort(lease)
