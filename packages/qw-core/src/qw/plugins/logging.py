"""The built-in ``logging`` plugin: one log line per worker start/stop and per job.

It is the example of a qw plugin: a module of ``@hookimpl`` functions,
registered by an entry point in the ``qw.plugins`` group::

    [project.entry-points."qw.plugins"]
    logging = "qw.plugins.logging"

Worker lines go to the ``qw.events`` logger at INFO; job lines at DEBUG
(failures, cancels and releases at INFO), so a busy worker stays quiet by default.
"""

from __future__ import annotations

import logging

from qw.model import Job, JobStatus, JSONValue, WorkerInfo
from qw.plugin import hookimpl

log = logging.getLogger("qw.events")


@hookimpl
def qw_worker_started(worker: WorkerInfo) -> None:
    log.info(
        "worker %s started: queues=%s concurrency=%d",
        worker.id,
        ",".join(worker.queues),
        worker.concurrency,
    )


@hookimpl
def qw_worker_stopped(worker: WorkerInfo) -> None:
    log.info("worker %s stopped", worker.id)


@hookimpl
def qw_job_claimed(job: Job, worker: WorkerInfo) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("job %s claimed (queue=%s attempt=%d)", job.id, job.queue, job.attempts)


@hookimpl
def qw_job_finished(job: Job, status: JobStatus, error: JSONValue, duration_s: float) -> None:
    level = logging.DEBUG if status is JobStatus.SUCCEEDED else logging.INFO
    if not log.isEnabledFor(level):
        return
    if status is JobStatus.QUEUED:
        log.log(
            level, "job %s attempt %d failed, will retry: %s", job.id, job.attempts, _brief(error)
        )
    else:
        log.log(
            level, "job %s %s in %.3f s%s", job.id, status.value, duration_s, _why(status, error)
        )


@hookimpl
def qw_job_released(job: Job, reason: str) -> None:
    log.info("job %s released (%s); attempt not counted, it will run again", job.id, reason)


def _why(status: JobStatus, error: JSONValue) -> str:
    return "" if status is JobStatus.SUCCEEDED else f": {_brief(error)}"


def _brief(error: JSONValue) -> str:
    if isinstance(error, dict):
        kind, message = error.get("type") or error.get("reason"), error.get("message")
        return f"{kind}: {message}" if message else str(kind)
    return str(error)
