"""The terminal writes: one thread that batches outcomes into few ``finish`` calls.

Outcomes are idempotent by token, so a batch that failed on a backend error
is simply written again; a batch refused as invalid (a task returned
something that is not JSON) is split, and the offending job is failed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from qw.client import Client
from qw.contract import Complete, Outcome
from qw.errors import InvalidInput, QwError
from qw.model import JobStatus, JSONValue
from qw.worker.context import RunningJob
from qw.worker.outcomes import failed

__all__ = ["Finisher"]

log = logging.getLogger("qw.worker")

Committed = Callable[[RunningJob, Outcome, "JobStatus | None"], None]


class Finisher:
    """Writes outcomes in batches of up to ``batch`` and reports each one committed."""

    def __init__(self, client: Client, on_committed: Committed, *, batch: int) -> None:
        self._client = client
        self._on_committed = on_committed
        self._batch = batch
        self._queue: queue.SimpleQueue[tuple[RunningJob, Outcome] | None] = queue.SimpleQueue()
        self._give_up_at: float | None = None
        self._thread = threading.Thread(target=self._loop, name="qw-finisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, rec: RunningJob, outcome: Outcome) -> None:
        self._queue.put((rec, outcome))

    def stop(self, timeout: float) -> None:
        """Write what is queued, retrying backend errors for up to ``timeout`` s, then stop."""
        self._give_up_at = time.monotonic() + timeout
        self._queue.put(None)
        if self._thread.ident is not None:
            self._thread.join(timeout + 1.0)

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch: list[tuple[RunningJob, Outcome]] = []
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= self._batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._write(batch)
                except Exception:
                    # Never let one bad batch stop every later write. Its jobs'
                    # leases expire and the reclaim sweep gives them back.
                    log.exception("writing %d outcomes failed; they are dropped", len(batch))
                    for rec, outcome in batch:
                        if not rec.committed:
                            self._on_committed(rec, outcome, None)

    def _write(self, batch: list[tuple[RunningJob, Outcome]]) -> None:
        pause = 0.05
        while True:
            try:
                statuses = self._client.finish([outcome for _, outcome in batch])
                break
            except InvalidInput as exc:
                if len(batch) == 1:
                    rec, outcome = batch[0]
                    batch = [(rec, _invalid_result(rec, outcome, exc))]
                    continue
                for single in batch:
                    self._write([single])
                return
            except QwError as exc:
                if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                    log.error("giving up on %d terminal writes: %r", len(batch), exc)
                    statuses = [None] * len(batch)
                    break
                log.warning("terminal write failed (%r); retrying in %.2f s", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
            except Exception:
                log.exception("terminal write failed; dropping %d outcomes", len(batch))
                statuses = [None] * len(batch)
                break
        for (rec, outcome), status in zip(batch, statuses, strict=True):
            self._on_committed(rec, outcome, status)


def _invalid_result(rec: RunningJob, outcome: Outcome, exc: InvalidInput) -> Outcome:
    if not isinstance(outcome, Complete):
        raise RuntimeError(f"the worker built an invalid outcome for job {rec.id}: {outcome!r}")
    error: dict[str, JSONValue] = {
        "type": "qw.InvalidResult",
        "message": f"the task's return value cannot be stored: {exc}",
    }
    return failed(rec, error, retryable=False)
