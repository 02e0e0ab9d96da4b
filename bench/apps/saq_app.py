"""SAQ's queue and worker for the bench: ``python -m bench.apps.saq_app CONCURRENCY``.

SAQ's own :class:`saq.Worker` with ``concurrency`` async slots, run until
SIGTERM (its burst mode cancels in-flight jobs when the queue runs dry, so
the harness watches the queue's ``incomplete`` set instead).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from saq import Queue, Worker

from bench import probe

QUEUE_NAME = "bench"


def make_queue() -> Queue:
    return Queue.from_url(os.environ["QW_BENCH_REDIS_URL"], name=QUEUE_NAME)


async def noop(ctx: Any, *, i: int) -> None:
    probe.record(i)


async def main(concurrency: int) -> None:
    queue = make_queue()
    worker = Worker(queue, functions=[noop], concurrency=concurrency)
    await worker.start()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
