"""Periodic jobs: exactly one job per tick across four scheduler processes and a restart.

Four processes (:mod:`qw_testkit.periodic_child`, opening ``backend_url()``)
each run a :class:`qw.schedule.Scheduler` for the same two schedules, a
per-minute cron and ``every 5s``, on one fake clock running 60 times as fast
as the store's, so they race for every tick. After five fake minutes with all
four up they are killed (``SIGKILL``, wherever they are: between a job's
insert and its compare-and-set too); after 150 fake seconds with none, four
new processes run five more minutes and are stopped (``SIGTERM``). Each
group of processes is started (interpreter, imports, store opened) before its
schedulers begin, so a slow start on a loaded machine lengthens the run, not
the fake time it covers. Per schedule:

* one job per tick (id ``NAME@TICK``), only for ticks of the schedule, each
  with the schedule's queue and payload;
* a new schedule starts at its next tick: no job for the tick due at the
  very first pass;
* no gap while schedulers ran: the ticks enqueued before the kill are
  consecutive and include every tick from the moment all four were up to a
  moment before the kill; the same after the restart, up to the stop;
* missed ticks (``missed="latest"``): of the ticks due while none ran, only
  the latest is enqueued, by the first pass after the restart;
* of all the ``advance_schedule`` calls the processes made (each notes its
  answers), at most one per schedule and tick returned True;
* the stored ``last_tick`` is the last tick enqueued.

It prints a line of figures (ticks, jobs, processes, restarts); ``pytest -s``
shows it. About 15 s of real time, most of it the two five-minute phases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import qw
from qw.model import Job
from qw.schedule import FakeClock, Timing, job_id, tick_of
from qw_testkit import periodic_child
from qw_testkit.base import ContractBase
from qw_testkit.gates import requires

__all__ = ["PeriodicTests"]

PROCESSES = 4
#: Fake seconds per real second: ten fake minutes take ten real seconds.
SPEEDUP = 60.0
#: The fake time at the start: half a minute before a minute's tick.
FAKE_START = datetime(2030, 1, 1, 11, 59, 30, tzinfo=UTC)
#: How long all the processes of a group run (fake time, from all of them up).
PHASE = timedelta(minutes=5)
#: How long none runs between the kill and the restart (fake time): long
#: enough for the per-minute cron to miss a tick besides the latest.
DOWN = timedelta(seconds=150)
#: Real seconds within which some process must have enqueued a tick: the ticks
#: required at the end of each phase are those at least this old when it ended.
LATE_S = 1.0
#: Real seconds four processes may take to start, or to make their first pass,
#: before the test fails.
STARTUP_S = 60.0
#: Real seconds a process runs at most, should this test die without ending it.
CHILD_SECONDS = 300.0
#: Runs the child's file by path: the child then imports qw alone, not the kit
#: (pytest, Hypothesis), and with no directory of the kit on ``sys.path``.
_RUN_FILE = "import runpy, sys; sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"


@dataclass
class _Child:
    """One scheduler process, its notes (JSON lines) and its output."""

    index: int
    proc: subprocess.Popen[bytes]
    report: Path
    log: Path

    def notes(self) -> list[dict[str, Any]]:
        try:
            text = self.report.read_text()
        except FileNotFoundError:
            return []
        # Only whole lines: a line being written has no newline yet.
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def up(self) -> dict[str, Any] | None:
        return next((n for n in self.notes() if n["event"] == "up"), None)

    def describe(self) -> str:
        errors = [n["message"] for n in self.notes() if n["event"] == "error"]
        output = self.log.read_text(errors="replace") if self.log.exists() else ""
        return (
            f"scheduler process {self.index} (pid {self.proc.pid}, exit {self.proc.poll()}):\n"
            + "".join(f"  noted error: {e}\n" for e in errors)
            + "  output (last 3000 characters):\n"
            + output[-3000:]
        )


@dataclass
class _Run:
    """The timeline of one run, in fake time (read from the store's clock)."""

    clock: FakeClock
    began: list[datetime] = field(default_factory=list)
    killing: datetime | None = None
    killed: datetime | None = None
    restarting: datetime | None = None
    stopping: datetime | None = None
    stopped: datetime | None = None
    real_s: float = 0.0


class _Children:
    """The scheduler processes of one run, started in groups of four."""

    def __init__(self, env: dict[str, str], where: Path) -> None:
        self.env = env
        self.where = where
        self.all: list[_Child] = []

    def spawn(self, go: Path) -> list[_Child]:
        """Start four processes; their schedulers wait for the file ``go``."""
        group = []
        for _ in range(PROCESSES):
            index = len(self.all)
            report = self.where / f"scheduler-{index}.jsonl"
            log = self.where / f"scheduler-{index}.log"
            cmd = [sys.executable, "-c", _RUN_FILE, periodic_child.__file__]
            cmd += [str(report), str(CHILD_SECONDS), str(go)]
            with log.open("wb") as out:
                proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
            self.all.append(_Child(index, proc, report, log))
            group.append(self.all[-1])
        return group

    @staticmethod
    def wait_for(group: list[_Child], event: str) -> None:
        """Wait until every process of ``group`` noted ``event`` (``ready``, ``up``)."""
        deadline = time.monotonic() + STARTUP_S

        def noted(c: _Child) -> bool:
            return any(n["event"] == event for n in c.notes())

        while not all(noted(c) for c in group):
            for c in group:
                if c.proc.poll() is not None and not noted(c):
                    pytest.fail(f"a scheduler process ended before {event!r}\n{c.describe()}")
            if time.monotonic() > deadline:
                late = "\n".join(c.describe() for c in group if not noted(c))
                pytest.fail(f"scheduler processes not {event!r} after {STARTUP_S:.0f} s\n{late}")
            time.sleep(0.01)

    def end(self) -> None:
        """Kill whatever still runs (after a failure)."""
        for c in self.all:
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait(30)


class PeriodicTests(ContractBase):
    def _child_url(self) -> str:
        url = self.backend_url()
        if url is None:
            pytest.skip(
                f"{type(self).__name__}.backend_url() returns None, so scheduler processes "
                "cannot open the store"
            )
        return url

    @requires("schedules", "multi_process")
    def test_periodic_schedules_enqueue_one_job_per_tick_across_processes_and_a_restart(
        self, client: qw.Client, tmp_path: Path
    ) -> None:
        url = self._child_url()
        started = time.monotonic()
        run = _Run(FakeClock(client.now(), FAKE_START, SPEEDUP))
        children = _Children(_child_env(url, client.namespace, run.clock), tmp_path)

        def fake_now() -> datetime:
            return run.clock.at(client.now())

        def wait_fake(until: datetime) -> None:
            while fake_now() < until:
                time.sleep(0.01)

        try:
            # The processes start (import, open the store) before their
            # schedulers do, so that a slow start shortens no phase.
            first = children.spawn(tmp_path / "go-1")
            children.wait_for(first, "ready")
            (tmp_path / "go-1").touch()
            children.wait_for(first, "up")
            run.began.append(fake_now())
            wait_fake(run.began[0] + PHASE)
            run.killing = fake_now()
            for c in first:
                c.proc.kill()
            for c in first:
                c.proc.wait(30)
            run.killed = fake_now()
            # Four new processes: they start while none runs, and their
            # schedulers once the down time is over.
            second = children.spawn(tmp_path / "go-2")
            children.wait_for(second, "ready")
            wait_fake(run.killed + DOWN)
            run.restarting = fake_now()
            (tmp_path / "go-2").touch()
            children.wait_for(second, "up")
            run.began.append(fake_now())
            wait_fake(run.began[1] + PHASE)
            run.stopping = fake_now()
            for c in second:
                c.proc.terminate()
            for c in second:
                try:
                    c.proc.wait(30)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"a scheduler process did not stop on SIGTERM\n{c.describe()}")
            run.stopped = fake_now()
            run.real_s = time.monotonic() - started
        finally:
            children.end()

        failed = [c for c in children.all if any(n["event"] == "error" for n in c.notes())]
        assert not failed, "scheduler processes failed:\n" + "\n".join(c.describe() for c in failed)
        unclean = [c for c in second if c.proc.returncode != 0]
        assert not unclean, "\n".join(c.describe() for c in unclean)
        print(_check(client, run, first, second))


