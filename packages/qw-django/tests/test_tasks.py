"""qw_django end to end: Django's tasks API, a real store, ``manage.py qw_worker`` as a subprocess.

Every case runs on the SQLite file and on the PostgreSQL database of the
test project (see conftest.py), each through the project's own Django
connection and transactions.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import ON_COMMIT, RETRY
from django.db import transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from qwdj_shop import tasks
from qwdj_shop.models import Order

import qw
from qw.model import JobStatus

WAIT_S = 30.0


def worker_args(alias: str, *queues: str, concurrency: int = 2) -> list[str]:
    args = ["--backend", alias, "--concurrency", str(concurrency), "--poll-interval", "0.2"]
    for queue in queues or ("default",):
        args += ["--queue", queue]
    return args


def finished(alias: str, result_id: str) -> Any:
    result = task_backends[alias].wait(result_id, WAIT_S)
    assert result.is_finished, f"{result_id} still {result.status} after {WAIT_S} s"
    return result


def refs(database: str, prefix: str) -> list[str]:
    rows = Order.objects.using(database).filter(ref__startswith=prefix).order_by("id")
    return list(rows.values_list("ref", flat=True))


def unique(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(4)}"


def rolled_back(database: str, enqueue: Any) -> Any:
    """``enqueue()`` in an atomic block (a savepoint when nested) that is then rolled back."""
    with transaction.atomic(using=database):
        result = enqueue()
        transaction.set_rollback(True, using=database)
    return result


# -- enqueue, run, results -----------------------------------------------------


def test_enqueue_run_and_get_result(store: tuple[str, str], start_worker: Any) -> None:
    alias, _ = store
    start_worker(*worker_args(alias))
    before = datetime.now(UTC)
    enqueued = tasks.add.using(backend=alias).enqueue(2, 3)
    assert enqueued.status == TaskResultStatus.READY
    assert enqueued.backend == alias
    assert enqueued.args == [2, 3]

    done = finished(alias, enqueued.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 5
    assert done.args == [2, 3]
    assert done.kwargs == {}
    assert done.task.func is tasks.add.func
    assert done.task.backend == alias
    assert done.attempts == 1
    # qw forgets a finished job's worker: one (blank) entry per attempt.
    assert done.worker_ids == [""]
    assert done.errors == []
    slack = timedelta(seconds=5)  # the store's clock, not this process's
    assert before - slack <= done.enqueued_at <= done.started_at <= done.finished_at
    assert done.last_attempted_at == done.started_at
    # Django's own entry points reach the same record.
    assert tasks.add.using(backend=alias).get_result(enqueued.id).return_value == 5
    enqueued.refresh()
    assert enqueued.status == TaskResultStatus.SUCCESSFUL
    assert enqueued.return_value == 5


def test_async_task_kwargs_and_context(store: tuple[str, str], start_worker: Any) -> None:
    alias, _ = store
    start_worker(*worker_args(alias))
    summed = tasks.async_add.using(backend=alias).enqueue(a=40, b=2)
    context = tasks.whoami.using(backend=alias).enqueue("ctx")
    done = finished(alias, summed.id)
    assert done.return_value == 42
    assert done.kwargs == {"a": 40, "b": 2}
    seen = finished(alias, context.id).return_value
    # The task saw its own result record, running, on its first attempt.
    worker = seen.pop("worker")
    assert seen == {"tag": "ctx", "id": context.id, "attempt": 1, "status": "RUNNING"}
    assert worker.count(":") >= 2  # a running job's qw worker id, host:pid:random


def test_aenqueue_and_aget_result(store: tuple[str, str]) -> None:
    alias, _ = store
    task = tasks.add.using(backend=alias, queue_name="idle")

    async def produce() -> tuple[Any, Any]:
        enqueued = await task.aenqueue(4, 5)
        return enqueued, await task.aget_result(enqueued.id)

    enqueued, read = asyncio.run(produce())
    assert read.id == enqueued.id
    assert read.status == TaskResultStatus.READY
    assert read.args == [4, 5]
    assert read.task.queue_name == "idle"


def test_get_result_of_unknown_ids(store: tuple[str, str]) -> None:
    backend = task_backends[store[0]]
    for result_id in ("0190b5b0-0000-7000-8000-000000000000", "no-such-id", "", "x" * 5000):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result_id)


def test_failing_task_is_failed_with_its_error(store: tuple[str, str], start_worker: Any) -> None:
    alias, _ = store
    start_worker(*worker_args(alias))
    enqueued = tasks.boom.using(backend=alias).enqueue("the flux capacitor")
    done = finished(alias, enqueued.id)
    assert done.status == TaskResultStatus.FAILED
    assert done.attempts == 1  # MAX_ATTEMPTS defaults to 1, as Django's own backends run
    [error] = done.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "Traceback (most recent call last)" in error.traceback
    assert "the flux capacitor" in error.traceback
    assert "qwdj_shop/tasks.py" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        done.return_value  # noqa: B018

    # A return value that is not JSON fails the task as Django's backends do.
    bad = finished(alias, tasks.unjsonable.using(backend=alias).enqueue().id)
    assert bad.status == TaskResultStatus.FAILED
    assert bad.errors[0].exception_class is TypeError


def test_max_attempts_retries_a_task_that_raises(store: tuple[str, str], start_worker: Any) -> None:
    alias = RETRY[store[0]]
    start_worker(*worker_args(alias))
    # MAX_ATTEMPTS 2: a task failing once succeeds on its retry (after qw's ~1 s backoff)...
    done = finished(alias, tasks.flaky.using(backend=alias).enqueue(2).id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 2
    assert done.attempts == 2
    # ...and one failing every time is FAILED after its second attempt, with that error.
    failed = finished(alias, tasks.flaky.using(backend=alias).enqueue(99).id)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.attempts == 2
    [error] = failed.errors
    assert error.exception_class is RuntimeError
    assert "attempt 2 fails" in error.traceback


def test_a_job_naming_no_django_task_fails_as_unknown(
    store: tuple[str, str], start_worker: Any
) -> None:
    alias, _ = store
    start_worker(*worker_args(alias))
    client = task_backends[alias].client
    payload = {"task": "qwdj_shop.tasks.Order", "args": [], "kwargs": {}}  # a model, not a task
    job_id = client.enqueue_one("default", payload).id
    job = client.wait_finished(job_id, WAIT_S)
    assert job.status is JobStatus.FAILED
    assert isinstance(job.error, dict)
    assert job.error["type"] == "qw.UnknownTask"
    with pytest.raises(TaskResultDoesNotExist, match=r"not a django\.tasks\.Task"):
        task_backends[alias].get_result(job_id)


def test_worker_reports_and_stops_on_sigterm(store: tuple[str, str], start_worker: Any) -> None:
    alias, _ = store
    worker = start_worker(*worker_args(alias))
    ids = [tasks.add.using(backend=alias).enqueue(i, i).id for i in range(5)]
    assert [finished(alias, i).return_value for i in ids] == [0, 2, 4, 6, 8]
    code, err = worker.stop()
    assert code == 0, err
    assert f"on {alias!r}, queues ['default']" in err
    assert "stopped:" in err
    # Other cases' workers may share the queue; this one ran some or none of these.
    assert " succeeded," in err


def test_a_cancelled_task_is_failed(store: tuple[str, str]) -> None:
    alias, _ = store
    backend = task_backends[alias]
    enqueued = tasks.add.using(backend=alias, queue_name="idle").enqueue(1, 2)
    backend.client.cancel(enqueued.id)
    result = backend.get_result(enqueued.id)
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class is qw.errors.JobWasCancelled
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018


# -- transactions ----------------------------------------------------------------


def test_atomic_commit_writes_the_job_with_the_rows(
    store: tuple[str, str], start_worker: Any
) -> None:
    alias, database = store
    backend = task_backends[alias]
    start_worker(*worker_args(alias))
    parent, child = unique("parent"), unique("child")
    with transaction.atomic(using=database):
        Order.objects.using(database).create(ref=parent)
        enqueued = tasks.make_order.using(backend=alias).enqueue(database, child)
        # Written in this transaction: no other connection (the worker's,
        # qw's own) sees the job before the commit.
        assert backend.client.find(enqueued.id) is None
        time.sleep(0.5)  # the worker polls meanwhile, and finds nothing
        assert backend.client.find(enqueued.id) is None
    assert backend.client.find(enqueued.id) is not None
    done = finished(alias, enqueued.id)
    assert done.status == TaskResultStatus.SUCCESSFUL, done.errors
    assert done.return_value["ref"] == child
    assert refs(database, parent) == [parent]
    assert refs(database, child) == [child]


def test_rollback_leaves_no_job(store: tuple[str, str], start_worker: Any) -> None:
    alias, database = store
    backend = task_backends[alias]
    start_worker(*worker_args(alias))
    parent, child = unique("parent"), unique("child")

    def write() -> Any:
        Order.objects.using(database).create(ref=parent)
        return tasks.make_order.using(backend=alias).enqueue(database, child)

    lost = rolled_back(database, write)
    assert backend.client.find(lost.id) is None
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(lost.id)
    # A job enqueued after it runs, and the rolled-back one never did.
    marker = finished(alias, tasks.add.using(backend=alias).enqueue(1, 1).id)
    assert marker.return_value == 2
    assert refs(database, parent) == []
    assert refs(database, child) == []


def test_savepoint_rollback_drops_only_its_jobs(store: tuple[str, str], start_worker: Any) -> None:
    alias, database = store
    backend = task_backends[alias]
    start_worker(*worker_args(alias))
    kept, dropped = unique("kept"), unique("dropped")
    with transaction.atomic(using=database):
        outer = tasks.make_order.using(backend=alias).enqueue(database, kept)
        inner = rolled_back(
            database, lambda: tasks.make_order.using(backend=alias).enqueue(database, dropped)
        )
        # After a savepoint's rollback the transaction goes on and can enqueue.
        after = tasks.add.using(backend=alias).enqueue(20, 22)
    assert finished(alias, outer.id).return_value["ref"] == kept
    assert finished(alias, after.id).return_value == 42
    assert backend.client.find(inner.id) is None
    assert refs(database, dropped) == []


def test_broken_transaction_refuses_the_enqueue(store: tuple[str, str]) -> None:
    from django.db.transaction import TransactionManagementError

    alias, database = store
    backend = task_backends[alias]
    before = backend.client.counts()
    with transaction.atomic(using=database):
        # As Django marks a transaction whose error was swallowed inside atomic().
        transaction.set_rollback(True, using=database)
        with pytest.raises(TransactionManagementError):
            tasks.add.using(backend=alias).enqueue(1, 2)
    assert backend.client.counts() == before


def test_enqueue_on_commit_writes_after_commit_only(
    store: tuple[str, str], start_worker: Any
) -> None:
    alias, database = store
    on_commit = ON_COMMIT[alias]
    backend = task_backends[on_commit]
    start_worker(*worker_args(on_commit))
    sent: list[str] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        sent.append(task_result.id)

    task_enqueued.connect(receiver)
    try:
        ref = unique("oncommit")
        with transaction.atomic(using=database):
            enqueued = tasks.make_order.using(backend=on_commit).enqueue(database, ref)
            assert enqueued.status == TaskResultStatus.READY
            assert enqueued.id not in sent  # not written, not even in the transaction
            assert backend.client.find(enqueued.id) is None
        assert sent == [enqueued.id]
        assert finished(on_commit, enqueued.id).return_value["ref"] == ref

        dropped = unique("oncommit-dropped")
        lost = rolled_back(
            database, lambda: tasks.make_order.using(backend=on_commit).enqueue(database, dropped)
        )
        assert lost.id not in sent
        assert backend.client.find(lost.id) is None

        # Outside a transaction, on_commit runs at once.
        now = tasks.add.using(backend=on_commit).enqueue(3, 4)
        assert sent[-1] == now.id
        assert finished(on_commit, now.id).return_value == 7
        assert refs(database, dropped) == []
    finally:
        task_enqueued.disconnect(receiver)


# -- priorities, run_after ---------------------------------------------------------


def test_priorities_run_highest_first(store: tuple[str, str], start_worker: Any) -> None:
    alias, database = store
    prefix = unique("prio")
    order = [0, -100, 50, 100, -5, 7]
    ids = []
    for priority in order:
        task = tasks.make_order.using(backend=alias, priority=priority, queue_name="prio")
        ids.append(task.enqueue(database, f"{prefix}:{priority:+04d}").id)
    waiting = task_backends[alias].get_result(ids[3])
    assert waiting.status == TaskResultStatus.READY
    assert waiting.task.priority == 100
    assert waiting.task.queue_name == "prio"
    # One slot and everything already queued: the claim order is the run order.
    start_worker(*worker_args(alias, "prio", concurrency=1))
    for result_id in ids:
        assert finished(alias, result_id).status == TaskResultStatus.SUCCESSFUL
    ran = [int(ref.rpartition(":")[2]) for ref in refs(database, prefix)]
    assert ran == sorted(order, reverse=True)


def test_run_after_defers_the_task(store: tuple[str, str], start_worker: Any) -> None:
    alias, _ = store
    start_worker(*worker_args(alias, "later"))
    now = tasks.add.using(backend=alias, queue_name="later")
    assert finished(alias, now.enqueue(0, 0).id).return_value == 0  # the worker is up
    run_after = datetime.now(UTC) + timedelta(seconds=3)
    deferred = tasks.add.using(backend=alias, queue_name="later", run_after=run_after)
    enqueued = deferred.enqueue(1, 2)
    assert finished(alias, now.enqueue(5, 5).id).return_value == 10
    waiting = task_backends[alias].get_result(enqueued.id)
    assert datetime.now(UTC) < run_after, "too slow a machine to tell"
    assert waiting.status == TaskResultStatus.READY
    assert abs(waiting.task.run_after - run_after) < timedelta(milliseconds=1)
    done = finished(alias, enqueued.id)
    assert done.return_value == 3
    assert done.started_at >= run_after - timedelta(milliseconds=50)


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((object(),), {}, id="object"),
        pytest.param(({1, 2},), {}, id="set"),
        pytest.param((), {"when": datetime(2030, 1, 1, tzinfo=UTC)}, id="datetime"),
        pytest.param((float("nan"),), {}, id="nan"),
        pytest.param(("x" * (2 * 1024 * 1024),), {}, id="too-large"),
    ],
)
def test_arguments_that_are_not_json_are_refused_before_any_io(
    store: tuple[str, str], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    alias, _ = store
    backend = task_backends[alias]
    before = backend.client.counts()
    with pytest.raises(qw.InvalidPayload):
        tasks.add.using(backend=alias).enqueue(*args, **kwargs)
    with pytest.raises(qw.InvalidPayload):
        tasks.add.using(backend=ON_COMMIT[alias]).enqueue(*args, **kwargs)
    assert backend.client.counts() == before


def test_bad_input_is_refused_before_the_store_is_reached() -> None:
    # A backend whose store does not answer: a bad call fails on its input,
    # never reaching the store; a good one then fails reaching it.
    from django.test import override_settings

    unreachable = {
        "BACKEND": "qw_django.QwTaskBackend",
        "OPTIONS": {"URL": "postgresql://postgres@127.0.0.1:9/none?connect_timeout=2"},
    }
    with override_settings(TASKS={"default": unreachable}):
        for bad in (object(), float("inf"), "x" * (2 * 1024 * 1024)):
            with pytest.raises(qw.InvalidPayload):
                tasks.add.enqueue(bad, 1)
        with pytest.raises(InvalidTask):
            tasks.add.using(priority=101)
        with pytest.raises(qw.BackendUnavailable):
            tasks.add.enqueue(1, 1)


def test_task_options_are_checked_by_django(store: tuple[str, str]) -> None:
    alias, _ = store
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(backend=alias, priority=500)
    with pytest.raises(InvalidTask, match="aware"):
        tasks.add.using(backend=alias, run_after=datetime(2030, 1, 1))
    with pytest.raises(InvalidTask, match="Queue"):
        tasks.add.using(backend=alias, queue_name="nowhere")
