"""The worker runtime on every backend, through the contract only."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, events_by_job, read_lines, running, terminal, wait_until
from runtime_app import register

import qw
from qw.errors import InvalidInput
from qw.model import Job, JobStatus, WorkerInfo
from qw.plugin import hookimpl
from qw.worker import WorkerConfig

S = JobStatus


def finished(app: qw.App, job_id: str, timeout: float = 15.0) -> Job:
    job: Job = wait_until(lambda: terminal(app, job_id), timeout, f"job {job_id} to finish")
    return job


class Recorder:
    """A plugin that records every lifecycle hook the runtime calls."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.claimed: list[str] = []
        self.wrapped: list[str] = []
        self.finished: list[tuple[str, JobStatus]] = []

    @hookimpl
    def qw_worker_started(self, worker: WorkerInfo) -> None:
        self.started.append(worker.id)

    @hookimpl
    def qw_worker_stopped(self, worker: WorkerInfo) -> None:
        self.stopped.append(worker.id)

    @hookimpl
    def qw_job_claimed(self, job: Job) -> None:
        self.claimed.append(job.id)

    @hookimpl(wrapper=True)
    def qw_run_job(self, job: Job) -> Any:
        self.wrapped.append(job.id)
        return (yield)

    @hookimpl
    def qw_job_finished(self, job: Job, status: JobStatus) -> None:
        self.finished.append((job.id, status))


def test_sync_and_async_tasks_run_with_one_event_each(app: qw.App) -> None:
    add, aadd = app.tasks["rt.add"], app.tasks["rt.aadd"]
    answers = app.enqueue_many(
        [add.job(i, 1) for i in range(20)] + [aadd.job(i, 2) for i in range(20)]
    )
    with running(app):
        jobs = [finished(app, a.id) for a in answers]
    assert [j.status for j in jobs] == [S.SUCCEEDED] * 40
    assert [j.result for j in jobs] == [i + 1 for i in range(20)] + [i + 2 for i in range(20)]
    assert all(j.attempts == 1 for j in jobs)
    events = events_by_job(app)
    for job in jobs:
        (event,) = events[job.id]
        assert event.type == "job.succeeded"
        assert isinstance(event.data, dict)
        assert event.data["task"] == job.payload["task"]  # type: ignore[index,call-overload]
        assert event.data["attempt"] == 1
        assert event.data["queue"] == "rt"


def test_payload_is_the_task_name_and_json_arguments(app: qw.App) -> None:
    answer = app.tasks["rt.add"].options(priority=-5, dedupe_key="k1").enqueue(2, b=3)
    job = app.client.get(answer.id)
    assert job.payload == {"task": "rt.add", "args": [2], "kwargs": {"b": 3}}
    assert job.priority == -5
    assert app.tasks["rt.add"].options(dedupe_key="k1").enqueue(9, 9).id == answer.id
    with pytest.raises(qw.InvalidPayload):
        app.tasks["rt.add"].enqueue(object(), 1)


def test_failing_task_retries_with_backoff_then_fails(app: qw.App, notes: Path) -> None:
    recorder = Recorder()
    answer = app.tasks["rt.flaky"].enqueue(str(notes))
    with running(app, recorder):
        job = finished(app, answer.id)
    assert job.status is S.FAILED
    assert job.attempts == 3
    assert isinstance(job.error, dict)
    assert job.error["type"] == "builtins.ValueError"
    assert "always fails" in str(job.error["traceback"])
    # Backoff(base=0.2, factor=2) with equal jitter: >= 0.1 s, then >= 0.2 s.
    times = [float(line.split()[1]) for line in read_lines(notes, "attempts")]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.1
    assert times[2] - times[1] >= 0.2
    assert [s for _, s in recorder.finished] == [S.QUEUED, S.QUEUED, S.FAILED]
    (event,) = events_by_job(app)[job.id]
    assert event.type == "job.failed"
    assert isinstance(event.data, dict)
    assert event.data["attempt"] == 3
    assert event.data["error"] == {"type": "builtins.ValueError", "message": "always fails"}


