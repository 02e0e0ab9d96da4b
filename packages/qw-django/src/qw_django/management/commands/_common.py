# mypy: allow-subclassing-any, no-warn-unused-ignores
# Django ships no type information and is absent from the workspace's 3.11
# type-check venv: its imports carry both codes, and an unused one is fine.
"""What both commands need: the qw task backend an alias names."""

from __future__ import annotations

from typing import Any

from django.core.management.base import (  # type: ignore[import-not-found,import-untyped]
    CommandError,
)
from django.tasks import task_backends  # type: ignore[import-not-found,import-untyped]
from django.tasks.exceptions import (  # type: ignore[import-not-found,import-untyped]
    InvalidTaskBackend,
)

from qw_django.backend import QwTaskBackend

__all__ = ["qw_backend"]


def qw_backend(alias: str) -> Any:
    """``TASKS[alias]``'s backend, which must be a QwTaskBackend; CommandError otherwise."""
    try:
        backend = task_backends[alias]
    except InvalidTaskBackend as exc:
        raise CommandError(f"no task backend {alias!r} in TASKS: {exc}") from None
    if not isinstance(backend, QwTaskBackend):
        raise CommandError(
            f"TASKS[{alias!r}] is a {type(backend).__name__}, not qw_django.QwTaskBackend"
        )
    return backend
