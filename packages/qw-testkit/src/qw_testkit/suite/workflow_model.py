"""A plain-Python model of workflows in one namespace, for the workflow state machine.

Like :mod:`qw_testkit.model`, it states the rules again in its own words and
imports none of qw's own decisions (``qw.transitions``): a mistake there must
show up as a disagreement with this model, not be shared by it.

The rules, as this model has them:

- A step with parents starts ``waiting`` with a count of parents not ended;
  one without starts ``queued``. Each parent lists its children in the order
  they were inserted.
- A step *ends* when it becomes succeeded, failed or cancelled. In the same
  call, each of its ``waiting`` children counts it: the count drops by one,
  and the parent joins the child's failed parents unless it succeeded. A
  child whose count reaches zero is queued, unless it has a failed parent and
  its policy is ``cancel``: then it ends ``cancelled`` (naming its first
  failed parent) and is counted by its own children in turn.
- When no step of a workflow is left unended and the workflow is running, it
  ends: ``cancelled`` if an operator cancelled it, else ``failed`` if a step
  failed, else ``cancelled`` if a step was cancelled, else ``succeeded``; one
  event says so.
- Cancelling a workflow cancels its waiting and queued steps outright (their
  children are not counted: they are all cancelled too) and flags its
  running ones.

Within one call the order in which a cascade reaches steps is the store's
choice, so failed parents that ended in the same call may come in any order
among themselves (:func:`same_failed_parents`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from qw.model import (
    Abort,
    Complete,
    Fail,
    JobStatus,
    JSONValue,
    Outcome,
    ParentFailure,
    Release,
    WorkflowState,
)
from qw_testkit.model import status_after

__all__ = [
    "ModelFlow",
    "ModelStep",
    "StepSpec",
    "WorkflowEvent",
    "WorkflowModel",
    "same_failed_parents",
]

ENDED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
#: Stands for the parent named by a ``parent_failed`` event: which of the
#: parents that failed in one call comes first is the store's choice.
SOME_PARENT = "*"


@dataclass(frozen=True)
class StepSpec:
    """A step to insert: what the machine generated."""

    id: str
    queue: str
    parents: tuple[str, ...]
    policy: ParentFailure
    max_attempts: int


@dataclass
class ModelStep:
    id: str
    workflow: str
    queue: str
    seq: int
    parents: tuple[str, ...]
    policy: ParentFailure
    max_attempts: int
    status: JobStatus
    pending: int
    children: list[str] = field(default_factory=list)
    #: (parent, call number) in the order the parents ended.
    failed_parents: list[tuple[str, int]] = field(default_factory=list)
    attempts: int = 0
    due: bool = True
    token: str | None = None
    finished_by: str | None = None
    cancel_requested: bool = False
    short_lease: bool = False
    #: Ended cancelled because a parent failed (its error names that parent).
    cancelled_by_parent: bool = False


@dataclass
class ModelFlow:
    id: str
    steps: list[str] = field(default_factory=list)
    state: WorkflowState = WorkflowState.RUNNING
    cancel_requested: bool = False


@dataclass(frozen=True)
class WorkflowEvent:
    job_id: str
    type: str
    data: JSONValue
    #: Events written by one call share a group; their order within it is the store's.
    group: int


def same_failed_parents(got: Sequence[str], want: Sequence[tuple[str, int]]) -> bool:
    """Whether the store's failed parents are the model's, up to order within one call."""
    if len(got) != len(want):
        return False
    start = 0
    for group in dict.fromkeys(g for _, g in want):
        names = {p for p, g in want if g == group}
        if set(got[start : start + len(names)]) != names:
            return False
        start += len(names)
    return True


@dataclass
class WorkflowModel:
    steps: dict[str, ModelStep] = field(default_factory=dict)
    flows: dict[str, ModelFlow] = field(default_factory=dict)
    events: list[WorkflowEvent] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _groups: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- producing -----------------------------------------------------------

    def create(self, workflow: str, specs: Sequence[StepSpec]) -> bool:
        """Create ``workflow`` with ``specs`` (fresh ids); False if the workflow exists."""
        if workflow in self.flows:
            return False
        self.flows[workflow] = ModelFlow(workflow)
        self._insert(workflow, specs)
        return True

    def _insert(self, workflow: str, specs: Sequence[StepSpec]) -> None:
        for spec in specs:
            assert spec.id not in self.steps
            self.steps[spec.id] = ModelStep(
                spec.id,
                workflow,
                spec.queue,
                next(self._seq),
                spec.parents,
                spec.policy,
                spec.max_attempts,
                JobStatus.WAITING if spec.parents else JobStatus.QUEUED,
                pending=len(spec.parents),
            )
            for parent in spec.parents:
                self.steps[parent].children.append(spec.id)
            self.flows[workflow].steps.append(spec.id)

    def add_steps(
        self, job_id: str, token: str, attempt: int, workflow: str, specs: Sequence[StepSpec]
    ) -> bool | None:
        """Steps added by the running step ``job_id``: None if refused, False if already added."""
        step = self.steps.get(job_id)
        if step is None or not self._held(step, token, attempt):
            return None
        if step.workflow != workflow or self.flows[workflow].cancel_requested:
            return None
        if specs[0].id in self.steps:
            return False
        self._insert(workflow, specs)
        return True

    # -- working -------------------------------------------------------------

    def claimable(self, queues: Sequence[str], limit: int) -> list[ModelStep]:
        due = [
            s
            for s in self.steps.values()
            if s.status is JobStatus.QUEUED and s.due and s.queue in queues
        ]
        return sorted(due, key=lambda s: s.seq)[:limit]

    def claimed(self, step: ModelStep, token: str, short: bool) -> None:
        step.status = JobStatus.RUNNING
        step.attempts += 1
        step.token = token
        step.cancel_requested = False
        step.short_lease = short

    @staticmethod
    def _held(step: ModelStep, token: str, attempt: int) -> bool:
        return step.status is JobStatus.RUNNING and step.token == token and step.attempts == attempt

    def finish(self, outcome: Outcome) -> JobStatus | None:
        """Apply ``outcome``; return the answer the store must give."""
        lease = outcome.lease
        step = self.steps.get(lease.job_id)
        if step is None:
            return None
        if not self._held(step, lease.token, lease.attempt):
            # Answered, not applied, when this token already moved the step there.
            if step.finished_by == lease.token and step.status is status_after(outcome):
                return step.status
            return None
        if isinstance(outcome, Complete):
            step.status = JobStatus.SUCCEEDED
        elif isinstance(outcome, Fail):
            if outcome.retry_in is not None and step.attempts < step.max_attempts:
                step.status = JobStatus.QUEUED
                step.due = outcome.retry_in == 0
            else:
                step.status = JobStatus.FAILED
        elif isinstance(outcome, Abort):
            step.status = JobStatus.CANCELLED
        else:
            assert isinstance(outcome, Release)
            step.status = JobStatus.QUEUED
            step.attempts -= 1
        step.token = None
        step.finished_by = lease.token
        step.cancel_requested = False
        if step.status in ENDED:
            self._ended([step], next(self._groups))
        return step.status

    def expire_short_leases(self) -> int:
        """Reclaim every running step on a short lease; return how many."""
        expired = sorted(
            (s for s in self.steps.values() if s.status is JobStatus.RUNNING and s.short_lease),
            key=lambda s: s.seq,
        )
        group = next(self._groups)
        ended = []
        for step in expired:
            step.token = None
            step.finished_by = None
            step.cancel_requested = False
            step.short_lease = False
            if step.attempts < step.max_attempts:
                step.status = JobStatus.QUEUED
                step.due = True
                continue
            step.status = JobStatus.FAILED
            self._emit(
                step.id,
                "job.failed",
                {"queue": step.queue, "reason": "lease_expired", "attempts": step.attempts},
                group,
            )
            ended.append(step)
        self._ended(ended, group)
        return len(expired)

    # -- operating -------------------------------------------------------------

    def cancel(self, job_id: str) -> JobStatus:
        step = self.steps[job_id]
        if step.status in (JobStatus.WAITING, JobStatus.QUEUED):
            group = next(self._groups)
            self._cancel_outright(step, group)
            self._ended([step], group)
        elif step.status is JobStatus.RUNNING:
            step.cancel_requested = True
        return step.status

    def cancel_workflow(self, workflow: str) -> ModelFlow | None:
        flow = self.flows.get(workflow)
        if flow is None or flow.state is not WorkflowState.RUNNING:
            return flow
        flow.cancel_requested = True
        group = next(self._groups)
        for step_id in flow.steps:
            step = self.steps[step_id]
            if step.status in (JobStatus.WAITING, JobStatus.QUEUED):
                self._cancel_outright(step, group)
            elif step.status is JobStatus.RUNNING:
                step.cancel_requested = True
        self._maybe_end(flow, group)
        return flow

    def _cancel_outright(self, step: ModelStep, group: int) -> None:
        step.status = JobStatus.CANCELLED
        step.finished_by = None
        self._emit(step.id, "job.cancelled", {"queue": step.queue, "reason": "cancelled"}, group)

    # -- the rules of an end ------------------------------------------------------

    def _ended(self, steps: list[ModelStep], group: int) -> None:
        """Steps that just ended in call ``group``: count them for their children, and so on."""
        todo = list(steps)
        flows = {s.workflow for s in steps}
        while todo:
            parent = todo.pop()
            for child_id in parent.children:
                child = self.steps[child_id]
                if child.status is not JobStatus.WAITING:
                    continue
                child.pending -= 1
                if parent.status is not JobStatus.SUCCEEDED:
                    child.failed_parents.append((parent.id, group))
                if child.pending:
                    continue
                if child.failed_parents and child.policy is ParentFailure.CANCEL:
                    child.status = JobStatus.CANCELLED
                    child.cancelled_by_parent = True
                    self._emit(
                        child.id,
                        "job.cancelled",
                        {"queue": child.queue, "reason": "parent_failed", "parent": SOME_PARENT},
                        group,
                    )
                    todo.append(child)
                else:
                    child.status = JobStatus.QUEUED
                    child.due = True
        for workflow in sorted(flows):
            self._maybe_end(self.flows[workflow], group)

    def _maybe_end(self, flow: ModelFlow, group: int) -> None:
        if flow.state is not WorkflowState.RUNNING:
            return
        ended = [self.steps[i].status for i in flow.steps]
        if any(status not in ENDED for status in ended):
            return
        if flow.cancel_requested:
            flow.state = WorkflowState.CANCELLED
        elif JobStatus.FAILED in ended:
            flow.state = WorkflowState.FAILED
        elif JobStatus.CANCELLED in ended:
            flow.state = WorkflowState.CANCELLED
        else:
            flow.state = WorkflowState.SUCCEEDED
        state = flow.state.value
        self._emit(flow.id, f"workflow.{state}", {"workflow": flow.id, "state": state}, group)

    def _emit(self, job_id: str, type_: str, data: JSONValue, group: int) -> None:
        self.events.append(WorkflowEvent(job_id, type_, data, group))

    # -- what the store must show -------------------------------------------------

    def flow_counts(self, workflow: str) -> dict[JobStatus, int]:
        counts: dict[JobStatus, int] = {}
        for step_id in self.flows[workflow].steps:
            status = self.steps[step_id].status
            counts[status] = counts.get(status, 0) + 1
        return counts

    def counts(self) -> dict[str, dict[JobStatus, int]]:
        out: dict[str, dict[JobStatus, int]] = {}
        for step in self.steps.values():
            out.setdefault(step.queue, dict.fromkeys(JobStatus, 0))[step.status] += 1
        return dict(sorted(out.items()))
