# mypy: allow-subclassing-any, no-warn-unused-ignores
# Django ships no type information and is absent from the workspace's 3.11
# type-check venv: its imports carry both codes, and an unused one is fine.
"""``qw_django.QwTaskBackend``: Django's tasks framework on a qw store.

::

    TASKS = {
        "default": {
            "BACKEND": "qw_django.QwTaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"DATABASE": "default"},
        }
    }

``enqueue`` writes one qw job; ``get_result`` reads it back as a TaskResult.
Inside ``transaction.atomic()`` on the store's own database the job is
written through Django's connection, in that transaction: it exists if and
only if the block commits. See docs/django.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings  # type: ignore[import-not-found,import-untyped]
from django.db import (  # type: ignore[import-not-found,import-untyped]
    connections,
    transaction,
)
from django.tasks import (  # type: ignore[import-not-found,import-untyped]
    TaskResult,
    TaskResultStatus,
)
from django.tasks.backends.base import (  # type: ignore[import-not-found,import-untyped]
    BaseTaskBackend,
)
from django.tasks.exceptions import (  # type: ignore[import-not-found,import-untyped]
    TaskResultDoesNotExist,
)
from django.tasks.signals import task_enqueued  # type: ignore[import-not-found,import-untyped]
from django.utils import timezone  # type: ignore[import-not-found,import-untyped]
from django.utils.json import normalize_json  # type: ignore[import-not-found,import-untyped]

import qw
from qw.ids import new_job_id
from qw.model import NewJob
from qw.payload import task_payload
from qw.validation import DEFAULT_MAX_PAYLOAD_BYTES, validate_new_jobs
from qw_django.results import job_priority, task_result
from qw_django.store import StoreConfig, client_for

__all__ = ["QwTaskBackend"]


class QwTaskBackend(BaseTaskBackend):
    """A django.tasks backend whose tasks are qw jobs; ``manage.py qw_worker`` runs them.

    OPTIONS: ``DATABASE`` (the alias whose database holds the jobs, and
    whose transactions enqueues join; default ``"default"``), ``URL`` (a qw
    URL to keep the jobs elsewhere instead), ``STORE_OPTIONS`` (qw URL
    options for the derived URL), ``NAMESPACE`` (default ``"default"``),
    ``ENQUEUE_ON_COMMIT`` (write jobs after the transaction commits rather
    than in it; default False), ``MAX_ATTEMPTS`` (runs of a task that
    raises, in all; default 1).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        super().__init__(alias, params)
        self.config = StoreConfig.from_options(alias, self.options)

    @property
    def client(self) -> qw.Client:
        """The qw client on this backend's store (shared by the process's threads)."""
        return client_for(self.config)

    # -- enqueue -----------------------------------------------------------

    def enqueue(self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Write a job running ``task(*args, **kwargs)``; answer its READY TaskResult.

        The arguments must be JSON: anything else raises
        :class:`qw.InvalidPayload` before the store is touched, as does a
        payload the store cannot hold.
        """
        self.validate_task(task)
        try:
            json_args = normalize_json(list(args))
            json_kwargs = normalize_json(dict(kwargs))
        except (TypeError, ValueError) as exc:
            raise qw.InvalidPayload(f"task arguments must be JSON values: {exc}") from None
        job = NewJob(
            task.queue_name,
            task_payload(task.module_path, json_args, json_kwargs),
            priority=job_priority(task.priority),
            run_at=self._run_at(task.run_after),
            max_attempts=self.config.max_attempts,
            # Chosen here, so that a job written on commit has its id now.
            id=new_job_id(),
        )
        # Every check (JSON, sizes, names) before any I/O, on-commit or not.
        validate_new_jobs([job], limit=DEFAULT_MAX_PAYLOAD_BYTES)
        result = TaskResult(
            task=task,
            id=job.id,
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=json_args,
            kwargs=json_kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        if self.config.enqueue_on_commit:
            # The store's own size limit now too, not at commit time.
            validate_new_jobs([job], limit=self.client.capabilities.max_payload_bytes)
            # Runs at once outside a transaction; dropped with a rollback.
            transaction.on_commit(
                lambda: self._write(job, result, in_transaction=False),
                using=self.config.database,
            )
        else:
            self._write(job, result, in_transaction=True)
        return result

    def _run_at(self, run_after: datetime | None) -> datetime | None:
        if run_after is None:
            return None
        if timezone.is_naive(run_after):
            # validate_task refused a naive run_after under USE_TZ; without
            # it, naive times are the project's local time, as in the ORM.
            aware: datetime = timezone.make_aware(run_after)
            return aware
        return run_after

    def _write(self, job: NewJob, result: Any, *, in_transaction: bool) -> None:
        """Write ``job``; in the alias's open transaction when there is one and it may."""
        client = self.client
        conn = connections[self.config.database]
        if in_transaction and self.config.transactional and _in_transaction(conn):
            # Django refuses statements in a transaction marked for rollback;
            # the raw connection below would not, so ask it first.
            conn.validate_no_broken_transaction()
            client.enqueue([job], connection=conn)
        else:
            client.enqueue([job])
        object.__setattr__(result, "enqueued_at", timezone.now())
        task_enqueued.send(type(self), task_result=result)

    # -- results -----------------------------------------------------------

    def get_result(self, result_id: str) -> Any:
        """The task's result as the store has it now; TaskResultDoesNotExist if none."""
        if not isinstance(result_id, str) or not result_id:
            raise TaskResultDoesNotExist(result_id)
        try:
            job = self.client.find(result_id)
        except qw.InvalidInput:
            # Not an id qw could ever have made.
            raise TaskResultDoesNotExist(result_id) from None
        if job is None:
            raise TaskResultDoesNotExist(result_id)
        return task_result(job, self.alias)

    def wait(self, result_id: str, timeout: float) -> Any:
        """The task's result once it is finished, or as it is after ``timeout`` seconds.

        Not part of django.tasks: a qw extra (the store wakes the wait where
        it can, else it polls briefly).
        """
        try:
            self.client.wait_finished(result_id, timeout)
        except (qw.JobNotFound, qw.InvalidInput):
            raise TaskResultDoesNotExist(result_id) from None
        return self.get_result(result_id)

    def check(self, **kwargs: Any) -> list[Any]:
        from django.core import checks  # type: ignore[import-not-found,import-untyped]

        errors: list[Any] = list(super().check(**kwargs))
        if self.config.database not in settings.DATABASES:
            errors.append(
                checks.Error(
                    f"TASKS[{self.alias!r}] OPTIONS['DATABASE'] is {self.config.database!r}, "
                    "which is not in DATABASES",
                    id="qw_django.E001",
                )
            )
        return errors


def _in_transaction(conn: Any) -> bool:
    """Whether Django's connection ``conn`` is inside a transaction now."""
    return bool(conn.in_atomic_block or not conn.get_autocommit())
