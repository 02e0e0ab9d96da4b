"""Workflows as users write them: steps that pass results, fan out and fan in.

>>> import qw
>>> app = qw.App("memory://", namespace="wf-docs")
>>> @app.task
... def double(x: int) -> int:
...     return 2 * x
>>> @app.task
... def total(xs: list[int]) -> int:
...     return sum(xs)
>>> wf = app.workflow("sums")
>>> parts = wf.map(double, [1, 2, 3])
>>> t = wf.add(total, parts)
>>> wf.enqueue().status().state.value
'running'

A step passed as an argument is a parent whose result arrives there; a
:class:`StepList` (from :meth:`WorkflowBuilder.map`) passes the list of its
steps' results; ``after=`` orders without passing a result. Everything is
stored by one atomic call (:meth:`qw.Client.create_workflow`); the store
promotes each step once all its parents have ended (see
:mod:`qw.transitions`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, cast, overload

from qw.calls import poll_pauses
from qw.errors import InvalidWorkflow, ResultTimeout
from qw.handles import UNFINISHED, check_wait_timeout, workflow_failure
from qw.ids import new_job_id
from qw.model import Enqueued, Job, JobStatus, JSONValue, NewJob, ParentFailure, Workflow
from qw.model import WorkflowState as State
from qw.payload import Ref, task_payload
from qw.tasks import Task, TaskCall
from qw.validation import MAX_WORKFLOW_STEPS, validate_workflow_id

if TYPE_CHECKING:
    from qw.aio.client import AsyncClient
    from qw.aio.handles import AsyncClientOwner, AsyncWorkflowHandle
    from qw.client import Client
    from qw.model import Lease

__all__ = ["Step", "StepList", "WorkflowBuilder", "WorkflowHandle"]

#: The longest one wait on a step: each slice ends with a read of the workflow.
WAIT_SLICE_S = 30.0


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a workflow being built: pass it to a later step to get its result there."""

    id: str
    task: str


class StepList(Sequence[Step]):
    """The steps one :meth:`WorkflowBuilder.map` made; as an argument, their results in a list."""

    __slots__ = ("_steps",)

    def __init__(self, steps: Iterable[Step]) -> None:
        self._steps = tuple(steps)

    @overload
    def __getitem__(self, index: int) -> Step: ...
    @overload
    def __getitem__(self, index: slice) -> StepList: ...
    def __getitem__(self, index: int | slice) -> Step | StepList:
        if isinstance(index, slice):
            return StepList(self._steps[index])
        return self._steps[index]

    def __len__(self) -> int:
        return len(self._steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self._steps)

    def __repr__(self) -> str:
        return f"StepList({len(self._steps)} steps)"


class _Owner(Protocol):
    @property
    def client(self) -> Client: ...


