"""Task-side recorder: which job ran, and when, written where the harness can read it.

A no-op task calls :func:`record` with its job's index. Each process appends
``"<index> <time_ns>\\n"`` to its own file under ``$QW_BENCH_PROBE_DIR`` with one
``os.write`` on an ``O_APPEND`` descriptor: atomic per line, safe from threads
and forked children, and a few microseconds, so the probe does not weigh on
what is measured. Timestamps are ``time.time_ns()`` so that several processes
on one machine share one clock.

Workflow steps note more than their start, each kind in files of its own
(``<pid>.<kind>``): ``done`` when the step's body returns, ``fin`` when the
system reports the step's terminal write committed (qw's ``qw_job_finished``
hook, Celery's ``task_success`` signal).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DONE",
    "ENV",
    "FIN",
    "START",
    "Counter",
    "Record",
    "count",
    "read",
    "record",
    "write_end",
]

ENV = "QW_BENCH_PROBE_DIR"
#: File kinds: a task started; a step's body returned; its terminal write committed.
START, DONE, FIN = "log", "done", "fin"

_fds: dict[str, int] = {}
_pid: int | None = None


def record(index: int, kind: str = START, at_ns: int | None = None) -> None:
    """Note that job ``index`` started now (in this process), or another ``kind`` of moment."""
    global _pid
    pid = os.getpid()
    if _pid != pid:
        # A forked child must not share its parent's descriptor position bookkeeping.
        _fds.clear()
        _pid = pid
    fd = _fds.get(kind)
    if fd is None:
        directory = os.environ[ENV]
        fd = _fds[kind] = os.open(
            os.path.join(directory, f"{pid}.{kind}"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
    os.write(fd, b"%d %d\n" % (index, time.time_ns() if at_ns is None else at_ns))


def forget() -> None:
    """Let the next :func:`record` open its files again (after ``$QW_BENCH_PROBE_DIR`` changed)."""
    global _pid
    for fd in _fds.values():
        os.close(fd)
    _fds.clear()
    _pid = None


@dataclass(frozen=True, slots=True)
class Record:
    index: int
    at_ns: int


def read(directory: Path, kind: str = START) -> list[Record]:
    """Every complete line of ``kind`` written under ``directory`` so far."""
    out: list[Record] = []
    for path in directory.glob(f"*.{kind}"):
        data = path.read_bytes()
        for line in data.split(b"\n"):
            parts = line.split()
            if len(parts) == 2:
                out.append(Record(int(parts[0]), int(parts[1])))
    return out


def count(directory: Path) -> int:
    """How many lines were written so far (reads everything: see :class:`Counter`)."""
    return sum(path.read_bytes().count(b"\n") for path in directory.glob("*.log"))


class Counter:
    """Counts lines under a directory incrementally, reading only what is new (for polling)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._offsets: dict[Path, int] = {}
        self._lines = 0

    def __call__(self) -> int:
        for path in self._directory.glob("*.log"):
            start = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(start)
                data = f.read()
            # Only whole lines count; a partial one is read again next time.
            whole = data.rfind(b"\n") + 1
            self._lines += data.count(b"\n", 0, whole)
            self._offsets[path] = start + whole
        return self._lines


class Tail:
    """The records of one ``kind`` written since the last call (for polling)."""

    def __init__(self, directory: Path, kind: str = START) -> None:
        self._directory = directory
        self._kind = kind
        self._offsets: dict[Path, int] = {}

    def __call__(self) -> list[Record]:
        out: list[Record] = []
        for path in self._directory.glob(f"*.{self._kind}"):
            start = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(start)
                data = f.read()
            whole = data.rfind(b"\n") + 1
            self._offsets[path] = start + whole
            for line in data[:whole].split(b"\n"):
                parts = line.split()
                if len(parts) == 2:
                    out.append(Record(int(parts[0]), int(parts[1])))
        return out


def write_end(at_ns: int | None = None) -> None:
    """Note when this worker process saw its last terminal write (``<pid>.end``)."""
    directory = os.environ[ENV]
    value = time.time_ns() if at_ns is None else at_ns
    Path(directory, f"{os.getpid()}.end").write_text(str(value))
