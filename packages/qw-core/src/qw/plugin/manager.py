"""A typed facade over pluggy's PluginManager for qw's hooks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, NamedTuple

import pluggy

from qw.errors import PluginError
from qw.plugin import NAME, hookimpl, spec

if TYPE_CHECKING:
    from qw.client import Client
    from qw.model import Enqueued, Job, JobStatus, JSONValue, NewJob, WorkerInfo

__all__ = ["PLUGIN_GROUP", "QwPluginManager", "installed"]

PLUGIN_GROUP = "qw.plugins"
log = logging.getLogger("qw.plugin")


class QwPluginManager:
    """Loads ``qw.plugins`` and calls lifecycle hooks with typed arguments.

    A hook implementation that raises is logged with its plugin's name and
    skipped: an observer must never stop a worker.
    """

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(NAME)
        self._pm.add_hookspecs(spec)
        self._pm.register(_RunJob(), name="qw.run")
        # Per hook: its implementations' functions and argument names, in call
        # order. Built on first call, dropped on every registration: pluggy's
        # own dispatch (a list copy and a dict per call) is half of what a
        # counting plugin costs per job.
        self._impls: dict[str, list[_Impl]] = {}

    @property
    def pluggy(self) -> pluggy.PluginManager:
        """The pluggy manager underneath, for inspection; register through :meth:`register`."""
        return self._pm

    def register(self, plugin: object, name: str | None = None) -> None:
        self._pm.register(plugin, name=name)
        self._impls = {}

    def _hookimpls(self, hook: str) -> list[_Impl]:
        impls = self._impls.get(hook)
        if impls is None:
            impls = [
                _Impl(impl.function, tuple(impl.argnames), impl.plugin_name)
                for impl in reversed(getattr(self._pm.hook, hook).get_hookimpls())
            ]
            self._impls[hook] = impls
        return impls

    def load_entry_points(self) -> list[str]:
        """Register every installed ``qw.plugins`` entry point; return their names.

        Raises :class:`~qw.errors.PluginError` if one fails to load.
        """
        loaded = []
        for ep in entry_points(group=PLUGIN_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            if self._pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} from {dist} failed to load: {exc!r}"
                ) from exc
            self._pm.register(plugin, name=ep.name)
            loaded.append(ep.name)
        self._impls = {}
        return loaded

    def implements(self, hook: str) -> bool:
        """Whether any registered plugin implements ``hook`` (a cheap check for hot paths)."""
        return bool(self._hookimpls(hook))

    def _notify(self, hook: str, **kwargs: Any) -> None:
        for function, argnames, plugin in self._hookimpls(hook):
            try:
                function(*[kwargs[name] for name in argnames])
            except Exception:
                log.exception("qw plugin %s failed in %s", plugin, hook)

    def job_enqueuing(self, jobs: Sequence[NewJob], workflow: str | None) -> dict[str, str]:
        """The headers the plugins give ``jobs``; a plugin's non-string entries are dropped."""
        headers: dict[str, str] = {}
        self._notify("qw_job_enqueuing", jobs=jobs, workflow=workflow, headers=headers)
        bad = [k for k, v in headers.items() if not (isinstance(k, str) and isinstance(v, str))]
        for key in bad:
            log.warning("qw plugins set header %r to a non-string; dropped", key)
            del headers[key]
        return headers

    def jobs_enqueued(
        self, jobs: Sequence[NewJob], enqueued: Sequence[Enqueued], workflow: str | None
    ) -> None:
        self._notify("qw_jobs_enqueued", jobs=jobs, enqueued=enqueued, workflow=workflow)

    def worker_started(self, worker: WorkerInfo, client: Client) -> None:
        self._notify("qw_worker_started", worker=worker, client=client)

    def worker_stopped(self, worker: WorkerInfo, client: Client) -> None:
        self._notify("qw_worker_stopped", worker=worker, client=client)

    def lease_lost(self, job: Job, worker: WorkerInfo) -> None:
        self._notify("qw_lease_lost", job=job, worker=worker)

    def jobs_reclaimed(self, count: int, worker: WorkerInfo) -> None:
        self._notify("qw_jobs_reclaimed", count=count, worker=worker)

    def job_claimed(self, job: Job, worker: WorkerInfo) -> None:
        self._notify("qw_job_claimed", job=job, worker=worker)

    def job_finished(
        self,
        job: Job,
        status: JobStatus,
        result: JSONValue,
        error: JSONValue,
        duration_s: float,
    ) -> None:
        self._notify(
            "qw_job_finished",
            job=job,
            status=status,
            result=result,
            error=error,
            duration_s=duration_s,
        )

    def job_released(self, job: Job, reason: str) -> None:
        self._notify("qw_job_released", job=job, reason=reason)

    def run_job(self, job: Job, run: Callable[[], JSONValue]) -> JSONValue:
        """Run ``run`` through every ``qw_run_job`` wrapper; exceptions propagate."""
        # Only the innermost implementation registered: skip pluggy's call
        # machinery, which cost ~7% of a no-op job's worker time.
        if len(self._hookimpls("qw_run_job")) == 1:
            return run()
        return self._pm.hook.qw_run_job(job=job, run=run)  # type: ignore[no-any-return]


class _Impl(NamedTuple):
    function: Callable[..., object]
    argnames: tuple[str, ...]
    plugin: str


_installed: QwPluginManager | None = None
_installed_lock = threading.Lock()


def installed() -> QwPluginManager:
    """The process's manager of every installed ``qw.plugins`` entry point, loaded on first use.

    Clients use it unless given one of their own. Raises
    :class:`~qw.errors.PluginError` (every call, until fixed) when a plugin
    fails to load.
    """
    global _installed
    with _installed_lock:
        if _installed is None:
            manager = QwPluginManager()
            manager.load_entry_points()
            _installed = manager
        return _installed


class _RunJob:
    """The innermost ``qw_run_job``: call the task. Wrappers go around it."""

    @hookimpl(trylast=True)
    def qw_run_job(self, run: Callable[[], JSONValue]) -> JSONValue:
        return run()
