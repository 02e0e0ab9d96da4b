"""The async suite must fail a broken async backend: each defect is caught by the tests named.

Each case runs the named ``AsyncClientTests`` in a pytester session twice:
on plain ``memory`` in threads (they pass, the control) and on a
:class:`qw.aio.ThreadedAsyncBackend` subclass with one defect (each fails).
"""

from __future__ import annotations

import textwrap

import pytest

TEST = textwrap.dedent(
    '''
    import uuid

    from qw.aio import ThreadedAsyncBackend
    from qw.backends.memory import MemoryBackend
    from qw_testkit import AsyncClientTests

    STORE = "aio-selftest-" + uuid.uuid4().hex[:8]


    class DropsJobs(ThreadedAsyncBackend):
        """Answers for every job of a batch but writes only the first."""

        async def enqueue(self, jobs):
            answers = await super().enqueue(jobs[:1])
            return answers + [type(answers[0])(job.id, True) for job in jobs[1:]]


    class CancelIsANoOp(ThreadedAsyncBackend):
        """Says a job is cancelled, and leaves it as it is."""

        async def cancel(self, job_id):
            job = await self.get(job_id)
            return None if job is None else type(job.status)("cancelled")


    class WaitReturnsAtOnce(ThreadedAsyncBackend):
        """Never waits: the job as it is, at once."""

        async def wait_finished(self, job_id, timeout):
            return await self.get(job_id)


    class Threaded(ThreadedAsyncBackend):
        """The control: memory in threads, as it is."""


    class TestAsync(AsyncClientTests):
        def make_backend(self, namespace):
            return MemoryBackend(STORE, namespace=namespace)

        def make_async_backend(self, namespace):
            return {cls}(self.make_backend(namespace))
    '''
)

CASES = {
    "DropsJobs": [
        "test_async_enqueue_answers_and_reads_back",
        "test_async_dedupe_and_duplicate_id",
    ],
    "CancelIsANoOp": ["test_async_cancel_of_a_queued_job_cancels_it_with_its_event"],
    "WaitReturnsAtOnce": [
        "test_async_wait_finished_returns_promptly_once_another_client_completes",
        "test_async_wait_finished_times_out_with_the_job_as_it_is",
    ],
}


def _run(pytester: pytest.Pytester, cls: str, tests: list[str]) -> pytest.RunResult:
    pytester.makepyfile(test_async=TEST.replace("{cls}", cls))
    ids = [f"test_async.py::TestAsync::{name}" for name in tests]
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q", *ids)


@pytest.mark.parametrize("broken", sorted(CASES))
def test_the_async_suite_fails_a_broken_async_backend(
    pytester: pytest.Pytester, broken: str
) -> None:
    tests = CASES[broken]
    outcomes = _run(pytester, broken, tests).parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == len(tests)


@pytest.mark.parametrize("broken", sorted(CASES))
def test_the_same_async_tests_pass_in_plain_threads(pytester: pytest.Pytester, broken: str) -> None:
    tests = CASES[broken]
    _run(pytester, "Threaded", tests).assert_outcomes(passed=len(tests))
