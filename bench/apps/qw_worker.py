"""The qw worker for the bench: ``python -m bench.apps.qw_worker URL NAMESPACE CONCURRENCY DRAIN``.

The real :class:`qw.Worker` (batched claims, lease renewal, batched terminal
writes with their outbox events) runs the no-op task. With ``DRAIN`` > 0 a
plugin counts terminal writes as the worker reports them committed and stops
the worker after the last one, noting that moment; with 0 it runs until
SIGTERM (the wake-up phase).
"""

from __future__ import annotations

import sys
import time

import qw
from bench import probe
from qw.model import Job, JobStatus
from qw.plugin import hookimpl
from qw.plugin.manager import QwPluginManager

TASK = "bench.noop"
QUEUE = "bench"


class DrainStop:
    """Stops the worker once ``target`` jobs succeeded; notes the time of the last write."""

    def __init__(self, worker_ref: list[qw.Worker], target: int) -> None:
        self._worker = worker_ref
        self._target = target
        self._done = 0
        self.end_ns: int | None = None

    @hookimpl
    def qw_job_finished(self, job: Job, status: JobStatus) -> None:
        # Called from the one finisher thread, after the outcome committed.
        if status is JobStatus.SUCCEEDED:
            self._done += 1
            if self._done == self._target:
                self.end_ns = time.time_ns()
                self._worker[0].request_stop()


def main(argv: list[str]) -> int:
    url, namespace, concurrency, drain = argv[0], argv[1], int(argv[2]), int(argv[3])
    app = qw.App(url, namespace=namespace)

    @app.task(name=TASK, queue=QUEUE, max_attempts=3)
    def noop(index: int) -> None:
        probe.record(index)

    plugins = QwPluginManager()
    ref: list[qw.Worker] = []
    stopper = DrainStop(ref, drain) if drain > 0 else None
    if stopper is not None:
        plugins.register(stopper, name="bench.drain")
    worker = qw.Worker(
        app, qw.WorkerConfig(queues=(QUEUE,), concurrency=concurrency), plugins=plugins
    )
    ref.append(worker)
    stats = worker.run()
    app.close()
    print(f"qw worker stats: {stats}", flush=True)
    if stopper is not None:
        if stopper.end_ns is None:
            print("stopped before the drain completed", file=sys.stderr)
            return 1
        probe.write_end(stopper.end_ns)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
