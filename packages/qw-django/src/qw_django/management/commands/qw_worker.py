# mypy: allow-subclassing-any, no-warn-unused-ignores
# Django ships no type information and is absent from the workspace's 3.11
# type-check venv: its imports carry both codes, and an unused one is fine.
"""``manage.py qw_worker``: run the Django tasks of a qw_django backend until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import (  # type: ignore[import-not-found,import-untyped]
    BaseCommand,
    CommandError,
)

import qw
from qw.validation import MAX_LEASE_S
from qw_django.management.commands._common import qw_backend

__all__ = ["Command"]


def _seconds(low: float, high: float) -> Any:
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    parse.__name__ = "seconds"
    return parse


class Command(BaseCommand):
    help = (
        "Run the Django tasks of a qw_django task backend. The first SIGTERM/SIGINT "
        "stops claiming and lets running tasks finish within --grace; a second one "
        "releases them at once."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--backend",
            default="default",
            help="The TASKS alias of the qw_django backend (default: default).",
        )
        parser.add_argument(
            "--queue",
            "-q",
            action="append",
            dest="queues",
            metavar="QUEUE",
            help="A queue to work; repeatable (default: the backend's QUEUES).",
        )
        parser.add_argument(
            "--concurrency",
            "-c",
            type=int,
            default=4,
            help="Tasks running at once, each on a thread of its own (default: 4).",
        )
        parser.add_argument(
            "--lease",
            type=_seconds(0.1, MAX_LEASE_S),
            default=30.0,
            metavar="SECONDS",
            help="Lease length: a dead worker's tasks run again after this (default: 30).",
        )
        parser.add_argument(
            "--grace",
            type=_seconds(0, 86400),
            default=30.0,
            metavar="SECONDS",
            help="On SIGTERM/SIGINT, how long running tasks may finish (default: 30).",
        )
        parser.add_argument(
            "--poll-interval",
            type=_seconds(0.01, 3600),
            default=1.0,
            metavar="SECONDS",
            help="Longest sleep between claims without a wake-up (default: 1).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Here, not at module level: `manage.py help` lists commands without
        # loading the worker runtime.
        from qw.worker import Worker, WorkerConfig
        from qw_django.runner import DjangoTaskSource

        alias = options["backend"]
        backend = qw_backend(alias)
        queues = options["queues"] or sorted(backend.queues) or ["default"]
        if options["verbosity"] >= 1 and not logging.getLogger().handlers:
            level = logging.DEBUG if options["verbosity"] >= 3 else logging.INFO
            logging.basicConfig(
                level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
        source = DjangoTaskSource(alias, backend.config, type(backend))
        try:
            config = WorkerConfig(
                queues=tuple(queues),
                concurrency=options["concurrency"],
                lease_s=options["lease"],
                grace_s=options["grace"],
                poll_interval=options["poll_interval"],
                scheduler=False,
            )
        except qw.QwError as exc:
            raise CommandError(str(exc)) from None
        worker = Worker(source, config)
        self.stderr.write(f"qw worker {worker.id} on {alias!r}, queues {list(config.queues)}")
        stats = worker.run()
        self.stderr.write(
            f"qw worker {worker.id} stopped: {stats.succeeded} succeeded, {stats.retried} "
            f"retried, {stats.failed} failed, {stats.cancelled} cancelled, "
            f"{stats.released} released"
        )
