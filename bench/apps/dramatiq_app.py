"""Dramatiq's broker and actor for the bench.

Its workers are ``python -m dramatiq bench.apps.dramatiq_app``.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench import probe

broker = RedisBroker(url=os.environ["QW_BENCH_REDIS_URL"])  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", actor_name="bench_noop")
def noop(i: int) -> None:
    probe.record(i)
