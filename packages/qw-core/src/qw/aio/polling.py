"""The bounded result poll, awaited: for stores that cannot wake a result waiter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from qw.calls import poll_pauses
from qw.model import Job

__all__ = ["poll_finished"]


async def poll_finished(
    get: Callable[[str], Awaitable[Job | None]], job_id: str, timeout: float
) -> Job | None:
    """The job once ``get`` reads it ended, else as it is after ``timeout`` s; None if unknown.

    The pauses are the sync client's (:func:`qw.calls.poll_pauses`); they
    are ``asyncio.sleep``, so no thread sits waiting.
    """
    deadline = time.monotonic() + timeout
    for pause in poll_pauses():
        job = await get(job_id)
        left = deadline - time.monotonic()
        if job is None or job.status.is_terminal or left <= 0:
            return job
        await asyncio.sleep(min(pause, left))
    raise AssertionError("unreachable: poll_pauses never ends")
