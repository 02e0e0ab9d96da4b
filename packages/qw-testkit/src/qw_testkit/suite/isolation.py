"""Namespaces on one store never see or touch each other."""

from __future__ import annotations

import time

import pytest

import qw
from qw.contract import Complete
from qw.model import EventSpec, JobStatus, NewJob, WorkerInfo
from qw_testkit.base import ContractBase, OpenClient, new_namespace, snapshot


class IsolationTests(ContractBase):
    @pytest.fixture
    def neighbour(self, open_client: OpenClient) -> qw.Client:
        """Another namespace on the same store, with some life in it."""
        other = open_client(new_namespace())
        other.enqueue([NewJob("q", "theirs", dedupe_key="k") for _ in range(1)])
        other.enqueue_one("q", "theirs-2")
        lease = other.claim(["q"], worker="their-worker")[0].lease
        other.complete(lease, event=EventSpec("their.event"))
        other.heartbeat(WorkerInfo("their-worker", queues=("q",)))
        return other

    def test_jobs_are_invisible_across_namespaces(
        self, client: qw.Client, neighbour: qw.Client
    ) -> None:
        theirs = [j.id for j in neighbour.list_jobs()]
        assert client.list_jobs() == []
        assert client.counts() == {}
        for job_id in theirs:
            assert client.find(job_id) is None
            with pytest.raises(qw.JobNotFound):
                client.cancel(job_id)
        assert client.claim(["q"], worker="w", limit=10) == []

    def test_claims_and_counts_stay_in_their_namespace(
        self, client: qw.Client, neighbour: qw.Client
    ) -> None:
        before = snapshot(neighbour)
        mine = client.enqueue_one("q", "mine").id
        claims = client.claim(["q"], worker="w", limit=10)
        assert [c.job.id for c in claims] == [mine]
        assert client.counts() == {"q": {s: int(s is JobStatus.RUNNING) for s in JobStatus}}
        assert snapshot(neighbour) == before

    def test_dedupe_keys_and_job_ids_are_per_namespace(
        self, client: qw.Client, neighbour: qw.Client
    ) -> None:
        assert client.enqueue_one("q", "mine", dedupe_key="k").created is True
        their_id = neighbour.list_jobs()[0].id
        answer = client.enqueue([NewJob("q", "same id", id=their_id)])
        assert answer == [qw.Enqueued(their_id, True)]
        assert client.get(their_id).payload == "same id"
        assert neighbour.get(their_id).payload != "same id"

    def test_events_are_per_namespace(self, client: qw.Client, neighbour: qw.Client) -> None:
        assert client.fetch_events() == []
        their_events = neighbour.fetch_events()
        assert [e.type for e in their_events] == ["their.event"]
        assert client.ack_events([e.cursor for e in their_events]) == 0
        assert neighbour.fetch_events() == their_events
        client.enqueue_one("q", 1)
        client.complete(self.claim_one(client).lease, event=EventSpec("my.event"))
        assert [e.type for e in client.fetch_events()] == ["my.event"]
        assert neighbour.fetch_events() == their_events

    def test_switches_are_per_namespace(self, client: qw.Client, neighbour: qw.Client) -> None:
        neighbour.set_enabled(False)
        neighbour.set_enabled(False, queue="q")
        assert client.switches() == qw.Switches(True, {})
        client.enqueue_one("q", 1)
        assert len(client.claim(["q"], worker="w")) == 1
        client.set_enabled(True)
        assert neighbour.is_enabled() is False

    def test_workers_are_per_namespace(self, client: qw.Client, neighbour: qw.Client) -> None:
        assert client.workers() == []
        client.heartbeat(WorkerInfo("my-worker"))
        client.remove_worker("their-worker")
        assert [w.id for w in neighbour.workers()] == ["their-worker"]
        assert [w.id for w in client.workers()] == ["my-worker"]

    def test_leases_do_not_cross_namespaces(self, client: qw.Client, neighbour: qw.Client) -> None:
        their_job = neighbour.enqueue_one("lq", "leased").id
        their_lease = neighbour.claim(["lq"], worker="w")[0].lease
        assert their_lease.job_id == their_job
        before = snapshot(neighbour)
        assert client.finish([Complete(their_lease)]) == [None]
        assert client.renew_many([their_lease]) == [None]
        assert snapshot(neighbour) == before
        assert neighbour.complete(their_lease) is JobStatus.SUCCEEDED

    def test_reclaim_and_purge_stay_in_their_namespace(
        self, client: qw.Client, neighbour: qw.Client
    ) -> None:
        neighbour.enqueue_one("short", 1)
        neighbour.claim(["short"], worker="w", lease_s=0.1)
        time.sleep(0.25)
        before = snapshot(neighbour)
        assert client.reclaim_expired() == 0
        assert client.purge(0) == qw.PurgeResult(0, 0)
        assert snapshot(neighbour) == before
        assert neighbour.reclaim_expired() == 1
