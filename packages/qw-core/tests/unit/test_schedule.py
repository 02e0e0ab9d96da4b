"""Schedule specs and tick arithmetic (:mod:`qw.schedule`), DST included, and ``App.periodic``.

The DST cases are Europe/Paris in 2026: clocks jump 02:00 CET → 03:00 CEST
on March 29 (01:00 UTC) and fall back 03:00 CEST → 02:00 CET on October 25
(01:00 UTC), so 02:00-02:59 local happens twice that morning.
"""

from __future__ import annotations

import bisect
import itertools
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import qw
from qw.errors import ConfigurationError, InvalidInput, InvalidName
from qw.schedule import (
    CronTiming,
    FakeClock,
    IntervalTiming,
    Periodic,
    Timing,
    every_spec,
    job_id,
    tick_of,
    timing,
)
from qw.validation import MAX_JOB_ID_CHARS
from qw.worker import WorkerConfig

PARIS = ZoneInfo("Europe/Paris")
SPRING = datetime(2026, 3, 29, tzinfo=UTC)
AUTUMN = datetime(2026, 10, 25, tzinfo=UTC)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def ticks(t: Timing, start: datetime, end: datetime) -> list[datetime]:
    """Every tick in ``(start, end]``, by stepping forward."""
    found: list[datetime] = []
    tick = t.next_after(start)
    while tick is not None and tick <= end:
        found.append(tick)
        tick = t.next_after(tick)
    return found


def local(times: list[datetime]) -> list[str]:
    return [f"{t.astimezone(PARIS):%m-%d %H:%M%z}" for t in times]


# -- specs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("*/5 * * * *", CronTiming),
        ("  0   3 * * MON-FRI ", CronTiming),
        ("@daily", CronTiming),
        ("@hourly", CronTiming),
        ("0 0 L * *", CronTiming),
        ("every 30s", IntervalTiming),
        ("every 1h 30m", IntervalTiming),
        ("EVERY 2D", IntervalTiming),
    ],
)
def test_specs_it_reads(spec: str, kind: type) -> None:
    assert isinstance(timing(spec), kind)


