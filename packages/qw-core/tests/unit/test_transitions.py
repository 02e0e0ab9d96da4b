"""qw.transitions: the one place that decides what a write does to a job."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

import qw
from qw.contract import Insert
from qw.model import Abort, Complete, EventSpec, Fail, JobStatus, Lease, Release
from qw.transitions import (
    EVENT_CANCELLED,
    EVENT_FAILED,
    EVENT_RETRIED,
    LEASE_EXPIRED_ERROR,
    Transition,
    plan_cancel_queued,
    plan_enqueue,
    plan_finish,
    plan_reclaim,
    plan_retry,
    repeat_status,
)

LEASE = Lease("j", "tok", datetime(2026, 1, 1, tzinfo=UTC), attempt=2, max_attempts=3)
LAST = replace(LEASE, attempt=3)


def test_complete_succeeds_with_its_result_and_event() -> None:
    t = plan_finish(Complete(LEASE, {"r": 1}, EventSpec("e")), body='{"r":1}', event_data="null")
    assert t == Transition(
        JobStatus.SUCCEEDED,
        result='{"r":1}',
        finished=True,
        finished_by="tok",
        event_type="e",
        event_data="null",
    )


def test_a_failure_with_retry_in_and_attempts_left_is_queued_again_later() -> None:
    t = plan_finish(Fail(LEASE, "boom", retry_in=5.0), body='"boom"')
    assert (t.status, t.run_in, t.error, t.finished, t.attempts) == (
        JobStatus.QUEUED,
        5.0,
        '"boom"',
        False,
        None,
    )


@pytest.mark.parametrize(
    "outcome", [Fail(LAST, "boom", retry_in=5.0), Fail(LEASE, "boom", retry_in=None)]
)
def test_a_failure_without_retry_or_attempts_left_is_final(outcome: Fail) -> None:
    t = plan_finish(outcome, body='"boom"')
    assert (t.status, t.run_in, t.error, t.finished) == (JobStatus.FAILED, None, '"boom"', True)


def test_abort_cancels_and_release_gives_the_attempt_back() -> None:
    assert plan_finish(Abort(LEASE, "stop"), body='"stop"').status is JobStatus.CANCELLED
    released = plan_finish(Release(LEASE))
    assert released == Transition(JobStatus.QUEUED, attempts=1, finished_by="tok")


def test_a_repeat_is_the_same_token_and_the_same_status() -> None:
    t = plan_finish(Complete(LEASE), body="null")
    assert repeat_status(t, JobStatus.SUCCEEDED, "tok") is JobStatus.SUCCEEDED
    assert repeat_status(t, JobStatus.FAILED, "tok") is None
    assert repeat_status(t, JobStatus.SUCCEEDED, "other") is None
    assert repeat_status(t, JobStatus.SUCCEEDED, None) is None
    # The store's own transitions record no token, so nothing repeats them.
    assert repeat_status(plan_cancel_queued(queue="q"), JobStatus.CANCELLED, None) is None


def test_reclaim_requeues_while_attempts_remain_else_fails_with_the_stores_event() -> None:
    assert plan_reclaim(attempts=2, max_attempts=3, queue="q") == Transition(JobStatus.QUEUED)
    failed = plan_reclaim(attempts=3, max_attempts=3, queue="q.1")
    assert (failed.status, failed.error, failed.finished) == (
        JobStatus.FAILED,
        LEASE_EXPIRED_ERROR,
        True,
    )
    assert failed.event_type == EVENT_FAILED
    assert json.loads(failed.event_data or "") == {
        "queue": "q.1",
        "reason": "lease_expired",
        "attempts": 3,
    }
    assert json.loads(LEASE_EXPIRED_ERROR) == {"reason": "lease_expired"}


def test_cancelling_a_queued_job_writes_the_stores_event() -> None:
    t = plan_cancel_queued(queue="emails")
    assert (t.status, t.finished, t.event_type) == (JobStatus.CANCELLED, True, EVENT_CANCELLED)
    assert json.loads(t.event_data or "") == {"queue": "emails", "reason": "cancelled"}


def _insert(job_id: str, key: str | None) -> Insert:
    return Insert(job_id, "q", "null", 0, None, None, 3, key)


def test_plan_enqueue_answers_held_keys_and_lets_the_first_of_a_batch_win() -> None:
    jobs = [_insert("a", "k"), _insert("b", "k"), _insert("c", None), _insert("d", "held")]
    answers, insert = plan_enqueue(jobs, {"held": "old"})
    assert answers == [
        qw.Enqueued("a", True),
        qw.Enqueued("a", False),
        qw.Enqueued("c", True),
        qw.Enqueued("old", False),
    ]
    assert insert == [0, 2]


def test_the_client_stamps_each_lease_with_its_attempt_and_refuses_one_without() -> None:
    with qw.open("memory://transitions", namespace="stamp") as client:
        client.enqueue_one("q", 1, max_attempts=4)
        (claim,) = client.claim(["q"], worker="w")
        assert (claim.lease.attempt, claim.lease.max_attempts) == (1, 4)
        renewed = client.renew(claim.lease)
        assert (renewed.attempt, renewed.max_attempts) == (1, 4)
        bare = Lease(claim.lease.job_id, claim.lease.token, claim.lease.expires_at)
        with pytest.raises(qw.InvalidInput, match="attempt"):
            client.complete(bare)
        assert client.get(claim.job.id).status is JobStatus.RUNNING
        assert client.complete(renewed) is JobStatus.SUCCEEDED


# -- retry ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_retry_queues_the_job_now_with_its_history_and_its_event(status: JobStatus) -> None:
    t = plan_retry(status, 2, 3, None, job_id="j", queue="mail")
    assert t == Transition(
        JobStatus.QUEUED,
        run_in=0.0,
        result="null",
        event_type=EVENT_RETRIED,
        event_data='{"queue":"mail"}',
        max_attempts=3,
        reopened=True,
    )
    # Attempts, error and progress stay as they are; the job comes off every lease field.
    assert (t.attempts, t.error, t.finished, t.finished_by) == (None, None, False, None)
    assert json.loads(t.event_data or "") == {"queue": "mail"}


@pytest.mark.parametrize(("attempts", "max_attempts", "after"), [(3, 3, 4), (5, 3, 6), (1, 9, 9)])
def test_a_retry_leaves_at_least_one_attempt(attempts: int, max_attempts: int, after: int) -> None:
    t = plan_retry(JobStatus.FAILED, attempts, max_attempts, None, job_id="j", queue="q")
    assert t is not None
    assert t.max_attempts == after


@pytest.mark.parametrize(
    "status", [JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]
)
def test_a_retry_of_any_other_status_is_a_no_op(status: JobStatus) -> None:
    assert plan_retry(status, 1, 1, None, job_id="j", queue="q") is None
    # Even with a holder of the key: nothing would be written, so nothing conflicts.
    assert plan_retry(status, 1, 1, None, job_id="j", queue="q", holder="other") is None


@pytest.mark.parametrize("status", list(JobStatus))
def test_a_workflow_step_is_never_retried(status: JobStatus) -> None:
    with pytest.raises(qw.errors.NotRetryable, match="step of workflow 'wf'") as caught:
        plan_retry(status, 1, 1, "wf", job_id="wf.a", queue="q")
    assert isinstance(caught.value, qw.InvalidInput)


def test_a_dedupe_key_held_by_another_live_job_refuses_the_retry() -> None:
    with pytest.raises(qw.DuplicateJob, match="'holder-1'"):
        plan_retry(JobStatus.FAILED, 1, 1, None, job_id="j", queue="q", holder="holder-1")


def test_the_client_refuses_a_retry_before_any_io_without_the_capability() -> None:
    from qw.backends.memory import MemoryBackend

    class NoRetry(MemoryBackend):
        capabilities = replace(MemoryBackend.capabilities, retry=False)
        calls = 0

        def retry(self, job_id: str) -> JobStatus | None:
            NoRetry.calls += 1
            return super().retry(job_id)

    client = qw.Client(NoRetry("no-retry", namespace="n"))
    job_id = client.enqueue_one("q", 1).id
    with pytest.raises(qw.Unsupported, match="'retry'"):
        client.retry(job_id)
    with pytest.raises(qw.InvalidInput):
        client.retry("")
    assert NoRetry.calls == 0
