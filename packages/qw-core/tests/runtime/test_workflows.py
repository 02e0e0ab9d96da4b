"""Workflows run by a real worker, on every backend: results flow, failures propagate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import events_by_job, read_lines, running, wait_until

import qw
from qw.model import JobStatus, ParentFailure, WorkflowState

S = JobStatus


def test_the_onboarding_example_runs_and_passes_results(app: qw.App, notes: Path) -> None:
    t = app.tasks
    wf = app.workflow("onboard-42")
    user = wf.add(t["rt.wf.fetch"], 42)
    s = wf.add(t["rt.wf.score"], user, bonus=1)
    w = wf.add(t["rt.wf.welcome"], str(notes), user)
    parts = wf.map(t["rt.wf.score"], [user, user])
    wf.add(t["rt.wf.report"], parts, after=[w, s])
    handle = wf.enqueue()
    assert handle.created
    # Creating it again (a retried request) writes nothing.
    again = app.workflow("onboard-42")
    again.add(t["rt.wf.fetch"], 1)
    assert again.enqueue().created is False
    with running(app):
        assert handle.result(timeout=30) == "2 scores, total 168"
    status = handle.status()
    assert status.state is WorkflowState.SUCCEEDED
    assert status.counts == {S.SUCCEEDED: 6}
    assert handle.results()[s.id] == 85
    assert read_lines(notes, "welcomed") == ["user 42"]
    events = events_by_job(app)
    assert [e.type for e in events["onboard-42"]] == ["workflow.succeeded"]
    assert all(len(events[job.id]) == 1 for job in handle.steps())


def test_a_failure_cancels_descendants_and_a_run_step_sees_it(app: qw.App) -> None:
    t = app.tasks
    wf = app.workflow()
    bad = wf.add(t["rt.wf.boom"])
    cancelled = wf.add(t["rt.wf.score"], bad)
    grandchild = wf.add(t["rt.wf.report"], [cancelled])
    survey = wf.add(t["rt.wf.survey"], bad, on_parent_failure=ParentFailure.RUN)
    handle = wf.enqueue(output=survey)
    with running(app):
        wait_until(lambda: handle.status().state is not WorkflowState.RUNNING, what="the end")
    with pytest.raises(qw.WorkflowFailed) as failed:
        handle.result()
    assert failed.value.state == "failed"
    assert set(failed.value.errors) == {bad.id, cancelled.id, grandchild.id}
    jobs = {job.id: job for job in handle.steps()}
    assert jobs[bad.id].status is S.FAILED
    for step in (cancelled, grandchild):
        assert jobs[step.id].status is S.CANCELLED
        assert jobs[step.id].error["reason"] == "parent_failed"  # type: ignore[index,call-overload]
    assert jobs[survey.id].status is S.SUCCEEDED
    assert jobs[survey.id].result == {"value": None, "failed": [bad.id]}


def test_a_retried_parent_hands_on_its_successful_result(app: qw.App, notes: Path) -> None:
    t = app.tasks
    wf = app.workflow()
    flaky = wf.add(t["rt.wf.once_flaky"], str(notes))
    wf.add(t["rt.wf.survey"], flaky)
    handle = wf.enqueue()
    with running(app):
        assert handle.result(timeout=30) == {"value": "attempt 2", "failed": []}
    assert [line.split()[1] for line in read_lines(notes, "flaky")] == ["1", "2"]


def test_async_steps_get_their_parents_results(app: qw.App) -> None:
    t = app.tasks
    wf = app.workflow()
    user = wf.add(t["rt.wf.fetch"], 7)
    wf.add(t["rt.wf.report"], wf.map(t["rt.wf.ascore"], [user, user, user]))
    with running(app):
        assert wf.enqueue().result(timeout=30) == "3 scores, total 63"


def test_a_running_step_adds_steps_once_across_its_retries(app: qw.App, notes: Path) -> None:
    wf = app.workflow()
    crawl = wf.add(app.tasks["rt.wf.crawl"], str(notes), 4, fail_first=True)
    handle = wf.enqueue(output=crawl)
    with running(app):
        assert handle.result(timeout=30) == 4
    # The first attempt added 4 pages and a report, then failed; the retry
    # made the same ids, so the store wrote nothing the second time.
    assert read_lines(notes, "crawl") == ["1 True", "2 False"]
    steps = handle.steps()
    assert len(steps) == 6
    reports = [job for job in steps if job.payload["task"] == "rt.wf.report"]  # type: ignore[index,call-overload]
    assert [job.result for job in reports] == ["4 scores, total 12"]
    assert all(job.status is S.SUCCEEDED for job in steps)


def test_cancelling_a_workflow_stops_what_has_not_run(app: qw.App) -> None:
    t = app.tasks
    wf = app.workflow()
    slow = wf.add(t["rt.sync_cooperative"])
    later = wf.add(t["rt.wf.score"], slow)
    handle = wf.enqueue()
    with running(app):
        wait_until(lambda: app.client.get(slow.id).status is S.RUNNING, what="the step to run")
        handle.cancel()
        done = handle.wait(timeout=30)
    assert done.state is WorkflowState.CANCELLED
    assert app.client.get(later.id).status is S.CANCELLED
    assert app.client.get(slow.id).status is S.CANCELLED
    assert [e.type for e in events_by_job(app)[handle.id]] == ["workflow.cancelled"]


def test_an_idle_worker_picks_promoted_steps_up_through_wakeups(app: qw.App) -> None:
    if not app.client.capabilities.native_wakeup:
        pytest.skip(f"{app.client.backend.name} has no native wake-up: promoted steps wait a poll")
    t = app.tasks
    wf = app.workflow()
    step = wf.add(t["rt.wf.fetch"], 1)
    for _ in range(5):
        step = wf.add(t["rt.wf.score"], step)
        step = wf.add(t["rt.wf.fetch"], 1, after=[step])
    handle = wf.enqueue()
    # A 30 s poll: eleven steps in a few seconds means each promotion woke it.
    with running(app, poll_interval=30.0):
        started = time.monotonic()
        handle.wait(timeout=20)
        took = time.monotonic() - started
    assert handle.status().state is WorkflowState.SUCCEEDED
    assert took < 10, f"a chain of 11 steps took {took:.1f} s with a 30 s poll"
