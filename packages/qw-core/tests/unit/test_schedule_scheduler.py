"""The scheduler's passes on real stores, on a clock the test moves.

Each store runs where its backend declares ``schedules`` (memory always; a
real SQLite file, and PostgreSQL and Redis on 127.0.0.1, once their backends
have the records; a loud skip names the backend until then).
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import qw
from qw.errors import QwError
from qw.model import Complete, JobStatus
from qw.schedule import Periodic, Scheduler, job_id
from qw_testkit.servers import require_server, server_url

T0 = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _probe(url: str) -> None:
    qw.open(url, namespace="probe").close()


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def url(request: pytest.FixtureRequest, memory_url: str, tmp_path: Path) -> str:
    name = request.param
    if name == "memory":
        found = memory_url
    elif name == "sqlite":
        found = f"sqlite:///{tmp_path / 'schedules.db'}"
    else:
        found = require_server(name, server_url(name), _probe)
    with qw.open(found, namespace="probe") as client:
        if not client.capabilities.schedules:
            pytest.skip(f"SKIPPED LOUDLY: backend {name} does not declare schedules yet")
    return found


class Clock:
    """The time the schedulers compute ticks on; the test moves it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def move(self, by: timedelta) -> None:
        self.now += by


@pytest.fixture
def app(url: str) -> Iterator[qw.App]:
    application = qw.App(url, namespace=f"sch{secrets.token_hex(5)}")

    @application.periodic("* * * * *", name="minutely", args=["m"])
    @application.task(name="sch.note", queue="sch")
    def note(label: str) -> str:
        return label

    yield application
    application.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def scheduler(app: qw.App, clock: Clock, *schedules: Periodic) -> Scheduler:
    return Scheduler(app.client, list(schedules or app.schedules.values()), clock=clock)


def job_ids(app: qw.App) -> list[str]:
    return sorted(j.id for j in app.client.list_jobs(limit=1000))


def last_tick(app: qw.App, name: str = "minutely") -> datetime | None:
    (record,) = [s for s in app.client.schedules() if s.name == name]
    return record.last_tick


def test_a_new_schedule_starts_at_its_next_tick_and_enqueues_each_tick_once(
    app: qw.App, clock: Clock
) -> None:
    sched = scheduler(app, clock)
    assert sched.run_once() == pytest.approx(30.0)
    # The tick already past when the schedule first ran is not enqueued.
    assert job_ids(app) == []
    assert last_tick(app) == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    clock.move(MINUTE)
    sched.run_once()
    sched.run_once()
    assert job_ids(app) == ["minutely@20260601T120100Z"]
    job = app.client.get("minutely@20260601T120100Z")
    assert (job.queue, job.payload) == ("sch", {"task": "sch.note", "args": ["m"], "kwargs": {}})
    assert last_tick(app) == datetime(2026, 6, 1, 12, 1, tzinfo=UTC)
    assert sched.enqueued == 1


def test_ticks_missed_while_no_scheduler_ran_run_the_latest_once(app: qw.App, clock: Clock) -> None:
    scheduler(app, clock).run_once()
    clock.move(10 * MINUTE)
    # A scheduler started later (a restart) sees ten ticks due: it runs the latest.
    scheduler(app, clock).run_once()
    assert job_ids(app) == ["minutely@20260601T121000Z"]


def test_skip_runs_only_ticks_seen_on_time(app: qw.App, clock: Clock) -> None:
    task = app.tasks["sch.note"]
    hourly = app.periodic("0 * * * *", task=task, args=["h"], name="hourly", missed="skip")
    sched = scheduler(app, clock, hourly)
    sched.run_once()
    clock.now = datetime(2026, 6, 1, 13, 0, 59, tzinfo=UTC)
    sched.run_once()
    assert job_ids(app) == ["hourly@20260601T130000Z"]
    # Down from 13:30 to 14:05: the 14:00 tick is over a minute late, so skipped.
    clock.now = datetime(2026, 6, 1, 14, 5, tzinfo=UTC)
    sched.run_once()
    assert job_ids(app) == ["hourly@20260601T130000Z"]
    assert last_tick(app, "hourly") == datetime(2026, 6, 1, 14, tzinfo=UTC)
    clock.now = datetime(2026, 6, 1, 15, 0, 2, tzinfo=UTC)
    sched.run_once()
    assert job_ids(app) == ["hourly@20260601T130000Z", "hourly@20260601T150000Z"]


def test_a_purged_tick_does_not_run_again_even_after_a_restart(app: qw.App, clock: Clock) -> None:
    scheduler(app, clock).run_once()
    clock.move(MINUTE)
    scheduler(app, clock).run_once()
    tick_job = "minutely@20260601T120100Z"
    (claim,) = app.client.claim(["sch"], worker="w", limit=1)
    assert claim.job.id == tick_job
    assert app.client.finish([Complete(claim.lease, result="m")]) == [JobStatus.SUCCEEDED]
    # purge(0) removes jobs finished before now: let the store's clock move on.
    time.sleep(0.05)
    assert app.client.purge(0).jobs == 1
    assert job_ids(app) == []
    # Same tick, old and new schedulers: the stored tick covers what the id no longer does.
    for sched in (scheduler(app, clock), scheduler(app, clock)):
        sched.run_once()
        assert sched.enqueued == 0
    assert job_ids(app) == []
    clock.move(MINUTE)
    scheduler(app, clock).run_once()
    assert job_ids(app) == ["minutely@20260601T120200Z"]


