"""Progress and result wake-ups on the sqlite backend, on real files.

``wait_finished`` is woken at once by an end written through any backend
object of this process on the same file and namespace (a shared signal),
and by any other process's commit within a poll interval (``PRAGMA
data_version``). The poll intervals here are long where the in-process
signal is what is tested, so that a poll could not pass for it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import qw
from qw.backends.sqlite import SqliteBackend
from qw.model import NewJob

#: Longer than any test waits for an in-process wake-up: only the signal can be that fast.
SLOW_POLL_S = 20.0
PROMPT_S = 1.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "qw.db"


def _client(path: Path, poll: float) -> qw.Client:
    return qw.Client(SqliteBackend(path, namespace="r", poll_interval=poll))


@pytest.fixture
def pair(path: Path) -> Iterator[tuple[qw.Client, qw.Client]]:
    """Two backend objects on one file and namespace, polling too slowly to matter."""
    with _client(path, SLOW_POLL_S) as a, _client(path, SLOW_POLL_S) as b:
        yield a, b


def _timed_wait(client: qw.Client, job_id: str, act: Callable[[], object]) -> tuple[qw.Job, float]:
    """``client.wait_finished(job_id, 30)`` while ``act`` runs 0.2 s later; the job and the lag."""
    done: list[float] = []

    def later() -> None:
        time.sleep(0.2)
        act()
        done.append(time.monotonic())

    actor = threading.Thread(target=later)
    actor.start()
    job = client.wait_finished(job_id, 30.0)
    returned = time.monotonic()
    actor.join(30)
    assert done, "the acting thread did not finish"
    return job, returned - done[0]


def test_an_end_through_another_backend_object_wakes_the_wait_at_once(
    pair: tuple[qw.Client, qw.Client],
) -> None:
    waiter, worker = pair
    job_id = waiter.enqueue_one("q", 1).id
    lease = worker.claim(["q"], worker="w", limit=1)[0].lease
    job, lag = _timed_wait(waiter, job_id, lambda: worker.complete(lease, {"n": 1}))
    assert (job.status, job.result) == (qw.JobStatus.SUCCEEDED, {"n": 1})
    assert lag < PROMPT_S


@pytest.mark.parametrize("how", ["cancel", "reclaim", "cancel_workflow", "fail"])
def test_every_kind_of_end_wakes_the_wait(pair: tuple[qw.Client, qw.Client], how: str) -> None:
    waiter, worker = pair
    if how == "cancel_workflow":
        worker.create_workflow("wf", [NewJob("q", 1, id="s1")])
        job_id = "s1"
    else:
        job_id = waiter.enqueue_one("q", 1, max_attempts=1).id
    acts: dict[str, Callable[[], object]] = {
        "cancel": lambda: worker.cancel(job_id),
        "cancel_workflow": lambda: worker.cancel_workflow("wf"),
    }
    if how in ("reclaim", "fail"):
        lease = worker.claim(["q"], worker="w", lease_s=0.1, limit=1)[0].lease
        acts["fail"] = lambda: worker.fail(lease, "boom")
        acts["reclaim"] = lambda: (time.sleep(0.2), worker.reclaim_expired())
    job, lag = _timed_wait(waiter, job_id, acts[how])
    expected = qw.JobStatus.CANCELLED if "cancel" in how else qw.JobStatus.FAILED
    assert job.status is expected
    assert lag < PROMPT_S


def test_a_signal_between_reading_the_job_and_waiting_is_not_lost(
    pair: tuple[qw.Client, qw.Client],
) -> None:
    waiter, worker = pair
    for _ in range(20):
        job_id = waiter.enqueue_one("q", 1).id
        lease = worker.claim(["q"], worker="w", limit=1)[0].lease
        # No delay: the end races the wait's first read of the job.
        finisher = threading.Thread(target=lambda lease=lease: worker.complete(lease))
        started = time.monotonic()
        finisher.start()
        job = waiter.wait_finished(job_id, 30.0)
        finisher.join(30)
        assert job.status is qw.JobStatus.SUCCEEDED
        assert time.monotonic() - started < PROMPT_S


def test_the_timeout_returns_the_job_as_it_is_and_an_unknown_job_is_none(
    pair: tuple[qw.Client, qw.Client],
) -> None:
    waiter, _ = pair
    job_id = waiter.enqueue_one("q", 1).id
    started = time.monotonic()
    assert waiter.wait_finished(job_id, 0.3).status is qw.JobStatus.QUEUED
    assert 0.3 <= time.monotonic() - started < 0.3 + PROMPT_S
    assert waiter.backend.wait_finished("no-such-job", 0.1) is None
    with pytest.raises(qw.JobNotFound):
        waiter.wait_finished("no-such-job", 0.1)


def test_a_wait_in_another_namespace_is_not_woken_for_this_one(path: Path) -> None:
    with _client(path, SLOW_POLL_S) as here:
        there = qw.Client(SqliteBackend(path, namespace="elsewhere", poll_interval=SLOW_POLL_S))
        with there:
            mine = there.enqueue_one("q", 1).id
            job_id = here.enqueue_one("q", 1).id
            lease = here.claim(["q"], worker="w", limit=1)[0].lease
            done = threading.Timer(0.1, lambda: here.complete(lease))
            done.start()
            assert there.wait_finished(mine, 0.6).status is qw.JobStatus.QUEUED
            done.join()
            assert here.get(job_id).status is qw.JobStatus.SUCCEEDED


_FINISHER = """
import sys, time
import qw
from qw.backends.sqlite import SqliteBackend

