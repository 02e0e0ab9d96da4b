"""The kit must fail a broken backend: each deliberate defect is caught by the tests named.

Every case runs the named kit tests twice in a pytester session: against plain
``memory`` (they pass, the control) and against a subclass with one defect
(each of them fails).
"""

from __future__ import annotations

import textwrap

import pytest

from qw_testkit.pytest_plugin import PROFILE_ENV

BACKENDS = textwrap.dedent(
    '''
    import contextlib
    import uuid
    from dataclasses import replace
    from datetime import UTC, datetime

    import qw
    from qw.backends.memory import MemoryBackend, _Graph
    from qw.capabilities import Capabilities
    from qw.model import WorkflowState
    from qw.transitions import Ready, settle, workflow_event
    from qw_testkit import BackendContractTests

    STORE = "selftest-" + uuid.uuid4().hex[:8]


    class DoubleClaim(MemoryBackend):
        """Hands the last job it claimed to the next claim as well."""

        _last = None

        def claim(self, queues, *, worker, lease_s, limit):
            claims = super().claim(queues, worker=worker, lease_s=lease_s, limit=limit)
            if self._last is not None and len(claims) < limit:
                claims = [*claims, self._last]
            if claims:
                self._last = claims[0]
            return claims


    class EventOnStaleToken(MemoryBackend):
        """Writes the transition's event even when the token is stale."""

        def finish(self, finishes):
            answers = super().finish(finishes)
            for finish, status in zip(finishes, answers):
                t = finish.transition
                if status is None and t.event_type is not None:
                    self._emit(finish.lease.job_id, t.event_type, t.event_data, datetime.now(UTC))
            return answers


    class IgnoresAttempt(MemoryBackend):
        """Fences finishes on the token alone, not on the attempt the lease was issued for."""

        def _held(self, lease):
            row = self._space.rows.get(lease.job_id)
            if row is None or row.token != lease.token:
                return None
            return row if row.job.status is qw.JobStatus.RUNNING else None


    class SharedNamespace(MemoryBackend):
        """Ignores its namespace: every object works on one shared space."""

        def __init__(self, store_name="default", *, namespace):
            super().__init__(store_name, namespace="shared")
            self._namespace = namespace


    class ReclaimForgetsAttempt(MemoryBackend):
        """Gives an expired attempt back on reclaim, as if the job had been released."""

        def reclaim_expired(self):
            running = self.list_jobs(status=qw.JobStatus.RUNNING, limit=10_000)
            n = super().reclaim_expired()
            for job in running:
                row = self._space.rows[job.id]
                if row.job.status is qw.JobStatus.QUEUED:
                    row.job = replace(row.job, attempts=row.job.attempts - 1)
            return n


    class _EagerGraph(_Graph):
        """Settles a waiting child as soon as any one of its parents has ended."""

        def count_ended(self, parent, status):
            ready = super().count_ended(parent, status)
            done = {r.id for r in ready}
            for child_id in self._rows[parent].job.children:
                row = self._rows[child_id]
                if row.job.status is qw.JobStatus.WAITING and child_id not in done:
                    row.pending = 0
                    j = row.job
                    ready.append(Ready(j.id, j.queue, j.on_parent_failure, j.failed_parents))
            return ready


    class PromotesOnFirstParent(MemoryBackend):
        """Promotes a child when its first parent ends, not its last."""

        def _apply(self, row, transition, now, requeued):
            self._write(row, transition, now, requeued)
            if row.job.workflow is not None and transition.status.is_terminal:
                settle(_EagerGraph(self, now, requeued), [(row.job.id, transition.status)])
            return transition.status


    class WorkflowEventTwice(MemoryBackend):
        """Writes the event that ends a workflow twice."""

        def _step_ended(self, flow, status, now):
            running = flow.state is WorkflowState.RUNNING
            super()._step_ended(flow, status, now)
            if running and flow.state is not WorkflowState.RUNNING:
                self._emit(flow.id, *workflow_event(flow.id, flow.state), now)


    class LateWorkflowEvent(MemoryBackend):
        """Writes a workflow's event in a later write (the next reclaim), not the one ending it."""

        def _emit(self, job_id, type_, data, now):
            if type_.startswith("workflow."):
                self._space.__dict__.setdefault("late", []).append((job_id, type_, data))
                return
            super()._emit(job_id, type_, data, now)

        def reclaim_expired(self):
            with self._store.lock:
                for args in self._space.__dict__.pop("late", []):
                    super()._emit(*args, datetime.now(UTC))
            return super().reclaim_expired()


    class ClaimsWaiting(MemoryBackend):
        """Lets a claim take a waiting step as if it were queued."""

        def claim(self, queues, *, worker, lease_s, limit):
            with self._store.lock:
                waiting = [
                    r for r in self._space.rows.values() if r.job.status is qw.JobStatus.WAITING
                ]
                for r in waiting:
                    r.job = replace(r.job, status=qw.JobStatus.QUEUED)
                try:
                    return super().claim(queues, worker=worker, lease_s=lease_s, limit=limit)
                finally:
                    for r in waiting:
                        if r.job.status is qw.JobStatus.QUEUED:
                            r.job = replace(r.job, status=qw.JobStatus.WAITING)


    class SettlesRepeats(MemoryBackend):
        """Settles a step's children again when a finish of it is repeated."""

        def finish(self, finishes):
            held = [self._held(f.lease) is not None for f in finishes]
            answers = super().finish(finishes)
            with self._store.lock:
                for finish, was_held, status in zip(finishes, held, answers):
                    row = self._space.rows.get(finish.lease.job_id)
                    repeat = not was_held and status is not None and status.is_terminal
                    if repeat and row.job.workflow is not None:
                        settle(_Graph(self, datetime.now(UTC), set()), [(row.job.id, status)])
            return answers


    class NonAtomicWithoutHook(MemoryBackend):
        """Says atomic_settle=False, and its test class gives no interrupt_settle hook."""

        capabilities = replace(MemoryBackend.capabilities, atomic_settle=False)


    class DeferredSettle(MemoryBackend):
        """Settles after a step's own write (atomic_settle=False); reclaim completes the rest.

        ``interrupted()`` is the interrupt_settle hook: inside it a step's end stops
        after the step's write, leaving its children and its workflow to reclaim.
        """

        capabilities = replace(MemoryBackend.capabilities, atomic_settle=False)

        def _state(self):
            return self._space.__dict__.setdefault("deferred", {"on": False, "todo": []})

        @contextlib.contextmanager
        def interrupted(self):
            self._state()["on"] = True
            try:
                yield
            finally:
                self._state()["on"] = False

        def _apply(self, row, transition, now, requeued):
            state = self._state()
            if row.job.workflow is None or not transition.status.is_terminal or not state["on"]:
                return super()._apply(row, transition, now, requeued)
            state["writing"] = True
            try:
                self._write(row, transition, now, requeued)
            finally:
                state["writing"] = False
            state["todo"].append((row.job.id, transition.status))
            raise RuntimeError("crashed after the step's own write")

        def _step_ended(self, flow, status, now):
            if not self._state().get("writing"):
                super()._step_ended(flow, status, now)

        def reclaim_expired(self):
            count = super().reclaim_expired()
            self._recover()
            return count

        def _recover(self):
            with self._store.lock:
                now = datetime.now(UTC)
                todo = self._state()["todo"]
                while todo:
                    job_id, status = todo.pop(0)
                    flow = self._space.flows[self._space.rows[job_id].job.workflow]
                    super()._step_ended(flow, status, now)
                    settle(_Graph(self, now, set()), [(job_id, status)])


    class NeverRecovers(DeferredSettle):
        """Leaves what an interrupted settle did not do undone forever."""

        def _recover(self):
            pass


    class StandIn(MemoryBackend):
        capabilities = Capabilities(thread_safe=False, stand_in="fakestore")


    class Memory(MemoryBackend):
        pass
    '''
)