def test_no_retry_exceptions_and_bad_results_fail_at_once(app: qw.App) -> None:
    fatal = app.tasks["rt.fatal"].enqueue()
    bad = app.tasks["rt.not_json"].enqueue()
    unknown = app.client.enqueue_one("rt", {"task": "rt.nope", "args": [], "kwargs": {}})
    with running(app):
        jobs = [finished(app, a.id) for a in (fatal, bad, unknown)]
    assert [(j.status, j.attempts) for j in jobs] == [(S.FAILED, 1)] * 3
    assert [j.error["type"] for j in jobs] == [  # type: ignore[index,call-overload]
        "builtins.KeyError",
        "qw.InvalidResult",
        "qw.UnknownTask",
    ]
    events = events_by_job(app)
    assert [[e.type for e in events[j.id]] for j in jobs] == [["job.failed"]] * 3


def test_sync_timeout_fails_the_attempt_and_the_late_result_is_dropped(
    app: qw.App, notes: Path
) -> None:
    answer = app.tasks["rt.sync_slow"].enqueue(str(notes))
    with running(app) as worker:
        job = finished(app, answer.id)
        assert job.status is S.FAILED
        assert job.attempts == 2
        assert job.error == {
            "type": "qw.Timeout",
            "message": "attempt ran past its timeout of 0.3 s",
        }
        # Both attempts' threads return late; their results change nothing.
        wait_until(lambda: len(read_lines(notes, "returned")) == 2, 10, "the late returns")
        assert worker.stats.timed_out == 2
    again = app.client.get(answer.id)
    assert again.status is S.FAILED
    assert again.result is None
    assert [e.type for e in events_by_job(app)[answer.id]] == ["job.failed"]


def test_async_timeout_cancels_the_coroutine_and_retries(app: qw.App) -> None:
    answer = app.tasks["rt.async_slow"].enqueue()
    started = time.monotonic()
    with running(app):
        job = finished(app, answer.id)
    assert time.monotonic() - started < 10
    assert (job.status, job.attempts) == (S.FAILED, 2)
    assert job.error["type"] == "qw.Timeout"  # type: ignore[index,call-overload]
    assert [e.type for e in events_by_job(app)[answer.id]] == ["job.failed"]


def test_cancel_a_queued_job(app: qw.App) -> None:
    answer = app.tasks["rt.add"].options(delay=60).enqueue(1, 2)
    assert app.client.cancel(answer.id) is S.CANCELLED
    with running(app):
        time.sleep(0.3)
    assert app.client.get(answer.id).status is S.CANCELLED
    assert [e.type for e in events_by_job(app)[answer.id]] == ["job.cancelled"]


@pytest.mark.parametrize("task", ["rt.async_wait", "rt.sync_cooperative"])
def test_cancel_a_running_job(app: qw.App, task: str) -> None:
    answer = app.tasks[task].enqueue()
    started = time.monotonic()
    with running(app):
        wait_until(lambda: app.client.get(answer.id).status is S.RUNNING, what="the job to start")
        assert app.client.cancel(answer.id) is S.RUNNING
        job = finished(app, answer.id)
    assert time.monotonic() - started < 12
    assert job.status is S.CANCELLED
    (event,) = events_by_job(app)[answer.id]
    assert event.type == "job.cancelled"


def test_a_cancelled_sync_task_that_ignores_it_is_aborted_when_it_returns(app: qw.App) -> None:
    answer = app.tasks["rt.sync_oblivious"].enqueue(1.0)
    with running(app):
        wait_until(lambda: app.client.get(answer.id).status is S.RUNNING, what="the job to start")
        app.client.cancel(answer.id)
        job = finished(app, answer.id)
    assert job.status is S.CANCELLED
    assert job.result is None
    assert [e.type for e in events_by_job(app)[answer.id]] == ["job.cancelled"]


def test_a_paused_queue_is_not_claimed(app: qw.App) -> None:
    app.client.set_enabled(False, "rt")
    answer = app.tasks["rt.add"].enqueue(1, 1)
    with running(app):
        time.sleep(0.5)
        assert app.client.get(answer.id).status is S.QUEUED
        app.client.set_enabled(True, "rt")
        job = finished(app, answer.id)
    assert job.status is S.SUCCEEDED


def test_hooks_see_every_job_and_the_worker_registers(app: qw.App) -> None:
    recorder = Recorder()
    answers = app.enqueue_many([app.tasks["rt.add"].job(1, 1) for _ in range(5)])
    worker = app.worker(["rt"], poll_interval=0.05, load_plugins=False)
    worker.plugins.register(recorder)
    thread = worker.start()
    try:
        for a in answers:
            finished(app, a.id)
        wait_until(lambda: len(recorder.finished) == 5, 5, "job_finished hooks")
        assert [w.id for w in app.client.workers()] == [worker.id]
    finally:
        worker.stop(timeout=30)
        thread.join(30)
    ids = [a.id for a in answers]
    assert sorted(recorder.claimed) == sorted(ids) == sorted(recorder.wrapped)
    assert sorted(recorder.finished) == sorted((i, S.SUCCEEDED) for i in ids)
    assert recorder.started == recorder.stopped == [worker.id]
    assert app.client.workers() == []