path, job_id = sys.argv[1], sys.argv[2]
with qw.Client(SqliteBackend(path, namespace="r")) as client:
    lease = client.claim(["q"], worker="child", limit=1)[0].lease
    print("claimed", flush=True)
    sys.stdin.readline()
    client.complete(lease, {"by": "child"})
    print("done", time.monotonic(), flush=True)
"""


def test_an_end_in_another_process_wakes_the_wait_within_a_poll(path: Path) -> None:
    poll = 0.05
    with _client(path, poll) as waiter:
        job_id = waiter.enqueue_one("q", 1).id
        child = subprocess.Popen(
            [sys.executable, "-c", _FINISHER, str(path), job_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdin is not None
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "claimed"
            result: list[tuple[qw.Job, float]] = []
            thread = threading.Thread(
                target=lambda: result.append((waiter.wait_finished(job_id, 30.0), time.monotonic()))
            )
            thread.start()
            time.sleep(0.2)
            assert not result
            child.stdin.write("go\n")
            child.stdin.flush()
            line = child.stdout.readline().split()
            thread.join(30)
            assert line[0] == "done"
            assert result, "wait_finished did not return"
            job, returned = result[0]
            assert (job.status, job.result) == (qw.JobStatus.SUCCEEDED, {"by": "child"})
            # time.monotonic is one clock for the machine (CLOCK_MONOTONIC) on Linux.
            assert returned - float(line[1]) < PROMPT_S
        finally:
            child.wait(30)


def test_progress_is_stored_with_its_event_and_fenced(pair: tuple[qw.Client, qw.Client]) -> None:
    client, other = pair
    job_id = client.enqueue_one("q", 1, max_attempts=2).id
    lease = client.claim(["q"], worker="w", lease_s=0.2, limit=1)[0].lease
    client.set_progress(lease, 0.25, "resizing")
    progress = other.get(job_id).progress
    assert progress is not None
    assert (progress.fraction, progress.message) == (0.25, "resizing")
    assert abs((progress.at - client.now()).total_seconds()) < 5
    (event,) = other.fetch_events()
    assert (event.type, event.job_id, event.data) == (
        "job.progress",
        job_id,
        {"fraction": 0.25, "message": "resizing"},
    )
    time.sleep(0.3)
    assert client.reclaim_expired() == 1
    with pytest.raises(qw.LeaseLost):
        client.set_progress(lease, 0.5)
    assert other.get(job_id).progress == progress
    assert len(other.fetch_events()) == 1
    retry = client.claim(["q"], worker="w", limit=1)[0].lease
    client.set_progress(retry, message="again")
    again = other.get(job_id).progress
    assert again is not None
    assert (again.fraction, again.message) == (None, "again")
    client.complete(retry)
    assert other.get(job_id).progress == again
