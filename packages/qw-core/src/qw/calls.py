"""The argument checks both clients run before calling their backend.

:class:`qw.Client` and :class:`qw.aio.AsyncClient` share every rule here, so
a bad argument raises the same typed error, with the same message, before
any I/O, whichever client it was given to. Each function checks one call's
arguments and returns them as the backend gets them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from qw.contract import Insert
from qw.errors import InvalidInput, InvalidWorkflow, Unsupported
from qw.model import JobStatus, Lease, Limit, NewJob, WorkflowState
from qw.payload import with_headers
from qw.validation import (
    MAX_ATTEMPTS,
    MAX_BATCH,
    MAX_LIST_LIMIT,
    MAX_SECONDS,
    check_job_id,
    check_lease_token,
    check_limit,
    check_limit_key,
    encode_json_sized,
    is_int_in,
    is_seconds,
    validate_new_jobs,
    validate_queue,
    validate_workflow_id,
    validate_workflow_steps,
)

if TYPE_CHECKING:
    from qw.capabilities import Capabilities
    from qw.model import Enqueued

__all__ = [
    "RESULT_POLL_FIRST_S",
    "RESULT_POLL_MAX_S",
    "batch",
    "check_enabled",
    "check_keys",
    "check_lease",
    "check_list_limit",
    "check_older_than",
    "check_output",
    "check_set_limit",
    "check_timeout",
    "checked_inserts",
    "full_counts",
    "get_many_ids",
    "insert",
    "job_batch",
    "list_jobs_args",
    "list_workflows_args",
    "poll_pauses",
    "require",
    "require_limits",
    "step_inserts",
]

T = TypeVar("T")

#: The bounded poll of ``wait_finished`` on a backend without ``result_wakeup``
#: (both clients): the first pause, and the longest one.
RESULT_POLL_FIRST_S = 0.01
RESULT_POLL_MAX_S = 0.25


def poll_pauses() -> Iterator[float]:
    """The pauses of the bounded result poll: 10 ms, doubling, then 250 ms for ever."""
    pause = RESULT_POLL_FIRST_S
    while True:
        yield pause
        pause = min(pause * 2, RESULT_POLL_MAX_S)


def require(capabilities: Capabilities, backend: str, capability: str) -> None:
    """Raise :class:`~qw.errors.Unsupported` unless the backend declares ``capability``."""
    if not getattr(capabilities, capability):
        raise Unsupported(f"backend {backend!r} does not declare capability {capability!r}")


def require_limits(capabilities: Capabilities, backend: str, jobs: Sequence[NewJob]) -> None:
    """Refuse jobs with a limit key on a backend without capability ``limits``."""
    if not capabilities.limits and any(j.limit_key is not None for j in jobs):
        raise Unsupported(
            f"backend {backend!r} does not declare capability 'limits': "
            "jobs with a limit_key cannot be enqueued on it"
        )


def job_batch(jobs: Sequence[NewJob], capabilities: Capabilities) -> tuple[list[NewJob], list[str]]:
    """One enqueue call's jobs as a list, checked, and their payloads encoded."""
    batch_ = list(jobs) if not isinstance(jobs, NewJob) else jobs
    payloads = validate_new_jobs(batch_, limit=capabilities.max_payload_bytes)
    # A bare NewJob was refused above.
    return cast("list[NewJob]", batch_), payloads


class EnqueueHooks(Protocol):
    """The enqueue hooks a client calls (:class:`qw.plugin.manager.QwPluginManager` is one)."""

    def implements(self, hook: str) -> bool: ...

    def job_enqueuing(self, jobs: Sequence[NewJob], workflow: str | None) -> dict[str, str]: ...

    def jobs_enqueued(
        self, jobs: Sequence[NewJob], enqueued: Sequence[Enqueued], workflow: str | None
    ) -> None: ...