def test_stop_lets_running_jobs_finish_within_the_grace_period(app: qw.App, notes: Path) -> None:
    record = app.tasks["rt.record"]
    running_ids = [record.enqueue(str(notes), 0.5).id for _ in range(2)]
    with running(app, concurrency=2, grace_s=10) as worker:
        wait_until(lambda: len(read_lines(notes, "started")) == 2, what="two jobs to start")
        waiting = record.enqueue(str(notes), 0.0).id
        worker.stop(timeout=30)
    assert [app.client.get(i).status for i in running_ids] == [S.SUCCEEDED] * 2
    assert app.client.get(waiting).status is S.QUEUED
    assert len(read_lines(notes, "started")) == len(read_lines(notes, "finished")) == 2


def test_stop_after_grace_releases_coroutines_and_leaves_sync_jobs_to_their_leases(
    app: qw.App, notes: Path
) -> None:
    sync_id = app.tasks["rt.record"].enqueue(str(notes), 3.0).id
    async_id = app.tasks["rt.async_wait"].enqueue().id
    with running(app, concurrency=2, grace_s=0.2) as worker:
        wait_until(
            lambda: all(app.client.get(i).status is S.RUNNING for i in (sync_id, async_id)),
            what="both jobs to start",
        )
    # The cancelled coroutine is released; the sync task's thread still runs,
    # so its job is not released (nobody else may run it yet).
    job = app.client.get(async_id)
    assert (job.status, job.attempts) == (S.QUEUED, 0)
    assert app.client.get(sync_id).status is S.RUNNING
    assert (worker.stats.released, worker.stats.abandoned) == (1, 1)
    # Its lease lapses unrenewed; the sweep requeues it as a new attempt.
    wait_until(lambda: app.client.reclaim_expired(), 5, "the sync job's lease to lapse")
    job = app.client.get(sync_id)
    assert (job.status, job.attempts) == (S.QUEUED, 1)
    wait_until(lambda: read_lines(notes, "finished"), 5, "the abandoned thread to return")
    assert app.client.get(sync_id).result is None  # its late result was not written
    assert events_by_job(app) == {}


def test_every_terminal_transition_has_exactly_one_event(app: qw.App, notes: Path) -> None:
    t = app.tasks
    jobs = [
        t["rt.add"].job(1, 2),
        t["rt.aadd"].job(1, 2),
        t["rt.flaky"].options(max_attempts=2).job(str(notes)),
        t["rt.fatal"].job(),
        t["rt.add"].options(delay=60).job(0, 0),
    ]
    answers = app.enqueue_many(jobs)
    app.client.cancel(answers[-1].id)
    with running(app):
        done = [finished(app, a.id) for a in answers]
    events = events_by_job(app)
    expected = {S.SUCCEEDED: "job.succeeded", S.FAILED: "job.failed", S.CANCELLED: "job.cancelled"}
    for job in done:
        assert [e.type for e in events[job.id]] == [expected[job.status]], job
    assert sorted(events) == sorted(a.id for a in answers)


def test_current_job_outside_a_task_is_an_error() -> None:
    with pytest.raises(LookupError):
        qw.current_job()


