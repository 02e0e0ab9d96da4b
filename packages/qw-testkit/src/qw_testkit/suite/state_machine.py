"""A Hypothesis state machine drives the backend and a plain-Python model side by side.

After every step the two must agree on each job's status, attempts and
cancel flag, on ``counts()``, on the switches and on the unacked events.
Effort: ``QW_TESTKIT_HYPOTHESIS_PROFILE=thorough`` (or
``--qw-hypothesis-profile thorough``) runs many more and longer examples.
"""

from __future__ import annotations

import os
import time

from hypothesis import HealthCheck, Phase, settings
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
from qw.model import EventSpec, JobStatus, NewJob
from qw_testkit.base import ContractBase, OpenClient, new_namespace
from qw_testkit.model import ModelEvent, NamespaceModel
from qw_testkit.pytest_plugin import PROFILE_ENV

#: Lease length for the jobs the machine lets expire; long leases never do.
SHORT_LEASE = 0.1
LONG_LEASE = 600.0
QUEUES = ("a", "b")
KINDS = ("complete", "fail", "retry_now", "retry_later", "abort", "release")


def machine_settings() -> settings:
    """The effort named by the profile: ``default``, ``thorough``, or ``quick``.

    ``quick`` does not shrink a failure (the kit's own self-tests use it);
    shrinking a failure found with real sleeps can take minutes.
    """
    profile = os.environ.get(PROFILE_ENV, "default")
    examples, steps = {"thorough": (300, 60), "quick": (25, 30)}.get(profile, (25, 30))
    phases = tuple(Phase) if profile != "quick" else (Phase.explicit, Phase.reuse, Phase.generate)
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def _outcome(kind: str, lease: qw.Lease, with_event: bool) -> Outcome:
    spec = EventSpec(f"m.{kind}", {"job": lease.job_id}) if with_event else None
    if kind == "complete":
        return Complete(lease, {"ok": True}, spec)
    if kind == "fail":
        return Fail(lease, "boom", None, spec)
    if kind == "retry_now":
        return Fail(lease, "again", 0.0, spec)
    if kind == "retry_later":
        return Fail(lease, "later", 3600.0, spec)
    if kind == "abort":
        return Abort(lease, "stop", spec)
    return Release(lease)


