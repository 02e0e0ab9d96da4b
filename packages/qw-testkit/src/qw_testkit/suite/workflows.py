"""Workflows: steps wait for their parents; a step's end settles its children, the last ends it.

What is checked, in the contract's words (``qw.contract``, the workflows
section): a step with parents is ``waiting`` (never claimable, but live for
its dedupe key) until every parent has ended; the write that ends a step
counts it for each waiting child, and a child whose last parent ended is
queued, or cancelled (``ParentFailure.CANCEL`` with a failed or cancelled
parent), carrying on through its own children; the write that ends a
workflow's last live step ends the workflow and writes its one
``workflow.<state>`` event. The expected answers here are written out by
hand: nothing in this module asks ``qw.transitions`` what should happen.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import qw
from qw.contract import Abort, Complete, Fail, Outcome, Release
from qw.errors import DuplicateJob, InvalidPayload, InvalidWorkflow, LeaseLost, WorkflowNotFound
from qw.model import (
    Claim,
    Job,
    JobStatus,
    JSONValue,
    NewJob,
    ParentFailure,
    Workflow,
    WorkflowState,
)
from qw.validation import MAX_WORKFLOW_STEPS
from qw_testkit.base import (
    ContractBase,
    OpenClient,
    Snapshot,
    new_namespace,
    race_processes,
    snapshot,
)
from qw_testkit.children import finish_steps_until_done, finish_steps_until_killed
from qw_testkit.gates import requires
from qw_testkit.suite.state_machine import machine_settings
from qw_testkit.suite.workflow_model import (
    SOME_PARENT,
    StepSpec,
    WorkflowModel,
    same_failed_parents,
)

WAITING = JobStatus.WAITING
QUEUED = JobStatus.QUEUED
RUNNING = JobStatus.RUNNING
SUCCEEDED = JobStatus.SUCCEEDED
FAILED = JobStatus.FAILED
CANCELLED = JobStatus.CANCELLED
RUN = ParentFailure.RUN
CANCEL = ParentFailure.CANCEL

#: Short, real leases (as in the lease tests): long enough to act within.
SHORT = 0.2
PAST_SHORT = SHORT + 0.15
#: How soon a waiting worker must have a step promoted on its queue.
PROMPT = 1.0
#: The largest graph of the module: this many parents of one child.
FAN_IN = 1000
THREADS = 8
PROCESSES = 4
#: Seconds a race may take before the kit gives up on it (a failure, not a hang).
DEADLINE = 90.0
#: The kill -9 test: this many parents of one child, finished by a process
#: killed this many times, holding leases this long.
KILLED_PARENTS = 200
KILLS = 3
KILLED_LEASE = 1.0


# -- helpers -------------------------------------------------------------------


def step(
    workflow: str,
    name: str,
    *parents: str,
    queue: str = "q",
    policy: ParentFailure = CANCEL,
    **options: object,
) -> NewJob:
    """The step ``workflow.name``, its parents named the same way, payload ``{"step": name}``."""
    return NewJob(
        queue,
        {"step": name},
        id=f"{workflow}.{name}",
        parents=tuple(f"{workflow}.{p}" for p in parents),
        on_parent_failure=policy,
        **options,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class WorkflowSnapshot:
    """A namespace's observable state, its workflows included."""

    namespace: Snapshot
    workflows: list[Workflow]


def workflow_snapshot(client: qw.Client) -> WorkflowSnapshot:
    return WorkflowSnapshot(snapshot(client), client.list_workflows(limit=10_000))


def nonzero(counts: Mapping[JobStatus, int]) -> dict[JobStatus, int]:
    """Counts without the statuses that have no step (a store may list them or not)."""
    return {JobStatus(s): n for s, n in counts.items() if n}


def statuses(client: qw.Client, ids: Sequence[str]) -> list[JobStatus | None]:
    return [None if job is None else job.status for job in client.get_many(ids)]


def jobs_of(client: qw.Client, ids: Sequence[str]) -> list[Job]:
    jobs = client.get_many(ids)
    missing = [i for i, job in zip(ids, jobs, strict=True) if job is None]
    assert not missing, f"steps lost: {missing}"
    return [job for job in jobs if job is not None]


def events(client: qw.Client) -> list[tuple[str, str, JSONValue]]:
    """Every unacknowledged event, as (job_id, type, data)."""
    return [(e.job_id, e.type, e.data) for e in client.fetch_events(limit=10_000)]


def workflow_events(client: qw.Client) -> list[tuple[str, str, JSONValue]]:
    return [e for e in events(client) if e[1].startswith("workflow.")]


def ended_event(workflow: str, state: str) -> tuple[str, str, JSONValue]:
    """The one event a workflow's end writes: its job_id is the workflow's id."""
    return (workflow, f"workflow.{state}", {"workflow": workflow, "state": state})


def cancelled_event(job_id: str, queue: str = "q") -> tuple[str, str, JSONValue]:
    """The event of a queued or waiting step cancelled by an operator."""
    return (job_id, "job.cancelled", {"queue": queue, "reason": "cancelled"})


def parent_failed_event(job_id: str, parent: str, queue: str = "q") -> tuple[str, str, JSONValue]:
    """The event of a step cancelled because ``parent`` ended failed or cancelled."""
    return (job_id, "job.cancelled", {"queue": queue, "reason": "parent_failed", "parent": parent})


def claim_ids(
    client: qw.Client, queues: Sequence[str] = ("q",), limit: int = 100, lease_s: float = 30.0
) -> list[Claim]:
    return client.claim(list(queues), worker="w-flow", lease_s=lease_s, limit=limit)


def ids_of(claims: Sequence[Claim]) -> list[str]:
    return [c.job.id for c in claims]


