"""One scheduler process of the kit's periodic test (:mod:`qw_testkit.suite.periodic`).

The test runs this file by path (``python periodic_child.py REPORT SECONDS GO``),
not as ``-m qw_testkit...``: it imports qw and the standard library only, never
the kit, pytest or Hypothesis, so four of them start in a fraction of a
second. The environment says what to open and on which clock:

* ``QW_URL``, ``QW_NAMESPACE``: the store, opened with :func:`qw.open`;
* ``QW_FAKE_CLOCK``: ``ANCHOR,START,SPEEDUP`` (:class:`qw.schedule.FakeClock`),
  the same for every process, which computes it from its own reads of the
  store's clock.

It opens the store, notes that it is ready, and waits for the file GO to
exist, so that the test starts four processes' schedulers together, however
long the processes took to start. Then it runs a :class:`qw.schedule.Scheduler`
for :func:`schedules` until SIGTERM (the pass under way finishes; exit 0),
SIGKILL, or SECONDS of real time from its start (a safety net should the test
die first; exit 3). REPORT gets one JSON object a line, each written by a
single ``write`` call so that a kill leaves only whole lines:

* ``{"event": "ready", "pid"}`` once the store is open;
* ``{"event": "up", "pid", "began", "ended"}`` after the first pass: the fake
  time of its first clock reading, and after it;
* ``{"event": "enqueue", "id", "created"}`` per job the scheduler inserted
  (``created`` False: the store refused it as a duplicate);
* ``{"event": "advance", "name", "tick", "moved"}`` per ``advance_schedule``
  call and its answer;
* ``{"event": "error", "message"}`` per warning or error the scheduler logged
  (a failed pass), or the traceback that ended the process;
* ``{"event": "done", "passes", "enqueued", "stopped"}`` at a clean exit.

Times are ISO 8601 in UTC.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import qw
from qw.schedule import FakeClock, Periodic, Scheduler

__all__ = ["INTERVAL_S", "QUEUE", "TASK", "main", "schedules"]

#: The queue and task of the schedules' jobs (never run: the test reads them back).
QUEUE = "kit-periodic"
TASK = "qw_testkit.periodic"
#: The interval schedule's period, in (fake) seconds: 250 ms of real time at
#: the test's speed-up, so that on a loaded machine four schedulers all
#: waking late by a tick's length (which "latest" then rightly skips) is not
#: what the test measures.
INTERVAL_S = 15

Note = Callable[..., None]


def schedules(app: qw.App | None = None) -> list[Periodic]:
    """The two schedules every process runs: a per-minute cron, and an interval of seconds."""
    app = app or qw.App()

    @app.task(name=TASK, queue=QUEUE)
    def tick(label: str) -> str:
        return label

    return [
        app.periodic("* * * * *", task=tick, args=["minutely"], name="kit.minutely"),
        app.periodic(every=INTERVAL_S, task=tick, args=["fast"], name="kit.fast"),
    ]


class _Recording(qw.Client):
    """A client that notes every insert and compare-and-set the scheduler makes, with the answer."""

    def __init__(self, backend: qw.Backend, note: Note) -> None:
        super().__init__(backend)
        self._note = note

    def enqueue(
        self, jobs: Sequence[qw.NewJob], *, connection: object | None = None
    ) -> list[qw.Enqueued]:
        try:
            answers = super().enqueue(jobs, connection=connection)
        except qw.DuplicateJob:
            for job in jobs:
                self._note(event="enqueue", id=job.id, created=False)
            raise
        for answer in answers:
            self._note(event="enqueue", id=answer.id, created=answer.created)
        return answers

    def advance_schedule(self, name: str, tick: datetime) -> bool:
        moved = super().advance_schedule(name, tick)
        self._note(event="advance", name=name, tick=tick.isoformat(), moved=moved)
        return moved


class _Errors(logging.Handler):
    """Notes what the scheduler logs at WARNING or above: a pass that failed and was retried."""

    def __init__(self, note: Note) -> None:
        super().__init__(logging.WARNING)
        self._note = note

    def emit(self, record: logging.LogRecord) -> None:
        self._note(event="error", message=self.format(record))


def main(argv: Sequence[str]) -> int:
    """Run the scheduler from when file ``argv[2]`` exists, noting to ``argv[0]``.

    For at most ``argv[1]`` real seconds from now.
    """
    report, seconds, go = argv[0], float(argv[1]), argv[2]
    fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def note(**fields: Any) -> None:
        os.write(fd, (json.dumps(fields) + "\n").encode())

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("qw").addHandler(_Errors(note))
    deadline = time.monotonic() + seconds
    try:
        clock = FakeClock.parse(os.environ["QW_FAKE_CLOCK"])
        with qw.open() as opened:
            client = _Recording(opened.backend, note)
            first: list[datetime] = []

            def fake_now() -> datetime:
                now = clock.at(client.now())
                if not first:
                    first.append(now)
                return now

            scheduler = Scheduler(
                client,
                schedules(qw.App(client=client)),
                clock=fake_now,
                speedup=clock.speedup,
            )
            client.now()
            note(event="ready", pid=os.getpid())
            while not os.path.exists(go):
                if stop.wait(0.005):
                    return 0
                if time.monotonic() > deadline:
                    return 3
            # The first pass outside run(), whose retries would hide a store
            # that fails from the start: the test wants that traceback.
            scheduler.run_once()
            note(
                event="up",
                pid=os.getpid(),
                began=first[0].isoformat(),
                ended=fake_now().isoformat(),
            )
            scheduler.run(lambda: stop.is_set() or time.monotonic() > deadline)
            note(
                event="done",
                passes=scheduler.passes,
                enqueued=scheduler.enqueued,
                stopped=stop.is_set(),
            )
    except BaseException:
        note(event="error", message=traceback.format_exc())
        return 1
    finally:
        os.close(fd)
    return 0 if stop.is_set() else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