def test_a_tick_enqueued_by_a_scheduler_that_died_before_moving_it_is_not_enqueued_again(
    app: qw.App, clock: Clock
) -> None:
    sched = scheduler(app, clock)
    sched.run_once()
    clock.move(MINUTE)
    (periodic,) = app.schedules.values()
    # The first half of a pass: the insert, and then the process died.
    app.client.enqueue([periodic.job(periodic.timing.latest(clock()) or T0)])
    sched.run_once()
    assert sched.enqueued == 0
    assert job_ids(app) == ["minutely@20260601T120100Z"]
    assert last_tick(app) == datetime(2026, 6, 1, 12, 1, tzinfo=UTC)


def test_a_removed_schedule_stops_until_a_worker_saves_it_again(app: qw.App, clock: Clock) -> None:
    sched = scheduler(app, clock)
    sched.run_once()
    assert app.client.remove_schedule("minutely") is True
    clock.move(MINUTE)
    sched.run_once()
    assert job_ids(app) == []
    assert app.client.schedules() == []
    # A new scheduler (a worker starting) records it again; it starts afresh.
    again = scheduler(app, clock)
    again.run_once()
    assert job_ids(app) == []
    clock.move(MINUTE)
    again.run_once()
    assert job_ids(app) == ["minutely@20260601T120200Z"]


def test_saving_a_schedule_again_keeps_its_last_tick(app: qw.App, clock: Clock) -> None:
    scheduler(app, clock).run_once()
    before = last_tick(app)
    scheduler(app, clock).save()
    assert before is not None
    assert last_tick(app) == before


def test_racing_schedulers_enqueue_each_tick_exactly_once(app: qw.App, clock: Clock) -> None:
    task = app.tasks["sch.note"]
    fast = app.periodic(every=10, task=task, args=["f"], name="fast")
    clients = [app.open_client() for _ in range(8)]
    racers = [Scheduler(c, list(app.schedules.values()), clock=clock) for c in clients]
    scheduler(app, clock).run_once()
    gate = threading.Barrier(len(racers))
    errors: list[BaseException] = []

    def race(sched: Scheduler) -> None:
        try:
            for _ in range(20):
                gate.wait(30)
                sched.run_once()
                if gate.wait(30) == 0:
                    clock.move(timedelta(seconds=10))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            gate.abort()

    threads = [threading.Thread(target=race, args=(s,)) for s in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    first = T0.replace(second=40)
    expected_fast = [job_id(fast.name, first + timedelta(seconds=10 * k)) for k in range(19)]
    expected_minutely = [job_id("minutely", T0.replace(second=0) + k * MINUTE) for k in (1, 2, 3)]
    assert job_ids(app) == sorted(expected_fast + expected_minutely)
    assert sum(s.enqueued for s in racers) == len(expected_fast) + len(expected_minutely)
    for client in clients:
        client.close()


def test_the_scheduler_thread_survives_store_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real SQLite file locked by another connection: passes fail, then recover."""
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}?busy_timeout=50"
    with qw.open(url, namespace="probe") as probe:
        if not probe.capabilities.schedules:
            pytest.skip("SKIPPED LOUDLY: backend sqlite does not declare schedules yet")
    app = qw.App(url, namespace="locked")

    @app.periodic(every=1, name="each-second")
    @app.task(name="sch.tick", queue="sch")
    def tick() -> None: ...

    caplog.set_level("WARNING", logger="qw.schedule")
    sched = Scheduler(app.client, list(app.schedules.values()))
    sched.run_once()
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    sched.start()
    try:
        with pytest.raises(QwError):
            app.client.advance_schedule("each-second", datetime(2000, 1, 1, tzinfo=UTC))
        threading.Event().wait(1.5)
        holder.execute("ROLLBACK")
        deadline = datetime.now(UTC) + timedelta(seconds=15)
        while sched.enqueued < 2 and datetime.now(UTC) < deadline:
            threading.Event().wait(0.1)
    finally:
        sched.stop()
        holder.close()
        app.close()
    assert sched.enqueued >= 2
    assert any("scheduler pass failed" in r.getMessage() for r in caplog.records)


def test_a_stale_read_is_read_again_before_inserting(
    app: qw.App, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler stalls after reading; meanwhile the tick is enqueued, run and purged.

    Acting on its old read it would insert the tick again (the id is free
    once purged); it reads again instead, and sees the tick taken.
    """
    monkeypatch.setattr(qw.schedule, "STALE_READ_S", 0.05)
    scheduler(app, clock).run_once()
    clock.move(MINUTE)
    other = scheduler(app, clock)
    stalled = {"done": False}

    def stalling_clock() -> datetime:
        if not stalled["done"]:
            stalled["done"] = True
            other.run_once()
            (claim,) = app.client.claim(["sch"], worker="w", limit=1)
            app.client.finish([Complete(claim.lease, result="m")])
            time.sleep(0.1)
            assert app.client.purge(0).jobs == 1
        return clock()

    late = Scheduler(app.client, list(app.schedules.values()), clock=stalling_clock)
    late.save()
    late.run_once()
    assert (other.enqueued, late.enqueued) == (1, 0)
    assert job_ids(app) == []


def test_a_store_slower_than_the_staleness_bound_still_gets_its_ticks(
    app: qw.App, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qw.schedule, "STALE_READ_S", 0.0)
    sched = scheduler(app, clock)
    sched.run_once()
    clock.move(MINUTE)
    sched.run_once()
    assert job_ids(app) == ["minutely@20260601T120100Z"]