TEST = textwrap.dedent(
    """
    from backends import STORE, {cls}
    from qw_testkit import BackendContractTests


    class TestContract(BackendContractTests):
        settle_recovery_s = 1.0

        def make_backend(self, namespace):
            return {cls}(STORE, namespace=namespace)

        def interrupt_settle(self, client):
            hook = getattr(client.backend, "interrupted", None)
            return super().interrupt_settle(client) if hook is None else hook()
    """
)


@pytest.fixture(autouse=True)
def _no_shrinking(monkeypatch: pytest.MonkeyPatch) -> None:
    # A failure found with real sleeps takes minutes to shrink; here we only need it found.
    monkeypatch.setenv(PROFILE_ENV, "quick")


def _run(pytester: pytest.Pytester, cls: str, tests: list[str]) -> pytest.RunResult:
    pytester.makepyfile(backends=BACKENDS, test_contract=TEST.format(cls=cls))
    pytester.syspathinsert()
    ids = [f"test_contract.py::TestContract::{name}" for name in tests]
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q", "-rs", *ids)


CASES = {
    "DoubleClaim": [
        "test_a_leased_job_is_not_claimed_again",
        "test_threads_sharing_one_client_claim_each_job_once",
        "test_backend_agrees_with_the_model",
    ],
    "EventOnStaleToken": [
        "test_event_iff_transition_under_repeats_and_stale_tokens",
        "test_old_token_is_fenced_after_reclaim",
        "test_backend_agrees_with_the_model",
    ],
    "SharedNamespace": [
        "test_jobs_are_invisible_across_namespaces",
        "test_events_are_per_namespace",
        "test_switches_are_per_namespace",
        "test_workers_are_per_namespace",
    ],
    "IgnoresAttempt": ["test_a_lease_for_another_attempt_is_stale"],
    "PromotesOnFirstParent": [
        "test_a_diamond_joins_only_after_both_branches",
        "test_a_child_settles_only_when_its_last_parent_ends",
        "test_replayed_finishes_settle_nothing_twice",
        "test_threads_finishing_a_fan_in_promote_the_child_once",
        "test_workflows_agree_with_the_model",
    ],
    "WorkflowEventTwice": [
        "test_a_chain_runs_each_step_after_its_parent",
        "test_a_workflow_of_one_step_ends_with_it",
        "test_cancel_workflow_cancels_what_waits_and_flags_what_runs",
        "test_threads_finishing_a_fan_in_promote_the_child_once",
        "test_workflows_agree_with_the_model",
    ],
    "LateWorkflowEvent": [
        "test_a_chain_runs_each_step_after_its_parent",
        "test_a_failed_parent_cancels_its_descendants",
        "test_cancel_workflow_with_nothing_running_ends_it_at_once",
        "test_workflows_agree_with_the_model",
    ],
    "ClaimsWaiting": [
        "test_a_chain_runs_each_step_after_its_parent",
        "test_a_diamond_joins_only_after_both_branches",
        "test_a_retried_parent_promotes_its_child_once_after_success",
        "test_a_running_step_adds_steps_that_wait_for_it",
        "test_workflows_agree_with_the_model",
    ],
    "SettlesRepeats": ["test_replayed_finishes_settle_nothing_twice"],
    "NeverRecovers": ["test_an_interrupted_settle_is_completed_by_reclaim"],
    "ReclaimForgetsAttempt": [
        "test_expired_lease_is_reclaimed_to_queued",
        "test_reclaim_from_many_threads_counts_each_job_once",
    ],
}


