"""What the Redis peers share: the bench DB, flushed before each phase."""

from __future__ import annotations

import os
from typing import Any

from bench import stores
from bench.drivers.base import Driver

__all__ = ["RedisPeer"]


class RedisPeer(Driver):
    store = "redis"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        os.environ["QW_BENCH_REDIS_URL"] = self.stores.redis
        self._redis: Any = None

    def redis(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self.stores.redis)
        return self._redis

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def reset(self) -> None:
        self.close()
        stores.redis_flush(self.stores)

    def cleanup(self) -> None:
        self.reset()

    def worker_env(self, probe_dir: Any) -> dict[str, str]:
        return {"QW_BENCH_PROBE_DIR": str(probe_dir), "QW_BENCH_REDIS_URL": self.stores.redis}