def with_plugin_headers(
    plugins: EnqueueHooks,
    jobs: Sequence[NewJob],
    payloads: list[str],
    workflow: str | None,
    limit: int,
) -> list[str]:
    """``payloads`` of checked ``jobs``, each task payload carrying the plugins' headers.

    Calls ``qw_job_enqueuing`` only when a plugin implements it, and
    re-encodes only when one gave headers: the common path costs one check.
    A payload the headers push over ``limit`` is refused like any other.
    """
    if not plugins.implements("qw_job_enqueuing"):
        return payloads
    headers = plugins.job_enqueuing(jobs, workflow)
    if not headers:
        return payloads
    out = []
    for job, text in zip(jobs, payloads, strict=True):
        headed = with_headers(job.payload, headers)
        out.append(
            text if headed is job.payload else encode_json_sized(headed, "payload", limit)[0]
        )
    return out


def checked_inserts(
    jobs: list[NewJob], payloads: list[str], capabilities: Capabilities, backend: str
) -> list[Insert]:
    """The ``Insert``s of jobs that passed :func:`~qw.validation.validate_new_jobs`."""
    require_limits(capabilities, backend, jobs)
    return [insert(job, payload) for job, payload in zip(jobs, payloads, strict=True)]


def step_inserts(
    workflow_id: str,
    steps: Sequence[NewJob],
    outside: frozenset[str],
    capabilities: Capabilities,
    backend: str,
    plugins: EnqueueHooks,
) -> list[Insert]:
    """The checked steps of one create or add call, as ``Insert``s of ``workflow_id``.

    The plugins' headers (``qw_job_enqueuing``) go into the steps' payloads.
    """
    validate_workflow_id(workflow_id)
    batch_ = list(steps) if not isinstance(steps, NewJob) else steps
    limit = capabilities.max_payload_bytes
    payloads = validate_workflow_steps(batch_, limit=limit, outside=outside)
    # A bare NewJob was refused above.
    jobs = cast("list[NewJob]", batch_)
    require_limits(capabilities, backend, jobs)
    payloads = with_plugin_headers(plugins, jobs, payloads, workflow_id, limit)
    return [insert(step, text, workflow_id) for step, text in zip(jobs, payloads, strict=True)]


def check_output(output: str | None, steps: Sequence[Insert]) -> None:
    """A workflow's ``output`` is one of its steps."""
    if output is not None and output not in {step.id for step in steps}:
        raise InvalidWorkflow(f"output {output!r} is not a step of the workflow")


def check_list_limit(limit: object) -> int:
    if not is_int_in(limit, 1, MAX_LIST_LIMIT):
        raise InvalidInput(f"limit must be an int in [1, {MAX_LIST_LIMIT}], not {limit!r}")
    return cast("int", limit)


def list_workflows_args(
    state: WorkflowState | str | None, limit: int, after: str | None
) -> dict[str, Any]:
    """``list_workflows``'s keyword arguments, checked."""
    if state is not None:
        try:
            state = WorkflowState(state)
        except ValueError:
            raise InvalidInput(f"unknown workflow state {state!r}") from None
    check_list_limit(limit)
    if after is not None:
        validate_workflow_id(after)
    return {"state": state, "limit": limit, "after": after}


def get_many_ids(job_ids: Iterable[str]) -> list[list[str]]:
    """The checked ids of a ``get_many``, cut into calls of at most MAX_BATCH."""
    if isinstance(job_ids, str):
        raise InvalidInput("get_many takes a collection of job ids, not a string")
    ids = [check_job_id(i) for i in job_ids]
    return [ids[start : start + MAX_BATCH] for start in range(0, len(ids), MAX_BATCH)]


