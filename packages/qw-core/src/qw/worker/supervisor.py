"""``qw worker --processes N``: a supervisor that runs N worker processes and restarts crashed ones.

Children are separate interpreters started with :mod:`subprocess` running
``qw worker`` with the supervisor's own options minus ``--processes``, never
``fork``: a forked copy of a process that has threads (a store client's pool,
a plugin's exporter) inherits their locks in whatever state they were, and a
clean interpreter imports the app exactly as a lone ``qw worker`` does. The
supervisor itself never imports the app nor opens the store, so it holds no
threads or connections to leak into them.

Signals: the supervisor's SIGTERM/SIGINT is forwarded to every child as
SIGTERM, the first making them drain, the second making them stop at once,
as a lone worker's first and second signal do. The children run in a
process group of their own, so a terminal's Ctrl-C reaches them only once,
through the supervisor.

Orphans: each child holds the read end of a pipe whose only write end is the
supervisor's; when the supervisor dies, however, the child reads EOF and
signals itself SIGTERM, draining like on a forwarded first signal (portable,
unlike ``PR_SET_PDEATHSIG``, which also fires when the spawning *thread* ends).

Identity: a child's worker id is its usual ``host:pid:token`` followed by
``/w<index>@<supervisor pid>.<token>``, a string every backend already
stores, so ``qw status`` can group children under their supervisor
(:func:`parse_child_id`) without a new registry field.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import select
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from qw.worker.shutdown import SIGNALS

if TYPE_CHECKING:
    from qw.worker.runtime import Worker

__all__ = [
    "MAX_PROCESSES",
    "MAX_STARTUP_FAILURES",
    "WORKER_INDEX_ENV",
    "ChildRole",
    "ChildSpec",
    "Supervised",
    "Supervisor",
    "parse_child_id",
]

log = logging.getLogger("qw.supervisor")

#: The most worker processes one supervisor runs.
MAX_PROCESSES = 256
#: The first restart of a crashed child waits this long; each crash in a row doubles it ...
RESTART_FIRST_S = 0.5
#: ... up to this.
RESTART_MAX_S = 30.0
#: A child that lived this long before crashing restarts after RESTART_FIRST_S again.
STABLE_AFTER_S = 60.0
#: After this many start-up failures in a row of one child (it exited before
#: its worker was built: an import error, a bad option), the supervisor gives up.
MAX_STARTUP_FAILURES = 5
#: Set in each child's environment to its index (0, 1, ...), so that a plugin
#: with one fixed resource per process (qw-metrics' port) can take its own.
WORKER_INDEX_ENV = "QW_WORKER_INDEX"
# How often the supervisor looks at its children and its signal count.
_POLL_S = 0.1

_CHILD_ID = re.compile(r"^(?P<base>.+)/w(?P<index>\d+)@(?P<pid>\d+)\.(?P<token>[0-9a-f]+)$")


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What a child learns from the supervisor (its hidden ``--child`` option)."""

    index: int
    #: ``<supervisor pid>.<token>``: the token tells a restarted supervisor with a reused pid apart.
    supervisor: str
    #: The child writes one byte here once its worker is built, then closes it.
    ready_fd: int
    #: EOF here means the supervisor is gone.
    watch_fd: int

    def encode(self) -> str:
        return f"{self.index},{self.supervisor},{self.ready_fd},{self.watch_fd}"

    @classmethod
    def parse(cls, text: str) -> ChildSpec:
        """The spec ``encode`` made; ValueError for anything else."""
        index, supervisor, ready_fd, watch_fd = text.split(",")
        if not re.fullmatch(r"\d+\.[0-9a-f]+", supervisor):
            raise ValueError(f"bad supervisor {supervisor!r}")
        return cls(int(index), supervisor, int(ready_fd), int(watch_fd))

    def worker_id(self, base: str) -> str:
        """The id of the child's worker whose own id would be ``base``."""
        return f"{base}/w{self.index}@{self.supervisor}"


@dataclass(frozen=True, slots=True)
class Supervised:
    """A worker id taken apart: the worker is child ``index`` of ``supervisor``."""

    supervisor: str
    supervisor_pid: int
    index: int


def parse_child_id(worker_id: str) -> Supervised | None:
    """Who supervises the worker ``worker_id``; None for a worker that runs alone."""
    match = _CHILD_ID.match(worker_id)
    if match is None:
        return None
    pid = int(match["pid"])
    return Supervised(f"{pid}.{match['token']}", pid, int(match["index"]))


