"""The worker :func:`qw.testing.drain` runs: the real one, with two changes for tests.

Sync tasks run in the thread that drains (the test's), not on a pool
thread; and the claim loop stops once the worker holds nothing and no job
of its queues is queued and due. Everything else — claiming under a lease,
the finisher's fenced writes, retries, workflows, ``current_job()`` — is the
production :class:`qw.worker.Worker`.

This reaches into the worker's private seams (``_pool``, ``_wait_for_work``,
``ThreadPool._run``); the tests of :mod:`qw.testing` pin them down, so a
change there shows up as a failing test here rather than a quietly
different test helper.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from qw.client import Client
from qw.model import JobStatus
from qw.validation import MAX_LIST_LIMIT
from qw.worker.config import WorkerConfig
from qw.worker.executor import ThreadPool
from qw.worker.outcomes import worker_error
from qw.worker.runtime import Worker
from qw.worker.slot import JobSlot

if TYPE_CHECKING:
    from qw.plugin.manager import QwPluginManager
    from qw.worker.source import TaskSource

__all__ = ["DrainWorker", "pending_jobs"]

log = logging.getLogger("qw.testing")

# While the finisher still writes an outcome: how long the claim loop waits
# for it before looking again (the write usually takes well under this).
_COMMIT_WAIT_S = 0.005


class InlinePool(ThreadPool):
    """A pool of no threads: each sync task runs at once in the thread that claimed it."""

    def submit(self, rec: JobSlot) -> None:
        host = self._host
        # As ThreadPool._loop does for each job: whatever goes wrong, the job is settled.
        try:
            self._run(rec)
        except BaseException as exc:
            log.error("job %s: the worker failed around it", rec.id, exc_info=exc)
            host.settle(rec, worker_error(rec, exc))
        finally:
            host.returned(rec)

    def stop(self, timeout: float) -> None:
        pass


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
    """A real worker that runs sync tasks inline and stops once its queues have nothing due."""

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
        self._pool = InlinePool(self, config.concurrency)
        self._delayed = delayed
        self._retries = retries
        #: True once the worker stopped because nothing was left to run.
        self.idle = False

    def _wait_for_work(self, client: Client) -> None:
        with self._cond:
            if self._inflight:
                # An outcome is being written: its workflow's next steps
                # appear with it, so look again once it is committed.
                self._cond.wait(_COMMIT_WAIT_S)
                return
        left = pending_jobs(
            client, self.config.queues, delayed=self._delayed, retries=self._retries
        )
        if not left:
            self.idle = True
            self.request_stop()
            return
        # Due but not claimable (a rate limit), or not due yet: wait as a worker does.
        super()._wait_for_work(client)
