"""The async storage contract: what :class:`qw.aio.AsyncClient` calls.

Each method is the coroutine twin of the sync :class:`qw.contract.Backend`
method of the same name: same arguments (already checked by the client), same
answers, same promises. Only the producer and operator calls are here;
workers keep the sync contract. :class:`qw.aio.ThreadedAsyncBackend` serves it
from any sync backend; a store with an async driver subclasses that and
overrides the calls it can make natively.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from qw.capabilities import Capabilities
    from qw.contract import Insert, Switches, WorkflowInsert
    from qw.model import (
        Enqueued,
        Event,
        Job,
        JobStatus,
        KeyState,
        Limit,
        PurgeResult,
        WorkerInfo,
        Workflow,
        WorkflowState,
    )

__all__ = ["AsyncBackend"]


@runtime_checkable
class AsyncBackend(Protocol):
    """A queue store bound to one namespace, called from an event loop.

    No method blocks the loop: I/O is awaited, or runs in threads of the
    backend's own.
    """

    @property
    def name(self) -> str:
        """The name the sync backend is registered under."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What the store promises, as the sync backend's ``capabilities``."""
        ...

    @property
    def namespace(self) -> str:
        """The namespace this object is bound to, fixed at open."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads, as the sync ``close``. Idempotent."""
        ...

    async def now(self) -> datetime:
        """As the sync method of the same name."""
        ...

    async def enqueue(self, jobs: Sequence[Insert]) -> list[Enqueued]:
        """As the sync method of the same name."""
        ...

    async def create_workflow(self, workflow: WorkflowInsert, steps: Sequence[Insert]) -> bool:
        """As the sync method of the same name."""
        ...

    async def get(self, job_id: str) -> Job | None:
        """As the sync method of the same name."""
        ...

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """As the sync method of the same name (at most MAX_BATCH ids)."""
        ...

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: JobStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        workflow: str | None = None,
        key: str | None = None,
    ) -> list[Job]:
        """As the sync method of the same name."""
        ...

    async def counts(self) -> dict[str, dict[JobStatus, int]]:
        """As the sync method of the same name."""
        ...

    async def cancel(self, job_id: str) -> JobStatus | None:
        """As the sync method of the same name."""
        ...

    async def retry(self, job_id: str) -> JobStatus | None:
        """As the sync method of the same name (capability ``retry``)."""
        ...

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        """As the sync method of the same name."""
        ...

    async def list_workflows(
        self, *, state: WorkflowState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Workflow]:
        """As the sync method of the same name."""
        ...

    async def cancel_workflow(self, workflow_id: str) -> Workflow | None:
        """As the sync method of the same name."""
        ...

    async def fetch_events(self, limit: int = 100) -> list[Event]:
        """As the sync method of the same name."""
        ...

    async def ack_events(self, cursors: Sequence[int]) -> int:
        """As the sync method of the same name."""
        ...

    async def set_enabled(self, enabled: bool, queue: str | None = None) -> None:
        """As the sync method of the same name."""
        ...

    async def switches(self) -> Switches:
        """As the sync method of the same name."""
        ...

    async def workers(self) -> list[WorkerInfo]:
        """As the sync method of the same name."""
        ...

    async def purge(self, older_than: float) -> PurgeResult:
        """As the sync method of the same name."""
        ...

    async def set_limit(self, key: str, limit: Limit | None) -> None:
        """As the sync method of the same name (capability ``limits``)."""
        ...

    async def limits(self) -> dict[str, Limit]:
        """As the sync method of the same name (capability ``limits``)."""
        ...

    async def keys(self, *, limit: int = 100, after: str | None = None) -> list[KeyState]:
        """As the sync method of the same name (capability ``limits``)."""
        ...

    async def wait_finished(self, job_id: str, timeout: float) -> Job | None:
        """As the sync method of the same name; the loop runs other tasks meanwhile.

        A backend without ``result_wakeup`` answers it by a bounded poll
        (:func:`qw.aio.polling.poll_finished`), sleeping with ``asyncio.sleep``.
        Cancelling the awaiting task stops the wait.
        """
        ...
