"""A typed facade over pluggy's PluginManager for qw's hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from qw.errors import PluginError
from qw.plugin import NAME, hookimpl, spec

if TYPE_CHECKING:
    from qw.model import Job, JobStatus, JSONValue, WorkerInfo

__all__ = ["PLUGIN_GROUP", "QwPluginManager"]

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

    def _notify(self, hook: str, **kwargs: Any) -> None:
        for impl in reversed(getattr(self._pm.hook, hook).get_hookimpls()):
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception:
                log.exception("qw plugin %s failed in %s", impl.plugin_name, hook)

    def worker_started(self, worker: WorkerInfo) -> None:
        self._notify("qw_worker_started", worker=worker)

    def worker_stopped(self, worker: WorkerInfo) -> None:
        self._notify("qw_worker_stopped", worker=worker)

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


class _RunJob:
    """The innermost ``qw_run_job``: call the task. Wrappers go around it."""

    @hookimpl(trylast=True)
    def qw_run_job(self, run: Callable[[], JSONValue]) -> JSONValue:
        return run()
