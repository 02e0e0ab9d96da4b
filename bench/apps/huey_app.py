"""Huey's instance for the bench, on Redis or on SQLite (``QW_BENCH_HUEY_STORE``).

Workers are Huey's own consumer: ``python -m huey.bin.huey_consumer bench.apps.huey_app.huey``.
"""

from __future__ import annotations

import os

from huey import Huey, RedisHuey, SqliteHuey  # type: ignore[import-untyped]

from bench import probe


def make() -> Huey:
    if os.environ.get("QW_BENCH_HUEY_STORE") == "sqlite":
        return SqliteHuey("bench", filename=os.environ["QW_BENCH_HUEY_SQLITE"])
    return RedisHuey("bench", url=os.environ["QW_BENCH_REDIS_URL"])


huey = make()


@huey.task()  # type: ignore[untyped-decorator]
def noop(i: int) -> None:
    probe.record(i)
