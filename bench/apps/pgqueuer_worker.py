"""PGQueuer's own QueueManager for the bench.

``python -m bench.apps.pgqueuer_worker DSN CONSUMERS BATCH DRAIN``:

One process of the drain (the harness may start several);
``CONSUMERS`` QueueManagers, each on its own asyncpg connection (as PGQueuer's
own benchmark tool runs ``--dequeue`` consumers), each dequeuing
``BATCH`` jobs at a time. With ``DRAIN`` > 0 they run in
``QueueExecutionMode.drain`` and stop when the queue is empty (their status
buffers flushed); with 0 they run until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import asyncpg  # type: ignore[import-untyped]
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

from bench import probe


async def main(dsn: str, consumers: int, batch: int, drain: int) -> None:
    managers: list[QueueManager] = []
    ran = [0]
    for _ in range(consumers):
        conn = await asyncpg.connect(dsn)
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint("bench")
        async def noop(job: Job) -> None:
            probe.record(int(job.payload or b"-1"))
            ran[0] += 1

        managers.append(qm)

    def shutdown() -> None:
        for qm in managers:
            qm.shutdown.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown)
    mode = QueueExecutionMode.drain if drain else QueueExecutionMode.continuous
    await asyncio.gather(*(qm.run(batch_size=batch, mode=mode) for qm in managers))
    # Several processes drain one queue: one that started after the others
    # emptied it ran nothing, and its exit time is no terminal write.
    if drain and ran[0]:
        probe.write_end()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], int(a[1]), int(a[2]), int(a[3])))
