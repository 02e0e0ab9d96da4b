"""results: :meth:`qw.contract.Backend.wait_finished` is woken by the store when a job ends.

With capability ``result_wakeup``: a waiter gets the terminal job promptly
when ANOTHER backend object on the same store ends it (complete, cancel,
reclaim to failed, a workflow's cancel), not at its timeout; it gets the job
as it is when the timeout passes; an unknown job is JobNotFound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import qw
from qw.model import Job, JobStatus, NewJob
from qw_testkit.base import ContractBase, OpenClient
from qw_testkit.gates import requires

#: How soon after a job's end its waiter must have it (generous: a loaded machine).
PROMPT = 1.0
#: The timeout the waiters are given: a waiter that is not woken sits far past PROMPT.
LONG_WAIT_S = 30.0
#: How long the waiter is left waiting before the other client acts.
SETTLE_S = 0.3


class _Waiter:
    """``client.wait_finished(job_id, timeout)`` on a thread, timed."""

    def __init__(self, client: qw.Client, job_id: str, timeout: float) -> None:
        self.job: Job | None = None
        self.error: BaseException | None = None
        self.returned_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(client, job_id, timeout))
        self._thread.start()

    def _run(self, client: qw.Client, job_id: str, timeout: float) -> None:
        try:
            self.job = client.wait_finished(job_id, timeout)
        except BaseException as exc:
            self.error = exc
        self.returned_at = time.monotonic()

    def join(self, timeout: float) -> Job:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "wait_finished did not return"
        if self.error is not None:
            raise self.error
        assert self.job is not None
        return self.job

    @property
    def waiting(self) -> bool:
        return self._thread.is_alive()


class ResultTests(ContractBase):
    #: The timeout waiters are given; a waiter not woken returns only then. A
    #: self-test may lower it so that a store that never wakes fails quickly.
    result_wait_s: float = LONG_WAIT_S

    def _ended_elsewhere(
        self, client: qw.Client, job_id: str, end: Callable[[], object]
    ) -> tuple[Job, float]:
        """Wait on ``job_id`` in a thread, run ``end`` here; the job and how late the waiter was."""
        waiter = _Waiter(client, job_id, self.result_wait_s)
        time.sleep(SETTLE_S)
        assert waiter.waiting, "wait_finished returned before the job ended"
        end()
        ended = time.monotonic()
        job = waiter.join(self.result_wait_s + 10)
        assert waiter.returned_at is not None
        return job, waiter.returned_at - ended

    @requires("result_wakeup")
    def test_a_waiter_is_woken_when_another_client_completes_the_job(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        worker = open_client(client.namespace)
        job_id = client.enqueue_one("q", 1).id
        lease = self.claim_one(worker).lease
        job, late = self._ended_elsewhere(client, job_id, lambda: worker.complete(lease, {"r": 1}))
        assert (job.status, job.result) == (JobStatus.SUCCEEDED, {"r": 1})
        assert late < PROMPT, (
            f"woken {late:.2f} s after the job ended (waiting {self.result_wait_s} s)"
        )

    @requires("result_wakeup")
    def test_a_retry_does_not_wake_the_waiter_with_a_live_job(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        worker = open_client(client.namespace)
        job_id = client.enqueue_one("q", 1, max_attempts=2).id
        waiter = _Waiter(client, job_id, self.result_wait_s)
        time.sleep(SETTLE_S)
        first = self.claim_one(worker).lease
        assert worker.fail(first, {"e": 1}, retry_in=0) is JobStatus.QUEUED
        time.sleep(SETTLE_S)
        assert waiter.waiting, "a retry (not an end) ended the wait"
        second = self.claim_one(worker).lease
        worker.fail(second, {"e": 2})
        ended = time.monotonic()
        job = waiter.join(self.result_wait_s + 10)
        assert (job.status, job.attempts) == (JobStatus.FAILED, 2)
        assert waiter.returned_at is not None
        assert waiter.returned_at - ended < PROMPT

    @requires("result_wakeup")
    def test_cancelling_a_queued_job_wakes_the_waiter(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        operator = open_client(client.namespace)
        job_id = client.enqueue_one("q", 1).id
        job, late = self._ended_elsewhere(client, job_id, lambda: operator.cancel(job_id))
        assert job.status is JobStatus.CANCELLED
        assert late < PROMPT, f"woken {late:.2f} s after the cancel"

    @requires("result_wakeup")
    def test_a_reclaim_to_failed_wakes_the_waiter(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        sweeper = open_client(client.namespace)
        job_id = client.enqueue_one("q", 1, max_attempts=1).id
        lease_s = 0.3
        self.claim_one(sweeper, lease_s=lease_s)
        expired = time.monotonic() + lease_s + 0.2

        def reclaim() -> None:
            self.sleep_past(expired)
            assert sweeper.reclaim_expired() == 1

        job, late = self._ended_elsewhere(client, job_id, reclaim)
        assert job.status is JobStatus.FAILED
        assert late < PROMPT, f"woken {late:.2f} s after the reclaim"

    @requires("result_wakeup")
    def test_cancelling_a_workflow_wakes_a_waiter_on_its_waiting_step(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        operator = open_client(client.namespace)
        first = NewJob("q", 1, id="wf-first")
        second = NewJob("q", 2, id="wf-second", parents=("wf-first",))
        client.create_workflow("wf", [first, second])
        job, late = self._ended_elsewhere(
            client, "wf-second", lambda: operator.cancel_workflow("wf")
        )
        assert job.status is JobStatus.CANCELLED
        assert late < PROMPT, f"woken {late:.2f} s after the workflow's cancel"

    @requires("result_wakeup")
    def test_a_step_cancelled_by_its_parents_failure_wakes_the_waiter(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        worker = open_client(client.namespace)
        parent = NewJob("q", 1, id="p", max_attempts=1)
        child = NewJob("q", 2, id="c", parents=("p",))
        client.create_workflow("wf", [parent, child])
        lease = self.claim_one(worker).lease
        job, late = self._ended_elsewhere(client, "c", lambda: worker.fail(lease, {"e": 1}))
        assert job.status is JobStatus.CANCELLED
        assert late < PROMPT, f"woken {late:.2f} s after the parent failed"

    @requires("result_wakeup")
    def test_the_live_job_comes_back_after_the_timeout(self, client: qw.Client) -> None:
        job_id = client.enqueue_one("q", 1).id
        start = time.monotonic()
        job = client.wait_finished(job_id, 0.4)
        took = time.monotonic() - start
        assert (job.id, job.status) == (job_id, JobStatus.QUEUED)
        assert 0.35 <= took < 0.4 + PROMPT, f"a 0.4 s wait took {took:.2f} s"

    @requires("result_wakeup")
    def test_an_ended_job_comes_back_at_once(self, client: qw.Client) -> None:
        job_id = client.enqueue_one("q", 1).id
        client.complete(self.claim_one(client).lease, 3)
        start = time.monotonic()
        job = client.wait_finished(job_id, self.result_wait_s)
        assert (job.status, job.result) == (JobStatus.SUCCEEDED, 3)
        assert time.monotonic() - start < PROMPT
        zero = client.wait_finished(job_id, 0)
        assert zero.status is JobStatus.SUCCEEDED

    def test_waiting_for_an_unknown_job_is_job_not_found(self, client: qw.Client) -> None:
        start = time.monotonic()
        with pytest.raises(qw.JobNotFound):
            client.wait_finished("no-such-job", 5)
        # Known at once: an unknown job is not waited for.
        assert time.monotonic() - start < PROMPT

    @requires("result_wakeup")
    def test_a_job_of_another_namespace_is_not_found(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        other = open_client(f"{client.namespace}b")
        job_id = client.enqueue_one("q", 1).id
        with pytest.raises(qw.JobNotFound):
            other.wait_finished(job_id, 0.5)

    def test_bad_arguments_are_refused_before_any_wait(self, client: qw.Client) -> None:
        job_id = client.enqueue_one("q", 1).id
        for timeout in (-1, float("nan"), "1", None):
            with pytest.raises(qw.InvalidInput):
                client.wait_finished(job_id, timeout)  # type: ignore[arg-type]
        with pytest.raises(qw.InvalidInput):
            client.wait_finished(5, 1)  # type: ignore[arg-type]
