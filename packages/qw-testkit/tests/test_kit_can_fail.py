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
    import time
    import uuid
    from collections import Counter
    from dataclasses import replace
    from datetime import UTC, datetime

    import qw
    import qw.backends.memory as memory_module
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


    # -- flow control: each defect is one wrong turn in an otherwise right store --


    @contextlib.contextmanager
    def swapped(name, wrap):
        """Memory's ``name`` (a rule it imports from qw.limits) replaced by ``wrap(real)``."""
        real = getattr(memory_module, name)
        setattr(memory_module, name, wrap(real))
        try:
            yield
        finally:
            setattr(memory_module, name, real)


    class _PlanWrapped(MemoryBackend):
        """Decides each claim with ``plan`` (given the real plan_claim) instead of plan_claim."""

        def plan(self, real, candidates, **state):
            return real(candidates, **state)

        def _within_limits(self, due, now, limit):
            wrap = lambda real: lambda candidates, **state: self.plan(real, candidates, **state)
            with swapped("plan_claim", wrap):
                return super()._within_limits(due, now, limit)


    class IgnoresConcurrency(_PlanWrapped):
        """Decides claims as if no job of any key were running."""

        def plan(self, real, candidates, **state):
            return real(candidates, **{**state, "running": {}})


    class ReclaimKeepsTheSlot(_PlanWrapped):
        """Keeps counting a reclaimed job as running: a counter reclaim forgets to lower."""

        def reclaim_expired(self):
            with self._store.lock:
                rows = self._space.rows.values()
                held = [r for r in rows if r.job.status is qw.JobStatus.RUNNING and r.job.limit_key]
                count = super().reclaim_expired()
                ghosts = self._space.__dict__.setdefault("ghosts", Counter())
                for row in held:
                    if row.job.status is not qw.JobStatus.RUNNING:
                        ghosts[row.job.limit_key] += 1
            return count

        def plan(self, real, candidates, **state):
            ghosts = self._space.__dict__.get("ghosts", Counter())
            running = Counter(state["running"]) + ghosts
            return real(candidates, **{**state, "running": dict(running)})


    class IgnoresRate(_PlanWrapped):
        """Never counts a start, so a rate never holds a job back."""

        def plan(self, real, candidates, **state):
            return real(candidates, **{**state, "starts": {}})


    class WindowNeverSlides(_PlanWrapped):
        """Counts every start a key ever had: its window's bound is compared the wrong way."""

        def plan(self, real, candidates, **state):
            now = state["now"]
            starts = {k: [now] * len(v) for k, v in state["starts"].items()}
            return real(candidates, **{**state, "starts": starts})


    class IgnoresOverrides(_PlanWrapped):
        """Holds jobs to the limit they declare, never to the operators' limit."""

        def plan(self, real, candidates, **state):
            return real(candidates, **{**state, "overrides": {}})


    class StopsAtHeldBack(_PlanWrapped):
        """Ends a claim at the first job held back instead of going on past it."""

        def plan(self, real, candidates, **state):
            taken = real(candidates, **state)
            prefix = []
            for expected, index in enumerate(taken):
                if index != expected:
                    break
                prefix.append(index)
            return prefix


    class TouchesHeldBack(MemoryBackend):
        """Counts an attempt on every due job a claim passes over."""

        def _within_limits(self, due, now, limit):
            chosen = super()._within_limits(due, now, limit)
            for row in due:
                if row not in chosen:
                    row.job = replace(row.job, attempts=row.job.attempts + 1)
            return chosen


    class UnfairRanks(MemoryBackend):
        """Ignores fairness: every job gets rank 0, so claims stay FIFO across keys."""

        def _rank(self, new):
            return 0


    class FairClockIgnored(MemoryBackend):
        """Ranks a fair job by its key's own count alone, never by the queue's fair clock."""

        def _rank(self, new):
            with swapped("fair_rank", lambda real: lambda next_rank, clock: next_rank):
                return super()._rank(new)


    class RequeueResetsRank(MemoryBackend):
        """Sets a job's fair rank back to 0 when it returns to queued (retry, release, reclaim)."""

        def _write(self, row, transition, now, requeued):
            super()._write(row, transition, now, requeued)
            if transition.status is qw.JobStatus.QUEUED:
                row.rank = 0


    class ListIgnoresKey(MemoryBackend):
        """Drops the key filter of list_jobs."""

        def list_jobs(self, *, key=None, **filters):
            return super().list_jobs(**filters)


    class ForgetsLimit(MemoryBackend):
        """Reads jobs back without the limit they declared (it still enforces it)."""

        def _strip(self, job):
            return None if job is None else replace(job, limit=None)

        def get(self, job_id):
            return self._strip(super().get(job_id))

        def get_many(self, job_ids):
            return [self._strip(j) for j in super().get_many(job_ids)]

        def list_jobs(self, **filters):
            return [self._strip(j) for j in super().list_jobs(**filters)]


    class AdvanceNotAtomic(MemoryBackend):
        """Reads the tick and writes it in two steps: racers with one tick both win."""

        def advance_schedule(self, name, tick):
            with self._store.lock:
                known = self._space.schedules.get(name)
            if known is None or (known.last_tick is not None and tick <= known.last_tick):
                return False
            time.sleep(0.001)
            with self._store.lock:
                self._space.schedules[name] = replace(known, last_tick=tick)
            return True


    class AdvanceOnEqualTick(MemoryBackend):
        """Moves the tick on an equal tick too (>= for >): one tick wins twice."""

        def advance_schedule(self, name, tick):
            with self._store.lock:
                known = self._space.schedules.get(name)
                if known is None or (known.last_tick is not None and tick < known.last_tick):
                    return False
                self._space.schedules[name] = replace(known, last_tick=tick)
                return True


    class SaveResetsTick(MemoryBackend):
        """Saves a schedule whole, its last_tick included, instead of keeping the stored tick."""

        def save_schedule(self, schedule):
            with self._store.lock:
                self._space.schedules[schedule.name] = schedule


    class NoFlowControl(MemoryBackend):
        """Declares neither limits nor schedules."""

        capabilities = replace(MemoryBackend.capabilities, limits=False, schedules=False)


    # -- retry: each defect is one wrong turn in an otherwise right retry --


    class RetryDoesNotRequeue(MemoryBackend):
        """Answers a retry of a failed or cancelled job with queued, and writes nothing."""

        def retry(self, job_id):
            job = self.get(job_id)
            if job is not None and job.workflow is None and job.status in (
                qw.JobStatus.FAILED,
                qw.JobStatus.CANCELLED,
            ):
                return qw.JobStatus.QUEUED
            return super().retry(job_id)


    class RetryResetsAttempts(MemoryBackend):
        """Starts a retried job's attempts from zero, as if it were new."""

        def retry(self, job_id):
            status = super().retry(job_id)
            with self._store.lock:
                row = self._space.rows.get(job_id)
                if row is not None and row.job.status is qw.JobStatus.QUEUED:
                    row.job = replace(row.job, attempts=0)
            return status


    class RetriesSteps(MemoryBackend):
        """Decides a retry as if no job were a workflow step: a failed step runs again."""

        def retry(self, job_id):
            wrap = lambda real: lambda s, a, m, w, **kw: real(s, a, m, None, **kw)
            with swapped("plan_retry", wrap):
                return super().retry(job_id)


    class RetryIgnoresHolder(MemoryBackend):
        """Never looks for a live holder of the retried job's dedupe key."""

        def retry(self, job_id):
            wrap = lambda real: lambda *args, holder=None, **kw: real(*args, **kw)
            with swapped("plan_retry", wrap):
                return super().retry(job_id)


    class RetryWithoutEvent(MemoryBackend):
        """Requeues the job but writes no job.retried event."""

        def _emit(self, job_id, type_, data, now):
            if type_ != "job.retried":
                super()._emit(job_id, type_, data, now)


    class RetryWakesNobody(MemoryBackend):
        """Requeues the job without waking the workers waiting on its queue."""

        def retry(self, job_id):
            hub = self._space.hub
            hub.notify = lambda queues: None
            try:
                return super().retry(job_id)
            finally:
                del hub.notify


    class RetryNotAtomic(MemoryBackend):
        """Reads the job, decides, then writes in a second step: racing retries all apply."""

        def retry(self, job_id):
            job = self.get(job_id)
            if job is None:
                return None
            t = memory_module.plan_retry(
                job.status, job.attempts, job.max_attempts, job.workflow,
                job_id=job_id, queue=job.queue,
            )
            if t is None:
                return job.status
            time.sleep(0.01)
            requeued = set()
            with self._store.lock:
                self._write(self._space.rows[job_id], t, datetime.now(UTC), requeued)
            self._space.hub.notify(requeued)
            return t.status


    # -- calls over many queues --

    class SplitsBatches(MemoryBackend):
        """Shards its queues, and commits a spanning batch's first queue before refusing it."""

        capabilities = replace(MemoryBackend.capabilities, cross_queue_atomic=False)

        def enqueue(self, jobs):
            queues = list(dict.fromkeys(j.queue for j in jobs))
            if len(queues) > 1:
                super().enqueue([j for j in jobs if j.queue == queues[0]])
                raise qw.errors.CrossShard("this batch spans shards")
            return super().enqueue(jobs)


    class DropsOverflow(MemoryBackend):
        """Claims up to the limit from each queue, then returns only the first ``limit``."""

        def claim(self, queues, *, worker, lease_s, limit):
            claims = []
            for queue in queues:
                claims += super().claim([queue], worker=worker, lease_s=lease_s, limit=limit)
            return claims[:limit]


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