class ContractMachine(RuleBasedStateMachine):
    """One namespace of the backend under test, and its model."""

    def __init__(self, open_client: OpenClient) -> None:
        super().__init__()
        self.client = open_client(new_namespace())
        self.model = NamespaceModel()
        self.leases: dict[str, qw.Lease] = {}  # job id → its live lease
        self.old_leases: list[qw.Lease] = []
        self.short_leases: list[qw.Lease] = []  # live until the next reclaim
        self.tokens: set[str] = set()
        self.short_deadline = 0.0
        self.queue_switch = self.client.capabilities.queue_switch
        # A store that shards queues is held to the model's namespace-wide
        # rules (one priority order, dedupe keys) within one queue's shard.
        self.one_queue = not self.client.capabilities.cross_queue_atomic

    def teardown(self) -> None:
        self.client.close()

    # -- rules -------------------------------------------------------------

    @rule(
        batch=st.lists(
            st.tuples(
                st.sampled_from(QUEUES),
                st.integers(-1, 1),
                st.integers(1, 3),
                st.sampled_from([None, None, "k1", "k2"]),
                st.sampled_from([True, True, True, False]),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def enqueue(self, batch: list[tuple[str, int, int, str | None, bool]]) -> None:
        jobs = [
            NewJob(
                QUEUES[0] if self.one_queue else q,
                {"n": i},
                priority=p,
                max_attempts=m,
                dedupe_key=k,
                delay=None if due else 3600,
            )
            for i, (q, p, m, k, due) in enumerate(batch)
        ]
        expected = self.model.enqueue(
            [
                (j.id, j.queue, j.priority, j.max_attempts, j.dedupe_key, j.delay is None)
                for j in jobs
            ]
        )
        answers = self.client.enqueue(jobs)
        assert [(a.id, a.created) for a in answers] == expected

    @rule(
        queues=st.sampled_from([["a"], ["b"], ["a", "b"]]),
        limit=st.integers(1, 3),
        short=st.sampled_from([False, False, True]),
    )
    def claim(self, queues: list[str], limit: int, short: bool) -> None:
        if self.one_queue:
            queues = [QUEUES[0]]
        expected = self.model.claimable(queues, limit)
        lease_s = SHORT_LEASE if short else LONG_LEASE
        claims = self.client.claim(queues, worker="machine", lease_s=lease_s, limit=limit)
        if short and claims:
            self.short_deadline = time.monotonic() + SHORT_LEASE + 0.1
        assert [c.job.id for c in claims] == [j.id for j in expected]
        for claim, job in zip(claims, expected, strict=True):
            assert claim.lease.token not in self.tokens, "a claim reused a token"
            self.tokens.add(claim.lease.token)
            self.model.claimed(job, claim.lease.token, short)
            assert claim.job.status is JobStatus.RUNNING
            assert claim.job.attempts == job.attempts
            if short:
                self.short_leases.append(claim.lease)
            else:
                self.leases[job.id] = claim.lease

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.leases)))
        renewed = self.client.renew(self.leases[job_id], LONG_LEASE)
        assert renewed.cancel_requested is self.model.jobs[job_id].cancel_requested

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), kind=st.sampled_from(KINDS), with_event=st.booleans())
    def finish(self, data: st.DataObject, kind: str, with_event: bool) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.leases)))
        lease = self.leases.pop(job_id)
        outcome = _outcome(kind, lease, with_event)
        expected = self.model.finish(outcome)
        assert expected is not None
        assert self.client.finish([outcome]) == [expected]
        self.old_leases.append(lease)

    @precondition(lambda self: bool(self.old_leases))
    @rule(data=st.data(), kind=st.sampled_from(KINDS), with_event=st.booleans())
    def finish_with_an_old_lease(self, data: st.DataObject, kind: str, with_event: bool) -> None:
        lease = data.draw(st.sampled_from(self.old_leases))
        outcome = _outcome(kind, lease, with_event)
        events_before = list(self.model.events)
        expected = self.model.finish(outcome)
        assert self.model.events == events_before, "the model applied a stale outcome"
        assert self.client.finish([outcome]) == [expected]
        if expected is None:
            assert self.client.renew_many([lease]) == [None]

    @precondition(lambda self: bool(self.model.jobs))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.model.jobs)))
        assert self.client.cancel(job_id) is self.model.cancel(job_id)

    @precondition(lambda self: bool(self.short_leases))
    @rule()
    def expire_and_reclaim(self) -> None:
        short = [
            j for j in self.model.jobs.values() if j.short_lease and j.status is JobStatus.RUNNING
        ]
        if short:
            ContractBase.sleep_past(self.short_deadline)
        expected = self.model.expire_short_leases()
        assert self.client.reclaim_expired() == expected
        self.old_leases.extend(self.short_leases)
        self.short_leases.clear()

    @rule(queue=st.sampled_from([None, "a", "b"]), stay_off=st.sampled_from([False, False, True]))
    def switch_off(self, queue: str | None, stay_off: bool) -> None:
        if queue is not None and not self.queue_switch:
            queue = None
        if queue is not None and self.one_queue:
            queue = QUEUES[0]
        self.client.set_enabled(False, queue)
        self._model_switch(False, queue)
        assert self.client.claim([queue or "a"], worker="machine", lease_s=LONG_LEASE) == []
        if not stay_off:
            self.client.set_enabled(True, queue)
            self._model_switch(True, queue)

    @precondition(
        lambda self: not self.model.enabled or not all(self.model.queue_switches.values())
    )
    @rule()
    def switch_everything_on(self) -> None:
        self.client.set_enabled(True)
        self._model_switch(True, None)
        for queue in list(self.model.queue_switches):
            self.client.set_enabled(True, queue)
            self._model_switch(True, queue)

    def _model_switch(self, enabled: bool, queue: str | None) -> None:
        if queue is None:
            self.model.enabled = enabled
        else:
            self.model.queue_switches[queue] = enabled

    @precondition(lambda self: bool(self.model.events))
    @rule(data=st.data())
    def ack_some_events(self, data: st.DataObject) -> None:
        events = self.client.fetch_events(limit=10_000)
        k = data.draw(st.integers(0, len(events)))
        assert self.client.ack_events([e.cursor for e in events[:k]]) == k
        for e in events[:k]:
            self.model.events.remove(ModelEvent(e.job_id, e.type, e.data, self._group_of(e)))

    def _group_of(self, event: qw.Event) -> int:
        for m in self.model.events:
            if (m.job_id, m.type, m.data) == (event.job_id, event.type, event.data):
                return m.group
        raise AssertionError(f"the store has an event the model does not: {event!r}")

    # -- invariants ----------------------------------------------------------

    @invariant()
    def jobs_agree(self) -> None:
        stored = {j.id: j for j in self.client.list_jobs(limit=10_000)}
        assert sorted(stored) == sorted(self.model.jobs)
        for job_id, job in self.model.jobs.items():
            got = stored[job_id]
            assert (got.status, got.attempts, got.queue) == (job.status, job.attempts, job.queue), (
                job_id
            )
            assert got.cancel_requested is job.cancel_requested, job_id
        assert self.client.counts() == self.model.counts()

    @invariant()
    def switches_agree(self) -> None:
        switches = self.client.switches()
        assert switches.enabled is self.model.enabled
        assert dict(switches.queues) == self.model.queue_switches

    @invariant()
    def events_agree(self) -> None:
        events = self.client.fetch_events(limit=10_000)
        cursors = [e.cursor for e in events]
        assert cursors == sorted(set(cursors)), "events out of cursor order"
        got = [(e.job_id, e.type, e.data) for e in events]
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


class StateMachineTests(ContractBase):
    def test_backend_agrees_with_the_model(self, open_client: OpenClient) -> None:
        def factory() -> RuleBasedStateMachine:
            return ContractMachine(open_client)

        # Hypothesis accepts any zero-argument factory; its stub says "class".
        run_state_machine_as_test(factory, settings=machine_settings())  # type: ignore[arg-type]
