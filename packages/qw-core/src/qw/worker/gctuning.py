"""Cyclic GC settings while workers run: fewer, cheaper collections.

A worker allocates a few container objects per job (records, leases,
outcomes) and holds thousands of them at once, so with CPython's defaults a
young collection runs every few dozen jobs and a full one walks every object
the process made at start (modules, drivers) again and again: measured, a
fifth of a no-op job's Python time. While at least one worker runs, the
objects alive at its start are frozen out of collection (``gc.freeze``) and
the youngest generation is collected every ``GEN0_THRESHOLD`` allocations
instead of 700; both are undone when the last worker stops.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["GEN0_THRESHOLD", "enter", "leave", "tuned_gc"]

GEN0_THRESHOLD = 10_000

_lock = threading.Lock()
_users = 0
_saved: tuple[int, int, int] | None = None


def enter() -> None:
    """A worker starts: tune the collector (the first one does)."""
    global _users, _saved
    with _lock:
        _users += 1
        if _users > 1:
            return
        _saved = gc.get_threshold()
        # Garbage made at start-up goes now, not into the frozen generation.
        gc.collect()
        gc.freeze()
        if _saved[0] < GEN0_THRESHOLD:
            gc.set_threshold(GEN0_THRESHOLD, _saved[1], _saved[2])


def leave() -> None:
    """A worker stopped: the last one restores the collector."""
    global _users, _saved
    with _lock:
        _users -= 1
        if _users > 0 or _saved is None:
            return
        gc.set_threshold(*_saved)
        gc.unfreeze()
        _saved = None


@contextmanager
def tuned_gc(enabled: bool = True) -> Iterator[None]:
    """Tune the collector inside, when ``enabled``."""
    if not enabled:
        yield
        return
    enter()
    try:
        yield
    finally:
        leave()