class WorkflowBuilder:
    """Collects steps; :meth:`enqueue` stores them all at once.

    Made by :meth:`qw.App.workflow` (a new workflow) or by
    ``qw.current_job().extend()`` (steps a running step adds to its own).
    """

    def __init__(
        self,
        owner: _Owner,
        workflow_id: str | None = None,
        *,
        _adder: tuple[Lease, str] | None = None,
        _id_seed: str | None = None,
    ) -> None:
        self._owner = owner
        self.id = validate_workflow_id(
            workflow_id if workflow_id is not None else "wf-" + new_job_id().replace("-", "")
        )
        self._adder = _adder
        self._seed = _id_seed
        self._steps: list[NewJob] = []
        self._ids: set[str] = set()
        self._enqueued = False

    def __repr__(self) -> str:
        return f"<qw.WorkflowBuilder {self.id} steps={len(self._steps)}>"

    @property
    def steps(self) -> list[NewJob]:
        """The steps so far, as the jobs the store will hold."""
        return list(self._steps)

    def add(
        self,
        task: Task[..., Any] | TaskCall[..., Any],
        *args: Any,
        after: Iterable[Step] = (),
        on_parent_failure: ParentFailure | str = ParentFailure.CANCEL,
        **kwargs: Any,
    ) -> Step:
        """Add a step running ``task(*args, **kwargs)``; return it.

        A :class:`Step` or :class:`StepList` among the arguments is a parent
        whose result (or results) the step gets there. ``after`` adds parents
        whose results it does not take. ``on_parent_failure`` says what the
        step does when a parent ends failed or cancelled (default: it is
        cancelled; ``"run"``: it runs, seeing None for that parent's result).
        Options such as the queue or priority come with ``task.options(...)``.
        """
        if self._enqueued:
            raise InvalidWorkflow(f"workflow {self.id!r} was enqueued; build a new one")
        call = task if isinstance(task, TaskCall) else TaskCall(task, {})
        policy = _policy(on_parent_failure)
        refs: list[Ref] = []
        plain_args: list[JSONValue] = []
        for i, value in enumerate(args):
            plain_args.append(self._take(value, i, refs))
        plain_kwargs = {key: self._take(value, key, refs) for key, value in kwargs.items()}
        parents = dict.fromkeys(
            i for _, ids in refs for i in ([ids] if isinstance(ids, str) else ids)
        )
        for step in after:
            if not isinstance(step, Step):
                raise InvalidWorkflow(f"after= takes steps, not {step!r}")
            parents[self._own(step)] = None
        if len(self._steps) >= MAX_WORKFLOW_STEPS:
            raise InvalidWorkflow(
                f"a workflow holds at most {MAX_WORKFLOW_STEPS} steps (MAX_WORKFLOW_STEPS)"
            )
        step_id = self._next_id()
        job = call.job(*plain_args, **plain_kwargs)
        payload = task_payload(call.task.name, plain_args, plain_kwargs, refs)
        self._steps.append(
            replace(
                job,
                payload=payload,
                id=step_id,
                parents=tuple(parents),
                on_parent_failure=policy,
            )
        )
        self._ids.add(step_id)
        return Step(step_id, call.task.name)

    def map(
        self,
        task: Task[..., Any] | TaskCall[..., Any],
        items: Iterable[Any],
        *,
        after: Iterable[Step] = (),
        on_parent_failure: ParentFailure | str = ParentFailure.CANCEL,
    ) -> StepList:
        """Fan out: one step ``task(item)`` per item (a step item passes its result)."""
        fixed = tuple(after)
        return StepList(
            self.add(task, item, after=fixed, on_parent_failure=on_parent_failure) for item in items
        )

    def enqueue(
        self, *, output: Step | None = None, connection: object | None = None
    ) -> WorkflowHandle:
        """Store every step in one atomic call; return a handle on the workflow.

        ``output`` is the step whose result :meth:`WorkflowHandle.result`
        returns (default: the last step added). A workflow whose id exists
        is not written again: the handle is on the existing one
        (:attr:`WorkflowHandle.created` is False). ``connection`` writes it
        in the application's open transaction (see
        :meth:`qw.Client.create_workflow`).
        """
        if not self._steps:
            raise InvalidWorkflow(f"workflow {self.id!r} has no steps")
        client = self._client()
        if self._adder is not None:
            if connection is not None:
                raise InvalidWorkflow("steps a running step adds take no connection=")
            lease, _ = self._adder
            created = client.add_steps(lease, self.id, self._steps)
            self._enqueued = True
            return WorkflowHandle(self._owner, self.id, created=created)
        out = self._own(output) if output is not None else self._steps[-1].id
        answer: Enqueued = client.create_workflow(
            self.id, self._steps, output=out, connection=connection
        )
        self._enqueued = True
        return WorkflowHandle(self._owner, self.id, created=answer.created)

    async def aenqueue(self, *, output: Step | None = None) -> AsyncWorkflowHandle:
        """:meth:`enqueue` through the app's async client; an async handle on the workflow."""
        from qw.aio.handles import AsyncWorkflowHandle

        if not self._steps:
            raise InvalidWorkflow(f"workflow {self.id!r} has no steps")
        if self._adder is not None:
            raise InvalidWorkflow(
                "steps a running step adds are enqueued with enqueue(), not aenqueue()"
            )
        if not callable(getattr(self._owner, "async_client", None)):
            raise InvalidWorkflow(f"{self._owner!r} has no async client: aenqueue needs a qw.App")
        owner = cast("AsyncClientOwner", self._owner)
        client: AsyncClient = await owner.async_client()
        out = self._own(output) if output is not None else self._steps[-1].id
        answer = await client.create_workflow(self.id, self._steps, output=out)
        self._enqueued = True
        return AsyncWorkflowHandle(owner, self.id, created=answer.created)

    # -- helpers -----------------------------------------------------------

    def _client(self) -> Client:
        client = self._owner.client
        if self._adder is None or client.capabilities.thread_safe:
            return client
        # A running step's thread may not share the worker's client.
        opener = getattr(self._owner, "open_client", None)
        return opener() if opener is not None else client

    def _take(self, value: Any, where: int | str, refs: list[Ref]) -> JSONValue:
        """The JSON value to store for one argument; a step or step list becomes a ref."""
        if isinstance(value, Step):
            refs.append((where, self._own(value)))
            return None
        if isinstance(value, StepList) or (
            isinstance(value, (list, tuple)) and value and all(isinstance(v, Step) for v in value)
        ):
            refs.append((where, [self._own(step) for step in value]))
            return None
        if isinstance(value, (list, tuple, dict)):
            inner = value.values() if isinstance(value, dict) else value
            if any(isinstance(v, (Step, StepList)) for v in inner):
                raise InvalidWorkflow(
                    "a step may be passed as an argument, or a list of steps; "
                    "not inside another value"
                )
        return value  # type: ignore[no-any-return]

    def _own(self, step: Step) -> str:
        if not isinstance(step, Step):
            raise InvalidWorkflow(f"expected a Step, got {step!r}")
        adder = self._adder
        if step.id not in self._ids and not (adder is not None and step.id == adder[1]):
            raise InvalidWorkflow(f"step {step.id!r} is not a step of workflow {self.id!r}")
        return step.id

    def _next_id(self) -> str:
        n = len(self._steps) + 1
        if self._seed is None:
            return f"{self.id}.{n}"
        # Steps a running step adds get ids its retry would make again, so
        # that the store recognises a batch an earlier attempt added.
        digest = hashlib.blake2b(f"{self._seed}:{n}".encode(), digest_size=8).hexdigest()
        return f"{self.id}.{digest}"

    @property
    def parent(self) -> Step:
        """The running step that adds these steps, to pass as a parent (``after=``)."""
        if self._adder is None:
            raise InvalidWorkflow("only steps added from a running step have a parent step")
        return Step(self._adder[1], "")


