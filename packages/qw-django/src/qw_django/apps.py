# mypy: allow-subclassing-any, no-warn-unused-ignores
# Django ships no type information and is absent from the workspace's 3.11
# type-check venv: its imports carry both codes, and an unused one is fine.
"""The Django app: it holds the ``qw_worker`` and ``qw_migrate`` management commands."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-not-found,import-untyped]

__all__ = ["QwDjangoConfig"]


class QwDjangoConfig(AppConfig):
    name = "qw_django"
    verbose_name = "qw tasks"
