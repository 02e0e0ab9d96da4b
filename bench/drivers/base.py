"""The one interface every system's driver implements, and the helpers they share.

A driver knows how to empty its store, enqueue no-op jobs the way a user of
that system would, start that system's own workers (as subprocesses, with the
settings :meth:`Driver.settings` states), tell when they are done, and count
what the store says succeeded. The phases in :mod:`bench.phases` do the
timing and the checking, the same way for every system.
"""

from __future__ import annotations

import abc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from bench import probe
from bench.config import ROOT, Plan, Setting, Stores, basic_sweep

if TYPE_CHECKING:
    from bench.aenqueue import AsyncProducer

__all__ = ["Driver", "Unsupported", "Workers", "poll_until", "python_cmd"]

#: The queue every system's bench jobs go to.
QUEUE = "bench"


class Unsupported(Exception):
    """The system has no documented API for this (e.g. bulk enqueue)."""


@dataclass(slots=True)
class Workers:
    """Worker processes a driver started, with where their output goes."""

    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    probe_dir: Path
    extra: dict[str, object] = field(default_factory=dict)
    #: How many jobs the workers ran so far (incremental, cheap to poll).
    ran: probe.Counter = field(init=False)

    def __post_init__(self) -> None:
        self.ran = probe.Counter(self.probe_dir)

    def failed(self) -> str | None:
        """A message if a worker exited with an error, else None."""
        for proc, log in zip(self.procs, self.logs, strict=True):
            code = proc.poll()
            if code not in (None, 0):
                return f"worker exited with {code}: {tail(log)}"
        return None

    def all_exited(self) -> bool:
        return all(p.poll() is not None for p in self.procs)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def python_cmd(*args: str) -> list[str]:
    """A command running this venv's Python."""
    return [sys.executable, *args]


