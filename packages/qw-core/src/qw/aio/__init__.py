"""qw for asyncio: enqueue, inspect and await results without blocking the loop.

>>> import asyncio, qw
>>> async def main() -> bool:
...     async with await qw.open_async("memory://", namespace="aio-docs") as client:
...         return (await client.enqueue_one("emails", {"to": "a@example.com"})).created
>>> asyncio.run(main())
True

:class:`AsyncClient` has the producer and operator calls of :class:`qw.Client`
as coroutines, checked by the same rules. Behind it is an
:class:`AsyncBackend`: a store's native async twin, or any sync backend run
in a bounded pool of threads (:class:`ThreadedAsyncBackend`). Workers stay
sync (they run ``async def`` tasks themselves).
"""

from __future__ import annotations

from qw.aio.client import AsyncClient
from qw.aio.contract import AsyncBackend
from qw.aio.handles import AsyncJobHandle, AsyncWorkflowHandle
from qw.aio.opening import open_async
from qw.aio.threaded import ThreadedAsyncBackend

__all__ = [
    "AsyncBackend",
    "AsyncClient",
    "AsyncJobHandle",
    "AsyncWorkflowHandle",
    "ThreadedAsyncBackend",
    "open_async",
]