#: The limit model test is named only where it cannot miss (ForgetsLimit: any
#: job with a limit shows it). It also finds the other limit defects in most
#: quick-profile runs (measured: IgnoresConcurrency and StopsAtHeldBack about
#: 1 run in 60 to 100 missed, IgnoresRate, IgnoresOverrides and UnfairRanks
#: about 1 in 8 to 13), and the deterministic tests named for them always do.
CASES = {
    "SplitsBatches": ["test_a_batch_over_many_queues_is_all_or_nothing"],
    "DropsOverflow": ["test_claims_over_many_queues_take_each_job_once_in_queue_order"],
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
        "test_limits_and_keys_are_per_namespace",
        "test_schedules_are_per_namespace",
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
    "IgnoresConcurrency": [
        "test_a_concurrency_limit_is_never_exceeded_by_racing_threads",
        "test_a_claim_takes_only_the_free_slots",
        "test_a_key_counts_its_jobs_in_every_queue",
        "test_every_exit_from_running_frees_the_slot[complete]",
    ],
    "ReclaimKeepsTheSlot": [
        "test_every_exit_from_running_frees_the_slot[reclaim]",
        "test_every_exit_from_running_frees_the_slot[reclaim_final]",
    ],
    "IgnoresRate": [
        "test_a_rate_limit_holds_starts_to_a_window_on_the_stores_clock",
        "test_an_operators_rate_replaces_the_jobs_concurrency",
    ],
    "WindowNeverSlides": ["test_a_rate_limit_holds_starts_to_a_window_on_the_stores_clock"],
    "IgnoresOverrides": [
        "test_concurrency_zero_pauses_a_key_and_removing_it_resumes",
        "test_an_operators_limit_replaces_the_jobs_own_at_claim",
        "test_an_operators_rate_replaces_the_jobs_concurrency",
    ],
    "StopsAtHeldBack": [
        "test_a_throttled_key_never_blocks_other_keys",
        "test_a_held_back_job_stays_queued_untouched",
    ],
    "TouchesHeldBack": ["test_a_held_back_job_stays_queued_untouched"],
    "UnfairRanks": [
        "test_a_long_backlog_does_not_starve_a_key_with_a_few_jobs",
        "test_claim_order_is_priority_then_fair_rank_then_fifo",
        "test_fair_ranks_are_per_queue",
    ],
    "FairClockIgnored": ["test_a_key_arriving_late_starts_at_the_queues_fair_clock"],
    "RequeueResetsRank": [
        "test_fair_ranks_are_kept_by_a_retry_a_release_and_a_reclaim[release]",
        "test_fair_ranks_are_kept_by_a_retry_a_release_and_a_reclaim[reclaim]",
    ],
    "ListIgnoresKey": ["test_list_jobs_filters_by_key"],
    "ForgetsLimit": [
        "test_jobs_read_back_their_key_limit_and_fairness",
        "test_claims_agree_with_the_limit_model",
    ],
    "AdvanceNotAtomic": ["test_racing_threads_advance_each_tick_exactly_once"],
    "AdvanceOnEqualTick": [
        "test_advance_moves_the_tick_only_forward",
        "test_a_tick_in_another_zone_is_the_same_instant",
        "test_racing_threads_advance_each_tick_exactly_once",
    ],
    "SaveResetsTick": ["test_save_keeps_the_stored_tick"],
    "RetryDoesNotRequeue": [
        "test_retry_queues_a_failed_job_again_and_it_runs_to_success",
        "test_retry_queues_a_cancelled_job_again",
        "test_retry_gives_a_job_out_of_attempts_exactly_one_more",
        "test_retry_wakes_an_idle_worker",
    ],
    "RetryResetsAttempts": [
        "test_retry_queues_a_failed_job_again_and_it_runs_to_success",
        "test_retry_gives_a_job_out_of_attempts_exactly_one_more",
    ],
    "RetriesSteps": ["test_retry_refuses_a_workflow_step_and_leaves_it_as_it_is"],
    "RetryIgnoresHolder": ["test_retry_refuses_a_dedupe_key_another_live_job_holds"],
    "RetryWithoutEvent": [
        "test_retry_commits_its_event_with_it",
        "test_racing_retry_calls_requeue_the_job_once",
        "test_async_client_retry_answers_as_the_sync_one",
    ],
    "RetryWakesNobody": ["test_retry_wakes_an_idle_worker"],
    "RetryNotAtomic": ["test_racing_retry_calls_requeue_the_job_once"],
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


def test_a_store_without_flow_control_is_skipped_naming_the_flags(
    pytester: pytest.Pytester,
) -> None:
    result = _run(
        pytester,
        "NoFlowControl",
        [
            "test_a_claim_takes_only_the_free_slots",
            "test_save_keeps_the_stored_tick",
            "test_a_store_without_limits_refuses_them",
            "test_a_store_without_schedules_refuses_them",
        ],
    )
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*backend 'memory' does not declare capability limits*"])
    result.stdout.fnmatch_lines(["*backend 'memory' does not declare capability schedules*"])


# -- periodic jobs: scheduler processes on a broken store -----------------------

#: SQLite under other names (memory is not multi_process), registered as qw
#: backends by a distribution the test writes, so that the scheduler processes
#: of the periodic test open them by URL as a user's would.
PERIODIC_BACKENDS = textwrap.dedent(
    '''
    from qw.backends.sqlite import _rows
    from qw.backends.sqlite.backend import SqliteBackend
    from qw.plugin import hookimpl


    class _Renamed(SqliteBackend):
        @classmethod
        def from_url(cls, url, *, namespace):
            return super().from_url("sqlite" + url[url.index(":") :], namespace=namespace)


    class PlainSqlite(_Renamed):
        """SQLite as it is."""

        name = "plainsqlite"


    class AdvanceAlwaysMoves(_Renamed):
        """Writes any tick over the stored one and says it moved: no compare-and-set."""

        name = "alwaysmoves"

        def advance_schedule(self, name, tick):
            self._db.write(
                lambda conn, _now: conn.execute(
                    "UPDATE qw_schedules SET last_tick = ? WHERE namespace = ? AND name = ?",
                    (_rows.tick(tick), self._namespace, name),
                )
            )
            return True


    @hookimpl
    def qw_register_backends():
        return [PlainSqlite, AdvanceAlwaysMoves]
    '''
)

PERIODIC_TEST = textwrap.dedent(
    """
    from pathlib import Path

    from periodic_backends import {cls}
    from qw_testkit import BackendContractTests

    DB = Path(__file__).resolve().with_name("qw.db")


    class TestContract(BackendContractTests):
        def make_backend(self, namespace):
            return {cls}.from_url(self.backend_url(), namespace=namespace)

        def backend_url(self):
            return f"{{{cls}.name}}:///{{DB}}"
    """
)

PERIODIC = "test_periodic_schedules_enqueue_one_job_per_tick_across_processes_and_a_restart"


def _periodic_run(pytester: pytest.Pytester, cls: str) -> pytest.RunResult:
    pytester.makepyfile(
        periodic_backends=PERIODIC_BACKENDS, test_contract=PERIODIC_TEST.format(cls=cls)
    )
    # A distribution's metadata on sys.path (the children's too) announces the backends.
    info = pytester.mkdir("qw_periodic_selftest-0.dist-info")
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: qw-periodic-selftest\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(
        "[qw.backends]\nplainsqlite = periodic_backends\nalwaysmoves = periodic_backends\n"
    )
    pytester.syspathinsert()
    node = f"test_contract.py::TestContract::{PERIODIC}"
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q", "-s", node)


def test_the_periodic_test_fails_a_store_whose_advance_is_no_compare_and_set(
    pytester: pytest.Pytester,
) -> None:
    result = _periodic_run(pytester, "AdvanceAlwaysMoves")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*advance_schedule answered True to more than one scheduler*"])


def test_the_periodic_test_passes_on_sqlite_registered_the_same_way(
    pytester: pytest.Pytester,
) -> None:
    result = _periodic_run(pytester, "PlainSqlite")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["periodic plainsqlite: * ticks, * jobs, 8 processes*1 restart*"])


