"""procrastinate's app for the bench, and its worker.

``python -m bench.apps.procrastinate_app CONCURRENCY DRAIN``:

The worker is procrastinate's own (``App.run_worker_async``) with
``concurrency`` async slots and LISTEN/NOTIFY on (its default). With
``DRAIN`` > 0 it runs with ``wait=False``: it stops once it has caught up
with the queue, after writing every job's final status.
"""

from __future__ import annotations

import asyncio
import os
import sys

import procrastinate

from bench import probe

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ["QW_BENCH_PROCRASTINATE_DSN"])
)


@app.task(name="bench.noop", queue="bench")
async def noop(i: int) -> None:
    probe.record(i)
    _ran[0] += 1


#: Jobs this process ran (several processes may drain one queue).
_ran = [0]


async def main(concurrency: int, drain: int) -> None:
    async with app.open_async():
        await app.run_worker_async(
            queues=["bench"], concurrency=concurrency, wait=not drain, install_signal_handlers=True
        )
    # A process that found the queue already drained ran nothing: its exit
    # time is no terminal write.
    if drain and _ran[0]:
        probe.write_end()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
