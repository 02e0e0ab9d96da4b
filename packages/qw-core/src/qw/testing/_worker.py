"""The worker :func:`qw.testing.drain` runs: the real one, stopping once nothing is left.

:class:`DrainWorker` is the production :class:`qw.worker.Worker` with one
change, made through its public override point
:meth:`~qw.worker.Worker.wait_for_work`: when a claim finds nothing, it
stops if the worker holds no job and no job of its queues is queued and
due. The drain runs it with ``WorkerConfig(inline=True)``, so sync tasks
run in the draining thread. Everything else — claiming under a lease, the
finisher's fenced writes, retries, workflows, ``current_job()`` — is the
production worker's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qw.client import Client
from qw.model import JobStatus
from qw.validation import MAX_LIST_LIMIT
from qw.worker.config import WorkerConfig
from qw.worker.runtime import Worker

if TYPE_CHECKING:
    from qw.plugin.manager import QwPluginManager
    from qw.worker.source import TaskSource

__all__ = ["DrainWorker", "pending_jobs"]

# While the worker still holds a job (its outcome being written, or a
# coroutine running): how long to wait for it before claiming again.
_COMMIT_WAIT_S = 0.005


def pending_jobs(
    client: Client,
    queues: tuple[str, ...],
    *,
    delayed: bool,
    retries: bool,
) -> int:
    """How many jobs of ``queues`` a drain must still run.

    A queued job counts when it is due, or (``delayed``) at any time, or
    (``retries``) when it is a retry waiting out its backoff.
    """
    counts = client.counts()
    if not any(counts.get(q, {}).get(JobStatus.QUEUED, 0) for q in queues):
        return 0
    now = client.now()
    found = 0
    for queue in queues:
        after: str | None = None
        while True:
            page = client.list_jobs(
                queue=queue, status=JobStatus.QUEUED, limit=MAX_LIST_LIMIT, after=after
            )
            found += sum(
                1 for job in page if delayed or job.run_at <= now or (retries and job.attempts > 0)
            )
            if len(page) < MAX_LIST_LIMIT:
                break
            after = page[-1].id
    return found


class DrainWorker(Worker):
    """A real worker that stops once it holds nothing and its queues have nothing due."""

    def __init__(
        self,
        app: TaskSource,
        config: WorkerConfig,
        *,
        plugins: QwPluginManager,
        delayed: bool = False,
        retries: bool = False,
    ) -> None:
        super().__init__(app, config, plugins=plugins, load_plugins=False)
        self._delayed = delayed
        self._retries = retries
        #: True once the worker stopped because nothing was left to run.
        self.idle = False

    def wait_for_work(self, client: Client) -> None:
        if self.held_jobs:
            # An outcome is still to be written: a workflow's next steps
            # appear with it, so claim again once it is committed.
            self.wait_idle(_COMMIT_WAIT_S)
            return
        left = pending_jobs(
            client, self.config.queues, delayed=self._delayed, retries=self._retries
        )
        if not left:
            self.idle = True
            self.request_stop()
            return
        # Due but not claimable (a rate limit), or not due yet: wait as a worker does.
        super().wait_for_work(client)
