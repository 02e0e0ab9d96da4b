"""SIGTERM / SIGINT: the first stops claiming and drains; the second releases at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

__all__ = ["stop_on_signals"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stoppable(Protocol):
    @property
    def stop_requested(self) -> bool: ...

    def request_stop(self, *, force: bool = False) -> None: ...


@contextmanager
def stop_on_signals(worker: Stoppable) -> Iterator[None]:
    """Route SIGTERM and SIGINT to ``worker`` while inside; no-op off the main thread.

    The handler only sets flags (it may interrupt the worker's own locks);
    the worker's loops notice them within a fraction of a second.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        worker.request_stop(force=worker.stop_requested)

    previous = {sig: signal.signal(sig, handle) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