# -- the application's transaction: SQLite stores that break it ------------------

#: SQLite as it is, and two ways of not writing in the application's transaction.
TX_BACKENDS = textwrap.dedent(
    '''
    from qw.backends.memory import MemoryBackend
    from qw.backends.sqlite.backend import SqliteBackend


    class PlainSqlite(SqliteBackend):
        """SQLite as it is."""


    class CommitsTheApps(SqliteBackend):
        """Writes in the application's transaction, then commits it."""

        def enqueue_in(self, connection, jobs):
            answers = super().enqueue_in(connection, jobs)
            connection.commit()
            return answers

        def create_workflow_in(self, connection, workflow, steps):
            created = super().create_workflow_in(connection, workflow, steps)
            connection.commit()
            return created

        def finish_in(self, connection, finishes):
            answers = super().finish_in(connection, finishes)
            connection.commit()
            return answers


    class WritesThroughItsOwn(SqliteBackend):
        """Checks the application's connection, then writes through its own, committed at once."""

        def enqueue_in(self, connection, jobs):
            self._db._check_same_file(connection)
            return self.enqueue(jobs)

        def create_workflow_in(self, connection, workflow, steps):
            self._db._check_same_file(connection)
            return self.create_workflow(workflow, steps)

        def finish_in(self, connection, finishes):
            self._db._check_same_file(connection)
            return self.finish(finishes)


    class NotTransactional(MemoryBackend):
        """The reference store, which does not declare transactional."""

        def __init__(self, path, *, namespace, **options):
            super().__init__("tx-selftest", namespace=namespace)
    '''
)