@pytest.mark.parametrize(
    ("spec", "tz", "message"),
    [
        ("* * * *", "UTC", "five fields"),
        ("0 * * * * *", "UTC", "five fields"),
        ("61 * * * *", "UTC", "invalid cron expression"),
        ("0 0 30 2 *", "UTC", "invalid cron expression"),
        ("@reboot", "UTC", "five fields"),
        ("every", "UTC", "not an interval"),
        ("every 0s", "UTC", "1 s to"),
        ("every 5 minutes", "UTC", "not an interval"),
        ("every 30s", "Europe/Paris", "takes no time zone"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
        ("* * * * *", "", "IANA name"),
        ("", "UTC", "1 to 200 characters"),
        ("x" * 201, "UTC", "1 to 200 characters"),
    ],
)
def test_specs_it_refuses_say_why(spec: str, tz: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        timing(spec, tz)


@pytest.mark.parametrize(
    ("every", "spec"),
    [
        (30, "every 30s"),
        (90.0, "every 1m30s"),
        (timedelta(hours=1, minutes=30), "every 1h30m"),
        (timedelta(days=1), "every 1d"),
        ("45m", "every 45m"),
        ("every 1h 0m 5s", "every 1h5s"),
        (86400 * 2 + 1, "every 2d1s"),
    ],
)
def test_intervals_are_written_one_way(every: timedelta | float | str, spec: str) -> None:
    assert every_spec(every) == spec


@pytest.mark.parametrize("every", [0, 0.5, 1.5, -3, True, "soon", timedelta(0), None, 1e12])
def test_intervals_it_refuses(every: object) -> None:
    with pytest.raises(InvalidInput):
        every_spec(every)  # type: ignore[arg-type]


# -- intervals ---------------------------------------------------------------


def test_intervals_count_from_the_epoch_so_every_scheduler_agrees() -> None:
    t = timing("every 20s")
    now = utc(2026, 1, 1, 0, 0, 7, 500)
    assert t.latest(now) == utc(2026, 1, 1, 0, 0, 0)
    assert t.next_after(now) == utc(2026, 1, 1, 0, 0, 20)
    # A tick at ``now`` itself is the latest one; the next is strictly after.
    assert t.latest(utc(2026, 1, 1, 0, 0, 20)) == utc(2026, 1, 1, 0, 0, 20)
    assert t.next_after(utc(2026, 1, 1, 0, 0, 20)) == utc(2026, 1, 1, 0, 0, 40)
    assert timing("every 1d").latest(utc(2026, 5, 5, 17)) == utc(2026, 5, 5)
    assert timing("every 7m").next_after(utc(1970, 1, 1)) == utc(1970, 1, 1, 0, 7)


def test_intervals_ignore_daylight_saving_time() -> None:
    hourly = timing("every 1h")
    assert ticks(hourly, SPRING, SPRING + timedelta(hours=3)) == [
        SPRING + timedelta(hours=h) for h in (1, 2, 3)
    ]


# -- cron --------------------------------------------------------------------


def test_cron_latest_counts_a_tick_at_now_and_next_is_strictly_after() -> None:
    t = timing("*/5 * * * *")
    assert t.latest(utc(2026, 6, 1, 12, 5)) == utc(2026, 6, 1, 12, 5)
    assert t.latest(utc(2026, 6, 1, 12, 9, 59, 999999)) == utc(2026, 6, 1, 12, 5)
    assert t.next_after(utc(2026, 6, 1, 12, 5)) == utc(2026, 6, 1, 12, 10)
    assert t.next_after(utc(2026, 6, 1, 12, 4, 59, 1)) == utc(2026, 6, 1, 12, 5)


def test_cron_runs_on_the_wall_clock_of_its_zone() -> None:
    t = timing("0 9 * * *", "Europe/Paris")
    assert t.next_after(utc(2026, 1, 10)) == utc(2026, 1, 10, 8)  # CET, UTC+1
    assert t.next_after(utc(2026, 7, 10)) == utc(2026, 7, 10, 7)  # CEST, UTC+2


def test_spring_forward_a_fixed_time_in_the_skipped_hour_runs_at_the_first_minute_after() -> None:
    t = timing("30 2 * * *", "Europe/Paris")
    days = ticks(t, SPRING - timedelta(days=2), SPRING + timedelta(days=2))
    assert local(days) == [
        "03-27 02:30+0100",
        "03-28 02:30+0100",
        "03-29 03:00+0200",  # 02:30 does not exist that day
        "03-30 02:30+0200",
    ]
    assert t.latest(SPRING + timedelta(hours=1, minutes=30)) == SPRING + timedelta(hours=1)


def test_spring_forward_a_wildcard_hour_has_no_ticks_in_the_skipped_hour() -> None:
    t = timing("*/30 * * * *", "Europe/Paris")
    night = ticks(t, SPRING, SPRING + timedelta(hours=2))
    assert local(night) == [
        "03-29 01:30+0100",
        "03-29 03:00+0200",
        "03-29 03:30+0200",
        "03-29 04:00+0200",
    ]
    # Elapsed time between ticks stays 30 minutes across the jump.
    assert {b - a for a, b in itertools.pairwise(night)} == {timedelta(minutes=30)}


def test_fall_back_a_fixed_time_in_the_repeated_hour_runs_once_at_its_first_occurrence() -> None:
    t = timing("30 2 * * *", "Europe/Paris")
    days = ticks(t, AUTUMN, AUTUMN + timedelta(days=2, hours=2))
    assert local(days) == ["10-25 02:30+0200", "10-26 02:30+0100", "10-27 02:30+0100"]
    # From inside the repeated hour's second pass (02:10 CET), the next tick
    # is the next day's, never the 02:15 CEST an hour before (cronsim alone
    # answers that earlier time: the guard in next_after skips it).
    second_pass = AUTUMN + timedelta(hours=1, minutes=10)
    assert timing("15 2 * * *", "Europe/Paris").next_after(second_pass) == utc(2026, 10, 26, 1, 15)


def test_fall_back_a_wildcard_hour_runs_twice_in_the_repeated_hour() -> None:
    t = timing("*/30 * * * *", "Europe/Paris")
    night = ticks(t, AUTUMN - timedelta(minutes=1), AUTUMN + timedelta(hours=2))
    assert local(night) == [
        "10-25 02:00+0200",
        "10-25 02:30+0200",
        "10-25 02:00+0100",
        "10-25 02:30+0100",
        "10-25 03:00+0100",
    ]
    assert [t.latest(x + timedelta(minutes=1)) for x in night] == night


SPECS = [
    "30 2 * * *",
    "15 2 * * *",
    "0 3 * * *",
    "*/30 * * * *",
    "*/7 2 * * *",
    "0 1-3 * * *",
    "* * * * *",
    "5 4 * * SUN",
    "@daily",
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("day", [SPRING, AUTUMN], ids=["spring", "autumn"])
def test_latest_agrees_with_stepping_forward_around_dst(spec: str, day: datetime) -> None:
    t = timing(spec, "Europe/Paris")
    start, end = day - timedelta(days=1), day + timedelta(days=1)
    every = ticks(t, start - timedelta(days=8), end + timedelta(days=8))
    rng = random.Random(f"{spec}{day}")
    near = [x for x in every if start <= x <= end]
    points = [start + timedelta(seconds=rng.uniform(0, 2 * 86400)) for _ in range(150)]
    for x in rng.sample(near, min(len(near), 150)):
        points += [x, x - timedelta(microseconds=1), x + timedelta(seconds=1)]
    for now in points:
        at = bisect.bisect_right(every, now)
        assert t.latest(now) == every[at - 1], (spec, now)
        assert t.next_after(now) == every[at], (spec, now)


@pytest.mark.parametrize("spec", SPECS)
def test_stepping_from_any_start_finds_the_same_ticks(spec: str) -> None:
    t = timing(spec, "Europe/Paris")
    reference = ticks(t, AUTUMN - timedelta(days=2), AUTUMN + timedelta(days=2))
    rng = random.Random(spec)
    for _ in range(20):
        start = AUTUMN - timedelta(seconds=rng.uniform(0, 2 * 86400))
        assert ticks(t, start, AUTUMN + timedelta(days=2)) == [x for x in reference if x > start]


def test_a_spec_that_never_fires_again_has_no_next_tick() -> None:
    leap = timing("0 0 29 2 *")
    assert leap.next_after(utc(2027, 1, 1)) == utc(2028, 2, 29)
    assert leap.latest(utc(2027, 1, 1)) == utc(2024, 2, 29)


# -- job ids -----------------------------------------------------------------


def test_job_ids_name_the_schedule_and_the_tick_in_utc() -> None:
    tick = datetime(2026, 3, 29, 3, 0, tzinfo=PARIS)
    assert job_id("report", tick) == "report@20260329T010000Z"
    assert tick_of("report@20260329T010000Z") == utc(2026, 3, 29, 1)
    assert tick_of("a@b@20260329T010000Z") == utc(2026, 3, 29, 1)
    assert tick_of("plain-job-id") is None
    assert tick_of("x@yesterday") is None
    assert len(job_id("n" * 40, tick)) <= MAX_JOB_ID_CHARS


# -- App.periodic ------------------------------------------------------------


@pytest.fixture
def app(memory_url: str) -> qw.App:
    return qw.App(memory_url, namespace="sched")


def test_the_decorator_returns_the_task_and_records_the_schedule(app: qw.App) -> None:
    @app.periodic("*/5 * * * *", tz="Europe/Paris", args=[7], kwargs={"b": 1})
    @app.task(name="reports.build", queue="reports", priority=3)
    def build(a: int, b: int = 0) -> int:
        return a + b

    assert isinstance(build, qw.Task)
    assert build(1) == 1
    (periodic,) = app.schedules.values()
    assert (periodic.name, periodic.spec, periodic.tz, periodic.missed) == (
        "reports.build",
        "*/5 * * * *",
        "Europe/Paris",
        "latest",
    )
    record = periodic.record()
    assert (record.name, record.task, record.queue, record.last_tick) == (
        "reports.build",
        "reports.build",
        "reports",
        None,
    )
    job = periodic.job(utc(2026, 6, 1, 10, 5))
    assert job.id == "reports.build@20260601T100500Z"
    assert (job.queue, job.priority) == ("reports", 3)
    assert job.payload == {"task": "reports.build", "args": [7], "kwargs": {"b": 1}}


def test_the_call_form_returns_the_schedule_and_takes_intervals_and_queues(app: qw.App) -> None:
    @app.task(name="ping", queue="q")
    def ping(host: str) -> None: ...

    fast = app.periodic(every=timedelta(seconds=90), task=ping, args=["a"], name="ping.a")
    slow = app.periodic("every 1h", task=ping, args=["b"], name="ping.b", queue="slow")
    assert isinstance(fast, Periodic)
    assert (fast.spec, fast.tz) == ("every 1m30s", "UTC")
    assert slow.record().queue == "slow"
    assert slow.job(utc(2026, 1, 1)).queue == "slow"
    assert sorted(app.schedules) == ["ping.a", "ping.b"]


def test_a_periodic_definition_is_checked_when_it_is_made(app: qw.App) -> None:
    @app.task(name="t", queue="q")
    def t(x: object = None) -> None: ...

    with pytest.raises(InvalidInput, match="one of them"):
        app.periodic(task=t)
    with pytest.raises(InvalidInput, match="one of them"):
        app.periodic("* * * * *", every=5, task=t)
    with pytest.raises(InvalidInput, match="five fields"):
        app.periodic("* * *", task=t)
    with pytest.raises(InvalidInput, match="missed"):
        app.periodic("* * * * *", task=t, missed="all")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        app.periodic("* * * * *", task=t, args=[object()])
    with pytest.raises(InvalidName):
        app.periodic("* * * * *", task=t, name="bad name")
    app.periodic("* * * * *", task=t)
    with pytest.raises(ConfigurationError, match="already defined"):
        app.periodic("*/2 * * * *", task=t)
    assert list(app.schedules) == ["t"]


def test_a_task_name_that_cannot_name_a_schedule_asks_for_a_name(app: qw.App) -> None:
    @app.task(name="a.very.long.module.path.for.a.task.that.runs.often", queue="q")
    def often() -> None: ...

    with pytest.raises(InvalidName, match="name="):
        app.periodic("@hourly", task=often)
    assert app.periodic("@hourly", task=often, name="often").name == "often"


def test_periodic_goes_above_task_not_below(app: qw.App) -> None:
    with pytest.raises(ConfigurationError, match=r"above @app\.task"):

        @app.task(name="x", queue="q")
        @app.periodic("* * * * *")
        def x() -> None: ...

    other = qw.App("memory://other-sched", namespace="sched")

    @other.task(name="y", queue="q")
    def y() -> None: ...

    with pytest.raises(ConfigurationError, match="task of this app"):
        app.periodic("* * * * *", task=y)


# -- odds and ends -----------------------------------------------------------


def test_a_fake_clock_runs_faster_from_its_anchor() -> None:
    clock = FakeClock.parse("2026-12-01T10:00:00+00:00, 2026-03-29T00:55:00+00:00, 60")
    assert clock.at(utc(2026, 12, 1, 10)) == utc(2026, 3, 29, 0, 55)
    assert clock.at(utc(2026, 12, 1, 10, 0, 10)) == utc(2026, 3, 29, 1, 5)
    for bad in ["", "2026-12-01T10:00:00+00:00,2026-03-29T00:55:00+00:00", "a,b,c",
                "2026-12-01T10:00:00,2026-03-29T00:55:00+00:00,60",
                "2026-12-01T10:00:00Z,2026-03-29T00:55:00Z,0"]:  # fmt: skip
        with pytest.raises(InvalidInput):
            FakeClock.parse(bad)


def test_the_worker_scheduler_switch_is_a_bool() -> None:
    assert WorkerConfig().scheduler is True
    assert WorkerConfig(scheduler=False).scheduler is False
    with pytest.raises(InvalidInput, match="scheduler"):
        WorkerConfig(scheduler="no")  # type: ignore[arg-type]