def _policy(value: ParentFailure | str) -> ParentFailure:
    try:
        return ParentFailure(value)
    except ValueError:
        raise InvalidWorkflow(f"on_parent_failure is 'cancel' or 'run', not {value!r}") from None


class WorkflowHandle:
    """A stored workflow: its state, its result, and a way to cancel it."""

    def __init__(self, owner: _Owner, workflow_id: str, *, created: bool = True) -> None:
        self._owner = owner
        self.id = workflow_id
        #: False when the workflow already existed and nothing was written.
        self.created = created

    def __repr__(self) -> str:
        return f"<qw.WorkflowHandle {self.id}>"

    def status(self) -> Workflow:
        """The workflow now: its state and its steps counted by status."""
        return self._owner.client.get_workflow(self.id)

    def steps(self) -> list[Job]:
        """Every step, by id."""
        return self._owner.client.steps(self.id)

    def cancel(self) -> Workflow:
        """Cancel the steps not yet running and flag the running ones."""
        return self._owner.client.cancel_workflow(self.id)

    def wait(self, timeout: float | None = None, *, poll: float = 0.05) -> Workflow:
        """Block until the workflow ends; :class:`~qw.errors.ResultTimeout` after ``timeout`` s.

        It waits on one unfinished step at a time with
        :meth:`qw.Client.wait_finished` (woken by the store where it can),
        reading the workflow after each. ``poll`` caps the pause taken only
        when every step has ended but the workflow's end is not yet written.
        """
        seconds = check_wait_timeout(timeout)
        client = self._owner.client
        deadline = None if seconds is None else time.monotonic() + seconds
        pauses = poll_pauses()
        while True:
            workflow = client.get_workflow(self.id)
            if workflow.state is not State.RUNNING:
                return workflow
            left = WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise ResultTimeout(f"workflow {self.id!r} still running after {timeout} s")
            piece = min(left, WAIT_SLICE_S)
            step = _unfinished_step(client, self.id)
            if step is not None:
                client.wait_finished(step, piece)
            else:
                # Every step ended, the workflow's end not yet written (a
                # store that settles after the step's write): a short pause.
                time.sleep(min(next(pauses), poll, piece))

    def result(self, timeout: float | None = None) -> JSONValue:
        """The output step's result once the workflow succeeded.

        Raises :class:`~qw.errors.WorkflowFailed` (with the errors of its
        failed and cancelled steps) if it ended otherwise, and
        :class:`~qw.errors.ResultTimeout` if it is still running after
        ``timeout`` seconds.
        """
        workflow = self.wait(timeout)
        client = self._owner.client
        if workflow.state is not State.SUCCEEDED:
            raise workflow_failure(workflow, client.steps(self.id))
        if workflow.output is None:
            return None
        return client.get(workflow.output).result

    def results(self) -> Mapping[str, JSONValue]:
        """Every succeeded step's result, by step id."""
        return {
            job.id: job.result
            for job in self._owner.client.steps(self.id)
            if job.status is JobStatus.SUCCEEDED
        }


def _unfinished_step(client: Client, workflow_id: str) -> str | None:
    """One step of the workflow that has not ended (running first), or None."""
    for status in UNFINISHED:
        page = client.list_jobs(workflow=workflow_id, status=status, limit=1)
        if page:
            return page[0].id
    return None