TX_TEST = textwrap.dedent(
    """
    import contextlib
    import sqlite3
    from pathlib import Path

    from tx_backends import {cls}
    from qw_testkit import TransactionTests

    DB = Path(__file__).resolve().with_name("qw.db")


    class TestContract(TransactionTests):
        def make_backend(self, namespace):
            # A writer blocked by the app's open transaction gives up after 1 s.
            return {cls}(DB, namespace=namespace, shared=True, busy_timeout_ms=1000)
    {hook}
    """
)

TX_HOOK = """
    @contextlib.contextmanager
    def app_connection(self):
        conn = sqlite3.connect(DB)
        try:
            yield conn
        finally:
            conn.close()
"""

#: The kit's transaction tests that need the capability (and the hook).
TX_TESTS = [
    "test_jobs_enqueued_in_a_committed_transaction_are_claimable",
    "test_jobs_enqueued_in_a_rolled_back_transaction_never_exist",
    "test_jobs_are_invisible_to_another_client_until_the_commit",
    "test_a_workflow_created_in_the_transaction_exists_only_once_committed",
    "test_complete_in_the_transaction_commits_with_the_apps_row",
    "test_complete_in_a_rolled_back_transaction_leaves_the_job_running",
    "test_a_stale_lease_raises_lease_lost_and_the_apps_row_is_rolled_back",
    "test_what_is_no_connection_of_the_store_is_refused_before_any_write[object]",
    "test_what_is_no_connection_of_the_store_is_refused_before_any_write[url]",
]
UNSUPPORTED = "test_without_the_capability_connection_is_unsupported"