def _child_env(url: str, namespace: str, clock: FakeClock) -> dict[str, str]:
    """The environment of a scheduler process: the store, the clock, this process's path."""
    # The child sees every module this process sees: a backend importable
    # only from the test's directory, or one registered by a test, too.
    path = [p for p in sys.path if p]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return {
        **os.environ,
        "QW_URL": url,
        "QW_NAMESPACE": namespace,
        "QW_FAKE_CLOCK": f"{clock.anchor.isoformat()},{clock.start.isoformat()},{clock.speedup}",
        "PYTHONPATH": os.pathsep.join(path),
    }


def _ticks(t: Timing, after: datetime, until: datetime) -> Iterator[datetime]:
    """The ticks of ``t`` in ``(after, until]``."""
    tick = t.next_after(after)
    while tick is not None and tick <= until:
        yield tick
        tick = t.next_after(tick)


def _gaps(t: Timing, found: list[datetime]) -> list[datetime]:
    """The ticks of ``t`` between the first and the last of ``found`` that are not in it."""
    return sorted(set(_ticks(t, found[0], found[-1])) - set(found))


def _shown(when: datetime) -> str:
    return f"{when.astimezone(UTC):%H:%M:%S}Z"


def _firsts(group: list[_Child], key: str) -> datetime:
    """The earliest ``key`` time (``began``, ``ended``) of the group's first passes."""
    times = []
    for c in group:
        up = c.up()
        assert up is not None, c.describe()
        times.append(datetime.fromisoformat(up[key]))
    return min(times)


