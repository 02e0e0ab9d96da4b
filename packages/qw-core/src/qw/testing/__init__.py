"""Helpers for testing an application's own tasks: eager mode, drain, a background worker.

>>> import qw, qw.testing
>>> app = qw.App("sqlite:///never-opened.db")
>>> @app.task
... def add(a: int, b: int) -> int:
...     return a + b
>>> with qw.testing.eager(app):
...     add.enqueue(2, 3).result()
5

Every helper runs the real :class:`qw.worker.Worker` on a real store (a
fresh in-process ``memory`` store unless the app already has one), so
retries, timeouts, workflows, ``qw.current_job()`` and JSON payloads behave
as in production. ``import qw`` does not load this module; see
``docs/testing.md``.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from qw.app import App
from qw.backends.memory import MemoryBackend
from qw.backoff import Backoff
from qw.client import Client
from qw.contract import Insert, WorkflowInsert
from qw.errors import ResultTimeout
from qw.model import Enqueued
from qw.opening import resolve_namespace
from qw.plugin.manager import QwPluginManager
from qw.testing._worker import DrainWorker, pending_jobs
from qw.validation import validate_queues
from qw.worker.config import WorkerConfig
from qw.worker.runtime import Worker
from qw.worker.stats import WorkerStats

__all__ = [
    "DrainResult",
    "DrainTimeout",
    "Eager",
    "drain",
    "eager",
    "memory_store",
    "run_worker",
]

#: How long one drain (one eager enqueue) may take before :class:`DrainTimeout`.
DEFAULT_TIMEOUT_S = 30.0
# Retries inside eager(): at once, unless the test asks for the task's backoff.
_NO_BACKOFF = Backoff.fixed(0)
# The worker settings of a drain: one job at a time, claimed one at a time,
# so that jobs run in the order the store hands them out; sync tasks in the
# draining thread (inline); no GC tuning (it is process-wide) and no
# scheduler (periodic ticks would never end a drain).
_DRAIN_OPTIONS: dict[str, Any] = {
    "inline": True,
    "concurrency": 1,
    "prefetch": 0,
    "poll_interval": 0.05,
    "heartbeat_s": 1.0,
    "reclaim_s": 1.0,
    "tune_gc": False,
    "scheduler": False,
}


class DrainTimeout(ResultTimeout):
    """A drain still had jobs to run when its time was up; ``result`` says what it did."""

    def __init__(self, message: str, result: DrainResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class DrainResult:
    """What a drain's worker did: its :class:`~qw.worker.stats.WorkerStats` counters.

    ``succeeded``, ``failed`` and ``cancelled`` count jobs that ended;
    ``retried`` counts failed attempts that were requeued; ``claimed``
    counts attempts started.
    """

    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    released: int = 0
    abandoned: int = 0
    timed_out: int = 0
    lost: int = 0

    @classmethod
    def of(cls, stats: WorkerStats) -> DrainResult:
        return cls(**{f.name: getattr(stats, f.name) for f in fields(cls)})

    def __add__(self, other: DrainResult) -> DrainResult:
        return DrainResult(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


def _queues(app: App, queues: Iterable[str] | None) -> tuple[str, ...]:
    if queues is not None:
        return validate_queues(tuple(queues))
    return tuple(app.queues()) or ("default",)


def _run_drain(
    app: App,
    queues: tuple[str, ...],
    *,
    timeout: float,
    plugins: QwPluginManager,
    delayed: bool = False,
    retries: bool = False,
) -> DrainResult:
    worker = DrainWorker(
        app,
        WorkerConfig(queues=queues, **_DRAIN_OPTIONS),
        plugins=plugins,
        delayed=delayed,
        retries=retries,
    )
    # The worker runs in this thread; a timer asks it to stop if it runs too long.
    watchdog = threading.Timer(timeout, worker.stop, kwargs={"force": True, "timeout": 0})
    watchdog.daemon = True
    watchdog.start()
    try:
        stats = worker.run(handle_signals=False)
    finally:
        watchdog.cancel()
    result = DrainResult.of(stats)
    if not worker.idle:
        left = pending_jobs(app.client, queues, delayed=delayed, retries=retries)
        raise DrainTimeout(
            f"drain: {left} jobs of queues {list(queues)} still to run after {timeout} s "
            f"({result})",
            result,
        )
    return result


def drain(
    app: App,
    *,
    queues: Iterable[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    delayed: bool = False,
    load_plugins: bool = True,
) -> DrainResult:
    """Run a real worker on the app's store, in this thread, until nothing is left to run.

    "Nothing left": no job of ``queues`` (default: the queues of the app's
    tasks) is queued and due, and every outcome the worker produced is
    written (so a workflow's next steps, once due, are run too). Jobs
    delayed into the future (``delay=``, ``run_at=``, a retry's backoff)
    are left queued, unless ``delayed`` is True: then the drain waits for
    them. Sync tasks run in this thread, ``async def`` tasks on the
    worker's event loop thread, as in ``qw worker``. Raises
    :class:`DrainTimeout` after ``timeout`` seconds (a sync task that never
    returns blocks this thread, as it would block your test).
    """
    plugins = QwPluginManager()
    if load_plugins:
        plugins.load_entry_points()
    return _run_drain(app, _queues(app, queues), timeout=timeout, plugins=plugins, delayed=delayed)


def _memory_client(app: App, backend_cls: type[MemoryBackend] = MemoryBackend) -> Client:
    # A store of its own, so that nothing another test left in `memory://` is seen.
    name = f"qw-testing-{secrets.token_hex(6)}"
    return Client(backend_cls(name, namespace=resolve_namespace(app.namespace)))


@contextlib.contextmanager
def memory_store(app: App) -> Iterator[Client]:
    """Bind the app to a fresh, empty in-process memory store inside the block.

    Enqueues go to it and stay queued until :func:`drain` (or
    :func:`run_worker`) runs them. The namespace is the app's. The app's own
    store is not opened; it is used again after the block.
    """
    with app.use_client(_memory_client(app)) as client:
        yield client


@contextlib.contextmanager
def run_worker(
    app: App,
    queues: Iterable[str] | None = None,
    *,
    stop_timeout: float = 10.0,
    **options: Any,
) -> Iterator[Worker]:
    """A real worker for the app's tasks on a background thread, for the block.

    ``options`` are :class:`~qw.worker.WorkerConfig` fields (short polls by
    default). The worker is stopped on exit: it claims nothing more and
    running jobs get ``stop_timeout`` seconds to finish.
    """
    settings: dict[str, Any] = {"poll_interval": 0.05, "tune_gc": False, **options}
    worker = app.worker(queues, **settings)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=stop_timeout)


class _EagerBackend(MemoryBackend):
    """A memory store that runs what was just enqueued before answering."""

    def __init__(self, store_name: str, *, namespace: str) -> None:
        super().__init__(store_name, namespace=namespace)
        self.after_enqueue: Eager | None = None

    def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        answers = super().enqueue(jobs)
        if self.after_enqueue is not None:
            self.after_enqueue.run()
        return answers

    def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        created = super().create_workflow(workflow, steps)
        if self.after_enqueue is not None:
            self.after_enqueue.run()
        return created


class Eager:
    """The eager mode of one app (what :func:`eager` yields): its store and its totals."""

    def __init__(
        self,
        app: App,
        client: Client,
        *,
        timeout: float,
        backoff: bool,
        plugins: QwPluginManager,
    ) -> None:
        self.app = app
        #: The fresh memory store's client, bound to the app.
        self.client = client
        self._timeout = timeout
        self._backoff = backoff
        self._plugins = plugins
        self._totals = DrainResult()
        self._lock = threading.Lock()
        self._draining = False
        self._dirty = False
        self._mine = threading.local()
        self._saved_backoff: dict[str, Backoff] = {}

    @property
    def totals(self) -> DrainResult:
        """What every drain of the block did, added up."""
        return self._totals

    def run(self) -> None:
        """Run the app's due jobs now, in this thread (called after every enqueue)."""
        if getattr(self._mine, "draining", False):
            # A task enqueued from inside the drain: the running drain takes it.
            return
        with self._lock:
            if self._draining:
                # Another thread drains (an async task's enqueue, a second
                # test thread): it goes round once more before it stops.
                self._dirty = True
                return
            self._draining = True
        self._mine.draining = True
        try:
            while True:
                self._zero_backoff()
                result = _run_drain(
                    self.app,
                    _queues(self.app, None),
                    timeout=self._timeout,
                    plugins=self._plugins,
                    retries=self._backoff,
                )
                self._totals = self._totals + result
                with self._lock:
                    if not self._dirty:
                        self._draining = False
                        return
                    self._dirty = False
        except BaseException:
            with self._lock:
                self._draining = self._dirty = False
            raise
        finally:
            self._mine.draining = False

    def _zero_backoff(self) -> None:
        # Tasks registered since the last drain get it too; restore() puts them back.
        if self._backoff:
            return
        for name, task in self.app.tasks.items():
            if name not in self._saved_backoff:
                self._saved_backoff[name] = task.backoff
                task.backoff = _NO_BACKOFF

    def restore(self) -> None:
        for name, policy in self._saved_backoff.items():
            task = self.app.tasks.get(name)
            if task is not None:
                task.backoff = policy
        self._saved_backoff.clear()


@contextlib.contextmanager
def eager(
    app: App,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    backoff: bool = False,
    load_plugins: bool = True,
) -> Iterator[Eager]:
    """Inside the block, every enqueue through ``app`` runs its jobs before it returns.

    The app is bound to a fresh memory store; after each enqueue
    (``task.enqueue``, ``task.aenqueue``, ``app.enqueue_many``, a
    workflow's ``enqueue``) a real worker drains it, in the enqueuing
    thread, until no job is queued and due (:func:`drain`). The handle the
    enqueue returned then has its result. A failed attempt is retried at
    once (``backoff=True``: after the task's backoff, the enqueue sleeping
    meanwhile), as many times as the job allows. Jobs delayed into the
    future (``delay=``, ``run_at=``) are stored but not run; a later
    enqueue or :func:`drain` with ``delayed=True`` runs them. Each drain
    raises :class:`DrainTimeout` after ``timeout`` seconds.
    """
    plugins = QwPluginManager()
    if load_plugins:
        plugins.load_entry_points()
    client = _memory_client(app, _EagerBackend)
    backend = client.backend
    assert isinstance(backend, _EagerBackend)
    mode = Eager(app, client, timeout=timeout, backoff=backoff, plugins=plugins)
    try:
        with app.use_client(client):
            backend.after_enqueue = mode
            yield mode
    finally:
        backend.after_enqueue = None
        mode.restore()
