"""Periodic schedules run by four workers at once, with a restart, on a fake clock.

Each worker runs a scheduler (the default), so four schedulers race for
every tick. ``QW_FAKE_CLOCK`` runs their clock 60 times as fast as the
store's, from 00:55 UTC on 2026-03-29 (five minutes before Paris springs
forward): ten seconds of real time are ten minutes of schedule time. Two
schedules: a per-minute cron in Europe/Paris, and ``every 20s``.

Halfway, all four are stopped (killed, for the processes) and, after 90
fake seconds down, four new ones start. What must hold, per schedule:

* one job per tick, and only for ticks of the schedule;
* no gap while schedulers ran: the ticks enqueued before the restart are
  consecutive, and so are those after it;
* of the ticks while none ran, only the latest runs (``missed="latest"``),
  so no job is for a tick between the stop and the latest one before the
  new workers started.

The figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from conftest import FAST, store_url

import qw
from qw.schedule import FakeClock, Timing, tick_of, timing

SPEEDUP = 60.0
FAKE_START = datetime(2026, 3, 29, 0, 55, tzinfo=UTC)
PHASE = timedelta(minutes=5)
DOWN = timedelta(seconds=90)
WORKERS = 4

APP_SOURCE = '''
"""The app the periodic test's workers run (written by tests/runtime/test_periodic.py)."""

import os

import qw


