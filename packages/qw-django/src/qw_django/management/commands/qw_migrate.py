# mypy: allow-subclassing-any, no-warn-unused-ignores
# Django ships no type information and is absent from the workspace's 3.11
# type-check venv: its imports carry both codes, and an unused one is fine.
"""``manage.py qw_migrate``: create or upgrade qw's tables in the task backend's store.

On a SQLite database it first puts the file in WAL mode, which qw needs
to share the file with the project's tables (a property of the file, kept
from then on). Idempotent: run it with ``migrate`` on every deploy.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import (  # type: ignore[import-not-found,import-untyped]
    BaseCommand,
    CommandError,
)
from django.db import connections  # type: ignore[import-not-found,import-untyped]

import qw
from qw.display import redact_url
from qw_django.management.commands._common import qw_backend

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Create or upgrade qw's tables in the store of a qw_django task backend."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--backend",
            default="default",
            help="The TASKS alias of the qw_django backend (default: default).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backend = qw_backend(options["backend"])
        config = backend.config
        if config.transactional:
            conn = connections[config.database]
            if conn.vendor == "sqlite":
                conn.ensure_connection()
                if conn.in_atomic_block:
                    raise CommandError("qw_migrate cannot set SQLite's WAL mode in a transaction")
                mode = conn.connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise CommandError(f"SQLite would not switch to WAL mode (got {mode!r})")
        url = config.resolve_url()
        try:
            # Opening creates the tables where the backend does so itself.
            with qw.open(url, namespace=config.namespace) as client:
                step = getattr(client.backend, "migrate", None)
                outcome = step() if callable(step) else None
                name = client.backend.name
        except qw.QwError as exc:
            raise CommandError(f"cannot migrate {redact_url(url)}: {exc}") from exc
        done = f" (version {outcome})" if outcome not in (None, "") else ""
        self.stdout.write(f"qw store {redact_url(url)} ({name}) is up to date{done}")
