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
    import uuid
    from dataclasses import replace
    from datetime import UTC, datetime

    import qw
    from qw.backends.memory import MemoryBackend
    from qw.capabilities import Capabilities
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
        def make_backend(self, namespace):
            return {cls}(STORE, namespace=namespace)
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


@pytest.mark.parametrize("broken", sorted(CASES))
def test_the_same_tests_pass_on_memory(pytester: pytest.Pytester, broken: str) -> None:
    tests = CASES[broken]
    result = _run(pytester, "Memory", tests)
    result.assert_outcomes(passed=len(tests))


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
