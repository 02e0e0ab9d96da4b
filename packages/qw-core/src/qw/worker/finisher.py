"""The terminal writes: one thread that batches outcomes into few ``finish`` calls.

Outcomes are idempotent by token, so a batch that failed because the store
is unavailable (:class:`~qw.errors.BackendError`) is simply written again.
A batch that failed for any other reason (an outcome the store refused, a
driver's encoding error) is split until the offending outcome is alone; that
one is written as a failed attempt instead, or given up alone (its lease
expires), so one bad outcome never costs the others theirs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from qw.client import Client
from qw.contract import Abort, Complete, Fail, Outcome
from qw.errors import BackendError
from qw.model import JobStatus, JSONValue
from qw.worker.outcomes import error_info, failed
from qw.worker.slot import JobSlot

__all__ = ["Finisher"]

log = logging.getLogger("qw.worker")

Committed = Callable[[JobSlot, Outcome, "JobStatus | None"], None]
Batch = Sequence[tuple[JobSlot, Outcome]]


class Finisher:
    """Writes outcomes in batches of up to ``batch`` and reports each one committed."""

    def __init__(self, client: Client, on_committed: Committed, *, batch: int) -> None:
        self._client = client
        self._on_committed = on_committed
        self._batch = batch
        self._queue: queue.SimpleQueue[tuple[JobSlot, Outcome] | None] = queue.SimpleQueue()
        self._give_up_at: float | None = None
        self._thread = threading.Thread(target=self._loop, name="qw-finisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, rec: JobSlot, outcome: Outcome) -> None:
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
            batch: list[tuple[JobSlot, Outcome]] = []
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
                    # A bug here must not stop every later write; these leases expire.
                    log.exception("writing %d outcomes failed; they are dropped", len(batch))
                    for rec, outcome in batch:
                        if not rec.committed:
                            self._report(rec, outcome, None)

    def _write(self, batch: Batch) -> None:
        try:
            statuses = self._finish([outcome for _, outcome in batch])
        except Exception as exc:
            if len(batch) > 1:
                # Halves, not singles: one bad outcome in 500 costs ~18 calls, not 500.
                half = len(batch) // 2
                self._write(batch[:half])
                self._write(batch[half:])
            else:
                self._write_instead(*batch[0], exc)
            return
        for (rec, outcome), status in zip(batch, statuses, strict=True):
            self._report(rec, outcome, status)

    def _finish(self, outcomes: list[Outcome]) -> list[JobStatus | None]:
        """``finish``, retrying while the store is unavailable; other errors propagate."""
        pause = 0.05
        while True:
            try:
                return self._client.finish(outcomes)
            except BackendError as exc:
                if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                    log.error("giving up on %d terminal writes: %r", len(outcomes), exc)
                    return [None] * len(outcomes)
                log.warning("terminal write failed (%r); retrying in %.2f s", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _write_instead(self, rec: JobSlot, outcome: Outcome, exc: Exception) -> None:
        """Write a failed attempt for ``rec`` whose own outcome the store refused."""
        why = error_info(exc, with_traceback=False)
        log.error(
            "job %s: its outcome cannot be written (%s: %s)", rec.id, why["type"], why["message"]
        )
        instead = _instead(rec, outcome, why)
        status: JobStatus | None = None
        if instead is not None:
            try:
                (status,) = self._finish([instead])
                outcome = instead
            except Exception:
                log.exception("job %s: its failure cannot be written either", rec.id)
        if status is None:
            log.error("job %s: giving up on its terminal write; its lease will expire", rec.id)
        self._report(rec, outcome, status)

    def _report(self, rec: JobSlot, outcome: Outcome, status: JobStatus | None) -> None:
        try:
            self._on_committed(rec, outcome, status)
        except Exception:
            log.exception("job %s: reporting its outcome failed", rec.id)


def _instead(rec: JobSlot, outcome: Outcome, why: dict[str, JSONValue]) -> Fail | None:
    """The failed attempt that replaces an outcome the store refused (None for a release)."""
    detail = f"{why['type']}: {why['message']}"
    error: dict[str, JSONValue]
    if isinstance(outcome, Complete):
        error = {
            "type": "qw.InvalidResult",
            "message": f"the task's return value cannot be stored: {detail}",
        }
        return failed(rec, error, retryable=False)
    if isinstance(outcome, (Fail, Abort)):
        error = {
            "type": "qw.WorkerError",
            "message": f"the attempt's outcome cannot be stored: {detail}",
        }
        return failed(
            rec, error, retryable=isinstance(outcome, Fail) and outcome.retry_in is not None
        )
    return None
