"""The worker runtime: runs an :class:`~qw.App`'s tasks on any backend, through the contract."""

from __future__ import annotations

from qw.backoff import Backoff
from qw.worker.config import WorkerConfig
from qw.worker.context import JobCancelled, RunningJob, current_job
from qw.worker.runtime import Worker
from qw.worker.stats import WorkerStats

__all__ = [
    "Backoff",
    "JobCancelled",
    "RunningJob",
    "Worker",
    "WorkerConfig",
    "WorkerStats",
    "current_job",
]