@pytest.mark.parametrize("broken", sorted(CASES))
def test_the_kit_fails_a_broken_backend(pytester: pytest.Pytester, broken: str) -> None:
    tests = CASES[broken]
    result = _run(pytester, broken, tests)
    outcomes = result.parseoutcomes()
    # A broken fixture (setup error) is a failure too; a pass or skip is not.
    caught = outcomes.get("failed", 0) + outcomes.get("errors", 0)
    assert caught == len(tests), result.stdout.str()


#: The working backend each broken one is compared with, where it is not plain memory.
CONTROLS = {"NeverRecovers": "DeferredSettle"}


@pytest.mark.parametrize("broken", sorted(CASES))
def test_the_same_tests_pass_on_memory(pytester: pytest.Pytester, broken: str) -> None:
    tests = CASES[broken]
    result = _run(pytester, CONTROLS.get(broken, "Memory"), tests)
    result.assert_outcomes(passed=len(tests))


def test_a_non_atomic_settle_without_the_hook_is_skipped_naming_it(
    pytester: pytest.Pytester,
) -> None:
    result = _run(
        pytester, "NonAtomicWithoutHook", ["test_an_interrupted_settle_is_completed_by_reclaim"]
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*atomic_settle=False*interrupt_settle(self, client)*"])


def test_a_stand_in_is_reported_loudly_and_gates_name_it(pytester: pytest.Pytester) -> None:
    result = _run(
        pytester,
        "StandIn",
        ["test_threads_sharing_one_client_claim_each_job_once", "test_complete_stores_the_result"],
    )
    result.assert_outcomes(passed=1, skipped=1)
    out = result.stdout.str()
    assert "STAND-IN STORE" in out
    result.stdout.fnmatch_lines(["*does not declare capability thread_safe*stand-in 'fakestore'*"])
    result.stdout.fnmatch_lines(["*backend 'memory': thread_safe=False*"])
