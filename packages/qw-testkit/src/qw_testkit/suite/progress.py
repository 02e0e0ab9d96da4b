"""progress: a running job's reports, fenced like a finish, stored with one event each.

:meth:`qw.contract.Backend.set_progress` (capability ``progress``): the job's
``progress`` and one ``job.progress`` outbox event, written together, only
while the lease is held; a stale lease changes nothing; bad input is refused
by the client before any I/O.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace

import pytest

import qw
from qw.model import PROGRESS_EVENT, Event, JobStatus, NewJob
from qw.validation import MAX_PROGRESS_MESSAGE_CHARS
from qw_testkit.base import ContractBase, OpenClient, snapshot
from qw_testkit.gates import requires

#: How far the store's ``at`` may be from the store's now read around the call (a loaded machine).
CLOCK_SLACK_S = 5.0
#: How a lease goes stale: its job ended, was reclaimed, was claimed again; a
#: token never handed out; this claim's token for another attempt.
STALE_WAYS = ["finished", "reclaimed", "another_attempt", "forged", "attempt"]


def _progress_events(client: qw.Client, job_id: str) -> list[Event]:
    return [e for e in client.fetch_events(limit=10_000) if e.job_id == job_id]


class ProgressTests(ContractBase):
    @requires("progress")
    def test_a_report_on_a_held_lease_sets_progress_and_writes_one_event(
        self, client: qw.Client
    ) -> None:
        job_id = client.enqueue_one("q", 1).id
        claim = self.claim_one(client)
        running = client.get(job_id)
        before = client.fetch_events(limit=10_000)
        low = client.now()
        client.set_progress(claim.lease, 0.4, "resizing")
        high = client.now()

        job = client.get(job_id)
        assert job.progress is not None, "set_progress stored nothing on the job"
        assert (job.progress.fraction, job.progress.message) == (0.4, "resizing")
        assert isinstance(job.progress.fraction, float)
        # On the store's clock, at the write.
        at = job.progress.at
        assert at.tzinfo is not None
        assert (low - at).total_seconds() < CLOCK_SLACK_S
        assert (at - high).total_seconds() < CLOCK_SLACK_S
        # Nothing else about the running job changed.
        assert replace(job, progress=None) == running
        after = client.fetch_events(limit=10_000)
        new = [e for e in after if e not in before]
        assert len(new) == 1, f"expected one progress event, got {new!r}"
        (event,) = new
        assert (event.job_id, event.type) == (job_id, PROGRESS_EVENT)
        assert event.data == {"fraction": 0.4, "message": "resizing"}

    @requires("progress")
    def test_each_report_replaces_the_last_and_has_its_own_event(self, client: qw.Client) -> None:
        job_id = client.enqueue_one("q", 1).id
        claim = self.claim_one(client)
        client.set_progress(claim.lease, 0.25)
        first = client.get(job_id).progress
        assert first is not None
        assert (first.fraction, first.message) == (0.25, None)
        client.set_progress(claim.lease, message="almost")
        second = client.get(job_id).progress
        assert second is not None
        # A report is whole: the fraction of the last one is not kept.
        assert (second.fraction, second.message) == (None, "almost")
        assert second.at >= first.at
        client.set_progress(claim.lease, 1)
        events = [e.data for e in _progress_events(client, job_id)]
        assert events == [
            {"fraction": 0.25, "message": None},
            {"fraction": None, "message": "almost"},
            {"fraction": 1.0, "message": None},
        ]

    @requires("progress")
    @pytest.mark.parametrize(
        "how", ["finished", "reclaimed", "another_attempt", "forged", "attempt"]
    )
    def test_a_stale_lease_raises_lease_lost_and_changes_nothing(
        self, client: qw.Client, how: str
    ) -> None:
        job_id = client.enqueue_one("q", 1).id
        short = 0.3 if how in ("reclaimed", "another_attempt") else 30.0
        lease = self.claim_one(client, lease_s=short).lease
        if how == "finished":
            client.complete(lease, "done")
        elif how in ("reclaimed", "another_attempt"):
            self.sleep_past(time.monotonic() + short + 0.2)
            assert client.reclaim_expired() == 1
            if how == "another_attempt":
                self.claim_one(client)
        elif how == "forged":
            lease = replace(lease, token="f" * len(lease.token))
        else:  # the token of this claim, presented for another attempt
            lease = replace(lease, attempt=lease.attempt + 1)
        before = snapshot(client)
        with pytest.raises(qw.LeaseLost):
            client.set_progress(lease, 0.5, "stale")
        assert snapshot(client) == before, f"a stale ({how}) report changed the store"
        assert client.get(job_id).progress is None

    @requires("progress")
    @pytest.mark.parametrize(
        ("fraction", "message"),
        [
            (1.5, None),
            (-0.1, None),
            (math.nan, None),
            (math.inf, None),
            (True, None),
            ("0.5", None),
            (None, None),
            (None, "x" * (MAX_PROGRESS_MESSAGE_CHARS + 1)),
            (None, 5),
            (0.5, "\ud800"),
        ],
    )
    def test_bad_progress_is_refused_before_any_write(
        self, client: qw.Client, fraction: object, message: object
    ) -> None:
        client.enqueue_one("q", 1)
        lease = self.claim_one(client).lease
        before = snapshot(client)
        with pytest.raises(qw.InvalidInput):
            client.set_progress(lease, fraction, message)  # type: ignore[arg-type]
        assert snapshot(client) == before

    @requires("progress")
    def test_a_report_without_a_lease_is_refused_before_any_write(self, client: qw.Client) -> None:
        job_id = client.enqueue_one("q", 1).id
        self.claim_one(client)
        before = snapshot(client)
        with pytest.raises(qw.InvalidInput):
            client.set_progress(job_id, 0.5)  # type: ignore[arg-type]
        assert snapshot(client) == before

    @requires("progress")
    def test_progress_survives_the_end_and_a_retrys_report_replaces_it(
        self, client: qw.Client
    ) -> None:
        job_id = client.enqueue_one("q", 1, max_attempts=2).id
        first = self.claim_one(client).lease
        client.set_progress(first, 0.5, "first try")
        assert client.fail(first, {"e": 1}, retry_in=0) is JobStatus.QUEUED
        kept = client.get(job_id).progress
        assert kept is not None, "a retry dropped the last attempt's progress"
        assert (kept.fraction, kept.message) == (0.5, "first try")

        second = self.claim_one(client).lease
        still = client.get(job_id).progress
        assert still is not None
        assert (still.fraction, still.message) == (0.5, "first try")
        client.set_progress(second, 0.1, "second try")
        client.complete(second, "ok")
        done = client.get(job_id)
        assert done.status is JobStatus.SUCCEEDED
        assert done.progress is not None, "the job's end dropped its progress"
        assert (done.progress.fraction, done.progress.message) == (0.1, "second try")

    @requires("progress")
    def test_progress_is_per_namespace(self, client: qw.Client, open_client: OpenClient) -> None:
        other = open_client(f"{client.namespace}b")
        shared_id = "shared-job-id"
        client.enqueue([NewJob("q", 1, id=shared_id)])
        other.enqueue([NewJob("q", 2, id=shared_id)])
        lease = self.claim_one(client).lease
        theirs = snapshot(other)
        # The same job id, held in this namespace only: stale over there.
        with pytest.raises(qw.LeaseLost):
            other.set_progress(lease, 0.5, "wrong namespace")
        client.set_progress(lease, 0.7, "here")
        assert snapshot(other) == theirs
        assert other.get(shared_id).progress is None
        mine = client.get(shared_id).progress
        assert mine is not None
        assert mine.fraction == 0.7

    @requires("progress", "thread_safe")
    def test_racing_reports_and_a_finish_keep_one_event_per_applied_report(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        finisher = open_client(client.namespace)
        job_id = client.enqueue_one("q", 1).id
        lease = self.claim_one(client).lease
        applied: list[float] = []
        lock = threading.Lock()
        go = threading.Barrier(5)

        def report(worker: int) -> None:
            go.wait(10)
            for i in range(40):
                fraction = (worker * 40 + i) / 200
                try:
                    client.set_progress(lease, fraction)
                except qw.LeaseLost:
                    return
                with lock:
                    applied.append(fraction)

        threads = [threading.Thread(target=report, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        go.wait(10)
        time.sleep(0.01)
        finisher.complete(lease, "done")
        for t in threads:
            t.join(30)
        events = [e for e in _progress_events(client, job_id) if e.type == PROGRESS_EVENT]
        # Every report that said it applied has its event, and none that did not.
        reported = [e.data["fraction"] for e in events if isinstance(e.data, dict)]
        assert len(reported) == len(events)
        assert sorted(reported) == sorted(applied)
        job = client.get(job_id)
        if applied:
            assert job.progress is not None
            assert job.progress.fraction in applied
        else:
            assert job.progress is None
        with pytest.raises(qw.LeaseLost):
            client.set_progress(lease, 0.99)
