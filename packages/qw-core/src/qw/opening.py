"""``qw.open``: from a URL (or the environment, or the embedded default) to a Client."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from qw.client import Client
from qw.errors import ConfigurationError, InvalidName
from qw.registry import load_backend
from qw.validation import validate_namespace

if TYPE_CHECKING:
    from qw.calls import EnqueueHooks

__all__ = ["DEFAULT_NAMESPACE", "DEFAULT_URL", "open", "resolve_namespace", "resolve_url"]

#: The embedded default: a SQLite file in the working directory.
DEFAULT_URL = "sqlite:///qw.db"
DEFAULT_NAMESPACE = "default"


def resolve_url(url: str | None = None) -> str:
    """``url``, else ``$QW_URL``, else :data:`DEFAULT_URL`; a bare name becomes ``name://``.

    Only an absent value falls back: an empty one (an unset shell variable
    expanded in ``--url "$DB"``) raises ConfigurationError rather than
    quietly creating ``qw.db`` in the working directory.
    """
    origin = "the store URL"
    if url is None:
        url = os.environ.get("QW_URL")
        if url is None:
            return DEFAULT_URL
        origin = "$QW_URL"
    if not url.strip():
        raise ConfigurationError(
            f"{origin} is empty; give a store URL, or leave it unset for {DEFAULT_URL}"
        )
    return url if "://" in url else f"{url}://"


def resolve_namespace(namespace: str | None = None) -> str:
    """``namespace``, else ``$QW_NAMESPACE``, else ``"default"``, validated.

    As with the URL, only an absent value falls back; an empty one raises
    :class:`~qw.errors.InvalidName`.
    """
    if namespace is None:
        namespace = os.environ.get("QW_NAMESPACE")
        if namespace is None:
            return DEFAULT_NAMESPACE
        if not namespace:
            raise InvalidName(
                f"$QW_NAMESPACE is empty; give a namespace, or leave it unset for "
                f"{DEFAULT_NAMESPACE!r}"
            )
    return validate_namespace(namespace)


def open(
    url: str | None = None, *, namespace: str | None = None, plugins: EnqueueHooks | None = None
) -> Client:
    """Open ``namespace`` on the store at ``url``.

    ``url`` defaults to ``$QW_URL``, then to :data:`DEFAULT_URL`;
    ``namespace`` to ``$QW_NAMESPACE``, then ``"default"``; an empty one is
    an error, not a default. The namespace is checked before the backend is
    even loaded. ``plugins`` are the plugins whose enqueue hooks the client
    calls; by default every installed ``qw.plugins`` entry point
    (:func:`qw.plugin.manager.installed`), loaded on the first enqueue.
    """
    ns = resolve_namespace(namespace)
    target = resolve_url(url)
    backend_cls = load_backend(target)
    return Client(backend_cls.from_url(target, namespace=ns), plugins=plugins)