def _check(client: qw.Client, run: _Run, first: list[_Child], second: list[_Child]) -> str:
    """Assert one job per tick while schedulers ran; return the figures line."""
    assert run.killing is not None
    assert run.killed is not None
    assert run.stopping is not None
    assert run.stopped is not None
    assert run.restarting is not None
    late = timedelta(seconds=LATE_S * SPEEDUP)
    jobs: dict[str, Job] = {}
    after_id: str | None = None
    while True:
        page = client.list_jobs(limit=1000, after=after_id)
        jobs.update((j.id, j) for j in page)
        if len(page) < 1000:
            break
        after_id = page[-1].id
    stored = {s.name: s.last_tick for s in client.schedules()}
    notes = [n for c in first + second for n in c.notes()]
    moves = Counter((n["name"], n["tick"]) for n in notes if n["event"] == "advance" and n["moved"])
    calls = sum(1 for n in notes if n["event"] == "advance")
    inserted = [
        sum(1 for n in c.notes() if n["event"] == "enqueue" and n["created"])
        for c in first + second
    ]
    won = sorted(f"{n}@{x}" for (n, x), k in moves.items() if k > 1)
    assert not won, (
        f"advance_schedule answered True to more than one scheduler for {len(won)} ticks "
        f"(a compare-and-set says True to one caller only): {won[:5]}"
    )
    total_ticks, parts = 0, []
    definitions = periodic_child.schedules()
    known = {p.name for p in definitions}
    strays = sorted(i for i in jobs if i.rpartition("@")[0] not in known)
    assert not strays, f"jobs no schedule enqueued: {strays[:5]}"
    for p in definitions:
        t, name = p.timing, p.name
        ids = sorted(i for i in jobs if i.rpartition("@")[0] == name)
        ticks = sorted(tick for i in ids if (tick := tick_of(i)) is not None)
        assert len(ticks) == len(ids), f"{name}: ids that name no tick: {ids}"
        twice = sorted(_shown(x) for x, n in Counter(ticks).items() if n > 1)
        assert not twice, f"{name}: ticks with more than one job: {twice}"
        off = [_shown(x) for x in ticks if t.latest(x) != x]
        assert not off, f"{name}: jobs for instants that are not ticks of {p.spec!r}: {off}"
        for x in ticks:
            job, want = jobs[job_id(name, x)], p.job(x)
            assert (job.queue, job.payload) == (want.queue, want.payload), (job, want)
            assert job.status is qw.JobStatus.QUEUED, job
        before = [x for x in ticks if x <= run.killed]
        after = [x for x in ticks if x > run.killed]
        assert before, f"{name}: no job before the kill"
        assert after, f"{name}: no job after the restart"

        # Before the kill.
        start = t.latest(_firsts(first, "began"))
        assert start is not None
        assert before[0] > start, (
            f"{name}: a new schedule starts at its next tick, but {_shown(before[0])} was due "
            f"at the first pass ({_shown(start)})"
        )
        gaps = _gaps(t, before)
        assert not gaps, (
            f"{name}: ticks with no job while schedulers ran: {list(map(_shown, gaps))}"
        )
        due = list(_ticks(t, run.began[0], run.killing - late))
        missing = [_shown(x) for x in due if x not in before]
        assert not missing, f"{name}: ticks with no job while all {PROCESSES} ran: {missing}"

        # The restart: only the latest of the ticks due while none ran.
        latest_missed = t.latest(_firsts(second, "began"))
        by_first_pass = t.latest(_firsts(second, "ended"))
        assert latest_missed is not None
        assert by_first_pass is not None
        missed = list(_ticks(t, before[-1], latest_missed))[:-1]
        assert missed, f"{name}: the test needs ticks missed while no scheduler ran"
        assert latest_missed <= after[0] <= by_first_pass, (
            f"{name}: after the restart the first job is for {_shown(after[0])}, not the latest "
            f"tick due while none ran ({_shown(latest_missed)}); ticks between the last job "
            f"before the kill ({_shown(before[-1])}) and then: {list(map(_shown, missed))}"
        )

        # After the restart.
        gaps = _gaps(t, after)
        assert not gaps, f"{name}: ticks with no job after the restart: {list(map(_shown, gaps))}"
        due = list(_ticks(t, run.began[1], run.stopping - late))
        missing = [_shown(x) for x in due if x not in after]
        assert not missing, f"{name}: ticks with no job while all {PROCESSES} ran: {missing}"
        assert after[-1] <= run.stopped

        assert stored.get(name) == after[-1], (
            f"{name}: the stored last tick is {stored.get(name)}, not the last tick enqueued "
            f"({after[-1]})"
        )
        span = [before[0], *_ticks(t, before[0], after[-1])]
        total_ticks += len(span)
        parts.append(
            f"{name} ({p.spec}): {len(span)} ticks, {len(before)} + {len(after)} jobs, "
            f"{len(missed)} tick{'' if len(missed) == 1 else 's'} missed while none ran not run"
        )

    return (
        f"periodic {client.backend.name}: {total_ticks} ticks, {len(jobs)} jobs, "
        f"{len(first) + len(second)} processes ({len(first)} killed, then {len(second)}), "
        f"1 restart; {'; '.join(parts)}; advance_schedule {calls} calls, "
        f"{sum(moves.values())} moved, at most one per tick; jobs inserted per process "
        f"{inserted}; none ran for {(run.restarting - run.killed).total_seconds():.0f} fake s; "
        f"fake {_shown(run.clock.start)} to {_shown(run.stopped)}, "
        f"{run.real_s:.1f} s real"
    )


# ``pytest -k Periodic`` selects this module's test in a backend's subclass
# (see the same loop in suite/schedules.py).
for _name, _test in list(vars(PeriodicTests).items()):
    if _name.startswith("test_") and callable(_test):
        _test.PeriodicTests = True
