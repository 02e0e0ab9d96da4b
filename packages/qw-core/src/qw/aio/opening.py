"""``qw.aio.open_async``: from a URL to an :class:`~qw.aio.AsyncClient`, as ``qw.open``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from qw.aio.client import AsyncClient
from qw.aio.threaded import ThreadedAsyncBackend
from qw.opening import resolve_namespace, resolve_url
from qw.registry import load_backend

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from qw.aio.contract import AsyncBackend
    from qw.calls import EnqueueHooks

__all__ = ["open_async"]


async def open_async(
    url: str | None = None, *, namespace: str | None = None, plugins: EnqueueHooks | None = None
) -> AsyncClient:
    """Open ``namespace`` on the store at ``url``, for asyncio code.

    ``url`` and ``namespace`` resolve exactly as in :func:`qw.open` (the
    namespace checked before the backend is loaded). A backend class with
    an ``open_async`` classmethod gives its native async twin; any other is
    opened in a thread and served by :class:`ThreadedAsyncBackend`.
    ``plugins`` as in :func:`qw.open`.
    """
    ns = resolve_namespace(namespace)
    target = resolve_url(url)
    backend_cls = load_backend(target)
    opener = getattr(backend_cls, "open_async", None)
    if opener is not None:
        native = cast("Callable[..., Awaitable[AsyncBackend]]", opener)
        return AsyncClient(await native(target, namespace=ns), plugins=plugins)
    backend = await asyncio.to_thread(backend_cls.from_url, target, namespace=ns)
    return AsyncClient(ThreadedAsyncBackend(backend), plugins=plugins)