def recover(client: qw.Client, done: Callable[[], bool], what: str, seconds: float) -> None:
    """Call ``reclaim_expired`` until ``done()`` holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        client.reclaim_expired()
        if done():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"reclaim_expired never completed {what} within {seconds} s")
        time.sleep(0.1)


def bad_calls(client: qw.Client, lease: qw.Lease, w: str) -> dict[str, Callable[[], object]]:
    """Calls the client must refuse before writing anything, by name.

    ``lease`` holds ``other.x``, a step of the workflow ``other`` (whose
    other step is ``other.y``); ``w`` is the id of a workflow to create.
    """

    def create(
        steps: list[NewJob], output: str | None = None, wid: str = w
    ) -> Callable[[], object]:
        return lambda: client.create_workflow(wid, steps, output=output)

    def odd(**fields: Any) -> NewJob:
        # A step with a field of the wrong type, as untyped callers may send.
        return NewJob("q", 1, id=f"{w}.odd", **fields)

    return {
        "cycle": create([step(w, "a", "c"), step(w, "b", "a"), step(w, "c", "b")]),
        "self_parent": create([step(w, "a", "a")]),
        "unknown_parent": create([step(w, "a"), step(w, "b", "z")]),
        "parent_in_another_workflow": create([step(w, "a"), odd(parents=("other.x",))]),
        # The count is refused before any step is looked at (one object, many times:
        # building 100,000 distinct steps would cost a second).
        "too_many_steps": create([step(w, "a")] * (2 * MAX_WORKFLOW_STEPS)),
        "no_steps": create([]),
        "non_json_payload": create([step(w, "a"), NewJob("q", cast(Any, {1: 2}), id=f"{w}.b")]),
        "nan_payload": create([step(w, "a"), NewJob("q", float("nan"), id=f"{w}.b")]),
        "bad_workflow_id": create([step(w, "a")], wid="has space"),
        "long_workflow_id": create([step(w, "a")], wid="w" * 41),
        "bad_step_id": create([NewJob("q", 1, id="bad step")]),
        "output_not_a_step": create([step(w, "a")], output="other.x"),
        "parents_not_a_tuple": create([step(w, "a"), odd(parents=[f"{w}.a"])]),
        "policy_not_a_parent_failure": create(
            [step(w, "a"), odd(parents=(f"{w}.a",), on_parent_failure="run")]
        ),
        "same_id_twice": create([step(w, "a"), step(w, "a")]),
        "parents_on_a_plain_job": lambda: client.enqueue(
            [NewJob("q", 1, id="plain.1", parents=("other.y",))]
        ),
        "add_steps_cycle": lambda: client.add_steps(
            lease, "other", [step("other", "m", "n"), step("other", "n", "m")]
        ),
        "add_steps_unknown_parent": lambda: client.add_steps(
            lease, "other", [step("other", "m", "y")]
        ),
    }


class WorkflowTests(ContractBase):
    #: How long a backend that settles after the step's write (``atomic_settle=False``)
    #: may take, over repeated ``reclaim_expired`` calls, to complete what a crash left.
    settle_recovery_s: float = 10.0

    # -- helpers -----------------------------------------------------------

    def expect_counts(
        self, client: qw.Client, workflow: str, want: dict[JobStatus, int], queue: str = "q"
    ) -> Workflow:
        """The workflow's counts, and ``counts()`` of its one queue, are ``want``."""
        got = client.get_workflow(workflow)
        assert nonzero(got.counts) == nonzero(want), f"workflow {workflow} counts"
        assert client.counts()[queue] == {s: want.get(s, 0) for s in JobStatus}
        return got

    def url_or_skip(self) -> str:
        url = self.backend_url()
        if url is None:
            pytest.skip(
                f"{type(self).__name__}.backend_url() returns None, so child processes "
                "cannot open the store"
            )
        return url

    # -- shape and order ---------------------------------------------------

    def test_a_chain_runs_each_step_after_its_parent(self, client: qw.Client) -> None:
        w = "chain"
        a, b, c = (f"{w}.{n}" for n in "abc")
        before = client.now()
        answer = client.create_workflow(
            w, [step(w, "a"), step(w, "b", "a"), step(w, "c", "b")], output=c
        )
        assert answer == qw.Enqueued(w, True)
        flow = self.expect_counts(client, w, {QUEUED: 1, WAITING: 2})
        assert (flow.id, flow.state, flow.output) == (w, WorkflowState.RUNNING, c)
        assert (flow.finished_at, flow.cancel_requested, flow.steps) == (None, False, 3)
        assert abs((flow.created_at - before).total_seconds()) < 5
        ja, jb, jc = jobs_of(client, [a, b, c])
        assert [j.status for j in (ja, jb, jc)] == [QUEUED, WAITING, WAITING]
        assert [j.workflow for j in (ja, jb, jc)] == [w, w, w]
        assert [j.parents for j in (ja, jb, jc)] == [(), (a,), (b,)]
        assert [j.children for j in (ja, jb, jc)] == [(b,), (c,), ()]
        assert [j.failed_parents for j in (ja, jb, jc)] == [(), (), ()]
        assert jc.on_parent_failure is CANCEL
        assert jb.payload == {"step": "b"}
        assert client.get_many([c, "no-such-step", a]) == [jc, None, ja]

        for done, (this, parent) in enumerate(((a, None), (b, a), (c, b))):
            claims = claim_ids(client)
            assert ids_of(claims) == [this], "only the step whose parent succeeded is claimable"
            assert claims[0].job.workflow == w
            if parent is not None:
                assert client.get_many([parent])[0].result == {"done": parent}  # type: ignore[union-attr]
            self.expect_counts(client, w, {SUCCEEDED: done, RUNNING: 1, WAITING: 2 - done})
            assert client.complete(claims[0].lease, {"done": this}) is SUCCEEDED
            if this != c:
                assert client.get_workflow(w).state is WorkflowState.RUNNING
                assert workflow_events(client) == []
                assert client.get(parent or a).status is SUCCEEDED

        flow = self.expect_counts(client, w, {SUCCEEDED: 3})
        assert flow.state is WorkflowState.SUCCEEDED
        assert flow.finished_at is not None
        assert flow.finished_at >= flow.created_at
        assert events(client) == [ended_event(w, "succeeded")]
        assert [j.result for j in jobs_of(client, [a, b, c])] == [{"done": i} for i in (a, b, c)]
        assert [f.id for f in client.list_workflows()] == [w]
        assert [f.id for f in client.list_workflows(state=WorkflowState.SUCCEEDED)] == [w]
        assert client.list_workflows(state=WorkflowState.RUNNING) == []
        assert [j.id for j in client.list_jobs(workflow=w)] == [a, b, c]
        assert claim_ids(client) == []

    def test_a_diamond_joins_only_after_both_branches(self, client: qw.Client) -> None:
        w = "diamond"
        a, b, c, d = (f"{w}.{n}" for n in "abcd")
        client.create_workflow(
            w, [step(w, "a"), step(w, "b", "a"), step(w, "c", "a"), step(w, "d", "b", "c")]
        )
        assert jobs_of(client, [a])[0].children == (b, c)
        assert jobs_of(client, [d])[0].parents == (b, c)
        client.complete(self.claim_one(client).lease)
        branches = claim_ids(client)
        assert sorted(ids_of(branches)) == [b, c]
        by_id = {cl.job.id: cl for cl in branches}
        client.complete(by_id[c].lease, "c")
        assert statuses(client, [b, c, d]) == [RUNNING, SUCCEEDED, WAITING]
        assert claim_ids(client) == []
        client.complete(by_id[b].lease, "b")
        assert statuses(client, [d]) == [QUEUED]
        last = self.claim_one(client)
        assert last.job.id == d
        assert last.job.failed_parents == ()
        client.complete(last.lease)
        assert client.get_workflow(w).state is WorkflowState.SUCCEEDED
        assert workflow_events(client) == [ended_event(w, "succeeded")]

    def test_a_parent_may_follow_its_child_in_the_call(self, client: qw.Client) -> None:
        w = "backwards"
        client.create_workflow(w, [step(w, "b", "a"), step(w, "a")])
        assert jobs_of(client, [f"{w}.a"])[0].children == (f"{w}.b",)
        assert statuses(client, [f"{w}.a", f"{w}.b"]) == [QUEUED, WAITING]
        client.complete(self.claim_one(client).lease)
        assert self.claim_one(client).job.id == f"{w}.b"

    def test_a_promoted_step_keeps_its_own_run_at(self, client: qw.Client) -> None:
        # A delay on a step is its earliest start: promotion does not move it.
        w = "later"
        client.create_workflow(w, [step(w, "a"), step(w, "b", "a", delay=3600)])
        before = jobs_of(client, [f"{w}.b"])[0].run_at
        client.complete(self.claim_one(client).lease)
        promoted = jobs_of(client, [f"{w}.b"])[0]
        assert (promoted.status, promoted.run_at) == (QUEUED, before)
        assert claim_ids(client) == []

    def test_a_workflow_of_one_step_ends_with_it(self, client: qw.Client) -> None:
        client.create_workflow("solo", [step("solo", "only")], output="solo.only")
        lease = self.claim_one(client).lease
        assert client.fail(lease, "no") is FAILED
        flow = self.expect_counts(client, "solo", {FAILED: 1})
        assert flow.state is WorkflowState.FAILED
        assert events(client) == [ended_event("solo", "failed")]

    def test_workflows_and_their_steps_are_listed_by_id(self, client: qw.Client) -> None:
        plain = client.enqueue_one("q", "plain").id
        for w in ("w3", "w1", "w2"):
            client.create_workflow(w, [step(w, "b"), step(w, "a", "b")])
        client.cancel_workflow("w2")
        assert [f.id for f in client.list_workflows()] == ["w1", "w2", "w3"]
        assert [f.id for f in client.list_workflows(limit=2)] == ["w1", "w2"]
        assert [f.id for f in client.list_workflows(after="w1")] == ["w2", "w3"]
        running = client.list_workflows(state=WorkflowState.RUNNING)
        assert [f.id for f in running] == ["w1", "w3"]
        assert [f.id for f in client.list_workflows(state="cancelled")] == ["w2"]
        assert running[0] == client.get_workflow("w1")
        assert nonzero(running[0].counts) == {QUEUED: 1, WAITING: 1}
        assert [j.id for j in client.list_jobs(workflow="w1")] == ["w1.a", "w1.b"]
        assert [j.id for j in client.list_jobs(workflow="w1", limit=1)] == ["w1.a"]
        assert [j.id for j in client.list_jobs(workflow="w1", after="w1.a")] == ["w1.b"]
        waiting = client.list_jobs(workflow="w3", status=WAITING)
        assert [j.id for j in waiting] == ["w3.a"]
        assert [j.id for j in client.steps("w3")] == ["w3.a", "w3.b"]
        assert client.list_jobs(workflow="none") == []
        job = client.get(plain)
        assert (job.workflow, job.parents, job.children, job.failed_parents) == (None, (), (), ())
        assert plain not in {j.id for w in ("w1", "w2", "w3") for j in client.steps(w)}

    # -- fan-out and fan-in races ---------------------------------------------

    def _fan(self, client: qw.Client, w: str) -> list[str]:
        """A root, FAN_IN steps after it, and a child after them all; the ids in that order.

        The child outranks its parents, so a store that promotes it early hands
        it to the very next claim, while most parents are still unfinished.
        """
        root, child = f"{w}.root", f"{w}.child"
        middle = [f"{w}.p{i:04d}" for i in range(FAN_IN)]
        steps = [NewJob("q", "root", id=root)]
        steps.extend(NewJob("q", i, id=pid, parents=(root,)) for i, pid in enumerate(middle))
        steps.append(NewJob("q", "child", id=child, parents=tuple(middle), priority=-1))
        assert client.create_workflow(w, steps, output=child).created
        self.expect_counts(client, w, {QUEUED: 1, WAITING: FAN_IN + 1})
        assert len(client.get(root).children) == FAN_IN
        return [root, *middle, child]

    def _check_fan_done(
        self, client: qw.Client, w: str, ids: list[str], claimed: list[str]
    ) -> None:
        twice = [i for i, n in Counter(claimed).items() if n > 1]
        assert not twice, f"{len(twice)} steps were claimed more than once: {twice[:5]}"
        assert sorted(claimed) == sorted(ids), "some steps were never claimed"
        jobs = jobs_of(client, ids)
        assert {(j.status, j.attempts, j.failed_parents) for j in jobs} == {(SUCCEEDED, 1, ())}
        flow = self.expect_counts(client, w, {SUCCEEDED: FAN_IN + 2})
        assert flow.state is WorkflowState.SUCCEEDED
        assert workflow_events(client) == [ended_event(w, "succeeded")]
        assert claim_ids(client) == []

    def test_threads_finishing_a_fan_in_promote_the_child_once(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        w = "fanin"
        ids = self._fan(client, w)
        if client.capabilities.thread_safe:
            clients = [client] * THREADS
        else:
            clients = [open_client(client.namespace) for _ in range(THREADS)]
        start = threading.Barrier(THREADS)
        claimed: list[list[str]] = [[] for _ in clients]
        early: list[str] = []
        errors: list[BaseException] = []
        deadline = time.monotonic() + DEADLINE

        def work(index: int) -> None:
            c = clients[index]
            rnd = random.Random(index)
            try:
                start.wait()
                while time.monotonic() < deadline:
                    claims = c.claim(["q"], worker=f"t{index}", limit=rnd.randint(1, 8))
                    if not claims:
                        if c.get_workflow(w).state is not WorkflowState.RUNNING:
                            return
                        time.sleep(0.005)
                        continue
                    for cl in claims:
                        claimed[index].append(cl.job.id)
                        parents = cl.job.parents
                        if parents and set(statuses(c, parents)) != {SUCCEEDED}:
                            early.append(cl.job.id)
                        c.complete(cl.lease, index)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE + 30)
        assert not errors, errors
        assert not early, f"claimable before every parent had succeeded: {early[:5]}"
        assert sum(1 for part in claimed if part) > 1, "only one thread ever won a claim"
        self._check_fan_done(client, w, ids, [i for part in claimed for i in part])

    @requires("multi_process")
    def test_processes_finishing_a_fan_in_promote_the_child_once(self, client: qw.Client) -> None:
        url = self.url_or_skip()
        w = "fanin-mp"
        ids = self._fan(client, w)
        reports = race_processes(
            finish_steps_until_done,
            lambda start, results: (url, client.namespace, w, "q", start, results, 8, DEADLINE),
            count=PROCESSES,
            timeout=DEADLINE + 90,
        )
        claimed = [job_id for _, part in reports for job_id, _ in part]
        early = [job_id for _, part in reports for job_id, ok in part if not ok]
        assert not early, f"claimable before every parent had succeeded: {early[:5]}"
        assert sum(1 for _, part in reports if part) > 1, "only one process ever won a claim"
        self._check_fan_done(client, w, ids, claimed)

    # -- failure policies ----------------------------------------------------

    def test_a_failed_parent_cancels_its_descendants(self, client: qw.Client) -> None:
        w = "fails"
        a, b, c, d, e, f = (f"{w}.{n}" for n in "abcdef")
        client.create_workflow(
            w,
            [
                step(w, "a"),
                step(w, "b", "a"),  # cancelled: a failed
                step(w, "c", "b"),  # cancelled: b was
                step(w, "d", "a", policy=RUN),  # runs, knowing a failed
                step(w, "e", "d"),  # d succeeds: runs
                step(w, "f", "c", "e", policy=RUN),  # runs after both: c was cancelled
            ],
        )
        assert client.fail(self.claim_one(client).lease, "boom") is FAILED
        jb, jc, jd = jobs_of(client, [b, c, d])
        assert (jb.status, jb.error) == (CANCELLED, {"reason": "parent_failed", "parent": a})
        assert (jc.status, jc.error) == (CANCELLED, {"reason": "parent_failed", "parent": b})
        assert jb.finished_at is not None
        assert jc.finished_at is not None
        assert (jd.status, jd.failed_parents) == (QUEUED, (a,))
        assert sorted(events(client), key=repr) == sorted(
            [parent_failed_event(b, a), parent_failed_event(c, b)], key=repr
        )
        self.expect_counts(client, w, {FAILED: 1, CANCELLED: 2, QUEUED: 1, WAITING: 2})
        claims = claim_ids(client)
        assert ids_of(claims) == [d]
        assert claims[0].job.failed_parents == (a,)
        client.complete(claims[0].lease, "d ran")
        claims = claim_ids(client)
        assert ids_of(claims) == [e]
        assert claims[0].job.failed_parents == ()
        client.complete(claims[0].lease)
        claims = claim_ids(client)
        assert ids_of(claims) == [f]
        assert claims[0].job.failed_parents == (c,)
        assert client.get_workflow(w).state is WorkflowState.RUNNING
        client.complete(claims[0].lease)
        flow = self.expect_counts(client, w, {FAILED: 1, CANCELLED: 2, SUCCEEDED: 3})
        assert flow.state is WorkflowState.FAILED
        assert workflow_events(client) == [ended_event(w, "failed")]

    def test_a_child_settles_only_when_its_last_parent_ends(self, client: qw.Client) -> None:
        w = "last"
        p1, p2, p3, x, r = (f"{w}.{n}" for n in ("p1", "p2", "p3", "x", "r"))
        client.create_workflow(
            w,
            [
                step(w, "p1"),
                step(w, "p2"),
                step(w, "p3"),
                step(w, "x", "p1", "p2", "p3"),
                step(w, "r", "p1", "p2", "p3", policy=RUN),
            ],
        )
        leases = {cl.job.id: cl.lease for cl in claim_ids(client)}
        assert sorted(leases) == [p1, p2, p3]
        client.fail(leases[p2], "second")
        # Counted, but not settled: a parent is still running.
        jx, jr = jobs_of(client, [x, r])
        assert (jx.status, jx.failed_parents) == (WAITING, (p2,))
        assert (jr.status, jr.failed_parents) == (WAITING, (p2,))
        client.abort(leases[p1], "stopped")
        assert statuses(client, [x, r]) == [WAITING, WAITING]
        assert jobs_of(client, [r])[0].failed_parents == (p2, p1), "in the order they ended"
        assert claim_ids(client) == []
        assert events(client) == []
        client.complete(leases[p3])
        jx, jr = jobs_of(client, [x, r])
        assert (jx.status, jx.error) == (CANCELLED, {"reason": "parent_failed", "parent": p2})
        assert (jr.status, jr.failed_parents) == (QUEUED, (p2, p1))
        assert events(client) == [parent_failed_event(x, p2)]
        claims = claim_ids(client)
        assert ids_of(claims) == [r]
        client.complete(claims[0].lease, "ran anyway")
        assert client.get_workflow(w).state is WorkflowState.FAILED

    @pytest.mark.parametrize("where", ["queued", "waiting"])
    def test_a_cancelled_step_is_a_failed_parent(self, client: qw.Client, where: str) -> None:
        w = "cancels"
        a, b, c, d = (f"{w}.{n}" for n in "abcd")
        client.create_workflow(
            w, [step(w, "a"), step(w, "b", "a"), step(w, "c", "b"), step(w, "d", "b", policy=RUN)]
        )
        if where == "queued":
            assert client.cancel(a) is CANCELLED
            cancelled = a
        else:
            assert client.cancel(b) is CANCELLED
            cancelled = b
        jobs = {j.id: j for j in jobs_of(client, [a, b, c, d])}
        assert jobs[cancelled].status is CANCELLED
        assert jobs[cancelled].finished_at is not None
        want = [cancelled_event(cancelled)]
        if where == "queued":
            assert (jobs[b].status, jobs[b].error) == (
                CANCELLED,
                {"reason": "parent_failed", "parent": a},
            )
            want.append(parent_failed_event(b, a))
        assert (jobs[c].status, jobs[c].error) == (
            CANCELLED,
            {"reason": "parent_failed", "parent": b},
        )
        want.append(parent_failed_event(c, b))
        assert (jobs[d].status, jobs[d].failed_parents) == (QUEUED, (b,))
        assert sorted(events(client), key=repr) == sorted(want, key=repr)
        if where == "waiting":
            # a is still queued: it runs, and its end settles nothing more.
            lease = self.claim_one(client).lease
            assert lease.job_id == a
            client.complete(lease)
            assert statuses(client, [b, c]) == [CANCELLED, CANCELLED]
        claims = claim_ids(client)
        assert ids_of(claims) == [d]
        client.complete(claims[0].lease)
        flow = client.get_workflow(w)
        assert flow.state is WorkflowState.CANCELLED, "cancelled steps and no failed one"
        assert workflow_events(client) == [ended_event(w, "cancelled")]

    # -- retries, stale tokens, repeats, reclaim -----------------------------

    def test_a_retried_parent_promotes_its_child_once_after_success(
        self, client: qw.Client
    ) -> None:
        w = "retry"
        a, b = f"{w}.a", f"{w}.b"
        client.create_workflow(w, [step(w, "a", max_attempts=3), step(w, "b", "a")])
        first = self.claim_one(client)
        assert client.fail(first.lease, "transient", retry_in=0) is QUEUED
        jb = jobs_of(client, [b])[0]
        assert (jb.status, jb.failed_parents) == (WAITING, ()), "a retry is not an end"
        self.expect_counts(client, w, {QUEUED: 1, WAITING: 1})
        second = claim_ids(client)
        assert ids_of(second) == [a], "only the retried parent is claimable"
        assert second[0].job.attempts == 2
        assert statuses(client, [b]) == [WAITING]
        assert client.complete(second[0].lease, "second time") is SUCCEEDED
        assert statuses(client, [b]) == [QUEUED]
        claims = claim_ids(client)
        assert ids_of(claims) == [b]
        assert claims[0].job.failed_parents == ()
        assert client.get_many([a])[0].result == "second time"  # type: ignore[union-attr]
        assert claim_ids(client) == []
        client.complete(claims[0].lease)
        assert client.get_workflow(w).state is WorkflowState.SUCCEEDED
        assert workflow_events(client) == [ended_event(w, "succeeded")]

    def test_a_zombie_parent_cannot_finish_or_promote(self, client: qw.Client) -> None:
        w = "zombie"
        a, b = f"{w}.a", f"{w}.b"
        client.create_workflow(w, [step(w, "a", max_attempts=3), step(w, "b", "a")])
        old = client.claim(["q"], worker="w", lease_s=SHORT)[0].lease
        self.sleep_past(time.monotonic() + PAST_SHORT)
        assert client.reclaim_expired() == 1
        assert statuses(client, [a, b]) == [QUEUED, WAITING]
        new = self.claim_one(client).lease
        assert new.attempt == 2
        before = workflow_snapshot(client)
        assert client.finish([Complete(old, "zombie")]) == [None]
        with pytest.raises(LeaseLost):
            client.complete(old, "zombie")
        with pytest.raises(LeaseLost):
            client.fail(old, "zombie")
        assert workflow_snapshot(client) == before
        assert client.complete(new, "fresh") is SUCCEEDED
        assert statuses(client, [b]) == [QUEUED]
        after = workflow_snapshot(client)
        assert client.finish([Complete(old, "zombie"), Fail(old, "zombie")]) == [None, None]
        assert workflow_snapshot(client) == after
        claims = claim_ids(client)
        assert ids_of(claims) == [b]
        assert client.get_many([a])[0].result == "fresh"  # type: ignore[union-attr]
        client.complete(claims[0].lease)
        assert workflow_events(client) == [ended_event(w, "succeeded")]

    def test_replayed_finishes_settle_nothing_twice(self, client: qw.Client) -> None:
        w = "replay"
        p1, p2, f1, f2, c, r = (f"{w}.{n}" for n in ("p1", "p2", "f1", "f2", "c", "r"))
        client.create_workflow(
            w,
            [
                step(w, "p1"),
                step(w, "p2"),
                step(w, "c", "p1", "p2"),
                step(w, "f1"),
                step(w, "f2"),
                step(w, "r", "f1", "f2", policy=RUN),
            ],
        )
        leases = {cl.job.id: cl.lease for cl in claim_ids(client)}
        assert sorted(leases) == sorted([p1, p2, f1, f2])
        assert client.complete(leases[p1], "one") is SUCCEEDED
        assert client.fail(leases[f1], "bad") is FAILED
        after = workflow_snapshot(client)
        for _ in range(3):
            assert client.finish([Complete(leases[p1], "one")]) == [SUCCEEDED]
            assert client.finish([Fail(leases[f1], "bad")]) == [FAILED]
        assert workflow_snapshot(client) == after, "a repeat wrote something"
        jc, jr = jobs_of(client, [c, r])
        assert (jc.status, jr.status, jr.failed_parents) == (WAITING, WAITING, (f1,))
        assert claim_ids(client) == []
        client.complete(leases[p2])
        client.complete(leases[f2])
        for _ in range(2):
            assert client.finish([Complete(leases[p2]), Complete(leases[f2])]) == [SUCCEEDED] * 2
        jc, jr = jobs_of(client, [c, r])
        assert (jc.status, jr.status, jr.failed_parents) == (QUEUED, QUEUED, (f1,))
        claims = claim_ids(client)
        assert sorted(ids_of(claims)) == [c, r], "each child claimable exactly once"
        assert claim_ids(client) == []
        for cl in claims:
            client.complete(cl.lease)
            assert client.finish([Complete(cl.lease)]) == [SUCCEEDED]
        assert client.get_workflow(w).state is WorkflowState.FAILED
        assert workflow_events(client) == [ended_event(w, "failed")]

    def test_reclaim_with_attempts_used_up_settles_the_children_in_the_same_call(
        self, client: qw.Client
    ) -> None:
        w = "expired"
        a, b, b2, c = (f"{w}.{n}" for n in ("a", "b", "b2", "c"))
        client.create_workflow(
            w,
            [
                step(w, "a", max_attempts=1),
                step(w, "b", "a"),
                step(w, "b2", "b"),
                step(w, "c", "a", policy=RUN),
            ],
        )
        client.claim(["q"], worker="w", lease_s=SHORT)
        self.sleep_past(time.monotonic() + PAST_SHORT)
        assert client.reclaim_expired() == 1
        ja, jb, jb2, jc = jobs_of(client, [a, b, b2, c])
        assert (ja.status, ja.error) == (FAILED, {"reason": "lease_expired"})
        assert (jb.status, jb.error) == (CANCELLED, {"reason": "parent_failed", "parent": a})
        assert (jb2.status, jb2.error) == (CANCELLED, {"reason": "parent_failed", "parent": b})
        assert (jc.status, jc.failed_parents) == (QUEUED, (a,))
        assert sorted(events(client), key=repr) == sorted(
            [
                (a, "job.failed", {"queue": "q", "reason": "lease_expired", "attempts": 1}),
                parent_failed_event(b, a),
                parent_failed_event(b2, b),
            ],
            key=repr,
        )
        assert client.reclaim_expired() == 0
        claims = claim_ids(client)
        assert ids_of(claims) == [c]
        client.complete(claims[0].lease)
        flow = self.expect_counts(client, w, {FAILED: 1, CANCELLED: 2, SUCCEEDED: 1})
        assert flow.state is WorkflowState.FAILED
        assert workflow_events(client) == [ended_event(w, "failed")]

    # -- steps added by a running step ---------------------------------------

    def test_a_running_step_adds_steps_that_wait_for_it(self, client: qw.Client) -> None:
        w = "dyn"
        a, z, x, y, z2 = (f"{w}.{n}" for n in ("a", "z", "x", "y", "z2"))
        client.create_workflow(w, [step(w, "a"), step(w, "z", "a")])
        lease = self.claim_one(client).lease
        batch = [step(w, "x", "a"), step(w, "y", "a", "x", policy=RUN)]
        assert client.add_steps(lease, w, batch) is True
        ja, jx, jy = jobs_of(client, [a, x, y])
        assert ja.children == (z, x, y), "children grow in the order steps were added"
        assert (jx.status, jx.parents, jx.workflow, jx.children) == (WAITING, (a,), w, (y,))
        assert (jy.status, jy.parents, jy.on_parent_failure) == (WAITING, (a, x), RUN)
        self.expect_counts(client, w, {RUNNING: 1, WAITING: 3})
        assert claim_ids(client) == [], "the added steps wait for the step that added them"

        before = workflow_snapshot(client)
        assert client.add_steps(lease, w, batch) is False, "the batch was added already"
        assert client.add_steps(lease, w, [batch[0], step(w, "other", "a")]) is False
        assert workflow_snapshot(client) == before
        with pytest.raises(DuplicateJob):
            client.add_steps(lease, w, [step(w, "fresh", "a"), step(w, "z", "a")])
        with pytest.raises(LeaseLost):
            client.add_steps(replace(lease, attempt=2), w, [step(w, "fresh", "a")])
        with pytest.raises(LeaseLost):
            client.add_steps(replace(lease, token=lease.token + "x"), w, [step(w, "fresh", "a")])
        with pytest.raises(LeaseLost):
            client.add_steps(lease, "another-workflow", [step(w, "fresh", "a")])
        assert workflow_snapshot(client) == before
        assert client.find(f"{w}.fresh") is None

        assert client.complete(lease) is SUCCEEDED
        with pytest.raises(LeaseLost):
            client.add_steps(lease, w, [step(w, "late", "a")])
        assert client.find(f"{w}.late") is None
        assert statuses(client, [z, x, y]) == [QUEUED, QUEUED, WAITING]
        claims = {cl.job.id: cl for cl in claim_ids(client)}
        assert sorted(claims) == [x, z]
        assert client.add_steps(claims[z].lease, w, [step(w, "z2", "z")]) is True
        assert jobs_of(client, [z])[0].children == (z2,)
        client.complete(claims[x].lease)
        client.complete(claims[z].lease)
        assert client.get_workflow(w).state is WorkflowState.RUNNING
        claims = {cl.job.id: cl for cl in claim_ids(client)}
        assert sorted(claims) == [y, z2]
        assert claims[y].job.failed_parents == ()
        for cl in claims.values():
            client.complete(cl.lease)
        flow = self.expect_counts(client, w, {SUCCEEDED: 5})
        assert flow.state is WorkflowState.SUCCEEDED
        assert workflow_events(client) == [ended_event(w, "succeeded")]

    def test_only_a_step_can_add_steps(self, client: qw.Client) -> None:
        client.create_workflow("host", [step("host", "a")])
        client.enqueue_one("plain", 1)
        lease = self.claim_one(client, "plain").lease
        before = workflow_snapshot(client)
        with pytest.raises(LeaseLost):
            client.add_steps(lease, "host", [NewJob("q", 1, id="host.b", parents=(lease.job_id,))])
        with pytest.raises(LeaseLost):
            client.add_steps(lease, "host", [NewJob("q", 1, id="host.c")])
        assert workflow_snapshot(client) == before

    def test_no_steps_are_added_to_a_cancelled_workflow(self, client: qw.Client) -> None:
        w = "stopped"
        client.create_workflow(w, [step(w, "a"), step(w, "b")])
        lease = self.claim_one(client).lease
        client.cancel_workflow(w)
        before = workflow_snapshot(client)
        with pytest.raises(LeaseLost):
            client.add_steps(lease, w, [step(w, "c", "a")])
        assert workflow_snapshot(client) == before
        assert client.find(f"{w}.c") is None

    # -- cancelling a workflow -----------------------------------------------

    def test_cancel_workflow_cancels_what_waits_and_flags_what_runs(
        self, client: qw.Client
    ) -> None:
        w = "cw"
        a, b, c, d = (f"{w}.{n}" for n in "abcd")
        client.create_workflow(
            w, [step(w, "a"), step(w, "b"), step(w, "c", "a", "b"), step(w, "d", "c", policy=RUN)]
        )
        running = self.claim_one(client)
        assert running.job.id == a
        flow = client.cancel_workflow(w)
        assert (flow.state, flow.cancel_requested) == (WorkflowState.RUNNING, True)
        assert nonzero(flow.counts) == {RUNNING: 1, CANCELLED: 3}
        assert flow.finished_at is None
        assert statuses(client, [a, b, c, d]) == [RUNNING, CANCELLED, CANCELLED, CANCELLED]
        assert sorted(events(client), key=repr) == sorted(
            [cancelled_event(b), cancelled_event(c), cancelled_event(d)], key=repr
        )
        assert client.get(a).cancel_requested is True
        assert client.renew(running.lease).cancel_requested is True
        assert claim_ids(client) == []
        assert client.get_workflow(w) == flow

        assert client.complete(running.lease, "finished anyway") is SUCCEEDED
        flow = self.expect_counts(client, w, {SUCCEEDED: 1, CANCELLED: 3})
        assert (flow.state, flow.cancel_requested) == (WorkflowState.CANCELLED, True)
        assert flow.finished_at is not None
        assert workflow_events(client) == [ended_event(w, "cancelled")]
        before = workflow_snapshot(client)
        assert client.cancel_workflow(w) == flow
        assert workflow_snapshot(client) == before

    def test_cancel_workflow_with_nothing_running_ends_it_at_once(self, client: qw.Client) -> None:
        w = "idle"
        client.create_workflow(w, [step(w, "a"), step(w, "b", "a")])
        flow = client.cancel_workflow(w)
        assert (flow.state, flow.cancel_requested) == (WorkflowState.CANCELLED, True)
        assert flow.finished_at is not None
        assert nonzero(flow.counts) == {CANCELLED: 2}
        assert sorted(events(client), key=repr) == sorted(
            [cancelled_event(f"{w}.a"), cancelled_event(f"{w}.b"), ended_event(w, "cancelled")],
            key=repr,
        )
        assert client.get_workflow(w) == flow

    def test_cancelling_an_ended_workflow_changes_nothing(self, client: qw.Client) -> None:
        w = "over"
        client.create_workflow(w, [step(w, "a")])
        client.complete(self.claim_one(client).lease)
        flow = client.get_workflow(w)
        assert flow.state is WorkflowState.SUCCEEDED
        before = workflow_snapshot(client)
        assert client.cancel_workflow(w) == flow
        assert client.cancel(f"{w}.a") is SUCCEEDED
        assert workflow_snapshot(client) == before
        with pytest.raises(WorkflowNotFound):
            client.cancel_workflow("no-such-workflow")
        with pytest.raises(WorkflowNotFound):
            client.get_workflow("no-such-workflow")
        assert client.find_workflow("no-such-workflow") is None
        assert workflow_snapshot(client) == before

    # -- creating: atomic and idempotent ---------------------------------------

    def test_creating_a_workflow_twice_writes_nothing_the_second_time(
        self, client: qw.Client
    ) -> None:
        w = "twice"
        steps = [step(w, "a"), step(w, "b", "a")]
        assert client.create_workflow(w, steps) == qw.Enqueued(w, True)
        before = workflow_snapshot(client)
        assert client.create_workflow(w, steps) == qw.Enqueued(w, False)
        assert client.create_workflow(w, [step(w, "c"), step(w, "d", "c")]) == qw.Enqueued(w, False)
        assert workflow_snapshot(client) == before
        assert client.get_many([f"{w}.c", f"{w}.d"]) == [None, None]

    def test_a_step_id_that_exists_refuses_the_whole_workflow(self, client: qw.Client) -> None:
        client.enqueue([NewJob("q", "plain", id="taken.x")])
        client.create_workflow("first", [step("first", "a")])
        before = workflow_snapshot(client)
        for taken in ("taken.x", "first.a"):
            with pytest.raises(DuplicateJob):
                client.create_workflow(
                    "second", [step("second", "a"), NewJob("q", 1, id=taken), step("second", "b")]
                )
            assert workflow_snapshot(client) == before
            assert client.find_workflow("second") is None
        assert client.create_workflow("second", [step("second", "a")]).created

    def test_a_held_dedupe_key_refuses_the_whole_workflow(self, client: qw.Client) -> None:
        client.enqueue_one("q", "holder", dedupe_key="k")
        before = workflow_snapshot(client)
        with pytest.raises(DuplicateJob):
            client.create_workflow(
                "keyed", [step("keyed", "a"), step("keyed", "b", dedupe_key="k")]
            )
        with pytest.raises(DuplicateJob):
            client.create_workflow(
                "keyed", [step("keyed", "a", dedupe_key="j"), step("keyed", "b", dedupe_key="j")]
            )
        assert workflow_snapshot(client) == before
        assert client.find_workflow("keyed") is None
        assert client.create_workflow("keyed", [step("keyed", "a", dedupe_key="j")]).created

    def test_waiting_steps_hold_their_dedupe_keys(self, client: qw.Client) -> None:
        w = "holds"
        b = f"{w}.b"
        client.create_workflow(w, [step(w, "a"), step(w, "b", "a", dedupe_key="kw")])
        assert statuses(client, [b]) == [WAITING]
        assert client.enqueue_one("q", "plain", dedupe_key="kw") == qw.Enqueued(b, False)
        with pytest.raises(DuplicateJob):
            client.create_workflow("other", [step("other", "a", dedupe_key="kw")])
        client.complete(self.claim_one(client).lease)
        client.complete(self.claim_one(client).lease)
        assert statuses(client, [b]) == [SUCCEEDED]
        assert client.enqueue_one("q", "plain", dedupe_key="kw").created is True

    # -- bad input ---------------------------------------------------------------

    @pytest.mark.parametrize(
        ("case", "error"),
        [
            ("cycle", InvalidWorkflow),
            ("self_parent", InvalidWorkflow),
            ("unknown_parent", InvalidWorkflow),
            ("parent_in_another_workflow", InvalidWorkflow),
            ("too_many_steps", InvalidWorkflow),
            ("no_steps", InvalidWorkflow),
            ("non_json_payload", InvalidPayload),
            ("nan_payload", InvalidPayload),
            ("bad_workflow_id", InvalidWorkflow),
            ("long_workflow_id", InvalidWorkflow),
            ("bad_step_id", InvalidWorkflow),
            ("output_not_a_step", InvalidWorkflow),
            ("parents_not_a_tuple", InvalidWorkflow),
            ("policy_not_a_parent_failure", InvalidWorkflow),
            ("same_id_twice", DuplicateJob),
            ("parents_on_a_plain_job", InvalidWorkflow),
            ("add_steps_cycle", InvalidWorkflow),
            ("add_steps_unknown_parent", InvalidWorkflow),
        ],
    )
    def test_bad_workflows_are_refused_before_any_write(
        self, client: qw.Client, case: str, error: type[Exception]
    ) -> None:
        client.create_workflow("other", [step("other", "x"), step("other", "y", "x")])
        lease = self.claim_one(client).lease
        w = "bad"
        call = bad_calls(client, lease, w)[case]
        before = workflow_snapshot(client)
        with pytest.raises(error):
            call()
        assert workflow_snapshot(client) == before
        assert client.find_workflow(w) is None

    # -- namespaces, purge, switches, wake-ups -----------------------------------

    def test_namespaces_with_the_same_workflow_id_are_independent(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        other = open_client(new_namespace())
        w = "same"
        a, b = f"{w}.a", f"{w}.b"
        for c in (client, other):
            assert c.create_workflow(w, [step(w, "a"), step(w, "b", "a")]).created is True
        client.complete(self.claim_one(client).lease, "mine")
        assert statuses(client, [a, b]) == [SUCCEEDED, QUEUED]
        assert statuses(other, [a, b]) == [QUEUED, WAITING]
        assert nonzero(other.get_workflow(w).counts) == {QUEUED: 1, WAITING: 1}
        assert other.cancel_workflow(w).state is WorkflowState.CANCELLED
        assert client.get_workflow(w).state is WorkflowState.RUNNING
        assert statuses(client, [a, b]) == [SUCCEEDED, QUEUED]
        assert workflow_events(client) == []
        assert workflow_events(other) == [ended_event(w, "cancelled")]
        client.complete(self.claim_one(client).lease)
        assert client.get_workflow(w).state is WorkflowState.SUCCEEDED
        assert other.get_workflow(w).state is WorkflowState.CANCELLED
        assert [j.id for j in other.list_jobs(workflow=w)] == [a, b]
        assert other.get_many([a])[0].result is None  # type: ignore[union-attr]
        assert [f.state for f in other.list_workflows()] == [WorkflowState.CANCELLED]
        assert [f.state for f in client.list_workflows()] == [WorkflowState.SUCCEEDED]

    @requires("cross_queue_atomic")
    def test_purge_takes_a_workflow_only_with_all_its_steps(self, client: qw.Client) -> None:
        def run_all() -> None:
            while claims := claim_ids(client):
                for cl in claims:
                    client.complete(cl.lease)

        client.create_workflow("old", [step("old", "a"), step("old", "b", "a")])
        run_all()
        client.create_workflow("live", [step("live", "x"), step("live", "y", "x", queue="later")])
        client.create_workflow("recent", [step("recent", "m"), step("recent", "n", "m", queue="n")])
        client.enqueue([NewJob("q", "plain", id="plain.1")])
        run_all()
        assert statuses(client, ["live.x", "live.y", "recent.m"]) == [SUCCEEDED, QUEUED, SUCCEEDED]
        assert client.purge(3600) == qw.PurgeResult(jobs=0, events=0)
        # "old" ended a second ago, "recent" ends now: half a second of margin
        # either side, so that a busy machine does not move the line.
        time.sleep(1.0)
        client.complete(self.claim_one(client, "n").lease)
        live_before = client.get_workflow("live")
        result = client.purge(0.5)
        assert result.jobs == 3, "old.a, old.b and the plain job"
        assert client.find_workflow("old") is None
        assert client.get_many(["old.a", "old.b", "plain.1"]) == [None, None, None]
        assert client.list_jobs(workflow="old") == []
        assert client.get_workflow("live") == live_before
        assert statuses(client, ["live.x", "live.y"]) == [SUCCEEDED, QUEUED]
        assert statuses(client, ["recent.m", "recent.n"]) == [SUCCEEDED, SUCCEEDED]
        assert client.get_workflow("recent").state is WorkflowState.SUCCEEDED
        client.complete(self.claim_one(client, "later").lease)
        time.sleep(0.1)
        assert client.purge(0.05).jobs == 4
        assert client.list_workflows() == []
        assert client.list_jobs() == []

    def test_switches_and_priorities_apply_to_promoted_steps(self, client: qw.Client) -> None:
        w = "sw"
        b, c = f"{w}.b", f"{w}.c"
        plain = client.enqueue_one("q", "plain").id
        client.create_workflow(
            w,
            [
                step(w, "a", queue="gate"),
                step(w, "b", "a", priority=5),
                step(w, "c", "a", priority=-5),
            ],
        )
        lease = self.claim_one(client, "gate").lease
        client.set_enabled(False)
        assert client.complete(lease) is SUCCEEDED, "finishing works while switched OFF"
        assert statuses(client, [b, c]) == [QUEUED, QUEUED]
        assert claim_ids(client) == []
        client.set_enabled(True)
        assert ids_of(claim_ids(client)) == [c, plain, b]

    @requires("cross_queue_atomic")
    @requires("queue_switch")
    def test_a_promoted_step_on_a_queue_switched_off_waits_for_on(self, client: qw.Client) -> None:
        w = "qsw"
        b = f"{w}.b"
        client.create_workflow(w, [step(w, "a", queue="gate"), step(w, "b", "a", queue="off")])
        client.set_enabled(False, queue="off")
        client.complete(self.claim_one(client, "gate").lease)
        assert statuses(client, [b]) == [QUEUED]
        assert claim_ids(client, ["off", "gate"]) == []
        client.set_enabled(True, queue="off")
        assert ids_of(claim_ids(client, ["off"])) == [b]

    @requires("cross_queue_atomic")
    def test_a_waiter_is_woken_when_a_step_is_promoted_on_its_queue(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        w = "wake"
        finisher = open_client(client.namespace)
        client.create_workflow(w, [step(w, "p", queue="parents"), step(w, "c", "p", queue="kids")])
        lease = self.claim_one(finisher, "parents").lease
        assert claim_ids(client, ["kids"]) == []
        got: list[tuple[str, float]] = []

        def worker() -> None:
            end = time.monotonic() + 10
            while time.monotonic() < end:
                claims = client.claim(["kids"], worker="w")
                if claims:
                    got.append((claims[0].job.id, time.monotonic()))
                    return
                client.wait(["kids"], timeout=5)

        thread = threading.Thread(target=worker)
        thread.start()
        time.sleep(0.3)
        finisher.complete(lease)
        finished = time.monotonic()
        thread.join(15)
        assert got, "the waiting worker never got the promoted step"
        job_id, at = got[0]
        assert job_id == f"{w}.c"
        assert at - finished < PROMPT

    def test_a_waiter_is_woken_by_a_new_workflow(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        producer = open_client(client.namespace)
        assert claim_ids(client, ["roots"]) == []
        got: list[tuple[str, float]] = []

        def worker() -> None:
            end = time.monotonic() + 10
            while time.monotonic() < end:
                claims = client.claim(["roots"], worker="w")
                if claims:
                    got.append((claims[0].job.id, time.monotonic()))
                    return
                client.wait(["roots"], timeout=5)

        thread = threading.Thread(target=worker)
        thread.start()
        time.sleep(0.3)
        w = "new"
        producer.create_workflow(w, [step(w, "r", queue="roots"), step(w, "c", "r", queue="roots")])
        created = time.monotonic()
        thread.join(15)
        assert got, "the waiting worker never got the new workflow's first step"
        job_id, at = got[0]
        assert job_id == f"{w}.r"
        assert at - created < PROMPT

    @requires("cross_queue_atomic")
    @requires("native_wakeup")
    def test_wait_returns_true_when_a_step_is_promoted(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        w = "wake2"
        finisher = open_client(client.namespace)
        client.create_workflow(w, [step(w, "p", queue="parents"), step(w, "c", "p", queue="kids")])
        lease = self.claim_one(finisher, "parents").lease
        assert claim_ids(client, ["kids"]) == []
        result: list[tuple[bool, float]] = []

        def waiter() -> None:
            start = time.monotonic()
            woke = client.wait(["kids"], timeout=5)
            result.append((woke, time.monotonic() - start))

        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)
        finisher.complete(lease)
        thread.join(10)
        ((woke, took),) = result
        assert woke is True
        assert took < 0.3 + PROMPT

    # -- crashes between a step's write and its children's --------------------------

    @requires("cross_queue_atomic")
    @requires("multi_process")
    def test_a_process_killed_while_finishing_parents_loses_no_promotion(
        self, client: qw.Client
    ) -> None:
        url = self.url_or_skip()
        w = "killed"
        parents = [f"{w}.p{i:03d}" for i in range(KILLED_PARENTS)]
        child = f"{w}.child"
        steps = [NewJob("q", i, id=pid, max_attempts=20) for i, pid in enumerate(parents)]
        steps.append(NewJob("kid", "child", id=child, parents=tuple(parents)))
        client.create_workflow(w, steps, output=child)
        ctx = multiprocessing.get_context("spawn")
        rnd = random.Random()
        for _ in range(KILLS):
            started = ctx.Event()
            done = ctx.Value("i", 0)
            proc = ctx.Process(
                target=finish_steps_until_killed,
                args=(url, client.namespace, "q", KILLED_LEASE, started, done),
                daemon=True,
            )
            proc.start()
            try:
                assert started.wait(60), "the child process never started"
                target = rnd.randint(5, 40)
                end = time.monotonic() + 30
                while done.value < target and proc.is_alive() and time.monotonic() < end:
                    time.sleep(0.001)
                time.sleep(rnd.uniform(0, 0.005))
            finally:
                proc.kill()
                proc.join(30)
        killed_at = time.monotonic()
        # Finish the rest here: first what is queued, then what the dead held.
        self.sleep_past(killed_at + KILLED_LEASE + 0.2)
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            client.reclaim_expired()
            claims = claim_ids(client, ["q"], limit=100)
            for cl in claims:
                client.complete(cl.lease, "here")
            if not claims and set(statuses(client, parents)) == {SUCCEEDED}:
                break
            if not claims:
                time.sleep(0.05)
        assert set(statuses(client, parents)) == {SUCCEEDED}, "a parent was left unfinished"

        def promoted() -> bool:
            return client.get(child).status is not WAITING

        if not client.capabilities.atomic_settle:
            recover(client, promoted, "the child's promotion", self.settle_recovery_s)
        assert client.get(child).status is QUEUED, "the child is stuck"
        claims = claim_ids(client, ["kid"], limit=10)
        assert ids_of(claims) == [child], "the child must be claimable exactly once"
        assert claim_ids(client, ["kid"], limit=10) == []
        client.complete(claims[0].lease)
        flow = client.get_workflow(w)
        assert nonzero(flow.counts) == {SUCCEEDED: KILLED_PARENTS + 1}
        assert flow.state is WorkflowState.SUCCEEDED
        assert workflow_events(client) == [ended_event(w, "succeeded")]

    def test_an_interrupted_settle_is_completed_by_reclaim(self, client: qw.Client) -> None:
        if client.capabilities.atomic_settle:
            pytest.skip(
                f"backend {client.backend.name!r} declares atomic_settle=True: a step's end "
                "settles its children in the same write, so there is nothing to interrupt "
                "(the kill -9 test covers it)"
            )
        try:
            interrupted = self.interrupt_settle(client)
        except NotImplementedError:
            pytest.skip(
                f"backend {client.backend.name!r} declares atomic_settle=False but "
                f"{type(self).__name__} does not implement the hook "
                "interrupt_settle(self, client), so the recovery of an interrupted settle "
                "cannot be tested"
            )
        w = "torn"
        p1, p2, c = (f"{w}.{n}" for n in ("p1", "p2", "c"))
        client.create_workflow(w, [step(w, "p1"), step(w, "p2"), step(w, "c", "p1", "p2")])
        leases = {cl.job.id: cl.lease for cl in claim_ids(client)}
        client.complete(leases[p1])
        with interrupted, contextlib.suppress(Exception):
            client.complete(leases[p2], "torn")
        assert statuses(client, [p1, p2, c]) == [SUCCEEDED, SUCCEEDED, WAITING], (
            "interrupt_settle must stop the backend after the step's own write"
        )
        assert claim_ids(client) == []
        recover(
            client,
            lambda: client.get(c).status is not WAITING,
            "the child's promotion",
            self.settle_recovery_s,
        )
        assert statuses(client, [c]) == [QUEUED]
        settled = workflow_snapshot(client)
        client.reclaim_expired()
        assert workflow_snapshot(client) == settled, "a second recovery changed something"
        claims = claim_ids(client)
        assert ids_of(claims) == [c]

        with self.interrupt_settle(client), contextlib.suppress(Exception):
            client.complete(claims[0].lease, "last")
        assert statuses(client, [c]) == [SUCCEEDED]
        assert client.get_workflow(w).state is WorkflowState.RUNNING
        assert workflow_events(client) == []
        recover(
            client,
            lambda: client.get_workflow(w).state is not WorkflowState.RUNNING,
            "the workflow's end",
            self.settle_recovery_s,
        )
        assert client.get_workflow(w).state is WorkflowState.SUCCEEDED
        for _ in range(3):
            client.reclaim_expired()
        assert workflow_events(client) == [ended_event(w, "succeeded")]

    # -- the model test ------------------------------------------------------------

    def test_workflows_agree_with_the_model(self, open_client: OpenClient) -> None:
        def factory() -> RuleBasedStateMachine:
            return WorkflowMachine(open_client)

        # Hypothesis accepts any zero-argument factory; its stub says "class".
        run_state_machine_as_test(factory, settings=machine_settings())  # type: ignore[arg-type]


# -- the model test --------------------------------------------------------------

MACHINE_QUEUES = ("a", "b")
KINDS = ("complete", "fail", "retry_now", "retry_later", "abort", "release")
#: Most outcomes complete, so that graphs get deep enough to promote and join.
OUTCOMES = st.sampled_from(("complete",) * 12 + KINDS)
#: Most steps in one generated workflow, and most workflows in one example.
MACHINE_STEPS = 8
MACHINE_WORKFLOWS = 3
#: Lease length of the steps the machine lets expire.
SHORT_MACHINE_LEASE = 0.1


def _outcome(kind: str, lease: qw.Lease) -> Outcome:
    if kind == "complete":
        return Complete(lease, {"ok": lease.job_id})
    if kind == "fail":
        return Fail(lease, "boom")
    if kind == "retry_now":
        return Fail(lease, "again", 0.0)
    if kind == "retry_later":
        return Fail(lease, "later", 3600.0)
    if kind == "abort":
        return Abort(lease, "stop")
    return Release(lease)


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[str, tuple[int, ...], ParentFailure, int]]:
    """A random DAG: each step's parents are among the steps before it."""
    n = draw(st.integers(1, MACHINE_STEPS))
    shape = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        shape.append(
            (
                draw(st.sampled_from(MACHINE_QUEUES)),
                tuple(sorted(parents)),
                draw(st.sampled_from([CANCEL, CANCEL, RUN])),
                draw(st.integers(1, 2)),
            )
        )
    return shape


class WorkflowMachine(RuleBasedStateMachine):
    """One namespace of the backend under test, running random workflows, and its model."""

    def __init__(self, open_client: OpenClient) -> None:
        super().__init__()
        self.client = open_client(new_namespace())
        self.model = WorkflowModel()
        self.leases: dict[str, qw.Lease] = {}  # step id → its live, long lease
        self.old_leases: list[qw.Lease] = []
        self.short_leases: list[qw.Lease] = []
        self.short_deadline = 0.0
        self.added: list[tuple[qw.Lease, str, list[NewJob]]] = []
        self.names = itertools.count()
        # A store that shards queues keeps a workflow on one shard: one queue here.
        self.one_queue = not self.client.capabilities.cross_queue_atomic

    def _q(self, queue: str) -> str:
        return MACHINE_QUEUES[0] if self.one_queue else queue

    def teardown(self) -> None:
        self.client.close()

    # -- rules -------------------------------------------------------------

    @precondition(lambda self: len(self.model.flows) < MACHINE_WORKFLOWS)
    @rule(shape=dags(), again=st.sampled_from([False, False, False, True]))
    def create(
        self, shape: list[tuple[str, tuple[int, ...], ParentFailure, int]], again: bool
    ) -> None:
        w = f"wf{next(self.names)}"
        ids = [f"{w}.s{i}" for i in range(len(shape))]
        steps = [
            NewJob(
                self._q(queue),
                i,
                id=ids[i],
                parents=tuple(ids[p] for p in parents),
                on_parent_failure=policy,
                max_attempts=attempts,
            )
            for i, (queue, parents, policy, attempts) in enumerate(shape)
        ]
        assert self.model.create(w, [_spec(s) for s in steps])
        assert self.client.create_workflow(w, steps, output=ids[-1]) == qw.Enqueued(w, True)
        if again:
            assert self.model.create(w, []) is False
            retry = [NewJob("a", "again", id=f"{w}.again")]
            assert self.client.create_workflow(w, retry) == qw.Enqueued(w, False)

    @rule(limit=st.integers(1, 3), kinds=st.lists(OUTCOMES, min_size=9, max_size=9))
    def work(self, limit: int, kinds: list[str]) -> None:
        """Up to three rounds of claiming and finishing at once: graphs get somewhere."""
        queues = list(dict.fromkeys(self._q(q) for q in MACHINE_QUEUES))
        for round_ in range(3):
            expected = self.model.claimable(queues, limit)
            claims = self.client.claim(queues, worker="machine", lease_s=600.0, limit=limit)
            assert ids_of(claims) == [s.id for s in expected]
            outcomes = kinds[3 * round_ : 3 * round_ + 3]
            for cl, model_step, kind in zip(claims, expected, outcomes, strict=False):
                self.model.claimed(model_step, cl.lease.token, False)
                outcome = _outcome(kind, cl.lease)
                want = self.model.finish(outcome)
                assert want is not None
                assert self.client.finish([outcome]) == [want]
                self.old_leases.append(cl.lease)

    @rule(
        queues=st.sampled_from([["a"], ["b"], ["a", "b"]]),
        limit=st.integers(1, 3),
        short=st.sampled_from([False, False, True]),
    )
    def claim(self, queues: list[str], limit: int, short: bool) -> None:
        queues = list(dict.fromkeys(self._q(q) for q in queues))
        expected = self.model.claimable(queues, limit)
        lease_s = SHORT_MACHINE_LEASE if short else 600.0
        claims = self.client.claim(queues, worker="machine", lease_s=lease_s, limit=limit)
        if short and claims:
            self.short_deadline = time.monotonic() + SHORT_MACHINE_LEASE + 0.1
        assert ids_of(claims) == [s.id for s in expected]
        for cl, model_step in zip(claims, expected, strict=True):
            self.model.claimed(model_step, cl.lease.token, short)
            assert cl.job.status is RUNNING
            assert cl.job.attempts == model_step.attempts
            if short:
                self.short_leases.append(cl.lease)
            else:
                self.leases[cl.job.id] = cl.lease

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.leases)))
        renewed = self.client.renew(self.leases[job_id], 600.0)
        assert renewed.cancel_requested is self.model.steps[job_id].cancel_requested

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), kind=OUTCOMES)
    def finish(self, data: st.DataObject, kind: str) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.leases)))
        lease = self.leases.pop(job_id)
        outcome = _outcome(kind, lease)
        expected = self.model.finish(outcome)
        assert expected is not None
        assert self.client.finish([outcome]) == [expected]
        self.old_leases.append(lease)

    @precondition(lambda self: bool(self.old_leases))
    @rule(data=st.data(), kind=st.sampled_from(KINDS))
    def finish_with_an_old_lease(self, data: st.DataObject, kind: str) -> None:
        lease = data.draw(st.sampled_from(self.old_leases))
        outcome = _outcome(kind, lease)
        events_before = list(self.model.events)
        expected = self.model.finish(outcome)
        assert self.model.events == events_before, "the model applied a stale outcome"
        assert self.client.finish([outcome]) == [expected]

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), two=st.booleans(), policy=st.sampled_from([CANCEL, RUN]))
    def add_steps(self, data: st.DataObject, two: bool, policy: ParentFailure) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.leases)))
        lease = self.leases[job_id]
        w = self.model.steps[job_id].workflow
        first = f"{w}.d{next(self.names)}"
        batch = [NewJob("a", "added", id=first, parents=(job_id,))]
        if two:
            second = f"{w}.d{next(self.names)}"
            batch.append(
                NewJob(
                    self._q("b"),
                    "added",
                    id=second,
                    parents=(job_id, first),
                    on_parent_failure=policy,
                )
            )
        self._add(lease, w, batch)
        self.added.append((lease, w, batch))

    @precondition(lambda self: bool(self.added))
    @rule(data=st.data())
    def add_steps_again(self, data: st.DataObject) -> None:
        lease, w, batch = data.draw(st.sampled_from(self.added))
        self._add(lease, w, batch)

    def _add(self, lease: qw.Lease, w: str, batch: list[NewJob]) -> None:
        specs = [_spec(s) for s in batch]
        expected = self.model.add_steps(lease.job_id, lease.token, lease.attempt, w, specs)
        if expected is None:
            with pytest.raises(LeaseLost):
                self.client.add_steps(lease, w, batch)
        else:
            assert self.client.add_steps(lease, w, batch) is expected

    @precondition(lambda self: bool(self.model.steps))
    @rule(data=st.data(), whole=st.booleans())
    def cancel(self, data: st.DataObject, whole: bool) -> None:
        # One rule for both cancels, so that not every other workflow is cut short.
        if not whole:
            job_id = data.draw(st.sampled_from(sorted(self.model.steps)))
            assert self.client.cancel(job_id) is self.model.cancel(job_id)
            return
        w = data.draw(st.sampled_from(sorted(self.model.flows)))
        flow = self.model.cancel_workflow(w)
        assert flow is not None
        got = self.client.cancel_workflow(w)
        assert (got.state, got.cancel_requested) == (flow.state, flow.cancel_requested)

    @precondition(lambda self: bool(self.short_leases))
    @rule()
    def expire_and_reclaim(self) -> None:
        if any(s.short_lease and s.status is RUNNING for s in self.model.steps.values()):
            ContractBase.sleep_past(self.short_deadline)
        expected = self.model.expire_short_leases()
        assert self.client.reclaim_expired() == expected
        self.old_leases.extend(self.short_leases)
        self.short_leases.clear()

    # -- invariants ----------------------------------------------------------

    @invariant()
    def steps_agree(self) -> None:
        stored = {j.id: j for j in self.client.list_jobs(limit=10_000)}
        assert sorted(stored) == sorted(self.model.steps)
        for job_id, want in self.model.steps.items():
            got = stored[job_id]
            assert (got.status, got.attempts, got.queue, got.workflow) == (
                want.status,
                want.attempts,
                want.queue,
                want.workflow,
            ), job_id
            assert got.cancel_requested is want.cancel_requested, job_id
            assert (got.parents, got.children) == (want.parents, tuple(want.children)), job_id
            assert got.on_parent_failure is want.policy, job_id
            assert same_failed_parents(got.failed_parents, want.failed_parents), (
                job_id,
                got.failed_parents,
                want.failed_parents,
            )
            if want.cancelled_by_parent:
                first = got.failed_parents[0]
                assert got.error == {"reason": "parent_failed", "parent": first}, job_id
        assert self.client.counts() == self.model.counts()

    @invariant()
    def workflows_agree(self) -> None:
        stored = {f.id: f for f in self.client.list_workflows(limit=10_000)}
        assert sorted(stored) == sorted(self.model.flows)
        for w, want in self.model.flows.items():
            got = stored[w]
            assert (got.state, got.cancel_requested) == (want.state, want.cancel_requested), w
            assert nonzero(got.counts) == self.model.flow_counts(w), w
            assert (got.finished_at is None) is (want.state is WorkflowState.RUNNING), w

    @invariant()
    def events_agree(self) -> None:
        stored = self.client.fetch_events(limit=10_000)
        cursors = [e.cursor for e in stored]
        assert cursors == sorted(set(cursors)), "events out of cursor order"
        jobs = {j.id: j for j in self.client.list_jobs(limit=10_000)}
        got = []
        for e in stored:
            data = e.data
            if isinstance(data, dict) and data.get("reason") == "parent_failed":
                # The parent an event names is the one the step's error names.
                job = jobs[e.job_id]
                assert isinstance(job.error, dict)
                assert data.get("parent") == job.error.get("parent"), e
                data = {**data, "parent": SOME_PARENT}
            got.append((e.job_id, e.type, data))
        want = [(m.job_id, m.type, m.data) for m in self.model.events]
        # Within one call's group of events the store picks the order; across calls, never.
        start = 0
        for group in dict.fromkeys(m.group for m in self.model.events):
            size = sum(1 for m in self.model.events if m.group == group)
            chunk_got = sorted(got[start : start + size], key=repr)
            chunk_want = sorted(want[start : start + size], key=repr)
            assert chunk_got == chunk_want, (got, want)
            start += size
        assert len(got) == len(want), (got, want)


def _spec(job: NewJob) -> StepSpec:
    return StepSpec(job.id, job.queue, job.parents, job.on_parent_failure, job.max_attempts)


# ``pytest -k Workflow`` selects this module's tests in a backend's subclass:
# -k matches the names set on a test function, and a subclass's node ids do
# not name the mixin class.
for _name, _test in list(vars(WorkflowTests).items()):
    if _name.startswith("test_") and callable(_test):
        _test.WorkflowTests = True
