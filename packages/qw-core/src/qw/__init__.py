"""qw: a durable job queue with pluggable storage.

>>> import qw
>>> with qw.open("memory://", namespace="docs") as client:
...     client.enqueue_one("emails", {"to": "a@example.com"}).created
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qw.app import App, load_app
from qw.backoff import Backoff
from qw.capabilities import Capabilities
from qw.client import Client
from qw.contract import Abort, Backend, Complete, Fail, Outcome, Release, Switches
from qw.errors import (
    BackendConflict,
    BackendError,
    BackendNotFound,
    BackendUnavailable,
    ConfigurationError,
    CrossShard,
    DuplicateJob,
    InvalidInput,
    InvalidName,
    InvalidPayload,
    InvalidWorkflow,
    JobFailed,
    JobNotFound,
    JobWasCancelled,
    LeaseLost,
    NotRetryable,
    PluginError,
    QwError,
    ResultTimeout,
    SchemaError,
    Unsupported,
    WorkflowFailed,
    WorkflowNotFound,
)
from qw.handles import JobHandle
from qw.model import (
    Claim,
    Enqueued,
    Event,
    EventSpec,
    Job,
    JobStatus,
    KeyState,
    Lease,
    Limit,
    NewJob,
    ParentFailure,
    PurgeResult,
    Schedule,
    WorkerInfo,
    Workflow,
    WorkflowState,
)
from qw.opening import open
from qw.tasks import Task
from qw.workflow import Step, StepList, WorkflowBuilder, WorkflowHandle

if TYPE_CHECKING:
    from qw.aio import AsyncClient, open_async
    from qw.worker import JobCancelled, Worker, WorkerConfig, current_job

# The worker runtime (and pluggy) load on first use of one of these names:
# a producer that only enqueues never imports them.
_WORKER_NAMES = frozenset({"JobCancelled", "Worker", "WorkerConfig", "current_job"})
# Likewise qw.aio (and asyncio): only programs that use it load it.
_AIO_NAMES = frozenset({"AsyncClient", "open_async"})

__version__ = "0.1.0"

__all__ = [
    "Abort",
    "App",
    "AsyncClient",
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
    "CrossShard",
    "DuplicateJob",
    "Enqueued",
    "Event",
    "EventSpec",
    "Fail",
    "InvalidInput",
    "InvalidName",
    "InvalidPayload",
    "InvalidWorkflow",
    "Job",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobWasCancelled",
    "JobStatus",
    "KeyState",
    "Lease",
    "Limit",
    "LeaseLost",
    "NewJob",
    "NotRetryable",
    "Outcome",
    "ParentFailure",
    "PluginError",
    "PurgeResult",
    "QwError",
    "Release",
    "ResultTimeout",
    "SchemaError",
    "Schedule",
    "Step",
    "StepList",
    "Switches",
    "Unsupported",
    "WorkerInfo",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowNotFound",
    "WorkflowState",
    "__version__",
    "open",
    "open_async",
]


def __getattr__(name: str) -> Any:
    if name in _WORKER_NAMES:
        import qw.worker

        value = getattr(qw.worker, name)
        globals()[name] = value
        return value
    if name in _AIO_NAMES:
        import qw.aio

        value = getattr(qw.aio, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qw' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_WORKER_NAMES, *_AIO_NAMES})
