"""Handles on jobs and workflows for asyncio code: ``await handle`` is the result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from qw.calls import poll_pauses
from qw.errors import ResultTimeout
from qw.handles import (
    RESULT_WAIT_SLICE_S,
    UNFINISHED,
    check_wait_timeout,
    job_result,
    workflow_failure,
)
from qw.model import Enqueued, Job, JobStatus
from qw.model import WorkflowState as State

if TYPE_CHECKING:
    from qw.aio.client import AsyncClient
    from qw.model import JSONValue, Progress, Workflow

__all__ = ["AsyncClientOwner", "AsyncJobHandle", "AsyncWorkflowHandle"]


class AsyncClientOwner(Protocol):
    """Where an async handle gets its client: an :class:`AsyncClient`, or a :class:`qw.App`."""

    async def async_client(self) -> AsyncClient: ...


@dataclass(frozen=True, slots=True, eq=False)
class AsyncJobHandle(Enqueued):
    """An enqueued job, for asyncio code: :class:`qw.handles.JobHandle`'s calls, awaited.

    ``await handle`` is ``await handle.result()``. The client is asked of
    ``owner`` at each call, so a handle on an app works in whichever event
    loop awaits it.
    """

    owner: AsyncClientOwner = field(kw_only=True, repr=False)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Enqueued):
            return (self.id, self.created) == (other.id, other.created)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.id, self.created))

    def __await__(self) -> Generator[Any, None, JSONValue]:
        return self.result().__await__()

    async def job(self) -> Job:
        """The job as it is now."""
        return await (await self.owner.async_client()).get(self.id)

    async def status(self) -> JobStatus:
        """The job's status now."""
        return (await self.job()).status

    async def progress(self) -> Progress | None:
        """The job's last reported progress, or None."""
        return (await self.job()).progress

    async def cancel(self) -> JobStatus:
        """Cancel the job (a running one is flagged); its status after the call."""
        return await (await self.owner.async_client()).cancel(self.id)

    async def wait(self, timeout: float | None = None) -> Job:
        """The job once it has ended; :class:`~qw.errors.ResultTimeout` after ``timeout`` s."""
        seconds = check_wait_timeout(timeout)
        client = await self.owner.async_client()
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            left = RESULT_WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            job = await client.wait_finished(self.id, max(0.0, min(left, RESULT_WAIT_SLICE_S)))
            if job.status.is_terminal:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"job {self.id!r} still {job.status.value} after {timeout} s")

    async def result(self, timeout: float | None = None) -> JSONValue:
        """The job's result, or the error its end says, as :meth:`qw.handles.JobHandle.result`."""
        return job_result(await self.wait(timeout))


class AsyncWorkflowHandle:
    """A stored workflow, for asyncio code: ``await handle`` is its result."""

    def __init__(self, owner: AsyncClientOwner, workflow_id: str, *, created: bool = True) -> None:
        self._owner = owner
        self.id = workflow_id
        #: False when the workflow already existed and nothing was written.
        self.created = created

    def __repr__(self) -> str:
        return f"<qw.aio.AsyncWorkflowHandle {self.id}>"

    def __await__(self) -> Generator[Any, None, JSONValue]:
        return self.result().__await__()

    async def status(self) -> Workflow:
        """The workflow now: its state and its steps counted by status."""
        return await (await self._owner.async_client()).get_workflow(self.id)

    async def steps(self) -> list[Job]:
        """Every step, by id."""
        return await (await self._owner.async_client()).steps(self.id)

    async def cancel(self) -> Workflow:
        """Cancel the steps not yet running and flag the running ones."""
        return await (await self._owner.async_client()).cancel_workflow(self.id)

    async def wait(self, timeout: float | None = None) -> Workflow:
        """The workflow once it has ended; :class:`~qw.errors.ResultTimeout` after ``timeout`` s.

        As :meth:`qw.WorkflowHandle.wait`: it waits on one unfinished step
        at a time (woken by the store), reading the workflow after each.
        """
        seconds = check_wait_timeout(timeout)
        client = await self._owner.async_client()
        deadline = None if seconds is None else time.monotonic() + seconds
        pauses = poll_pauses()
        while True:
            workflow = await client.get_workflow(self.id)
            if workflow.state is not State.RUNNING:
                return workflow
            left = RESULT_WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise ResultTimeout(f"workflow {self.id!r} still running after {timeout} s")
            piece = min(left, RESULT_WAIT_SLICE_S)
            step = await self._unfinished_step(client)
            if step is not None:
                await client.wait_finished(step, piece)
            else:
                # Every step ended, the workflow's end not yet written (a
                # store that settles after the step's write): a short pause.
                await asyncio.sleep(min(next(pauses), piece))

    async def _unfinished_step(self, client: AsyncClient) -> str | None:
        for status in UNFINISHED:
            page = await client.list_jobs(workflow=self.id, status=status, limit=1)
            if page:
                return page[0].id
        return None

    async def result(self, timeout: float | None = None) -> JSONValue:
        """The output step's result, as :meth:`qw.WorkflowHandle.result`."""
        workflow = await self.wait(timeout)
        client = await self._owner.async_client()
        if workflow.state is not State.SUCCEEDED:
            raise workflow_failure(workflow, await client.steps(self.id))
        if workflow.output is None:
            return None
        return (await client.get(workflow.output)).result

    async def results(self) -> Mapping[str, JSONValue]:
        """Every succeeded step's result, by step id."""
        return {
            job.id: job.result for job in await self.steps() if job.status is JobStatus.SUCCEEDED
        }
