"""qw: a durable job queue with pluggable storage.

>>> import qw
>>> with qw.open("memory://", namespace="docs") as client:
...     client.enqueue_one("emails", {"to": "a@example.com"}).created
True
"""

from __future__ import annotations

from qw.app import App, Task, load_app
from qw.capabilities import Capabilities
from qw.client import Client
from qw.contract import Abort, Backend, Complete, Fail, Outcome, Release, Switches
from qw.errors import (
    BackendConflict,
    BackendError,
    BackendNotFound,
    BackendUnavailable,
    ConfigurationError,
    DuplicateJob,
    InvalidInput,
    InvalidName,
    InvalidPayload,
    JobNotFound,
    LeaseLost,
    QwError,
    SchemaError,
)
from qw.model import (
    Claim,
    Enqueued,
    Event,
    EventSpec,
    Job,
    JobStatus,
    Lease,
    NewJob,
    PurgeResult,
    WorkerInfo,
)
from qw.opening import open
from qw.worker import Backoff, JobCancelled, Worker, WorkerConfig, current_job

__version__ = "0.1.0"

__all__ = [
    "Abort",
    "App",
    "Backoff",
    "JobCancelled",
    "Task",
    "Worker",
    "WorkerConfig",
    "current_job",
    "load_app",
    "Backend",
    "BackendConflict",
    "BackendError",
    "BackendNotFound",
    "BackendUnavailable",
    "Capabilities",
    "Claim",
    "Client",
    "Complete",
    "ConfigurationError",
    "DuplicateJob",
    "Enqueued",
    "Event",
    "EventSpec",
    "Fail",
    "InvalidInput",
    "InvalidName",
    "InvalidPayload",
    "Job",
    "JobNotFound",
    "JobStatus",
    "Lease",
    "LeaseLost",
    "NewJob",
    "Outcome",
    "PurgeResult",
    "QwError",
    "Release",
    "SchemaError",
    "Switches",
    "WorkerInfo",
    "__version__",
    "open",
]
