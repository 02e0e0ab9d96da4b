"""What a worker needs of an application: :class:`qw.App` is one, and ``App.worker()`` wires it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from qw.client import Client
from qw.schedule import Periodic
from qw.tasks import Task

__all__ = ["TaskSource"]


class TaskSource(Protocol):
    """The tasks a worker runs, and the clients it runs them with."""

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        """Registered tasks by name (a payload's ``task``)."""
        ...

    @property
    def schedules(self) -> Mapping[str, Periodic]:
        """Periodic schedules by name, which the worker's scheduler runs."""
        ...

    @property
    def client(self) -> Client:
        """The client the claiming thread uses."""
        ...

    def open_client(self) -> Client:
        """A client another worker thread may use while the first is in use.

        Called only for a backend that is not ``thread_safe``; it must not
        return :attr:`client` then (raise ConfigurationError instead).
        """
        ...