#: What each broken store must fail: every test whose point it misses.
TX_CASES = {
    name: [
        "test_jobs_enqueued_in_a_rolled_back_transaction_never_exist",
        "test_jobs_are_invisible_to_another_client_until_the_commit",
        "test_a_workflow_created_in_the_transaction_exists_only_once_committed",
        "test_complete_in_the_transaction_commits_with_the_apps_row",
        "test_complete_in_a_rolled_back_transaction_leaves_the_job_running",
        "test_a_stale_lease_raises_lease_lost_and_the_apps_row_is_rolled_back",
    ]
    for name in ("CommitsTheApps", "WritesThroughItsOwn")
}


def _tx_run(
    pytester: pytest.Pytester, cls: str, tests: list[str], *, hook: bool = True
) -> pytest.RunResult:
    pytester.makepyfile(
        tx_backends=TX_BACKENDS,
        test_contract=TX_TEST.format(cls=cls, hook=TX_HOOK if hook else ""),
    )
    pytester.syspathinsert()
    ids = [f"test_contract.py::TestContract::{name}" for name in tests]
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q", "-rs", *ids)


@pytest.mark.parametrize("broken", sorted(TX_CASES))
def test_the_transaction_tests_fail_a_store_that_leaves_the_apps_transaction(
    pytester: pytest.Pytester, broken: str
) -> None:
    tests = TX_CASES[broken]
    outcomes = _tx_run(pytester, broken, tests).parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == len(tests), outcomes


