# mypy: allow-subclassing-any, no-warn-unused-ignores
# Django ships no type information and is absent from the workspace's 3.11
# type-check venv: its imports carry both codes, and an unused one is fine.
"""What ``manage.py qw_worker`` runs: Django tasks as the tasks of a qw worker.

A qw worker looks each job's payload ``task`` up in its source's ``tasks``;
here that mapping imports the Django task at that module path on first
sight, and wraps it so that every run gets fresh database connections, the
task's context when it takes one, and django.tasks' started/finished
signals. The task's return value (made JSON as Django does) is the job's
result; an exception fails the job with its type, message and traceback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from django.db import close_old_connections  # type: ignore[import-not-found,import-untyped]
from django.tasks import (  # type: ignore[import-not-found,import-untyped]
    TaskContext,
    TaskResultStatus,
)
from django.tasks.exceptions import InvalidTask  # type: ignore[import-not-found,import-untyped]
from django.tasks.signals import (  # type: ignore[import-not-found,import-untyped]
    task_finished,
    task_started,
)
from django.utils.json import normalize_json  # type: ignore[import-not-found,import-untyped]

import qw
from qw.backoff import Backoff
from qw.schedule import Periodic
from qw.tasks import Task
from qw.worker import current_job
from qw_django.results import import_task, task_result
from qw_django.store import StoreConfig, client_for

__all__ = ["DjangoTaskSource"]

log = logging.getLogger("qw_django.worker")


class DjangoTaskSource:
    """The Django tasks of one task backend, as a qw worker's task source.

    Any module path a job names is imported when first seen (the payload
    comes from the project's own store, as Django's own task pickling
    trusts it); one that is not a Django task fails its job as unknown.
    """

    def __init__(self, backend_alias: str, config: StoreConfig, backend_class: type) -> None:
        self.backend_alias = backend_alias
        self.config = config
        self._backend_class = backend_class
        self._tasks = _LazyTasks(self)

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        return self._tasks

    @property
    def schedules(self) -> Mapping[str, Periodic]:
        return {}

    @property
    def client(self) -> qw.Client:
        return client_for(self.config)

    def open_client(self) -> qw.Client:
        return qw.open(self.config.resolve_url(), namespace=self.config.namespace)

    def make_task(self, path: str) -> Task[Any, Any]:
        """The qw task that runs the Django task at ``path``; InvalidTask if there is none."""
        django_task = import_task(path)
        return Task(
            self,
            self._runner(django_task),
            name=path,
            queue=django_task.queue_name,
            max_attempts=self.config.max_attempts,
            backoff=Backoff(),
            timeout=None,
            no_retry=(),
            priority=0,
        )

    def _runner(self, django_task: Any) -> Callable[..., Any]:
        alias = self.backend_alias
        sender = self._backend_class

        def run(*args: Any, **kwargs: Any) -> Any:
            job = current_job().job
            # The task as this job was enqueued (priority, queue, backend).
            result = task_result(job, alias)
            object.__setattr__(result, "status", TaskResultStatus.RUNNING)
            # Django's rule for requests, per job: drop connections that broke
            # or outlived CONN_MAX_AGE, before and after.
            close_old_connections()
            try:
                task_started.send(sender=sender, task_result=result)
                task = result.task
                try:
                    if task.takes_context:
                        value = task.call(TaskContext(task_result=result), *args, **kwargs)
                    else:
                        value = task.call(*args, **kwargs)
                    value = normalize_json(value)
                except BaseException:
                    if job.attempts >= job.max_attempts:
                        object.__setattr__(result, "status", TaskResultStatus.FAILED)
                        task_finished.send(sender=sender, task_result=result)
                    raise
                object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
                object.__setattr__(result, "_return_value", value)
                task_finished.send(sender=sender, task_result=result)
                return value
            finally:
                close_old_connections()

        return run


class _LazyTasks(Mapping[str, Task[Any, Any]]):
    """Module path → qw task, imported on first lookup and kept."""

    def __init__(self, source: DjangoTaskSource) -> None:
        self._source = source
        self._found: dict[str, Task[Any, Any]] = {}
        self._lock = threading.Lock()

    def __getitem__(self, path: str) -> Task[Any, Any]:
        task = self._found.get(path)
        if task is not None:
            return task
        with self._lock:
            task = self._found.get(path)
            if task is None:
                try:
                    task = self._source.make_task(path)
                except InvalidTask as exc:
                    log.warning("job names no Django task: %s", exc)
                    raise KeyError(path) from None
                self._found[path] = task
        return task

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._found))

    def __len__(self) -> int:
        return len(self._found)
