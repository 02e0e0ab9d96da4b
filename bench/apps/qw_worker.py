"""The qw worker for the bench: ``python -m bench.apps.qw_worker URL NAMESPACE CONCURRENCY DRAIN``.

The real :class:`qw.Worker` (batched claims, lease renewal, batched terminal
writes with their outbox events) runs the no-op task. With ``DRAIN`` > 0 a
plugin counts terminal writes as the worker reports them committed and stops
the worker after the last one, noting that moment; with 0 it runs until
SIGTERM (the wake-up phase). With ``DRAIN`` < 0 it is one of several
processes draining one queue: it runs until SIGTERM (the harness sends it
once the store counts every job succeeded) and notes the moment of its own
last terminal write, if it made any.

The workflow phases' steps (:func:`register`) run on the same worker; the
plugin also notes when each step's terminal write committed (``fin``
probe records), for the chain's step latency and the end of a workflow.

The limits phase's two tasks (:func:`register_limits`) run here too: the
same no-op with and without a concurrency limit per key.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import qw
from bench import probe
from bench.limits import LIMIT
from bench.qwplugins import baseline
from qw.model import Job, JobStatus, JSONValue
from qw.plugin import hookimpl

TASK = "bench.noop"
STEP = "bench.wf.step"
JOIN = "bench.wf.join"
QUEUE = "bench"
#: The limits phase's tasks: one with a concurrency limit per key, one without.
LIMITED = "bench.limits.limited"
UNLIMITED = "bench.limits.unlimited"


def register(app: qw.App) -> tuple[qw.Task[..., Any], qw.Task[..., Any]]:
    """The workflow phases' two tasks on ``app``: a step, and a fan-in that checks its inputs.

    ``step(index, parent, expect)`` returns its index; given ``expect`` it
    fails unless its parent's result arrived and is that. ``join(index,
    parts, first, count)`` fails unless ``parts`` are exactly ``first`` ..
    ``first + count - 1`` (each once): a fan-in that did not see every result
    fails its workflow.
    """

    @app.task(name=STEP, queue=QUEUE, max_attempts=3)
    def step(index: int, parent: JSONValue = None, expect: int | None = None) -> int:
        probe.record(index)
        if expect is not None and parent != expect:
            raise ValueError(f"step {index}: parent result {parent!r}, expected {expect}")
        probe.record(index, probe.DONE)
        return index

    @app.task(name=JOIN, queue=QUEUE, max_attempts=3)
    def join(index: int, parts: list[int], first: int, count: int) -> dict[str, int]:
        probe.record(index)
        if sorted(parts) != list(range(first, first + count)):
            raise ValueError(f"fan-in {index} saw {len(parts)} results, not {first}..+{count}")
        probe.record(index, probe.DONE)
        return {"index": index, "count": len(parts), "sum": sum(parts)}

    return step, join


def _limits_body(index: int, hold_ms: float) -> None:
    # Start and end of the body: two bodies of a key overlapping means two
    # of its jobs were running in the store at once (a body lies inside
    # its job's claim-to-terminal-write span).
    probe.record(index)
    if hold_ms:
        time.sleep(hold_ms / 1000.0)
    probe.record(index, probe.DONE)


def register_limits(app: qw.App) -> tuple[qw.Task[..., None], qw.Task[..., None]]:
    """The limits phase's tasks on ``app``: ``(unlimited, limited)``, the same no-op.

    ``limited(index, key)`` declares ``limit_key="k:{key}"`` with
    ``concurrency=LIMIT``; ``unlimited(index, key)`` declares nothing, so
    the two drains differ only by the limit. ``hold_ms`` keeps the body
    busy that long (tests of the checks only).
    """

    @app.task(name=UNLIMITED, queue=QUEUE, max_attempts=3)
    def unlimited(index: int, key: int | str, hold_ms: float = 0.0) -> None:
        _limits_body(index, hold_ms)

    @app.task(name=LIMITED, queue=QUEUE, max_attempts=3, limit_key="k:{key}", concurrency=LIMIT)
    def limited(index: int, key: int | str, hold_ms: float = 0.0) -> None:
        _limits_body(index, hold_ms)

    return unlimited, limited


class DrainStop:
    """Notes when each workflow step's terminal write committed; with a ``target``,
    stops the worker once that many jobs succeeded and notes the time of the last write."""

    def __init__(self, worker_ref: list[qw.Worker], target: int) -> None:
        self._worker = worker_ref
        self._target = target
        self._done = 0
        self.end_ns: int | None = None
        #: The last successful terminal write of this process (a shared drain's end is
        #: the latest of its processes').
        self.last_ns: int | None = None

    @hookimpl
    def qw_job_finished(self, job: Job, status: JobStatus, result: JSONValue) -> None:
        # Called from the one finisher thread, after the outcome committed.
        if status is JobStatus.SUCCEEDED:
            if job.workflow is not None:
                # A step returns its index; a fan-in returns {"index": ..., ...}.
                index = result["index"] if isinstance(result, dict) else result
                probe.record(int(index), probe.FIN)  # type: ignore[arg-type]
            self._done += 1
            self.last_ns = time.time_ns()
            if self._done == self._target:
                self.end_ns = time.time_ns()
                self._worker[0].request_stop()


def main(argv: list[str]) -> int:
    url, namespace, concurrency, drain = argv[0], argv[1], int(argv[2]), int(argv[3])
    client = qw.open(url, namespace=namespace, plugins=baseline())
    app = qw.App(client=client)

    @app.task(name=TASK, queue=QUEUE, max_attempts=3)
    def noop(index: int) -> None:
        probe.record(index)

    register(app)
    register_limits(app)
    plugins = baseline()
    ref: list[qw.Worker] = []
    stopper = DrainStop(ref, drain)
    plugins.register(stopper, name="bench.drain")
    worker = qw.Worker(
        app,
        qw.WorkerConfig(queues=(QUEUE,), concurrency=concurrency),
        plugins=plugins,
        load_plugins=False,
    )
    ref.append(worker)
    stats = worker.run()
    client.close()
    print(f"qw worker stats: {stats}", flush=True)
    if drain < 0:
        if stopper.last_ns is not None:
            probe.write_end(stopper.last_ns)
    elif drain > 0:
        if stopper.end_ns is None:
            print("stopped before the drain completed", file=sys.stderr)
            return 1
        probe.write_end(stopper.end_ns)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
