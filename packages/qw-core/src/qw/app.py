"""The application object: a backend URL and namespace, and the tasks registered on it.

>>> import qw
>>> app = qw.App("memory://", namespace="docs")
>>> @app.task(queue="emails", max_attempts=5)
... def send_email(to: str) -> str:
...     return f"sent to {to}"
>>> send_email.enqueue("a@example.com").created
True

A job's payload is ``{"task": NAME, "args": [...], "kwargs": {...}}`` as
JSON: never pickle, so any worker that registered ``NAME`` can run it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from qw.backoff import Backoff
from qw.client import Client
from qw.display import redact_url
from qw.errors import ConfigurationError, InvalidInput, InvalidName
from qw.handles import JobHandle
from qw.model import Enqueued, JSONValue, NewJob
from qw.opening import open as open_client
from qw.opening import resolve_url
from qw.payload import task_payload
from qw.taskflow import KeySource, RateSpec, TaskFlow
from qw.tasks import Task, TaskCall
from qw.validation import (
    MAX_ATTEMPTS,
    MAX_SECONDS,
    PRIORITY_RANGE,
    SCHEDULE_NAME_PATTERN,
    is_int_in,
    is_seconds,
    split_new_jobs,
    validate_namespace,
    validate_queue,
)

if TYPE_CHECKING:
    import asyncio

    from qw.aio.client import AsyncClient
    from qw.aio.handles import AsyncJobHandle
    from qw.plugin.manager import QwPluginManager
    from qw.schedule import Missed, Periodic
    from qw.worker.runtime import Worker
    from qw.workflow import WorkflowBuilder, WorkflowHandle

__all__ = ["App", "Task", "TaskCall", "load_app", "task_payload"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"


@dataclass
class _LoopClient:
    """The app's async client on one event loop, and the lock its opening takes."""

    lock: asyncio.Lock
    client: AsyncClient | None = None
    #: The sync client it wraps, for an app given ``client=`` (None: opened from the URL).
    source: Client | None = None


