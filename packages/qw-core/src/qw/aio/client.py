"""The async facade: :class:`qw.Client`'s producer and operator calls, awaited.

Every argument is checked by the same functions as the sync client's
(:mod:`qw.calls`), before any I/O, so bad input raises the same typed error,
with the same message, and leaves the store unchanged. The application's
transaction (``connection=``) is not offered here: use the sync client for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

from qw import calls
from qw.aio.polling import poll_finished
from qw.contract import WorkflowInsert
from qw.errors import JobNotFound, WorkflowNotFound
from qw.model import NewJob
from qw.validation import (
    MAX_LIST_LIMIT,
    check_job_id,
    validate_event_cursors,
    validate_queue,
    validate_workflow_id,
)

if TYPE_CHECKING:
    from qw.aio.contract import AsyncBackend
    from qw.calls import EnqueueHooks
    from qw.capabilities import Capabilities
    from qw.contract import Switches
    from qw.model import (
        Enqueued,
        Event,
        Job,
        JobStatus,
        JSONValue,
        KeyState,
        Limit,
        PurgeResult,
        WorkerInfo,
        Workflow,
        WorkflowState,
    )

__all__ = ["AsyncClient"]


class AsyncClient:
    """A namespace on a store, for asyncio code: enqueue, inspect, operate.

    Open one with :func:`qw.aio.open_async`, or wrap an
    :class:`~qw.aio.AsyncBackend`. Use it with ``async with``, or await
    :meth:`aclose`. Many tasks of one loop may share it.
    """

    def __init__(self, backend: AsyncBackend, *, plugins: EnqueueHooks | None = None) -> None:
        self._backend = backend
        self._plugin_manager = plugins

    @property
    def plugins(self) -> EnqueueHooks:
        """The plugins whose enqueue hooks this client calls (default: every installed one)."""
        if self._plugin_manager is None:
            from qw.plugin.manager import installed

            self._plugin_manager = installed()
        return self._plugin_manager

    @property
    def backend(self) -> AsyncBackend:
        """The async backend object behind this client."""
        return self._backend

    @property
    def namespace(self) -> str:
        return self._backend.namespace

    @property
    def capabilities(self) -> Capabilities:
        return self._backend.capabilities

    def __repr__(self) -> str:
        return f"<qw.aio.AsyncClient {self._backend.name} namespace={self.namespace!r}>"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the backend's connections (and threads). Idempotent."""
        await self._backend.aclose()

    async def async_client(self) -> AsyncClient:
        """This client: so that a job handle may hold a client or an app alike."""
        return self

    async def now(self) -> datetime:
        """The store's clock."""
        return await self._backend.now()

    # -- producing ---------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        """Enqueue a batch, all or nothing, as :meth:`qw.Client.enqueue`."""
        checked, payloads = calls.job_batch(jobs, self.capabilities)
        return await self._enqueue_checked(checked, payloads)

    async def _enqueue_checked(self, jobs: list[NewJob], payloads: list[str]) -> list[Enqueued]:
        """Enqueue a batch that passed :func:`~qw.validation.validate_new_jobs`."""
        if not jobs:
            return []
        plugins = self.plugins
        limit = self.capabilities.max_payload_bytes
        payloads = calls.with_plugin_headers(plugins, jobs, payloads, None, limit)
        inserts = calls.checked_inserts(jobs, payloads, self.capabilities, self._backend.name)
        answers = await self._backend.enqueue(inserts)
        plugins.jobs_enqueued(jobs, answers, None)
        return answers

    async def enqueue_one(
        self, queue: str, payload: JSONValue = None, **options: object
    ) -> Enqueued:
        """Enqueue one job; ``options`` are :class:`~qw.model.NewJob` fields."""
        return (await self.enqueue([NewJob(queue, payload, **options)]))[0]  # type: ignore[arg-type]

    # -- workflows -----------------------------------------------------------

    async def create_workflow(
        self, workflow_id: str, steps: Sequence[NewJob], *, output: str | None = None
    ) -> Enqueued:
        """Store a workflow and all its steps in one atomic write, as the sync client."""
        from qw.model import Enqueued

        inserts = calls.step_inserts(
            workflow_id, steps, frozenset(), self.capabilities, self._backend.name, self.plugins
        )
        calls.check_output(output, inserts)
        created = await self._backend.create_workflow(WorkflowInsert(workflow_id, output), inserts)
        self.plugins.jobs_enqueued(
            steps, [Enqueued(step.id, created) for step in steps], workflow_id
        )
        return Enqueued(workflow_id, created=created)

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """The workflow; raise :class:`~qw.errors.WorkflowNotFound` if there is none."""
        workflow = await self._backend.get_workflow(validate_workflow_id(workflow_id))
        if workflow is None:
            raise WorkflowNotFound(workflow_id)
        return workflow

    async def find_workflow(self, workflow_id: str) -> Workflow | None:
        """The workflow, or None."""
        return await self._backend.get_workflow(validate_workflow_id(workflow_id))

    async def list_workflows(
        self,
        *,
        state: WorkflowState | str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Workflow]:
        """Workflows by ascending id, optionally of one ``state``."""
        return await self._backend.list_workflows(**calls.list_workflows_args(state, limit, after))

    async def cancel_workflow(self, workflow_id: str) -> Workflow:
        """Cancel every step not yet running; flag the running ones. Returns the workflow."""
        workflow = await self._backend.cancel_workflow(validate_workflow_id(workflow_id))
        if workflow is None:
            raise WorkflowNotFound(workflow_id)
        return workflow

    async def steps(self, workflow_id: str) -> list[Job]:
        """Every step of the workflow, by id."""
        validate_workflow_id(workflow_id)
        out: list[Job] = []
        after: str | None = None
        while True:
            page = await self._backend.list_jobs(
                limit=MAX_LIST_LIMIT, after=after, workflow=workflow_id
            )
            out.extend(page)
            if len(page) < MAX_LIST_LIMIT:
                return out
            after = page[-1].id

    # -- inspection and operations -----------------------------------------

    async def get(self, job_id: str) -> Job:
        """The job; raise :class:`~qw.errors.JobNotFound` if there is none."""
        job = await self._backend.get(check_job_id(job_id))
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def find(self, job_id: str) -> Job | None:
        """The job, or None."""
        return await self._backend.get(check_job_id(job_id))

    async def get_many(self, job_ids: Iterable[str]) -> list[Job | None]:
        """The jobs with these ids, in order (None for an unknown id), in calls of MAX_BATCH."""
        jobs: list[Job | None] = []
        for chunk in calls.get_many_ids(job_ids):
            jobs.extend(await self._backend.get_many(chunk))
        return jobs

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | str | None = None,
        limit: int = 100,
        after: str | None = None,
        workflow: str | None = None,
        key: str | None = None,
    ) -> list[Job]:
        """Jobs by ascending id, optionally of one queue, status, workflow or limit key."""
        args = calls.list_jobs_args(queue, status, limit, after, workflow, key)
        return await self._backend.list_jobs(**args)

    async def counts(self) -> dict[str, dict[JobStatus, int]]:
        """Jobs per queue and status, every status present (zeros included)."""
        return calls.full_counts(await self._backend.counts())

    async def cancel(self, job_id: str) -> JobStatus:
        """Cancel; raise :class:`~qw.errors.JobNotFound` if there is no such job."""
        status = await self._backend.cancel(check_job_id(job_id))
        if status is None:
            raise JobNotFound(job_id)
        return status

    async def retry(self, job_id: str) -> JobStatus:
        """As :meth:`qw.Client.retry` (capability ``retry``; refused before any I/O without it)."""
        job_id = check_job_id(job_id)
        calls.require(self.capabilities, self._backend.name, "retry")
        status = await self._backend.retry(job_id)
        if status is None:
            raise JobNotFound(job_id)
        return status

    async def fetch_events(self, limit: int = 100) -> list[Event]:
        calls.check_list_limit(limit)
        return await self._backend.fetch_events(limit)

    async def ack_events(self, cursors: Iterable[int]) -> int:
        values = validate_event_cursors(cursors)
        return await self._backend.ack_events(values) if values else 0

    async def purge(self, older_than: float) -> PurgeResult:
        """Remove terminal jobs and acked events older than ``older_than`` seconds."""
        return await self._backend.purge(calls.check_older_than(older_than))

    # -- workers and switches ----------------------------------------------

    async def workers(self) -> list[WorkerInfo]:
        return await self._backend.workers()

    async def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        """The operator switch: the namespace (no ``queue``) or one queue."""
        await self._backend.set_enabled(enabled, calls.check_enabled(enabled, queue))

    async def is_enabled(self, queue: str | None = None) -> bool:
        """Whether the namespace, or ``queue`` within it, may be claimed from."""
        switches = await self._backend.switches()
        if queue is None:
            return switches.enabled
        return switches.queue_enabled(validate_queue(queue))

    async def switches(self) -> Switches:
        return await self._backend.switches()

    # -- limits --------------------------------------------------------------

    async def set_limit(self, key: str, limit: Limit | None) -> None:
        """Set the operators' limit for ``key`` (None removes it), overriding what jobs declare."""
        calls.check_set_limit(key, limit, self.capabilities, self._backend.name)
        await self._backend.set_limit(key, limit)

    async def limits(self) -> dict[str, Limit]:
        """The operators' limits, by key."""
        calls.require(self.capabilities, self._backend.name, "limits")
        return await self._backend.limits()

    async def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        """Limit keys with live jobs or an operators' limit, by key; ``after`` pages."""
        calls.check_keys(limit, after, self.capabilities, self._backend.name)
        return await self._backend.keys(limit=limit, after=after)

    # -- results -------------------------------------------------------------

    async def wait_finished(self, job_id: str, timeout: float) -> Job:
        """The job once it has ended, else as it is after ``timeout`` seconds.

        As :meth:`qw.Client.wait_finished`: woken by the store where the
        backend declares ``result_wakeup``, else the same bounded poll, its
        pauses awaited. Raises :class:`~qw.errors.JobNotFound` for an
        unknown job.
        """
        check_job_id(job_id)
        seconds = calls.check_timeout(timeout)
        if self.capabilities.result_wakeup:
            job = await self._backend.wait_finished(job_id, seconds)
        else:
            job = await poll_finished(self._backend.get, job_id, seconds)
        if job is None:
            raise JobNotFound(job_id)
        return job
