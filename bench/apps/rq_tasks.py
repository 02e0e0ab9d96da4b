"""RQ's job function for the bench; workers are ``python -m rq.cli worker-pool``."""

from __future__ import annotations

from bench import probe


def noop(i: int) -> None:
    probe.record(i)