def spawn(
    cmd: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a worker in this process group (a phase kill takes it down too)."""
    full = dict(os.environ)
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full.get("PYTHONPATH")]))
    full["PYTHONUNBUFFERED"] = "1"
    if env:
        full.update(env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(list(cmd), cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT)


def stop(
    procs: Sequence[subprocess.Popen[bytes]], sig: int = signal.SIGTERM, grace: float = 15.0
) -> None:
    """Ask every process to stop; kill what is still there after ``grace`` s."""
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def poll_until(
    check: Callable[[], bool],
    deadline: float,
    *,
    interval: float = 0.005,
    progress: Callable[[], str] | None = None,
    workers: Workers | None = None,
) -> int:
    """Call ``check`` every ``interval`` s until true; return ``time.time_ns()`` then.

    Raises TimeoutError at ``deadline`` (a monotonic time) and RuntimeError
    if a worker died meanwhile. ``progress`` is printed every few seconds.
    """
    shown = time.monotonic()
    while True:
        if check():
            return time.time_ns()
        now = time.monotonic()
        if workers is not None and (msg := workers.failed()):
            raise RuntimeError(msg)
        if now >= deadline:
            extra = f" ({progress()})" if progress else ""
            raise TimeoutError(f"not done before the phase deadline{extra}")
        if progress is not None and now - shown >= 3.0:
            print(f"    ... {progress()}", file=sys.stderr, flush=True)
            shown = now
        time.sleep(interval)


class Driver(abc.ABC):
    """One system on one store."""

    system: ClassVar[str]
    store: ClassVar[str]
    #: Whether the system documents an API that enqueues many jobs in one call.
    bulk: ClassVar[bool] = False

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self.workdir = stores.workdir / self.id
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def id(self) -> str:
        return f"{self.system}-{self.store}"

    # -- what the report says about it --------------------------------------

    @abc.abstractmethod
    def version(self) -> str:
        """The system's version."""

    @abc.abstractmethod
    def settings(self, concurrency: int) -> dict[str, str]:
        """The settings used at ``concurrency``, stated in the report."""

    def full_sweep(self) -> list[Setting]:
        """The settings a ``full`` sweep drains with: the system's documented ways to scale.

        The default is one process at concurrency 1, 4 and 16.
        """
        return basic_sweep((1, 4, 16))

    def sweep(self, plan: Plan) -> list[Setting]:
        """The drain settings of ``plan``: :meth:`full_sweep`, or the plan's concurrencies."""
        if plan.sweep == "basic":
            return basic_sweep(plan.concurrencies)
        return self.full_sweep()

    def describe(self, setting: Setting) -> dict[str, str]:
        """The settings of a sweep entry for the report (one process: :meth:`settings`)."""
        return self.settings(setting.concurrency)

    def start_setting(self, setting: Setting, probe_dir: Path, *, drain: int | None) -> Workers:
        """Start the workers of ``setting``; a driver with multi-process settings overrides it."""
        if setting.processes != 1 or setting.extra:
            raise Unsupported(f"{self.id}: no multi-process setting {setting.label}")
        return self.start(setting.concurrency, probe_dir, drain=drain)

    def unavailable(self) -> str | None:
        """Why this system cannot run here (package or server missing), or None."""
        return None

    # -- the store ----------------------------------------------------------

    @abc.abstractmethod
    def reset(self) -> None:
        """Make this system's store empty (creating what it needs)."""

    @abc.abstractmethod
    def cleanup(self) -> None:
        """Remove everything this system made in its store."""

    @abc.abstractmethod
    def enqueue(self, indexes: range, batch: int) -> None:
        """Enqueue a no-op job per index: ``batch`` 1 is one call per job.

        Raises :class:`Unsupported` for ``batch > 1`` when the system has no
        documented bulk API.
        """

    def prefill(self, indexes: range) -> None:
        """Enqueue quickly before a drain (the fastest documented way)."""
        step = 1000 if self.bulk else 1
        for start in range(indexes.start, indexes.stop, step):
            self.enqueue(range(start, min(start + step, indexes.stop)), step)

    def close(self) -> None:  # noqa: B027 - optional hook, most drivers hold connections
        """Close producer-side connections."""

    async def async_producer(self, producers: int) -> AsyncProducer:
        """The system's async enqueue on the running loop, sized for ``producers`` coroutines.

        Raises :class:`Unsupported` for a system with no async enqueue API.
        """
        raise Unsupported(f"{self.id}: no async enqueue API is measured for it")

    def async_settings(self, producers: int) -> str:
        """The settings of :meth:`async_producer` for the report."""
        return ""

    # -- the workers --------------------------------------------------------

    @abc.abstractmethod
    def start(self, concurrency: int, probe_dir: Path, *, drain: int | None) -> Workers:
        """Start the system's workers; with ``drain`` they are to run that many jobs."""

    @abc.abstractmethod
    def wait_drained(self, workers: Workers, n: int, deadline: float) -> int:
        """Block until all ``n`` jobs are terminal in the store; return that time (ns)."""

    def halt(self, workers: Workers) -> None:
        """Stop the workers (after a drain, or after a wake-up run)."""
        stop(workers.procs)

    @abc.abstractmethod
    def succeeded(self) -> int | None:
        """How many jobs the store records as finished successfully (None: it keeps no record)."""

    # -- helpers for subclasses ---------------------------------------------

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def progress(self, workers: Workers, n: int) -> Callable[[], str]:
        return lambda: f"{self.id}: {workers.ran()}/{n} jobs ran"

    def wait_exit_and_read_end(self, workers: Workers, n: int, deadline: float) -> int:
        """For workers that stop by themselves and write ``end_ns`` files."""
        poll_until(
            workers.all_exited,
            deadline,
            interval=0.02,
            progress=self.progress(workers, n),
            workers=workers,
        )
        if msg := workers.failed():
            raise RuntimeError(msg)
        ends = [int(p.read_text()) for p in workers.probe_dir.glob("*.end")]
        if not ends:
            raise RuntimeError(f"workers wrote no end time: {tail(workers.logs[0])}")
        return max(ends)
