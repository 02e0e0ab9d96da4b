"""The application object, the task decorator and the retry backoff (no worker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import qw
from qw.worker import Backoff, WorkerConfig


def test_backoff_is_exponential_capped_and_jittered_within_its_upper_half() -> None:
    b = Backoff(base=1.0, factor=2.0, max=10.0)
    assert [b.delay(n, rand=lambda: 1.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert [b.delay(n, rand=lambda: 0.0) for n in range(1, 5)] == [0.5, 1, 2, 4]
    assert Backoff(jitter=False).delay(3) == 4.0
    assert Backoff.fixed(5).delay(99) == 5.0
    assert Backoff(max=60).delay(10_000) <= 60  # no float overflow
    for bad in ({"base": -1}, {"factor": 0.5}, {"max": float("inf")}, {"base": True}):
        with pytest.raises(qw.InvalidInput):
            Backoff(**bad)


def test_task_defaults_options_and_payloads() -> None:
    app = qw.App("memory://apptest", namespace="apptest")

    @app.task
    def plain(x: int) -> int:
        return x * 2

    @app.task(name="custom", queue="q2", max_attempts=7, priority=3, backoff=2)
    async def coro() -> None:
        return None

    assert plain.name == f"{__name__}.test_task_defaults_options_and_payloads.<locals>.plain"
    assert (plain.queue, plain.max_attempts, plain.is_async) == ("default", 3, False)
    assert (coro.queue, coro.max_attempts, coro.is_async, coro.backoff) == (
        "q2", 7, True, Backoff.fixed(2),
    )  # fmt: skip
    assert plain(21) == 42  # calling runs it here
    assert app.queues() == ["default", "q2"]
    assert set(app.tasks) == {plain.name, "custom"}

    at = datetime.now(UTC) + timedelta(hours=1)
    job = coro.options(run_at=at, dedupe_key="d", priority=-1, queue="other").job()
    assert (job.queue, job.run_at, job.dedupe_key, job.priority, job.max_attempts) == (
        "other", at, "d", -1, 7,
    )  # fmt: skip
    assert job.payload == {"task": "custom", "args": [], "kwargs": {}}
    stored = app.client.get(coro.options(run_at=at).delay().id)
    assert stored.run_at == at
    assert stored.status is qw.JobStatus.QUEUED
    app.close()


@pytest.mark.parametrize(
    "options",
    [{"queue": "bad queue"}, {"max_attempts": 0}, {"timeout": 0}, {"no_retry": (int,)}],
)
def test_bad_task_options_are_refused(options: dict[str, object]) -> None:
    app = qw.App("memory://", namespace="apptest")
    with pytest.raises(qw.InvalidInput):
        app.task(**options)(lambda: None)  # type: ignore[call-overload]


def test_a_second_function_under_one_name_is_refused() -> None:
    app = qw.App("memory://", namespace="apptest")
    app.task(name="same")(lambda: 1)
    with pytest.raises(qw.ConfigurationError):
        app.task(name="same")(lambda: 2)


def test_load_app_errors_are_configuration_errors() -> None:
    for spec in ("nocolon", "no_such_module_xyz:app", "runtime_app:nope", "runtime_app:register"):
        with pytest.raises(qw.ConfigurationError):
            qw.load_app(spec)
    assert isinstance(qw.load_app("runtime_app:app"), qw.App)


def test_worker_config_is_checked() -> None:
    for bad in ({"concurrency": 0}, {"lease_s": 0}, {"grace_s": -1}, {"queues": ()}):
        with pytest.raises(qw.InvalidInput):
            WorkerConfig(**bad)
    assert WorkerConfig(lease_s=9).renew_s == 3


def test_configure_after_open_is_refused() -> None:
    app = qw.App("memory://", namespace="apptest")
    app.configure(namespace="other")
    assert app.client.namespace == "other"
    with pytest.raises(qw.ConfigurationError):
        app.configure(url="memory://elsewhere")
    app.close()
