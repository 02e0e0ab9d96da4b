"""A typed facade over pluggy's PluginManager for qw's hooks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

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

    @property
    def pluggy(self) -> pluggy.PluginManager:
        return self._pm

    def register(self, plugin: object, name: str | None = None) -> None:
        self._pm.register(plugin, name=name)

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
        return loaded

    def implements(self, hook: str) -> bool:
        """Whether any registered plugin implements ``hook`` (a cheap check for hot paths)."""
        return bool(getattr(self._pm.hook, hook).get_hookimpls())

    def _notify(self, hook: str, **kwargs: Any) -> None:
        for impl in reversed(getattr(self._pm.hook, hook).get_hookimpls()):
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception:
                log.exception("qw plugin %s failed in %s", impl.plugin_name, hook)

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
        hook = self._pm.hook.qw_run_job
        # Only the innermost implementation registered: skip pluggy's call
        # machinery, which cost ~7% of a no-op job's worker time.
        if len(hook.get_hookimpls()) == 1:
            return run()
        return hook(job=job, run=run)  # type: ignore[no-any-return]


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
