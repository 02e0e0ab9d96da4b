"""Celery's app and tasks for the workflow phases (Redis broker and Redis result backend).

Its workers are ``celery -A bench.apps.celery_app worker -P prefork -c C``.
The shapes are Celery canvas: a chain passes each task's result to the next
as its first argument, a group followed by a task in a chain is a chord
(the callback gets the list of the group's results), and a group after a
task gives each member that task's result.

A ``task_success`` signal handler notes when each task's result was stored
(``fin`` probe records): Celery sends it after the result backend write.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals  # type: ignore[import-untyped,import-not-found,unused-ignore]

from bench import probe

URL = os.environ["QW_BENCH_REDIS_URL"]
#: Celery's optimizing guide: for many short tasks a large prefetch multiplier (64, 128).
PREFETCH = int(os.environ.get("QW_BENCH_CELERY_PREFETCH", "64"))

app = Celery("qwbench", broker=URL, backend=URL)
app.conf.update(
    task_default_queue="bench",
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=PREFETCH,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.step")  # type: ignore[untyped-decorator,unused-ignore]
def step(*args: Any) -> int:
    """``step(index)``, ``step(parent, index)`` or ``step(parent, index, expect)``.

    A task in a chain gets its parent's result as its first argument; given
    ``expect`` it fails unless that result is ``expect``.
    """
    if len(args) == 1:
        (index,) = args
        parent = expect = None
    elif len(args) == 2:
        parent, index = args
        expect = None
    else:
        parent, index, expect = args
    probe.record(index)
    if expect is not None and parent != expect:
        raise ValueError(f"step {index}: parent result {parent!r}, expected {expect}")
    probe.record(index, probe.DONE)
    return int(index)


@app.task(name="bench.join")  # type: ignore[untyped-decorator,unused-ignore]
def join(parts: list[int], index: int, first: int, count: int) -> dict[str, int]:
    """A chord's callback: fails unless it got exactly ``first`` .. ``first + count - 1``."""
    probe.record(index)
    if sorted(parts) != list(range(first, first + count)):
        raise ValueError(f"fan-in {index} saw {len(parts)} results, not {first}..+{count}")
    probe.record(index, probe.DONE)
    return {"index": index, "count": len(parts), "sum": sum(parts)}


@signals.task_success.connect  # type: ignore[untyped-decorator,unused-ignore]
def _stored(sender: Any = None, result: Any = None, **_: Any) -> None:
    # Sent after the result backend stored the result (celery.app.trace).
    index = result["index"] if isinstance(result, dict) else result
    probe.record(int(index), probe.FIN)
