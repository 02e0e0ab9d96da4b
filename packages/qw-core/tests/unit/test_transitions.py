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
    LEASE_EXPIRED_ERROR,
    Transition,
    plan_cancel_queued,
    plan_enqueue,
    plan_finish,
    plan_reclaim,
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