class App:
    """A backend URL, a namespace, and the tasks registered on them.

    ``url`` defaults to ``$QW_URL``, then the embedded SQLite file;
    ``namespace`` to ``$QW_NAMESPACE``, then ``"default"`` (see
    :func:`qw.open`). The store is opened on first use. ``client`` binds an
    already open :class:`~qw.Client` instead.
    """

    def __init__(
        self,
        url: str | None = None,
        namespace: str | None = None,
        *,
        client: Client | None = None,
    ) -> None:
        self._url = url
        self._namespace = namespace
        self._client = client
        self._owns_client = client is None
        self._lock = threading.Lock()
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._schedules: dict[str, Periodic] = {}
        # One async client per running event loop (its objects are the loop's);
        # an entry goes with its loop.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        url = None if self._url is None else redact_url(self._url)
        return f"<qw.App url={url!r} namespace={self._namespace!r} tasks={len(self._tasks)}>"

    def __enter__(self) -> App:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- configuration -----------------------------------------------------

    def configure(self, *, url: str | None = None, namespace: str | None = None) -> None:
        """Override the URL or namespace (the CLI's ``--url``); only before first use.

        None keeps the current value; an empty one is an error, as in :func:`qw.open`.
        """
        if url is not None:
            resolve_url(url)
        if namespace is not None:
            validate_namespace(namespace)
        with self._lock:
            if self._client is not None and (url is not None or namespace is not None):
                raise ConfigurationError("the app's store is already open; configure it earlier")
            self._url = self._url if url is None else url
            self._namespace = self._namespace if namespace is None else namespace

    @property
    def url(self) -> str | None:
        return self._url

    @property
    def namespace(self) -> str | None:
        return self._namespace if self._client is None else self._client.namespace

    @property
    def client(self) -> Client:
        """The app's client, opened on first use and shared by its threads."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = open_client(self._url, namespace=self._namespace)
                client = self._client
        return client

    def open_client(self) -> Client:
        """A client for a thread of its own: a new one on the app's store and namespace.

        An app given ``client=`` cannot open another (a client does not
        know its URL): it returns that client when its backend is
        ``thread_safe``, and raises :class:`~qw.errors.ConfigurationError`
        otherwise, rather than share it between threads.
        """
        if not self._owns_client:
            client = self.client
            if not client.capabilities.thread_safe:
                raise ConfigurationError(
                    f"the app's client ({client.backend.name} backend) is not thread-safe, "
                    "and an app given client= cannot open one per thread; "
                    "give the app a URL instead"
                )
            return client
        return open_client(self._url, namespace=self.client.namespace)

    @contextlib.contextmanager
    def use_client(self, client: Client) -> Iterator[Client]:
        """Bind ``client`` to the app inside the block (tests: :mod:`qw.testing`), then restore.

        The app's own client, if it had opened one, stays open and is used
        again after the block; ``client`` is not closed.
        """
        with self._lock:
            saved = self._client, self._owns_client
            self._client, self._owns_client = client, False
        try:
            yield client
        finally:
            with self._lock:
                self._client, self._owns_client = saved

    def close(self) -> None:
        """Close the app's client if the app opened it (async clients: :meth:`aclose`)."""
        with self._lock:
            client, self._client = self._client, None if self._owns_client else self._client
        if client is not None and self._owns_client:
            client.close()

    # -- asyncio -----------------------------------------------------------

    async def async_client(self) -> AsyncClient:
        """The app's :class:`~qw.aio.AsyncClient` for the running event loop.

        Opened on first use in each loop (with :func:`qw.aio.open_async` on
        the app's URL and namespace), then shared by that loop's tasks;
        another loop (a second ``asyncio.run``) gets its own. An app given
        ``client=`` (or inside :meth:`use_client`) gets that client's
        backend run in threads, which :meth:`aclose` leaves open.
        """
        import asyncio

        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._async.get(loop)
            if state is None:
                state = self._async[loop] = _LoopClient(asyncio.Lock())
            bound = None if self._owns_client else self._client
        if state.client is not None and state.source is bound:
            return state.client
        async with state.lock:
            if state.client is None or state.source is not bound:
                stale, state.client = state.client, await self._open_async(bound)
                state.source = bound
                if stale is not None:
                    await stale.aclose()
            return state.client

    async def _open_async(self, bound: Client | None) -> AsyncClient:
        from qw.aio import AsyncClient, ThreadedAsyncBackend, open_async

        if bound is None:
            return await open_async(self._url, namespace=self._namespace)
        return AsyncClient(ThreadedAsyncBackend(bound.backend, close_backend=False))

    async def aclose(self) -> None:
        """Close the app's async client of the running event loop, if one was opened."""
        import asyncio

        with self._lock:
            state = self._async.pop(asyncio.get_running_loop(), None)
        if state is not None and state.client is not None:
            async with state.lock:
                await state.client.aclose()

    # -- tasks -------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        """Registered tasks by name."""
        return self._tasks

    @property
    def schedules(self) -> Mapping[str, Periodic]:
        """Periodic schedules (:meth:`periodic`) by name."""
        return self._schedules

    def queues(self) -> list[str]:
        """The queues of the registered tasks, in registration order."""
        return list(dict.fromkeys(t.queue for t in self._tasks.values()))

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_attempts: int = 3,
        backoff: Backoff | float | None = None,
        timeout: float | None = None,
        no_retry: Iterable[type[BaseException]] = (),
        priority: int = 0,
        limit_key: KeySource | None = None,
        concurrency: int | None = None,
        rate: RateSpec | None = None,
        fair: bool = False,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_attempts: int = 3,
        backoff: Backoff | float | None = None,
        timeout: float | None = None,
        no_retry: Iterable[type[BaseException]] = (),
        priority: int = 0,
        limit_key: KeySource | None = None,
        concurrency: int | None = None,
        rate: RateSpec | None = None,
        fair: bool = False,
    ) -> Any:
        """Register a function (plain or ``async def``) as a task.

        ``name`` defaults to ``module.qualname``. ``backoff`` is a
        :class:`~qw.backoff.Backoff` or a fixed number of seconds
        (default: exponential from 1 s, doubling, capped at 300 s, with
        jitter). ``timeout`` is seconds per attempt. Exceptions that are
        instances of ``no_retry`` fail the job without retrying.

        ``limit_key`` is a template filled from each call's arguments
        (``"user:{user_id}"``) or a function of them; the store then holds
        the key to at most ``concurrency`` running jobs and ``rate`` starts
        (``"10/min"`` or ``(10, 60.0)``), across every worker. ``fair``
        claims round-robin across the keys of the queue.
        """
        # The defaults every job of the task gets: refused now, not at its first enqueue.
        validate_queue(queue)
        if name is not None and not isinstance(name, str):
            raise InvalidInput(f"a task name is a string, not {name!r}")
        if not is_int_in(max_attempts, 1, MAX_ATTEMPTS):
            raise InvalidInput(
                f"max_attempts must be an int in [1, {MAX_ATTEMPTS}], not {max_attempts!r}"
            )
        if not is_int_in(priority, PRIORITY_RANGE.start, PRIORITY_RANGE.stop - 1):
            raise InvalidInput(f"priority must be a 32-bit int, not {priority!r}")
        if timeout is not None and not (is_seconds(timeout) and timeout > 0):
            raise InvalidInput(f"timeout must be seconds in (0, {MAX_SECONDS}], not {timeout!r}")
        if backoff is None:
            policy = Backoff()
        elif isinstance(backoff, Backoff):
            policy = backoff
        else:
            policy = Backoff.fixed(backoff)
        skip = tuple(no_retry)
        for exc_type in skip:
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                raise InvalidInput(f"no_retry takes exception types, not {exc_type!r}")

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            flow = TaskFlow.declare(
                func, limit_key=limit_key, concurrency=concurrency, rate=rate, fair=fair
            )
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            if task_name in self._tasks and self._tasks[task_name].fn is not func:
                raise ConfigurationError(f"task {task_name!r} is already registered")
            task = Task(
                self,
                func,
                name=task_name,
                queue=queue,
                max_attempts=max_attempts,
                backoff=policy,
                timeout=timeout,
                no_retry=skip,
                priority=priority,
                flow=flow,
            )
            self._tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    # -- periodic jobs -----------------------------------------------------

    @overload
    def periodic(
        self,
        spec: str | None = None,
        *,
        every: timedelta | float | str | None = None,
        tz: str = "UTC",
        task: Task[Any, Any],
        args: Sequence[JSONValue] = (),
        kwargs: Mapping[str, JSONValue] | None = None,
        name: str | None = None,
        queue: str | None = None,
        missed: Missed = "latest",
    ) -> Periodic: ...

    @overload
    def periodic(
        self,
        spec: str | None = None,
        *,
        every: timedelta | float | str | None = None,
        tz: str = "UTC",
        task: None = None,
        args: Sequence[JSONValue] = (),
        kwargs: Mapping[str, JSONValue] | None = None,
        name: str | None = None,
        queue: str | None = None,
        missed: Missed = "latest",
    ) -> Callable[[Task[P, R]], Task[P, R]]: ...

    def periodic(
        self,
        spec: str | None = None,
        *,
        every: timedelta | float | str | None = None,
        tz: str = "UTC",
        task: Task[Any, Any] | None = None,
        args: Sequence[JSONValue] = (),
        kwargs: Mapping[str, JSONValue] | None = None,
        name: str | None = None,
        queue: str | None = None,
        missed: Missed = "latest",
    ) -> Any:
        """Run a task periodically: on a cron ``spec`` in zone ``tz``, or ``every`` interval.

        ``@app.periodic("*/5 * * * *", tz="Europe/Paris")`` above
        ``@app.task`` (it returns the task), or ``app.periodic(spec,
        task=t, args=[...])`` (it returns the :class:`~qw.schedule.Periodic`).
        ``every`` is a timedelta, seconds, or ``"30s"``/``"1h30m"``, counted
        from the Unix epoch. Each tick enqueues one job ``task(*args,
        **kwargs)`` with id ``NAME@TICK``; ``name`` defaults to the task's
        name, and must be unique in the app. ``missed``: ``"latest"`` runs
        the latest of the ticks missed while no worker ran, once;
        ``"skip"`` runs none of them. Workers run the schedules (see
        ``docs/periodic.md``).
        """
        # Here, not at module level: the cron parser is not part of `import qw`.
        from qw.schedule import Periodic, every_spec

        if spec is not None and every is None:
            text = spec
        elif every is not None and spec is None:
            text = every_spec(every)
        else:
            raise InvalidInput("give a cron spec or every=, one of them")

        def register(target: Task[Any, Any]) -> Periodic:
            if not isinstance(target, Task) or target.app is not self:
                raise ConfigurationError(
                    f"periodic() takes a task of this app, not {target!r}: "
                    "put @app.periodic(...) above @app.task"
                )
            schedule_name = name or target.name
            if name is None and not SCHEDULE_NAME_PATTERN.fullmatch(schedule_name):
                raise InvalidName(
                    f"task name {schedule_name!r} cannot name a schedule (up to 40 of "
                    "A-Z a-z 0-9 _ . : -); give the schedule a name="
                )
            if schedule_name in self._schedules:
                raise ConfigurationError(f"schedule {schedule_name!r} is already defined")
            periodic = Periodic(
                name=schedule_name,
                spec=text,
                tz=tz,
                task=target,
                args=tuple(args),
                kwargs=dict(kwargs or {}),
                queue=queue,
                missed=missed,
            )
            self._schedules[schedule_name] = periodic
            return periodic

        if task is not None:
            return register(task)

        def decorate(target: Task[P, R]) -> Task[P, R]:
            register(target)
            return target

        return decorate

    # -- producing and working ---------------------------------------------

    def enqueue_many(
        self, jobs: Iterable[NewJob], *, connection: object | None = None
    ) -> list[JobHandle]:
        """Enqueue any number of jobs (``task.job(...)`` each); a handle per job, in order.

        Every job is checked before anything is written: one bad job (or a
        repeated id) refuses them all. A batch within one call's bounds
        (MAX_BATCH jobs, MAX_CALL_BYTES of payload) is one call, all or
        nothing. A larger one goes in several calls, each all or nothing:
        if the store fails during a later call (a lost connection, a job id
        already in the store), the earlier calls stay committed. With
        ``connection`` (the application's open connection: see
        :meth:`qw.Client.enqueue`) every call joins its transaction, so
        they all commit or roll back with it.
        """
        client = self.client
        answers: list[Enqueued] = []
        for chunk, payloads in split_new_jobs(
            list(jobs), limit=client.capabilities.max_payload_bytes
        ):
            answers.extend(client._enqueue_checked(chunk, payloads, connection))
        return [JobHandle(a.id, a.created, owner=self) for a in answers]

    async def aenqueue_many(self, jobs: Iterable[NewJob]) -> list[AsyncJobHandle]:
        """:meth:`enqueue_many` through the async client; an async handle per job."""
        from qw.aio.handles import AsyncJobHandle

        client = await self.async_client()
        answers: list[Enqueued] = []
        for chunk, payloads in split_new_jobs(
            list(jobs), limit=client.capabilities.max_payload_bytes
        ):
            answers.extend(await client._enqueue_checked(chunk, payloads))
        return [AsyncJobHandle(a.id, a.created, owner=self) for a in answers]

    def job_handle(self, job_id: str) -> JobHandle:
        """A handle on a stored job, by id (status, result, cancel); ``created`` is True."""
        from qw.validation import check_job_id

        return JobHandle(check_job_id(job_id), True, owner=self)

    def workflow(self, workflow_id: str | None = None) -> WorkflowBuilder:
        """A new workflow to add steps to; ``enqueue()`` stores it (see :mod:`qw.workflow`).

        ``workflow_id`` is unique in the namespace (default: a new one);
        enqueueing a workflow whose id exists writes nothing, so a retried
        request is safe.
        """
        from qw.workflow import WorkflowBuilder

        return WorkflowBuilder(self, workflow_id)

    def workflow_handle(self, workflow_id: str) -> WorkflowHandle:
        """A handle on a stored workflow, by id (status, result, cancel)."""
        from qw.validation import validate_workflow_id
        from qw.workflow import WorkflowHandle

        return WorkflowHandle(self, validate_workflow_id(workflow_id))

    def worker(
        self,
        queues: Iterable[str] | None = None,
        *,
        plugins: QwPluginManager | None = None,
        load_plugins: bool = True,
        **options: Any,
    ) -> Worker:
        """A :class:`~qw.worker.Worker` for this app's tasks.

        ``queues`` defaults to the queues of the registered tasks; ``options``
        are :class:`~qw.worker.WorkerConfig` fields. Installed ``qw.plugins``
        are loaded unless ``load_plugins`` is False.
        """
        from qw.worker.config import WorkerConfig
        from qw.worker.runtime import Worker

        names = list(queues) if queues is not None else self.queues() or [DEFAULT_QUEUE]
        config = WorkerConfig(queues=tuple(names), **options)
        return Worker(self, config, plugins=plugins, load_plugins=load_plugins)


def load_app(spec: str) -> App:
    """Import ``"package.module:attr"`` and return the :class:`App` it names.

    The working directory is importable, as with ``python -m``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"expected APP as 'module:attribute', not {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}") from None
    if not isinstance(target, App):
        raise ConfigurationError(f"{spec!r} is a {type(target).__name__}, not a qw.App")
    return target
