"""Reaching the servers a contract run needs: skip loudly, or fail when required.

``QW_REQUIRE_BACKENDS`` (comma-separated backend names, or ``all``) turns an
unreachable server from a skip into a failure; CI sets it for every server
its machine runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

__all__ = ["required_backends", "server_url", "require_server"]

DEFAULT_URLS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "redis": "redis://127.0.0.1:6379/0",
}


def required_backends() -> frozenset[str]:
    """The backend names listed in ``QW_REQUIRE_BACKENDS``."""
    raw = os.environ.get("QW_REQUIRE_BACKENDS", "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def server_url(backend: str) -> str | None:
    """``$QW_TEST_<BACKEND>_URL``, else this machine's default for it (or None)."""
    return os.environ.get(f"QW_TEST_{backend.upper()}_URL") or DEFAULT_URLS.get(backend)


def require_server(backend: str, url: str | None, probe: Callable[[str], object]) -> str:
    """Return ``url`` once ``probe(url)`` succeeds; otherwise skip with the reason.

    The skip becomes a failure when ``QW_REQUIRE_BACKENDS`` names ``backend``
    (or is ``all``), so a CI run can never go green by skipping a server.
    """
    required = backend in required_backends() or "all" in required_backends()
    if url is None:
        reason = f"{backend}: no server URL (set QW_TEST_{backend.upper()}_URL)"
    else:
        try:
            probe(url)
        except Exception as exc:
            reason = f"{backend} server unreachable at {url}: {exc!r}"
        else:
            return url
    if required:
        pytest.fail(f"{reason}, and QW_REQUIRE_BACKENDS requires {backend}", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {reason}")