def test_the_transaction_tests_pass_on_sqlite(pytester: pytest.Pytester) -> None:
    result = _tx_run(pytester, "PlainSqlite", [*TX_TESTS, UNSUPPORTED])
    result.assert_outcomes(passed=len(TX_TESTS), skipped=1)
    result.stdout.fnmatch_lines(["*'sqlite' declares capability transactional*"])


def test_a_transactional_store_without_the_hook_fails_naming_it(
    pytester: pytest.Pytester,
) -> None:
    result = _tx_run(pytester, "PlainSqlite", TX_TESTS[:2], hook=False)
    # The connection fixture fails: a setup error, which fails the run as a test failure does.
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*declares capability transactional*app_connection(self)*"])


def test_a_store_without_the_capability_refuses_connection_and_skips_the_rest(
    pytester: pytest.Pytester,
) -> None:
    result = _tx_run(pytester, "NotTransactional", [*TX_TESTS[:2], UNSUPPORTED], hook=False)
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*backend 'memory' does not declare capability transactional*"])


# -- progress and result wake-ups: memory stores that break them ----------------

#: Memory as it is, and stores whose progress or result wake-up is broken.
PR_BACKENDS = textwrap.dedent(
    '''
    import time
    from dataclasses import replace
    from datetime import UTC, datetime

    from qw.backends.memory import MemoryBackend
    from qw.model import PROGRESS_EVENT, Progress

    STORE = "progress-selftest"


    class Memory(MemoryBackend):
        """The reference store."""


    class ProgressIgnoresFence(MemoryBackend):
        """Stores any report for a job it has, held or not: no fence."""

        def set_progress(self, lease, fraction, message, event_data):
            with self._store.lock:
                row = self._space.rows.get(lease.job_id)
                if row is None:
                    return False
                now = datetime.now(UTC)
                row.job = replace(row.job, progress=Progress(fraction, message, now))
                self._emit(row.job.id, PROGRESS_EVENT, event_data, now)
                return True


    class ProgressWithoutEvent(MemoryBackend):
        """Stores the report on the job but writes no event for it."""

        def set_progress(self, lease, fraction, message, event_data):
            with self._store.lock:
                row = self._held(lease)
                if row is None:
                    return False
                row.job = replace(row.job, progress=Progress(fraction, message, datetime.now(UTC)))
                return True


    class NeverWakes(MemoryBackend):
        """Answers an ended job at once, and otherwise only at the timeout."""

        def wait_finished(self, job_id, timeout):
            job = self.get(job_id)
            if job is None or job.status.is_terminal:
                return job
            time.sleep(timeout)
            return self.get(job_id)


    class WakesOnAnyChange(MemoryBackend):
        """Returns as soon as the job changes (a claim, a retry), terminal or not."""

        def wait_finished(self, job_id, timeout):
            first = self.get(job_id)
            deadline = time.monotonic() + timeout
            while first is not None and not first.status.is_terminal:
                job = self.get(job_id)
                if job != first or time.monotonic() >= deadline:
                    return job
                time.sleep(0.01)
            return first
    '''
)

