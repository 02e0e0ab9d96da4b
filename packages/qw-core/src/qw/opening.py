"""``qw.open``: from a URL (or the environment, or the embedded default) to a Client."""

from __future__ import annotations

import os

from qw.client import Client
from qw.registry import load_backend
from qw.validation import validate_namespace

__all__ = ["DEFAULT_NAMESPACE", "DEFAULT_URL", "open", "resolve_url"]

#: The embedded default: a SQLite file in the working directory.
DEFAULT_URL = "sqlite:///qw.db"
DEFAULT_NAMESPACE = "default"


def resolve_url(url: str | None = None) -> str:
    """``url``, else ``$QW_URL``, else :data:`DEFAULT_URL`; a bare name becomes ``name://``."""
    chosen = url or os.environ.get("QW_URL") or DEFAULT_URL
    return chosen if "://" in chosen else f"{chosen}://"


def open(url: str | None = None, *, namespace: str | None = None) -> Client:
    """Open ``namespace`` on the store at ``url``.

    ``url`` defaults to ``$QW_URL``, then to :data:`DEFAULT_URL`;
    ``namespace`` to ``$QW_NAMESPACE``, then ``"default"``. The namespace is
    checked before the backend is even loaded.
    """
    # Only an absent namespace falls back: an empty or bad one is an error.
    if namespace is None:
        namespace = os.environ.get("QW_NAMESPACE") or DEFAULT_NAMESPACE
    ns = validate_namespace(namespace)
    target = resolve_url(url)
    backend_cls = load_backend(target)
    return Client(backend_cls.from_url(target, namespace=ns))
