"""pytest fixtures for an application's tests: ``pytest_plugins = ["qw.testing.pytest_plugin"]``.

Define a ``qw_app`` fixture that returns your :class:`qw.App`; then

- ``qw_eager`` binds it to a fresh memory store in eager mode
  (:func:`qw.testing.eager`) for the test and gives the app;
- ``qw_memory`` binds it to a fresh memory store (:func:`qw.testing.memory_store`)
  whose jobs wait for :func:`qw.testing.drain`, and gives the app.

Not loaded unless a conftest names it: qw-core does not depend on pytest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qw.app import App
from qw.testing import eager, memory_store

__all__ = ["qw_eager", "qw_memory"]


def _app(request: pytest.FixtureRequest) -> App:
    try:
        app = request.getfixturevalue("qw_app")
    except pytest.FixtureLookupError:
        raise pytest.UsageError(
            "qw.testing.pytest_plugin: define a `qw_app` fixture that returns your qw.App"
        ) from None
    if not isinstance(app, App):
        raise pytest.UsageError(f"the qw_app fixture must return a qw.App, not {app!r}")
    return app


@pytest.fixture
def qw_eager(request: pytest.FixtureRequest) -> Iterator[App]:
    """The ``qw_app`` in eager mode on a fresh memory store, for one test."""
    app = _app(request)
    with eager(app):
        yield app


@pytest.fixture
def qw_memory(request: pytest.FixtureRequest) -> Iterator[App]:
    """The ``qw_app`` on a fresh memory store, for one test; run its jobs with ``drain``."""
    app = _app(request)
    with memory_store(app):
        yield app