def define(app, notes):
    @app.periodic("* * * * *", tz="Europe/Paris", name="minutely", args=["minutely"])
    @app.task(name="pt.tick", queue="pt")
    def tick(label):
        job = qw.current_job()
        line = f"{job.id} {os.getpid()} {job.attempt}\\n"
        fd = os.open(notes, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    app.periodic(every=20, task=tick, args=["fast"], name="fast")


app = qw.App()
define(app, os.environ.get("PT_NOTES", os.devnull))
'''


@dataclass
class Run:
    """What one run did: its fake times, and the figures it printed."""

    clock: FakeClock
    #: When the first schedulers were all up.
    began: datetime | None = None
    #: When they were told to stop, and when the last of them had.
    stopping: datetime | None = None
    stopped: datetime | None = None
    #: When the new ones were started, the first pass of the first of them,
    #: and when they were all up.
    restarted: datetime | None = None
    first_pass: datetime | None = None
    resumed: datetime | None = None
    #: When they were told to stop at the end, and when the last had.
    ending: datetime | None = None
    ended: datetime | None = None
    enqueued_by: Counter[str] = field(default_factory=Counter)

    def now(self, client: qw.Client) -> datetime:
        return self.clock.at(client.now())


def app_module(tmp_path: Path) -> ModuleType:
    path = tmp_path / "periodic_app.py"
    path.write_text(APP_SOURCE)
    spec = importlib.util.spec_from_file_location("periodic_app", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_clock(client: qw.Client) -> FakeClock:
    return FakeClock(client.now(), FAKE_START, SPEEDUP)


def wait_fake(client: qw.Client, clock: FakeClock, until: datetime) -> None:
    while clock.at(client.now()) < until:
        time.sleep(0.02)


def consecutive(t: Timing, found: list[datetime]) -> bool:
    """Whether ``found`` is every tick of ``t`` from its first to its last."""
    if not found:
        return False
    expected = [found[0]]
    while expected[-1] < found[-1]:
        following = t.next_after(expected[-1])
        assert following is not None
        expected.append(following)
    return found == expected


def previous(t: Timing, tick: datetime) -> datetime:
    before = t.latest(tick - timedelta(microseconds=1))
    assert before is not None
    return before


def check(client: qw.Client, run: Run, notes: Path, label: str) -> None:
    """Assert exactly one job per tick while schedulers ran, and print the figures."""
    for moment in ("began", "stopping", "stopped", "restarted", "first_pass", "resumed"):
        assert getattr(run, moment) is not None, moment
    assert run.ending
    assert run.ended
    jobs = client.list_jobs(limit=10_000)
    runs = Counter(line.split()[0] for line in notes.read_text().splitlines())
    lines = [f"periodic {label}: {WORKERS} schedulers, stopped all and started {WORKERS} more"]
    for name, spec, tz in (("minutely", "* * * * *", "Europe/Paris"), ("fast", "every 20s", "UTC")):
        t = timing(spec, tz)
        ids = [j.id for j in jobs if j.id.startswith(f"{name}@")]
        ticks = sorted(tick for i in ids if (tick := tick_of(i)) is not None)
        assert len(ticks) == len(ids) == len(set(ticks)), "one job per tick"
        assert all(t.latest(tick) == tick for tick in ticks), "only ticks of the schedule"
        before = [x for x in ticks if x <= run.stopped]
        after = [x for x in ticks if x > run.stopped]
        assert consecutive(t, before), f"{name}: a gap before the restart: {before}"
        assert consecutive(t, after), f"{name}: a gap after the restart: {after}"
        at_stop = t.latest(run.stopping)
        last_down = t.latest(run.restarted)
        at_end = t.latest(run.ending)
        assert at_stop is not None
        assert last_down is not None
        assert at_end is not None
        # Up to the stop every tick ran (the one just before it may have come a
        # moment before every scheduler died); none after the last one died.
        assert previous(t, at_stop) <= before[-1] <= run.stopped, (name, before[-1])
        assert after[0] >= last_down, f"{name}: ran a tick missed while down: {after[0]}"
        assert previous(t, at_end) <= after[-1] <= run.ended, (name, after[-1])
        up = [x for x in ticks if run.began < x < run.stopping or run.resumed < x < run.ending]
        assert up, f"{name}: no tick while all schedulers ran"
        # The first pass after the restart ran the latest tick due then (a
        # tick may have come between the clock reading and the pass).
        due = t.latest(run.first_pass)
        assert due is not None
        assert after[0] in (due, t.next_after(due)), (name, after[0], due)
        missed = len(list(_ticks(t, before[-1], after[0])))
        caught_up = missed > 0 and after[0] < run.first_pass
        ran_twice = sorted(i for i in ids if runs[i] > 1)
        lines.append(
            f"  {name} ({spec} {tz}): {len(ticks)} jobs, one per tick "
            f"({len(before)} ticks before the stop, {len(after)} after"
            + (
                ", the first of them the latest of the ticks due while none ran"
                if caught_up
                else ""
            )
            + f"; {missed} tick{'' if missed == 1 else 's'} missed while down not run); "
            "no duplicate, no gap; "
            f"the jobs ran {sum(runs[i] for i in ids)} times"
            + (f" (re-run after a kill: {ran_twice})" if ran_twice else "")
        )
        done = {j.id for j in jobs if j.status is qw.JobStatus.SUCCEEDED}
        assert all(runs[i] >= 1 for i in done)

    def minutes(a: datetime, b: datetime) -> str:
        return f"{(b - a).total_seconds() / 60:.1f} min"

    lines.append(
        f"  fake time {run.clock.start:%H:%M:%S}Z to {run.ended:%H:%M:%S}Z: all {WORKERS} up "
        f"for {minutes(run.began, run.stopping)} then {minutes(run.resumed, run.ending)}, "
        f"none for {minutes(run.stopped, run.restarted)}, starting up for "
        f"{minutes(run.clock.start, run.began)} then {minutes(run.restarted, run.resumed)}; "
        f"jobs enqueued per scheduler: {sorted(run.enqueued_by.values(), reverse=True)}"
    )
    print("\n".join(lines))


def _ticks(t: Timing, after: datetime, before: datetime) -> Iterator[datetime]:
    """The ticks strictly between ``after`` and ``before``."""
    tick = t.next_after(after)
    while tick is not None and tick < before:
        yield tick
        tick = t.next_after(tick)


def test_four_workers_in_one_process_share_the_schedules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory store: four worker threads, stopped and replaced halfway."""
    module = app_module(tmp_path)
    notes = tmp_path / "runs"
    notes.touch()
    app = qw.App(store_url("memory", tmp_path) + "-periodic", namespace=f"pt{os.getpid()}")
    module.define(app, str(notes))
    clock = fake_clock(app.client)
    value = f"{clock.anchor.isoformat()},{FAKE_START.isoformat()},{SPEEDUP}"
    monkeypatch.setenv("QW_FAKE_CLOCK", value)
    run = Run(clock)

    def start() -> list[qw.Worker]:
        workers = [app.worker(["pt"], **{**FAST, "concurrency": 2}) for _ in range(WORKERS)]
        for worker in workers:
            worker.start()
        return workers

    def stop(workers: list[qw.Worker]) -> None:
        for worker in workers:
            worker.stop(force=True, timeout=30)
        for worker in workers:
            assert worker.scheduler is not None
            run.enqueued_by[worker.id] = worker.scheduler.enqueued

    client = app.client
    first = start()
    run.began = run.now(client)
    wait_fake(client, clock, run.began + PHASE)
    run.stopping = run.now(client)
    stop(first)
    run.stopped = run.now(client)
    wait_fake(client, clock, run.stopped + DOWN)
    run.restarted = run.now(client)
    second = start()
    run.resumed = run.now(client)
    # start() returns once each worker runs; its scheduler's first pass is then.
    run.first_pass = run.restarted
    wait_fake(client, clock, run.resumed + PHASE)
    run.ending = run.now(client)
    stop(second)
    run.ended = run.now(client)
    try:
        check(app.client, run, notes, "memory, threads")
    finally:
        app.close()


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = store_url(request.param, tmp_path)
    with qw.open(url, namespace="probe") as client:
        if not client.capabilities.schedules:
            pytest.skip(f"SKIPPED LOUDLY: backend {request.param} does not declare schedules yet")
    return url


def test_four_worker_processes_share_the_schedules_across_a_kill(
    shared_url: str, tmp_path: Path
) -> None:
    """Four ``qw worker`` processes, all killed (SIGKILL) halfway and four new ones started."""
    app_module(tmp_path)
    notes = tmp_path / "runs"
    notes.touch()
    namespace = f"pt{os.getpid()}{int(time.time() * 1000) % 100000}"
    client = qw.open(shared_url, namespace=namespace)
    clock = fake_clock(client)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "QW_FAKE_CLOCK": f"{clock.anchor.isoformat()},{FAKE_START.isoformat()},{SPEEDUP}",
        "PT_NOTES": str(notes),
    }
    run = Run(clock)
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> list[subprocess.Popen[bytes]]:
        started = []
        for _ in range(WORKERS):
            log = (tmp_path / f"worker-{len(procs)}.log").open("wb")
            cmd = [
                sys.executable, "-c", "from qw.cli import main; main(prog_name='qw')",
                "worker", "periodic_app:app", "--url", shared_url, "--namespace", namespace,
                "--queues", "pt", "--concurrency", "2", "--lease", "1.5",
                "--poll-interval", "0.05", "--reclaim-interval", "0.3", "--grace", "5",
            ]  # fmt: skip
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            procs.append(proc)
            started.append(proc)
        return started

    def stop(group: list[subprocess.Popen[bytes]], sig: signal.Signals) -> None:
        for proc in group:
            proc.send_signal(sig)
        for proc in group:
            proc.wait(30)

    def all_up() -> datetime:
        """Wait until the workers started last are all in the registry; the fake time then."""
        deadline = time.monotonic() + 60
        while len(client.workers()) < WORKERS:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.02)
        return run.now(client)

    try:
        first = spawn()
        run.began = all_up()
        wait_fake(client, clock, run.began + PHASE)
        run.stopping = run.now(client)
        stop(first, signal.SIGKILL)
        run.stopped = run.now(client)
        # Killed workers stay in the registry until pruned: forget them.
        for worker in client.workers():
            client.remove_worker(worker.id)
        wait_fake(client, clock, run.stopped + DOWN)
        run.restarted = run.now(client)
        second = spawn()
        run.resumed = all_up()
        wait_fake(client, clock, run.resumed + PHASE)
        run.ending = run.now(client)
        stop(second, signal.SIGTERM)
        run.ended = run.now(client)
        for index in range(len(procs)):
            text = (tmp_path / f"worker-{index}.log").read_text()
            assert "FAKE clock" in text, text
            assert "Traceback" not in text, text
            run.enqueued_by[f"p{index}"] = len(re.findall(r"schedule \S+: enqueued", text))
            if index >= WORKERS:
                for stamp in re.findall(r"scheduler: first pass at (\S+ \S+)Z", text):
                    at = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
                    run.first_pass = min(run.first_pass or at, at)
        if second:
            assert all(p.returncode == 0 for p in second), [p.returncode for p in second]
        backend = shared_url.split(":", 1)[0]
        check(client, run, notes, f"{backend}, processes")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        client.close()


def test_a_worker_without_the_scheduler_leaves_the_schedules_alone(tmp_path: Path) -> None:
    module = app_module(tmp_path)
    app = qw.App(store_url("memory", tmp_path) + "-off", namespace=f"off{os.getpid()}")
    module.define(app, os.devnull)
    worker = app.worker(["pt"], **FAST, scheduler=False)
    worker.start()
    try:
        time.sleep(0.3)
        assert worker.scheduler is None
        assert app.client.schedules() == []
    finally:
        worker.stop(timeout=30)
        app.close()


def test_the_scheduler_thread_starts_and_stops_with_the_worker(tmp_path: Path) -> None:
    module = app_module(tmp_path)
    app = qw.App(store_url("memory", tmp_path) + "-on", namespace=f"on{os.getpid()}")
    module.define(app, os.devnull)
    worker = app.worker(["pt"], **FAST)
    thread = worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(app.client.schedules()) < 2:
            assert time.monotonic() < deadline, "the worker did not record its schedules"
            time.sleep(0.02)
        assert worker.scheduler is not None
        assert any(t.name == "qw-scheduler" for t in threading.enumerate())
    finally:
        worker.stop(timeout=30)
    thread.join(30)
    assert not any(t.name == "qw-scheduler" for t in threading.enumerate())
    assert sorted(s.name for s in app.client.schedules()) == ["fast", "minutely"]
    app.close()
