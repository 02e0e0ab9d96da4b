"""The one error hierarchy of qw.

Every error qw raises on purpose is a :class:`QwError`::

    QwError
    ├── InvalidInput            bad names, payloads or arguments; nothing was written
    │   ├── InvalidName         a namespace or queue name outside its pattern
    │   ├── InvalidPayload      not JSON, or over the size limit
    │   ├── DuplicateJob        a job id that is already in the store (or twice in one batch)
    │   ├── InvalidWorkflow     a cycle, an unknown parent, too many steps, a bad workflow id
    │   ├── NotRetryable        a retry of a workflow step (its workflow settled around its end)
    │   └── CrossShard          one atomic call for queues on different shards of a namespace
    ├── LeaseLost               a token that is not (or no longer) the job's current lease
    ├── JobNotFound             no job with that id in this namespace
    ├── WorkflowNotFound        no workflow with that id in this namespace
    ├── WorkflowFailed          a workflow whose result was asked for ended failed or cancelled
    ├── ResultTimeout           a result did not arrive in the time given
    ├── JobFailed               a job whose result was asked for ended failed
    │   └── JobWasCancelled     ... or ended cancelled
    ├── BackendError            the store itself
    │   ├── BackendNotFound     no installed distribution provides that backend name
    │   ├── BackendUnavailable  the backend cannot load, or its store cannot be reached
    │   ├── BackendConflict     two distributions claim one name or scheme; a lost write race
    │   ├── SchemaError         the store's schema is missing, newer than this code, or broken
    │   └── Unsupported         the backend does not declare the capability a call needs
    ├── PluginError             an installed ``qw.plugins`` entry point failed to load
    └── ConfigurationError      a URL or option qw cannot make sense of

Backends translate their driver's exceptions into these; a driver exception
that escapes a backend is a bug in that backend.
"""

from __future__ import annotations

__all__ = [
    "BackendConflict",
    "BackendError",
    "BackendNotFound",
    "BackendUnavailable",
    "ConfigurationError",
    "CrossShard",
    "DuplicateJob",
    "InvalidInput",
    "InvalidName",
    "InvalidPayload",
    "InvalidWorkflow",
    "JobFailed",
    "JobWasCancelled",
    "JobNotFound",
    "LeaseLost",
    "NotRetryable",
    "PluginError",
    "QwError",
    "ResultTimeout",
    "SchemaError",
    "Unsupported",
    "WorkflowFailed",
    "WorkflowNotFound",
]


class QwError(Exception):
    """Base of every error qw raises on purpose."""


class InvalidInput(QwError, ValueError):
    """The caller's input is invalid; the store was not touched."""


class InvalidName(InvalidInput):
    """A namespace or queue name does not match its pattern."""


class InvalidPayload(InvalidInput):
    """A payload, result or event data is not JSON, or is too large."""


class DuplicateJob(InvalidInput):
    """A job id already exists in the namespace, or repeats within one batch."""


class InvalidWorkflow(InvalidInput):
    """A workflow the store would refuse: a cycle, an unknown parent, too many steps."""


class CrossShard(InvalidInput):
    """One atomic call (a batch, a workflow) for queues that live on different shards.

    A sharded namespace (Redis ``shards=N``) commits atomically within one
    shard only; nothing was written. Enqueue per shard, or place the
    queues together.
    """


class NotRetryable(InvalidInput):
    """A retry the store refuses: the job is a workflow step.

    A step's end has already been carried through its workflow (its
    children were cancelled or ran, the workflow may have ended), so the
    step cannot be run again on its own; nothing was written.
    """


class LeaseLost(QwError):
    """The lease's token is stale: the job was reclaimed, finished or never held."""

    def __init__(self, job_id: str, message: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(message or f"lease on job {job_id} is no longer held")


class JobNotFound(QwError, LookupError):
    """No job with that id exists in this namespace."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r} in this namespace")


class WorkflowNotFound(QwError, LookupError):
    """No workflow with that id exists in this namespace."""

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"no workflow {workflow_id!r} in this namespace")


class WorkflowFailed(QwError):
    """The workflow ended ``failed`` or ``cancelled``.

    ``errors`` maps its failed and cancelled steps to their errors.
    """

    def __init__(self, workflow_id: str, state: str, errors: dict[str, object]) -> None:
        self.workflow_id = workflow_id
        self.state = state
        self.errors = errors
        shown = ", ".join(sorted(errors)[:5]) or "none"
        super().__init__(f"workflow {workflow_id!r} ended {state} (failed steps: {shown})")


class ResultTimeout(QwError, TimeoutError):
    """A result was not there within the time given; the work goes on."""


class JobFailed(QwError):
    """The job whose result was asked for ended ``failed``; ``error`` is what it recorded."""

    def __init__(self, job_id: str, status: str, error: object) -> None:
        self.job_id = job_id
        self.status = status
        self.error = error
        super().__init__(f"job {job_id!r} ended {status}: {_short(error)}")


class JobWasCancelled(JobFailed):
    """The job whose result was asked for ended ``cancelled``."""


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BackendError(QwError):
    """A failure of, or in finding, the storage backend."""


class BackendNotFound(BackendError, LookupError):
    """No installed distribution provides the backend asked for."""


class BackendUnavailable(BackendError):
    """The backend cannot be loaded or its store cannot be reached."""


class BackendConflict(BackendError):
    """Two distributions claim one backend name or URL scheme; or a write lost a race.

    The race is a dedupe key taken by another producer that the backend's own
    retries did not settle (``qw.translate.DEDUPE_RACE``); retrying is safe.
    """


class SchemaError(BackendError):
    """The store's schema is missing, broken, or newer than this code."""


class Unsupported(BackendError):
    """The backend does not declare the capability a call needs (``limits``, ``schedules``).

    Raised by the client before any I/O: nothing was written.
    """


class PluginError(QwError):
    """A ``qw.plugins`` entry point failed to import or load (a plugin, not a backend)."""


class ConfigurationError(QwError, ValueError):
    """A URL or option that qw cannot make sense of."""