PR_TEST = textwrap.dedent(
    """
    from pr_backends import STORE, {cls}
    from qw_testkit import ProgressTests, ResultTests


    class TestContract(ProgressTests, ResultTests):
        # A waiter that is not woken returns after this: late, but not slow to find.
        result_wait_s = 3.0

        def make_backend(self, namespace):
            return {cls}(STORE, namespace=namespace)
    """
)

STALE = [
    f"test_a_stale_lease_raises_lease_lost_and_changes_nothing[{how}]"
    for how in ("finished", "reclaimed", "another_attempt", "forged", "attempt")
]
WOKEN = [
    "test_a_waiter_is_woken_when_another_client_completes_the_job",
    "test_cancelling_a_queued_job_wakes_the_waiter",
    "test_a_reclaim_to_failed_wakes_the_waiter",
    "test_cancelling_a_workflow_wakes_a_waiter_on_its_waiting_step",
    "test_a_step_cancelled_by_its_parents_failure_wakes_the_waiter",
]

#: What each broken store must fail: every test whose point it misses.
PR_CASES = {
    "ProgressIgnoresFence": [
        *STALE,
        "test_progress_is_per_namespace",
        "test_racing_reports_and_a_finish_keep_one_event_per_applied_report",
    ],
    "ProgressWithoutEvent": [
        "test_a_report_on_a_held_lease_sets_progress_and_writes_one_event",
        "test_each_report_replaces_the_last_and_has_its_own_event",
        "test_racing_reports_and_a_finish_keep_one_event_per_applied_report",
    ],
    "NeverWakes": [*WOKEN, "test_a_retry_does_not_wake_the_waiter_with_a_live_job"],
    "WakesOnAnyChange": ["test_a_retry_does_not_wake_the_waiter_with_a_live_job"],
}


def _pr_run(pytester: pytest.Pytester, cls: str, tests: list[str]) -> pytest.RunResult:
    pytester.makepyfile(pr_backends=PR_BACKENDS, test_contract=PR_TEST.format(cls=cls))
    pytester.syspathinsert()
    ids = [f"test_contract.py::TestContract::{name}" for name in tests]
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q", "-rs", *ids)


@pytest.mark.parametrize("broken", sorted(PR_CASES))
def test_the_progress_and_result_tests_fail_a_broken_store(
    pytester: pytest.Pytester, broken: str
) -> None:
    tests = PR_CASES[broken]
    result = _pr_run(pytester, broken, tests)
    outcomes = result.parseoutcomes()
    caught = outcomes.get("failed", 0) + outcomes.get("errors", 0)
    assert caught == len(tests), result.stdout.str()


@pytest.mark.parametrize("broken", sorted(PR_CASES))
def test_the_same_progress_and_result_tests_pass_on_memory(
    pytester: pytest.Pytester, broken: str
) -> None:
    tests = PR_CASES[broken]
    _pr_run(pytester, "Memory", tests).assert_outcomes(passed=len(tests))


def test_a_store_without_progress_or_result_wakeup_is_skipped_naming_them(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        pr_backends=PR_BACKENDS
        + textwrap.dedent(
            '''

            from qw.capabilities import Capabilities


            class Undeclared(MemoryBackend):
                """Memory, declaring neither progress nor result_wakeup."""

                capabilities = Capabilities(progress=False, result_wakeup=False)
            '''
        ),
        test_contract=PR_TEST.format(cls="Undeclared"),
    )
    pytester.syspathinsert()
    tests = [
        "test_a_report_on_a_held_lease_sets_progress_and_writes_one_event",
        "test_a_waiter_is_woken_when_another_client_completes_the_job",
        "test_waiting_for_an_unknown_job_is_job_not_found",
    ]
    ids = [f"test_contract.py::TestContract::{name}" for name in tests]
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q", "-rs", *ids)
    # The unknown-job test needs no capability: the client's poll answers it.
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(
        [
            "*backend 'memory' does not declare capability progress*",
            "*backend 'memory' does not declare capability result_wakeup*",
        ]
    )
