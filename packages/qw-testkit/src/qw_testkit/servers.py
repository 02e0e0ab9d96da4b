"""Reaching the servers a contract run needs: skip loudly, or fail when required.

``QW_REQUIRE_BACKENDS`` (comma-separated backend names, or ``all``) turns an
unreachable server from a skip into a failure; CI sets it for every server
its machine runs.

A server is probed once per (backend, URL) per process, not once per
``make_backend``: a contract run opens hundreds of backends, and an
unreachable server would otherwise cost each of them the probe's timeout.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

__all__ = ["forget_probes", "require_server", "required_backends", "server_url", "store_url"]

DEFAULT_URLS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "redis": "redis://127.0.0.1:6379/0",
}


#: (backend, URL) -> None when the probe succeeded, else why it failed.
_probed: dict[tuple[str, str], str | None] = {}
_probed_lock = threading.Lock()


def forget_probes() -> None:
    """Drop the remembered probe results (the next ``require_server`` probes again)."""
    with _probed_lock:
        _probed.clear()


def _probe_once(backend: str, url: str, probe: Callable[[str], object]) -> str | None:
    with _probed_lock:
        if (backend, url) in _probed:
            return _probed[(backend, url)]
        try:
            probe(url)
        except Exception as exc:
            reason: str | None = f"{backend} server unreachable at {url}: {exc!r}"
        else:
            reason = None
        _probed[(backend, url)] = reason
        return reason


def required_backends() -> frozenset[str]:
    """The backend names listed in ``QW_REQUIRE_BACKENDS``."""
    raw = os.environ.get("QW_REQUIRE_BACKENDS", "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def server_url(backend: str) -> str | None:
    """``$QW_TEST_<BACKEND>_URL``, else this machine's default for it (or None)."""
    return os.environ.get(f"QW_TEST_{backend.upper()}_URL") or DEFAULT_URLS.get(backend)


def require_server(backend: str, url: str | None, probe: Callable[[str], object]) -> str:
    """Return ``url`` once ``probe(url)`` succeeds; otherwise skip with the reason.

    The probe runs once per (backend, URL) in this process; later calls reuse
    its result. The skip becomes a failure when ``QW_REQUIRE_BACKENDS`` names ``backend``
    (or is ``all``), so a CI run can never go green by skipping a server.
    """
    required = backend in required_backends() or "all" in required_backends()
    if url is None:
        reason = f"{backend}: no server URL (set QW_TEST_{backend.upper()}_URL)"
    else:
        failure = _probe_once(backend, url, probe)
        if failure is None:
            return url
        reason = failure
    if required:
        pytest.fail(f"{reason}, and QW_REQUIRE_BACKENDS requires {backend}", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {reason}")


def store_url(backend: str, directory: Path) -> str:
    """A URL a test can open a client on for ``backend``, or a loud skip.

    ``memory`` and ``sqlite`` (a file in ``directory``) always answer. A
    server backend must be installed and its server reachable (probed with
    ``qw.open``); either missing is a skip, or a failure where
    ``QW_REQUIRE_BACKENDS`` names it.
    """
    import qw
    from qw.errors import BackendNotFound, BackendUnavailable
    from qw.registry import load_backend

    if backend == "memory":
        return f"memory://{directory.name}"
    if backend == "sqlite":
        return f"sqlite:///{directory / 'store.db'}"
    try:
        load_backend(backend)
    except (BackendNotFound, BackendUnavailable) as exc:
        reason = f"{backend} backend not installed: {exc}"
        if {backend, "all"} & required_backends():
            pytest.fail(f"{reason}, and QW_REQUIRE_BACKENDS requires {backend}", pytrace=False)
        pytest.skip(f"SKIPPED LOUDLY: {reason}")
    return require_server(
        backend, server_url(backend), lambda url: qw.open(url, namespace="probe").close()
    )
