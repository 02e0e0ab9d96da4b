"""A registered task and one call of it: what :meth:`qw.App.task` returns.

A task knows its defaults (queue, attempts, priority) and how a worker runs
it (backoff, timeout, no_retry); enqueueing goes through its owner's
client. The owner is anything with a ``client`` (a :class:`qw.App`), so
this module does not depend on the app.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, cast

from qw.backoff import Backoff
from qw.client import Client
from qw.errors import InvalidInput
from qw.handles import JobHandle
from qw.model import JSONValue, Limit, NewJob
from qw.payload import task_payload
from qw.taskflow import TaskFlow

if TYPE_CHECKING:
    from qw.aio.client import AsyncClient
    from qw.aio.handles import AsyncJobHandle

__all__ = ["Task", "TaskCall", "TaskOwner"]

P = ParamSpec("P")
R = TypeVar("R")


class TaskOwner(Protocol):
    """Where a task's jobs are enqueued: :class:`qw.App` is one."""

    @property
    def client(self) -> Client: ...


class AsyncTaskOwner(TaskOwner, Protocol):
    """An owner that also has an async client (for ``aenqueue``): :class:`qw.App` is one."""

    async def async_client(self) -> AsyncClient: ...


def _async_owner(owner: TaskOwner) -> AsyncTaskOwner:
    if not callable(getattr(owner, "async_client", None)):
        raise InvalidInput(f"{owner!r} has no async client: aenqueue needs a qw.App")
    return cast("AsyncTaskOwner", owner)


class TaskCall(Generic[P, R]):
    """A task with per-call enqueue options; ``.enqueue()`` or ``.job()`` it."""

    __slots__ = ("_options", "_task")

    def __init__(self, task: Task[P, R], options: dict[str, Any]) -> None:
        self._task = task
        self._options = options

    @property
    def task(self) -> Task[P, R]:
        """The task these options are for."""
        return self._task

    def job(self, *args: P.args, **kwargs: P.kwargs) -> NewJob:
        """The :class:`~qw.model.NewJob` this call would enqueue (for ``enqueue_many``)."""
        task = self._task
        opts = self._options
        new: dict[str, Any] = {
            "queue": opts.get("queue") or task.queue,
            "payload": task_payload(
                task.name, cast("tuple[JSONValue, ...]", args), cast("dict[str, JSONValue]", kwargs)
            ),
            "priority": opts.get("priority", task.priority),
            "max_attempts": opts.get("max_attempts", task.max_attempts),
        }
        for key in ("delay", "run_at", "dedupe_key", "id"):
            if opts.get(key) is not None:
                new[key] = opts[key]
        flow = task.flow
        if "limit_key" in opts:
            new["limit_key"] = opts["limit_key"]
        elif flow is not None:
            new["limit_key"] = flow.key_for(task.fn, args, kwargs)
        if "limit_key" in new:
            new["limit"] = opts.get("limit", flow.limit if flow else None)
            new["fair"] = opts.get("fair", flow.fair if flow else False)
        return NewJob(**new)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Enqueue one job of this task; a handle on it.

        With ``connection=`` among the options, the job is written in the
        application's open transaction (see :meth:`qw.Client.enqueue`).
        """
        owner = self._task.app
        job = self.job(*args, **kwargs)
        answer = owner.client.enqueue([job], connection=self._options.get("connection"))[0]
        return JobHandle(answer.id, answer.created, owner=owner)

    delay = enqueue

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> AsyncJobHandle:
        """Enqueue one job of this task through the app's async client; an async handle."""
        from qw.aio.handles import AsyncJobHandle

        if self._options.get("connection") is not None:
            raise InvalidInput(
                "connection= writes in the application's transaction through the sync "
                "client: use enqueue(), not aenqueue()"
            )
        owner = _async_owner(self._task.app)
        job = self.job(*args, **kwargs)
        answer = (await (await owner.async_client()).enqueue([job]))[0]
        return AsyncJobHandle(answer.id, answer.created, owner=owner)


class Task(Generic[P, R]):
    """A function registered as a task; calling it runs it here, now.

    Attributes are the defaults every job of the task gets: ``queue``,
    ``max_attempts``, ``priority``; and how a worker runs it: ``backoff``
    between retries, ``timeout`` seconds per attempt (None: no limit),
    ``no_retry`` exception types that fail the job at once. ``app`` is
    the owner it was registered on. ``flow`` is its limit key, limit and
    fairness (:mod:`qw.taskflow`), or None.
    """

    def __init__(
        self,
        app: TaskOwner,
        fn: Callable[P, R],
        *,
        name: str,
        queue: str,
        max_attempts: int,
        backoff: Backoff,
        timeout: float | None,
        no_retry: tuple[type[BaseException], ...],
        priority: int,
        flow: TaskFlow | None = None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout = timeout
        self.no_retry = no_retry
        self.priority = priority
        self.flow = flow
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<qw.Task {self.name} queue={self.queue!r}>"

    def options(
        self,
        *,
        queue: str | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        dedupe_key: str | None = None,
        max_attempts: int | None = None,
        job_id: str | None = None,
        limit_key: str | None = None,
        limit: Limit | None = None,
        fair: bool | None = None,
        connection: object | None = None,
    ) -> TaskCall[P, R]:
        """Per-call options: ``task.options(delay=60, dedupe_key="k").enqueue(...)``.

        ``limit_key``, ``limit`` and ``fair`` replace what the task declares
        for this call. ``connection`` is the application's open connection
        on the store: the job is written in its current transaction and
        exists only if it commits (capability ``transactional``).
        """
        given = {
            "queue": queue,
            "delay": delay,
            "run_at": run_at,
            "priority": priority,
            "dedupe_key": dedupe_key,
            "max_attempts": max_attempts,
            "id": job_id,
            "limit_key": limit_key,
            "limit": limit,
            "fair": fair,
            "connection": connection,
        }
        return TaskCall(self, {k: v for k, v in given.items() if v is not None})

    def job(self, *args: P.args, **kwargs: P.kwargs) -> NewJob:
        """The :class:`~qw.model.NewJob` for a call with the task's defaults."""
        return TaskCall(self, {}).job(*args, **kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Enqueue one job running ``task(*args, **kwargs)``; arguments must be JSON.

        Returns a :class:`~qw.handles.JobHandle` (an :class:`~qw.model.Enqueued`
        that can wait for the job's result).
        """
        answer = self.app.client.enqueue([self.job(*args, **kwargs)])[0]
        return JobHandle(answer.id, answer.created, owner=self.app)

    delay = enqueue

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> AsyncJobHandle:
        """:meth:`enqueue` through the app's async client; an :class:`~qw.aio.AsyncJobHandle`."""
        return await TaskCall(self, {}).aenqueue(*args, **kwargs)