def list_jobs_args(
    queue: str | None,
    status: JobStatus | str | None,
    limit: int,
    after: str | None,
    workflow: str | None,
    key: str | None,
) -> dict[str, Any]:
    """``list_jobs``'s keyword arguments, checked."""
    if queue is not None:
        validate_queue(queue)
    if workflow is not None:
        validate_workflow_id(workflow)
    if key is not None:
        check_limit_key(key)
    if status is not None:
        try:
            status = JobStatus(status)
        except ValueError:
            raise InvalidInput(f"unknown status {status!r}") from None
    check_list_limit(limit)
    if after is not None:
        check_job_id(after)
    args: dict[str, Any] = {"queue": queue, "status": status, "limit": limit, "after": after}
    # Passed only when given, so that a backend written before a filter
    # existed still serves the calls that do not use it.
    if workflow is not None:
        args["workflow"] = workflow
    if key is not None:
        args["key"] = key
    return args


def full_counts(raw: Mapping[str, Mapping[JobStatus, int]]) -> dict[str, dict[JobStatus, int]]:
    """A backend's counts with every status present, queues with no jobs left out."""
    return {
        queue: {status: by_status.get(status, 0) for status in JobStatus}
        for queue, by_status in sorted(raw.items())
        if any(by_status.values())
    }


def check_timeout(timeout: object) -> float:
    if not is_seconds(timeout):
        raise InvalidInput(f"timeout must be seconds in [0, {MAX_SECONDS}], not {timeout!r}")
    return float(cast("float", timeout))


def check_older_than(older_than: object) -> float:
    if not is_seconds(older_than):
        raise InvalidInput(f"older_than must be seconds in [0, {MAX_SECONDS}], not {older_than!r}")
    return float(cast("float", older_than))


def check_enabled(enabled: object, queue: str | None) -> str | None:
    """The checked arguments of ``set_enabled``: the queue (or None)."""
    if not isinstance(enabled, bool):
        raise InvalidInput(f"enabled must be a bool, not {enabled!r}")
    return None if queue is None else validate_queue(queue)


def check_set_limit(
    key: str, limit: Limit | None, capabilities: Capabilities, backend: str
) -> None:
    check_limit_key(key)
    if limit is not None:
        check_limit(limit)
    require(capabilities, backend, "limits")


def check_keys(limit: int, after: str | None, capabilities: Capabilities, backend: str) -> None:
    check_list_limit(limit)
    if after is not None:
        check_limit_key(after)
    require(capabilities, backend, "limits")


def check_lease(lease: object) -> None:
    if not isinstance(lease, Lease):
        raise InvalidInput(f"expected a Lease, got {type(lease).__name__}")
    check_job_id(lease.job_id)
    check_lease_token(lease.token)
    # A claim's lease says which attempt it holds; finishes are decided by it.
    attempt, most = lease.attempt, lease.max_attempts
    if not (type(attempt) is int and type(most) is int and 0 < attempt <= most <= MAX_ATTEMPTS):
        raise InvalidInput(
            f"lease for job {lease.job_id!r} does not carry the attempt a claim handed out "
            f"(attempt={lease.attempt!r}, max_attempts={lease.max_attempts!r}); "
            "use the Lease a claim or renew returned"
        )


def insert(job: NewJob, payload: str, workflow: str | None = None) -> Insert:
    """The ``Insert`` of a checked job whose payload is already encoded."""
    run_at = None if job.run_at is None else job.run_at.astimezone(UTC)
    plain = (
        job.id,
        job.queue,
        payload,
        job.priority,
        run_at,
        job.delay,
        job.max_attempts,
        job.dedupe_key,
    )
    if workflow is None:
        if job.parents:
            raise InvalidWorkflow(f"job {job.id!r} has parents: parents are for workflow steps")
        if job.limit_key is None:
            return Insert(*plain)
        return Insert(*plain, limit_key=job.limit_key, limit=job.limit, fair=job.fair)
    return Insert(
        *plain,
        JobStatus.WAITING if job.parents else JobStatus.QUEUED,
        workflow,
        job.parents,
        job.on_parent_failure,
        job.limit_key,
        job.limit,
        job.fair,
    )


def batch(items: Sequence[T], what: str) -> list[T]:
    """``items`` as a list, refused if it is longer than MAX_BATCH."""
    values = list(items)
    if len(values) > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} {what} call, not {len(values)}")
    return values