def test_a_backend_that_is_not_thread_safe_gets_a_client_per_worker_thread(
    monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    from dataclasses import replace

    from qw.backends.memory import MemoryBackend

    monkeypatch.setattr(
        MemoryBackend, "capabilities", replace(MemoryBackend.capabilities, thread_safe=False)
    )
    opened: list[qw.Client] = []
    app = qw.App("memory://unsafe", namespace)
    register(app)
    original = app.open_client

    def counting_open() -> qw.Client:
        client = original()
        opened.append(client)
        return client

    monkeypatch.setattr(app, "open_client", counting_open)
    answers = app.enqueue_many([app.tasks["rt.add"].job(i, i) for i in range(10)])
    with running(app):
        jobs = [finished(app, a.id) for a in answers]
    assert [j.result for j in jobs] == [2 * i for i in range(10)]
    assert len(opened) == 2  # the finisher's and the heartbeat's
    assert len({id(c) for c in [*opened, app.client]}) == 3
    app.close()


def test_an_app_given_a_client_that_is_not_thread_safe_refuses_to_run_a_worker(
    monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    # The app cannot open a client per thread from a client (it has no URL):
    # sharing the one would use a backend that is not thread-safe from four threads.
    import threading
    from dataclasses import replace

    from conftest import FAST

    from qw.backends.memory import MemoryBackend

    monkeypatch.setattr(
        MemoryBackend, "capabilities", replace(MemoryBackend.capabilities, thread_safe=False)
    )
    client = qw.open("memory://shared-unsafe", namespace=namespace)
    app = qw.App(client=client)
    register(app)
    answer = app.tasks["rt.add"].enqueue(1, 2)
    with pytest.raises(qw.ConfigurationError, match="not thread-safe"):
        app.open_client()
    worker = app.worker(["rt"], **FAST)
    refused: list[qw.ConfigurationError] = []

    def run() -> None:
        try:
            worker.run(handle_signals=False)
        except qw.ConfigurationError as exc:
            refused.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    worker.stop(timeout=10)
    (error,) = refused
    assert "not thread-safe" in str(error)
    assert client.get(answer.id).status is S.QUEUED
    assert client.workers() == []
    client.close()


def test_an_app_given_a_thread_safe_client_shares_it_with_the_worker(namespace: str) -> None:
    with qw.open("memory://shared-safe", namespace=namespace) as client:
        app = qw.App(client=client)
        register(app)
        assert app.open_client() is client
        answer = app.tasks["rt.add"].enqueue(1, 2)
        with running(app):
            assert finished(app, answer.id).result == 3


def test_a_worker_that_cannot_renew_loses_its_jobs_and_their_late_results(
    app: qw.App, notes: Path
) -> None:
    answer = app.tasks["rt.record"].enqueue(str(notes), 0.8)
    with running(app, lease_s=0.3) as worker:
        # As if the worker froze: its leases expire and its own sweep reclaims them.
        worker.renew_leases = lambda client: None  # type: ignore[method-assign]
        job = finished(app, answer.id)
        wait_until(lambda: worker.stats.lost == 3, 10, "the three late results to be dropped")
    assert (job.status, job.attempts, job.result) == (S.FAILED, 3, None)
    assert job.error == {"reason": "lease_expired"}
    assert worker.stats.succeeded == 0
    assert len(read_lines(notes, "finished")) == 3
    (event,) = events_by_job(app)[answer.id]
    assert event.type == "job.failed"


def test_prefetched_jobs_wait_for_a_slot_and_go_back_untouched_at_stop(
    app: qw.App, notes: Path
) -> None:
    record = app.tasks["rt.record"]
    ids = [a.id for a in app.enqueue_many([record.job(str(notes), 1.0) for _ in range(3)])]
    with running(app, concurrency=1, prefetch=2, grace_s=10) as worker:
        wait_until(lambda: all(app.client.get(i).status is S.RUNNING for i in ids), what="3 claims")
        wait_until(lambda: read_lines(notes, "started"), what="the first job to start")
        assert len(read_lines(notes, "started")) == 1  # one slot: one runs, two wait
        assert worker.running_jobs == 3
        worker.stop(timeout=30)
    first = read_lines(notes, "finished")[0].split()[0]
    for job_id in ids:
        job = app.client.get(job_id)
        if job_id == first:
            assert (job.status, job.attempts) == (S.SUCCEEDED, 1)
        else:
            assert (job.status, job.attempts) == (S.QUEUED, 0)
    assert len(read_lines(notes, "started")) == 1


# -- the public extension points: inline, held_jobs / wait_idle, wait_for_work -------


@pytest.mark.parametrize("inline", [False, True])
def test_inline_runs_sync_tasks_in_the_worker_thread_and_coroutines_on_the_loop(
    app: qw.App, inline: bool
) -> None:
    @app.task(name="rt.thread_name", queue="rt")
    def thread_name() -> str:
        return threading.current_thread().name

    @app.task(name="rt.athread_name", queue="rt")
    async def athread_name() -> str:
        return threading.current_thread().name

    answers = app.enqueue_many(
        [thread_name.job() for _ in range(5)] + [athread_name.job() for _ in range(5)]
    )
    with running(app, inline=inline) as worker:
        jobs = [finished(app, a.id) for a in answers]
    assert [j.status for j in jobs] == [S.SUCCEEDED] * 10
    names = [str(j.result) for j in jobs]
    if inline:
        assert names[:5] == [f"qw-worker-{worker.id}"] * 5
    else:
        assert all(name.startswith("qw-task-") for name in names[:5]), names
    assert names[5:] == ["qw-async"] * 5


def test_inline_a_stop_releases_the_jobs_claimed_with_the_running_one(
    app: qw.App, notes: Path
) -> None:
    record = app.tasks["rt.record"]
    ids = [a.id for a in app.enqueue_many([record.job(str(notes), 1.0) for _ in range(3)])]
    with running(app, inline=True, concurrency=1, prefetch=2, grace_s=10) as worker:
        wait_until(lambda: all(app.client.get(i).status is S.RUNNING for i in ids), what="3 claims")
        wait_until(lambda: read_lines(notes, "started"), what="the first job to start")
        assert worker.held_jobs == 3
        worker.stop(timeout=30)
    # The one running finished; the two waiting behind it in the claiming
    # thread were not started once the stop came, but released.
    (line,) = read_lines(notes, "started")
    first = line.split()[0]
    for job_id in ids:
        job = app.client.get(job_id)
        if job_id == first:
            assert (job.status, job.attempts) == (S.SUCCEEDED, 1)
        else:
            assert (job.status, job.attempts) == (S.QUEUED, 0)
    assert worker.stats.released == 2


def test_inline_jobs_waiting_behind_the_running_one_keep_their_leases(
    app: qw.App, notes: Path
) -> None:
    record = app.tasks["rt.record"]
    ids = [a.id for a in app.enqueue_many([record.job(str(notes), 0.5) for _ in range(3)])]
    # The last one waits about 1 s in the claiming thread: longer than its lease.
    with running(app, inline=True, concurrency=1, prefetch=2, lease_s=0.6) as worker:
        jobs = [finished(app, i) for i in ids]
    assert [(j.status, j.attempts) for j in jobs] == [(S.SUCCEEDED, 1)] * 3
    assert (worker.stats.claimed, worker.stats.lost) == (3, 0)
    assert len(read_lines(notes, "started")) == 3


def test_held_jobs_lasts_until_the_outcome_is_written_and_wait_idle_waits_for_it(
    app: qw.App, notes: Path
) -> None:
    answer = app.tasks["rt.record"].enqueue(str(notes), 0.5)
    with running(app) as worker:
        assert worker.wait_idle(0)  # nothing claimed yet or already done: holds nothing
        wait_until(lambda: read_lines(notes, "started"), what="the job to start")
        assert worker.held_jobs == 1
        assert not worker.wait_idle(0.05)
        assert worker.wait_idle(15)
        assert worker.held_jobs == 0
        # Idle means written, not just returned: the store has the outcome.
        assert app.client.get(answer.id).status is S.SUCCEEDED


class StopWhenEmpty(qw.Worker):
    """A worker whose idle policy stops it once its queues have nothing queued."""

    waits = 0

    def wait_for_work(self, client: qw.Client) -> None:
        self.waits += 1
        counts = client.counts()
        if not self.held_jobs and not any(
            counts.get(q, {}).get(S.QUEUED, 0) for q in self.config.queues
        ):
            self.request_stop()
            return
        super().wait_for_work(client)


def test_a_subclass_wait_for_work_decides_when_an_idle_worker_stops(app: qw.App) -> None:
    add = app.tasks["rt.add"]
    answers = app.enqueue_many([add.job(i, 1) for i in range(5)])
    worker = StopWhenEmpty(app, WorkerConfig(queues=("rt",), **FAST), load_plugins=False)
    # A watchdog, so that a worker that never asks its idle policy fails instead of hanging.
    watchdog = threading.Timer(30, worker.stop, kwargs={"force": True, "timeout": 0})
    watchdog.start()
    try:
        started = time.monotonic()
        stats = worker.run(handle_signals=False)
    finally:
        watchdog.cancel()
    assert time.monotonic() - started < 20
    assert stats.succeeded == 5
    assert worker.waits >= 1
    assert [app.client.get(a.id).result for a in answers] == [1, 2, 3, 4, 5]


def test_inline_is_off_by_default_and_must_be_a_bool() -> None:
    assert WorkerConfig().inline is False
    assert WorkerConfig(inline=True).inline is True
    with pytest.raises(InvalidInput, match="inline must be a bool"):
        WorkerConfig(inline="yes")  # type: ignore[arg-type]
