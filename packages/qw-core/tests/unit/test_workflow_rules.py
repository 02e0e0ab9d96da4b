"""The workflow rules of qw.transitions and the checks of qw.validation, on their own."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from qw.errors import InvalidWorkflow
from qw.model import JobStatus, NewJob, ParentFailure, WorkflowState
from qw.transitions import (
    EVENT_CANCELLED,
    Ready,
    Transition,
    plan_settled,
    plan_workflow_end,
    settle,
    workflow_event,
)
from qw.validation import (
    MAX_WORKFLOW_STEPS,
    validate_workflow_id,
    validate_workflow_steps,
)

S = JobStatus


def test_a_step_whose_parents_all_succeeded_is_queued() -> None:
    assert plan_settled(Ready("w.2", "q", ParentFailure.CANCEL, ())) == Transition(S.QUEUED)


def test_a_failed_parent_cancels_a_cancel_step_naming_the_parent() -> None:
    t = plan_settled(Ready("w.3", "q", ParentFailure.CANCEL, ("w.1", "w.2")))
    assert (t.status, t.finished, t.event_type) == (S.CANCELLED, True, EVENT_CANCELLED)
    assert json.loads(t.error or "") == {"reason": "parent_failed", "parent": "w.1"}
    assert json.loads(t.event_data or "") == {
        "queue": "q",
        "reason": "parent_failed",
        "parent": "w.1",
    }


def test_a_run_step_runs_whatever_its_parents_did() -> None:
    assert plan_settled(Ready("w.3", "q", ParentFailure.RUN, ("w.1",))) == Transition(S.QUEUED)


class Graph:
    """A plain in-memory graph for settle(): children, pending counts, statuses."""

    def __init__(self, edges: dict[str, list[str]], policies: dict[str, ParentFailure]) -> None:
        self.children = edges
        self.status = dict.fromkeys(policies, S.WAITING)
        self.pending = dict.fromkeys(policies, 0)
        self.failed: dict[str, list[str]] = {n: [] for n in policies}
        self.policy = policies
        for kids in edges.values():
            for kid in kids:
                self.pending[kid] += 1

    def count_ended(self, parent: str, status: JobStatus) -> Sequence[Ready]:
        out = []
        for kid in self.children.get(parent, []):
            if self.status[kid] is not S.WAITING:
                continue
            self.pending[kid] -= 1
            if status is not S.SUCCEEDED:
                self.failed[kid].append(parent)
            if self.pending[kid] == 0:
                out.append(Ready(kid, "q", self.policy[kid], tuple(self.failed[kid])))
        return out

    def apply_settled(self, step: Ready, transition: Transition) -> None:
        self.status[step.id] = transition.status


def test_settle_carries_a_failure_through_every_cancel_descendant() -> None:
    cancel, run = ParentFailure.CANCEL, ParentFailure.RUN
    graph = Graph(
        {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": ["e", "f"]},
        {"a": cancel, "b": cancel, "c": cancel, "d": cancel, "e": cancel, "f": run},
    )
    graph.status["a"] = S.FAILED
    settle(graph, [("a", S.FAILED)])
    assert graph.status == {
        "a": S.FAILED,
        "b": S.CANCELLED,
        "c": S.CANCELLED,
        "d": S.CANCELLED,
        "e": S.CANCELLED,
        "f": S.QUEUED,
    }
    # d was cancelled once, when its last parent ended, naming both.
    assert sorted(graph.failed["d"]) == ["b", "c"]


def test_settle_queues_a_child_only_when_its_last_parent_ends() -> None:
    graph = Graph(
        {"a": ["c"], "b": ["c"]},
        {"a": ParentFailure.CANCEL, "b": ParentFailure.CANCEL, "c": ParentFailure.CANCEL},
    )
    settle(graph, [("a", S.SUCCEEDED)])
    assert graph.status["c"] is S.WAITING
    settle(graph, [("b", S.SUCCEEDED)])
    assert graph.status["c"] is S.QUEUED


@pytest.mark.parametrize(
    ("failed", "cancelled", "requested", "state"),
    [
        (0, 0, False, WorkflowState.SUCCEEDED),
        (1, 0, False, WorkflowState.FAILED),
        (1, 3, False, WorkflowState.FAILED),
        (0, 2, False, WorkflowState.CANCELLED),
        (2, 0, True, WorkflowState.CANCELLED),
        (0, 0, True, WorkflowState.CANCELLED),
    ],
)
def test_the_end_state_of_a_workflow(
    failed: int, cancelled: int, requested: bool, state: WorkflowState
) -> None:
    assert (
        plan_workflow_end(failed=failed, cancelled=cancelled, cancel_requested=requested) is state
    )


def test_the_workflow_event() -> None:
    kind, data = workflow_event("wf-1", WorkflowState.FAILED)
    assert kind == "workflow.failed"
    assert json.loads(data) == {"workflow": "wf-1", "state": "failed"}


@pytest.mark.parametrize("bad", ["", "-x", "a b", "x" * 41, "é", 7, None, "a/b"])
def test_bad_workflow_ids_are_refused(bad: object) -> None:
    with pytest.raises(InvalidWorkflow):
        validate_workflow_id(bad)


def test_a_good_workflow_id() -> None:
    assert validate_workflow_id("Onboard_42.x:y-z") == "Onboard_42.x:y-z"


def _steps(*edges: tuple[str, tuple[str, ...]]) -> list[NewJob]:
    return [NewJob("q", None, id=i, parents=p) for i, p in edges]


def test_cycles_unknown_parents_and_sizes_are_refused() -> None:
    with pytest.raises(InvalidWorkflow, match="cycle"):
        validate_workflow_steps(_steps(("a", ()), ("b", ("a", "c")), ("c", ("b",))), limit=1 << 20)
    with pytest.raises(InvalidWorkflow, match="cycle"):
        validate_workflow_steps(_steps(("a", ("a",))), limit=1 << 20)
    with pytest.raises(InvalidWorkflow, match="unknown parent"):
        validate_workflow_steps(_steps(("a", ("zz",))), limit=1 << 20)
    with pytest.raises(InvalidWorkflow, match="at least one"):
        validate_workflow_steps([], limit=1 << 20)
    with pytest.raises(InvalidWorkflow, match="MAX_WORKFLOW_STEPS"):
        validate_workflow_steps(
            [NewJob("q", id=f"s{i}") for i in range(MAX_WORKFLOW_STEPS + 1)], limit=1 << 20
        )
    with pytest.raises(InvalidWorkflow, match="distinct"):
        validate_workflow_steps(_steps(("a", ()), ("b", ("a", "a"))), limit=1 << 20)
    with pytest.raises(InvalidWorkflow, match="does not match"):
        validate_workflow_steps(_steps(("a b", ())), limit=1 << 20)


def test_a_running_step_may_be_a_parent_of_the_steps_it_adds() -> None:
    steps = _steps(("n.1", ("running",)), ("n.2", ("n.1", "running")))
    assert len(validate_workflow_steps(steps, limit=1 << 20, outside=frozenset({"running"}))) == 2
