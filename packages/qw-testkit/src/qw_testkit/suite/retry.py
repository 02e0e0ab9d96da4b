"""retry: a failed or cancelled job goes back to its queue, once, with its event.

:meth:`qw.contract.Backend.retry` (capability ``retry``): the job is
``queued`` again, due now, its attempts kept and ``max_attempts`` raised so
that it gets one more; its ``job.retried`` event commits with it; idle
workers on its queue are woken. Any other status is left alone; a workflow
step, and a dedupe key another live job holds, are refused with nothing
written; of racing retries exactly one requeues the job.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any

import pytest

import qw
from qw.aio import AsyncClient
from qw.contract import STORE_EVENT_CANCELLED
from qw.errors import DuplicateJob, JobNotFound, NotRetryable
from qw.model import Event, Job, JobStatus, NewJob
from qw.transitions import EVENT_RETRIED
from qw_testkit.base import ContractBase, OpenClient, snapshot
from qw_testkit.gates import requires

#: How far a retried job's ``run_at`` may be from the store's now read around the call.
CLOCK_SLACK_S = 5.0
#: How soon an idle worker must be woken by a retry (generous: a loaded machine).
PROMPT_S = 1.0
#: Threads racing to retry one job.
THREADS = 8


def _retried_events(client: qw.Client, job_id: str) -> list[Event]:
    return [
        e
        for e in client.fetch_events(limit=10_000)
        if e.job_id == job_id and e.type == EVENT_RETRIED
    ]


class RetryTests(ContractBase):
    # -- helpers -------------------------------------------------------------

    def failed_job(self, client: qw.Client, queue: str = "q", **options: Any) -> Job:
        """A job that ran once and ended ``failed`` with error ``"boom"``."""
        job_id = client.enqueue_one(queue, {"n": 1}, **options).id
        claim = self.claim_one(client, queue)
        assert claim.job.id == job_id
        assert client.fail(claim.lease, "boom") is JobStatus.FAILED
        return client.get(job_id)

    def assert_requeued(self, client: qw.Client, before: Job, low: Any, high: Any) -> Job:
        """The job as ``retry`` must leave it: queued, due now, its history kept."""
        job = client.get(before.id)
        assert job.status is JobStatus.QUEUED
        assert job.attempts == before.attempts, "a retry must keep the attempts made"
        assert job.max_attempts == max(before.max_attempts, before.attempts + 1)
        assert job.result is None
        assert job.error == before.error, "the last error stays until the next attempt ends"
        assert (job.started_at, job.finished_at) == (None, None)
        assert (job.worker, job.lease_expires_at, job.cancel_requested) == (None, None, False)
        # Due at once, on the store's clock.
        assert (low - job.run_at).total_seconds() < CLOCK_SLACK_S
        assert (job.run_at - high).total_seconds() < CLOCK_SLACK_S
        assert job.run_at <= client.now()
        # Nothing the producer gave it changed.
        for name in ("queue", "payload", "priority", "created_at", "dedupe_key", "limit_key"):
            assert getattr(job, name) == getattr(before, name), name
        return job

    # -- what a retry does -----------------------------------------------------

    @requires("retry")
    def test_retry_queues_a_failed_job_again_and_it_runs_to_success(
        self, client: qw.Client
    ) -> None:
        before = self.failed_job(client, max_attempts=3)
        assert before.attempts == 1
        low = client.now()
        assert client.retry(before.id) is JobStatus.QUEUED
        high = client.now()
        self.assert_requeued(client, before, low, high)
        assert client.get(before.id).max_attempts == 3, "attempts remained: none added"

        claim = self.claim_one(client)
        assert claim.job.id == before.id
        assert claim.job.attempts == 2
        assert client.complete(claim.lease, {"ok": True}) is JobStatus.SUCCEEDED
        done = client.get(before.id)
        # (Its error stays, as after any failed attempt a later one made up for.)
        assert (done.status, done.result) == (JobStatus.SUCCEEDED, {"ok": True})
        assert done.finished_at is not None
        counts = client.counts()["q"]
        assert counts[JobStatus.SUCCEEDED] == 1
        assert counts[JobStatus.FAILED] == 0
        assert counts[JobStatus.QUEUED] == 0

    @requires("retry")
    def test_retry_queues_a_cancelled_job_again(self, client: qw.Client) -> None:
        queued = client.enqueue_one("q", 1).id
        assert client.cancel(queued) is JobStatus.CANCELLED
        aborted = client.enqueue_one("q", 2).id
        claim = self.claim_one(client)
        assert client.abort(claim.lease, "stop") is JobStatus.CANCELLED

        for job_id in (queued, aborted):
            before = client.get(job_id)
            low = client.now()
            assert client.retry(job_id) is JobStatus.QUEUED
            self.assert_requeued(client, before, low, client.now())
        claims = client.claim(["q"], worker="w", lease_s=30, limit=10)
        assert sorted(c.job.id for c in claims) == sorted([queued, aborted])
        # Cancelled again after the retry: the store writes that cancel's event too.
        again = client.enqueue_one("q", 3).id
        client.cancel(again)
        client.retry(again)
        before_events = client.fetch_events(limit=10_000)
        assert client.cancel(again) is JobStatus.CANCELLED
        new = [e for e in client.fetch_events(limit=10_000) if e not in before_events]
        assert [(e.job_id, e.type) for e in new] == [(again, STORE_EVENT_CANCELLED)]

    @requires("retry")
    def test_retry_gives_a_job_out_of_attempts_exactly_one_more(self, client: qw.Client) -> None:
        before = self.failed_job(client, max_attempts=1)
        assert client.retry(before.id) is JobStatus.QUEUED
        job = client.get(before.id)
        assert (job.attempts, job.max_attempts) == (1, 2)
        claim = self.claim_one(client)
        assert claim.job.attempts == 2
        # A retry_in is refused by the attempts left: none.
        assert client.fail(claim.lease, "again", retry_in=0.0) is JobStatus.FAILED
        assert client.claim(["q"], worker="w", lease_s=30, limit=1) == []
        # Retried once more: one more again, never a reset.
        assert client.retry(before.id) is JobStatus.QUEUED
        assert (client.get(before.id).attempts, client.get(before.id).max_attempts) == (2, 3)

    @requires("retry")
    def test_retry_of_a_job_failed_by_an_expired_lease(self, client: qw.Client) -> None:
        job_id = client.enqueue_one("q", 1, max_attempts=1).id
        self.claim_one(client, lease_s=0.2)
        deadline = time.monotonic() + 10
        while client.get(job_id).status is JobStatus.RUNNING and time.monotonic() < deadline:
            time.sleep(0.1)
            client.reclaim_expired()
        assert client.get(job_id).status is JobStatus.FAILED
        assert client.retry(job_id) is JobStatus.QUEUED
        claim = self.claim_one(client)
        assert (claim.job.id, claim.job.attempts) == (job_id, 2)

    @requires("retry")
    def test_retry_commits_its_event_with_it(self, client: qw.Client) -> None:
        before = self.failed_job(client, queue="mail")
        seen = client.fetch_events(limit=10_000)
        client.retry(before.id)
        new = [e for e in client.fetch_events(limit=10_000) if e not in seen]
        assert len(new) == 1, f"expected one job.retried event, got {new!r}"
        (event,) = new
        assert (event.job_id, event.type, event.data) == (
            before.id,
            EVENT_RETRIED,
            {"queue": "mail"},
        )
        # A no-op writes none.
        client.retry(before.id)
        assert len(_retried_events(client, before.id)) == 1

    # -- what a retry leaves alone ----------------------------------------------

    @requires("retry")
    def test_retry_leaves_live_and_succeeded_jobs_as_they_are(self, client: qw.Client) -> None:
        done = client.enqueue_one("q", 1).id
        claim = self.claim_one(client)
        client.complete(claim.lease, "r")
        running = client.enqueue_one("q", 2).id
        self.claim_one(client)
        queued = client.enqueue_one("q", 3).id
        later = client.enqueue_one("q", 4, delay=3600).id
        before = snapshot(client)
        expected = {
            done: JobStatus.SUCCEEDED,
            running: JobStatus.RUNNING,
            queued: JobStatus.QUEUED,
            later: JobStatus.QUEUED,
        }
        for job_id, status in expected.items():
            assert client.retry(job_id) is status
        assert snapshot(client) == before, "a retry of a job that did not fail changed the store"

    @requires("retry")
    def test_retry_of_an_unknown_job_is_not_found(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        before = snapshot(client)
        with pytest.raises(JobNotFound):
            client.retry("no-such-job")
        assert snapshot(client) == before

    @requires("retry")
    def test_retry_refuses_a_workflow_step_and_leaves_it_as_it_is(self, client: qw.Client) -> None:
        client.create_workflow(
            "wf", [NewJob("q", 1, id="wf.a"), NewJob("q", 2, id="wf.b", parents=("wf.a",))]
        )
        claim = self.claim_one(client)
        assert claim.job.id == "wf.a"
        client.fail(claim.lease, "boom")
        assert client.get("wf.a").status is JobStatus.FAILED
        assert client.get("wf.b").status is JobStatus.CANCELLED
        before = snapshot(client)
        workflow = client.get_workflow("wf")
        for step in ("wf.a", "wf.b"):
            with pytest.raises(NotRetryable, match="workflow"):
                client.retry(step)
        assert snapshot(client) == before
        assert client.get_workflow("wf") == workflow
        # Refused whatever the step's status: a queued one too.
        client.create_workflow("wf2", [NewJob("q", 3, id="wf2.a")])
        with pytest.raises(NotRetryable):
            client.retry("wf2.a")
        assert client.get("wf2.a").status is JobStatus.QUEUED

    @requires("retry")
    def test_retry_refuses_a_dedupe_key_another_live_job_holds(self, client: qw.Client) -> None:
        old = self.failed_job(client, dedupe_key="k")
        holder = client.enqueue_one("q", {"n": 2}, dedupe_key="k")
        assert holder.created, "a failed job does not hold its dedupe key"
        before = snapshot(client)
        with pytest.raises(DuplicateJob, match=holder.id):
            client.retry(old.id)
        assert snapshot(client) == before

        # Once the holder ended, the retried job holds the key again.
        claim = self.claim_one(client)
        assert claim.job.id == holder.id
        client.complete(claim.lease)
        assert client.retry(old.id) is JobStatus.QUEUED
        again = client.enqueue_one("q", {"n": 3}, dedupe_key="k")
        assert (again.id, again.created) == (old.id, False)

    # -- waking, isolation, races ------------------------------------------------

    @requires("retry")
    def test_retry_wakes_an_idle_worker(self, client: qw.Client, open_client: OpenClient) -> None:
        operator = open_client(client.namespace)
        before = self.failed_job(client)
        assert client.claim(["q"], worker="w") == []
        got: list[tuple[str, float]] = []

        def worker() -> None:
            end = time.monotonic() + 10
            while time.monotonic() < end:
                claims = client.claim(["q"], worker="w")
                if claims:
                    got.append((claims[0].job.id, time.monotonic()))
                    return
                client.wait(["q"], timeout=5)

        thread = threading.Thread(target=worker)
        thread.start()
        time.sleep(0.3)
        operator.retry(before.id)
        retried = time.monotonic()
        thread.join(15)
        assert got, "the idle worker never got the retried job"
        job_id, at = got[0]
        assert job_id == before.id
        assert at - retried < PROMPT_S, f"woken {at - retried:.2f} s after the retry"

    @requires("retry")
    def test_retry_sees_only_its_own_namespace(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        other = open_client(client.namespace + "x")
        before = self.failed_job(client)
        with pytest.raises(JobNotFound):
            other.retry(before.id)
        assert client.get(before.id) == before
        assert other.list_jobs() == []
        assert other.fetch_events() == []
        assert client.retry(before.id) is JobStatus.QUEUED
        assert other.list_jobs() == []

    @requires("retry", "thread_safe")
    def test_racing_retry_calls_requeue_the_job_once(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        before = self.failed_job(client)
        clients = [open_client(client.namespace) for _ in range(THREADS)]
        start = threading.Barrier(THREADS)
        answers: list[JobStatus] = []
        errors: list[BaseException] = []

        def retry(c: qw.Client) -> None:
            start.wait()
            try:
                answers.append(c.retry(before.id))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=retry, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert answers == [JobStatus.QUEUED] * THREADS
        assert len(_retried_events(client, before.id)) == 1, "one retry, one event"
        assert client.counts()["q"][JobStatus.QUEUED] == 1
        job = client.get(before.id)
        assert (job.attempts, job.max_attempts) == (before.attempts, before.max_attempts)

        claimed: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(THREADS)

        def claim(c: qw.Client) -> None:
            start.wait()
            got = c.claim(["q"], worker="w", lease_s=30, limit=5)
            with lock:
                claimed.extend(g.job.id for g in got)

        threads = [threading.Thread(target=claim, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert claimed == [before.id], f"the retried job was claimed {len(claimed)} times"

    # -- the async client and the capability flag ---------------------------------

    @requires("retry")
    def test_async_client_retry_answers_as_the_sync_one(self, client: qw.Client) -> None:
        failed = self.failed_job(client)
        done = client.enqueue_one("q", 2).id
        client.complete(self.claim_one(client).lease)

        async def body() -> tuple[JobStatus, JobStatus]:
            backend = self.make_async_backend(client.namespace)
            if inspect.isawaitable(backend):
                backend = await backend
            aio = AsyncClient(backend)
            try:
                with pytest.raises(JobNotFound):
                    await aio.retry("no-such-job")
                return await aio.retry(failed.id), await aio.retry(done)
            finally:
                await aio.aclose()

        assert asyncio.run(body()) == (JobStatus.QUEUED, JobStatus.SUCCEEDED)
        assert client.get(failed.id).status is JobStatus.QUEUED
        assert len(_retried_events(client, failed.id)) == 1

    def test_retry_without_the_flag_is_refused_before_any_io(self, client: qw.Client) -> None:
        if client.capabilities.retry:
            pytest.skip(f"backend {client.backend.name!r} declares capability retry")
        before = self.failed_job(client)
        with pytest.raises(qw.Unsupported, match="retry"):
            client.retry(before.id)
        assert client.get(before.id) == before
