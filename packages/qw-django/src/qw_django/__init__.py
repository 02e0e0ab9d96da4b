"""qw-django: a backend for Django's tasks framework on a qw store, and its worker command.

``TASKS = {"default": {"BACKEND": "qw_django.QwTaskBackend"}}`` and
``"qw_django"`` in ``INSTALLED_APPS`` (for ``manage.py qw_worker`` and
``manage.py qw_migrate``). See docs/django.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qw_django.backend import QwTaskBackend

__all__ = ["QwTaskBackend"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazily: Django imports this package (for its AppConfig) before its
    # settings are ready for the backend's imports.
    if name == "QwTaskBackend":
        from qw_django.backend import QwTaskBackend

        return QwTaskBackend
    raise AttributeError(f"module 'qw_django' has no attribute {name!r}")