class ChildRole:
    """A child's side: its identity, signals before its worker exists, readiness, the watch."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self._signals = 0
        self._worker: Worker | None = None

    @property
    def tag(self) -> str:
        """What the child's log lines carry: ``w2``."""
        return f"w{self.spec.index}"

    def start(self) -> None:
        """Catch signals until the worker takes them over; watch the supervisor."""
        # Until Worker.run installs its own handlers, a forwarded SIGTERM would
        # kill the interpreter mid-import (an unclean exit); counted instead.
        for sig in SIGNALS:
            signal.signal(sig, self._early_signal)
        threading.Thread(target=self._watch, name="qw-supervisor-watch", daemon=True).start()

    def _early_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._worker is not None:
            self._worker.request_stop(force=self._worker.stop_requested)

    def adopt(self, worker: Worker) -> None:
        """Name ``worker`` after the supervisor, hand it the early signals, and report ready."""
        worker.rename(self.spec.worker_id(worker.id))
        self._worker = worker
        if self._signals:
            worker.request_stop(force=self._signals > 1)
        try:
            os.write(self.spec.ready_fd, b"r")
            os.close(self.spec.ready_fd)
        except OSError:  # The supervisor is gone; the watch thread handles that.
            pass

    def _watch(self) -> None:
        try:
            while os.read(self.spec.watch_fd, 1):
                pass
        except OSError:
            pass
        log.warning("the supervisor (pid %s) is gone: stopping", self.spec.supervisor.split(".")[0])
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Slot:
    """One of the N children, across its restarts."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready_fd: int | None = None
    ready: bool = False
    crashes: int = 0  # in a row, reset by a life longer than STABLE_AFTER_S
    startup_failures: int = 0  # in a row, reset by a start-up that got as far as ready
    restart_at: float | None = 0.0  # monotonic; None: not to be started again


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL``, from a Popen return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Runs ``processes`` children of ``command`` (+ ``--child SPEC``) until stopped by signal.

    :meth:`run` returns the exit code: 0 when every child stopped cleanly
    after the supervisor's signal, 1 when one did not, or when a child kept
    failing at start-up and the supervisor gave up.
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        restart_first_s: float = RESTART_FIRST_S,
        restart_max_s: float = RESTART_MAX_S,
        stable_after_s: float = STABLE_AFTER_S,
        max_startup_failures: int = MAX_STARTUP_FAILURES,
    ) -> None:
        if not 1 <= processes <= MAX_PROCESSES:
            raise ValueError(f"processes must be in [1, {MAX_PROCESSES}], not {processes}")
        self.command = list(command)
        self.id = f"{os.getpid()}.{secrets.token_hex(3)}"
        self.restart_first_s = restart_first_s
        self.restart_max_s = restart_max_s
        self.stable_after_s = stable_after_s
        self.max_startup_failures = max_startup_failures
        self._slots = [_Slot(i) for i in range(processes)]
        self._signals = 0  # set by the handler only: no lock may be taken there
        self._forwarded = 0
        self._stopping = False
        self._failed = False

    def run(self) -> int:
        """Start the children, keep them running, forward signals; the exit code."""
        watch_r, watch_w = os.pipe()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        log.info("supervisor %s: running %d worker processes", self.id, len(self._slots))
        try:
            while True:
                self._forward_signals()
                self._reap()
                if self._stopping and not any(s.proc for s in self._slots):
                    break
                if not self._stopping:
                    self._start_due(watch_r)
                self._wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for slot in self._slots:
                self._close_ready(slot)
            os.close(watch_r)
            os.close(watch_w)
        outcome = "with failures" if self._failed else "cleanly"
        log.info("supervisor %s: every worker process exited, %s", self.id, outcome)
        return 1 if self._failed else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1

    def _forward_signals(self) -> None:
        while self._forwarded < self._signals:
            self._forwarded += 1
            how = "draining" if self._forwarded == 1 else "stopping at once"
            self._stop_children(f"signal {self._forwarded}: {how}")

    def _stop_children(self, why: str) -> None:
        self._stopping = True
        live = [s for s in self._slots if s.proc is not None]
        log.info("supervisor %s: %s (%d worker processes)", self.id, why, len(live))
        for slot in live:
            assert slot.proc is not None
            try:
                slot.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:  # exited; reaped next round
                pass

    def _start_due(self, watch_r: int) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.proc is None and slot.restart_at is not None and slot.restart_at <= now:
                self._spawn(slot, watch_r)

    def _spawn(self, slot: _Slot, watch_r: int) -> None:
        ready_r, ready_w = os.pipe()
        spec = ChildSpec(slot.index, self.id, ready_w, watch_r)
        try:
            proc = subprocess.Popen(
                [*self.command, "--child", spec.encode()],
                pass_fds=(ready_w, watch_r),
                env={**os.environ, WORKER_INDEX_ENV: str(slot.index)},
                # Its own group: a terminal's Ctrl-C reaches it through the supervisor only.
                process_group=0,
            )
        except OSError as exc:
            os.close(ready_r)
            os.close(ready_w)
            log.error("supervisor %s: could not start w%d: %s", self.id, slot.index, exc)
            self._crashed(slot, time.monotonic(), startup=True)
            return
        os.close(ready_w)
        slot.proc, slot.ready_fd, slot.ready = proc, ready_r, False
        slot.started, slot.restart_at = time.monotonic(), None
        log.info("supervisor %s: started w%d (pid %d)", self.id, slot.index, proc.pid)

    def _wait(self) -> None:
        """Sleep until a child reports ready, a restart is due, or _POLL_S passed."""
        fds = {slot.ready_fd: slot for slot in self._slots if slot.ready_fd is not None}
        timeout = _POLL_S
        if not self._stopping:
            due = [s.restart_at for s in self._slots if s.proc is None and s.restart_at is not None]
            if due:
                timeout = max(0.0, min(timeout, min(due) - time.monotonic()))
        readable, _, _ = select.select(list(fds), [], [], timeout)
        for fd in readable:
            slot = fds[fd]
            if os.read(fd, 1):
                slot.ready, slot.startup_failures = True, 0
            self._close_ready(slot)  # a byte or EOF: either way nothing more comes

    def _reap(self) -> None:
        for slot in self._slots:
            if slot.proc is None:
                continue
            code = slot.proc.poll()
            if code is None:
                continue
            pid, now = slot.proc.pid, time.monotonic()
            if slot.ready_fd is not None:
                # The byte may be in the pipe still, written just before exiting.
                if select.select([slot.ready_fd], [], [], 0)[0] and os.read(slot.ready_fd, 1):
                    slot.ready = True
                self._close_ready(slot)
            slot.proc = None
            lived = now - slot.started
            what = f"w{slot.index} (pid {pid}) exited after {lived:.1f} s: {describe_exit(code)}"
            if self._stopping:
                slot.restart_at = None
                # Killed by the forwarded SIGTERM before its interpreter got as
                # far as catching it: it had no worker yet, so no jobs either.
                if code != 0 and not (code == -signal.SIGTERM and not slot.ready):
                    self._failed = True
                    log.error("supervisor %s: %s, not a clean stop", self.id, what)
                else:
                    log.info("supervisor %s: %s", self.id, what)
            elif code == 0:
                # Someone stopped this child on purpose (a signal to it alone).
                slot.restart_at = None
                log.info("supervisor %s: %s; not restarted", self.id, what)
                if not any(s.proc or s.restart_at is not None for s in self._slots):
                    self._stopping = True
            else:
                log.warning("supervisor %s: %s", self.id, what)
                self._crashed(slot, now, startup=not slot.ready)

    def _crashed(self, slot: _Slot, now: float, *, startup: bool) -> None:
        if startup:
            slot.startup_failures += 1
            if slot.startup_failures >= self.max_startup_failures:
                log.error(
                    "supervisor %s: w%d failed at start-up %d times in a row (see its "
                    "output above): giving up",
                    self.id,
                    slot.index,
                    slot.startup_failures,
                )
                slot.restart_at = None
                self._failed = True
                self._stop_children("giving up")
                return
        if now - slot.started >= self.stable_after_s:
            slot.crashes = 0
        slot.crashes += 1
        delay = min(self.restart_first_s * 2 ** min(slot.crashes - 1, 32), self.restart_max_s)
        slot.restart_at = now + delay
        log.warning("supervisor %s: restarting w%d in %.1f s", self.id, slot.index, delay)

    @staticmethod
    def _close_ready(slot: _Slot) -> None:
        if slot.ready_fd is not None:
            os.close(slot.ready_fd)
            slot.ready_fd = None
