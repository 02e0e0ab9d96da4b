"""What machine and software a run measured: printed with every result."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from bench import stores
from bench.config import Stores

__all__ = ["describe", "load"]

PACKAGES = (
    "qw-core",
    "qw-postgres",
    "qw-redis",
    "qw-mongodb",
    "pgqueuer",
    "procrastinate",
    "dramatiq",
    "rq",
    "saq",
    "huey",
    "celery",
    "kombu",
    "dbos",
    "sqlalchemy",
    "psycopg",
    "asyncpg",
    "redis",
    "hiredis",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (a busy machine makes numbers noisy)."""
    return [round(x, 2) for x in os.getloadavg()]


def _server(fn: Any, s: Stores) -> str:
    try:
        return str(fn(s))
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"


def describe(s: Stores) -> dict[str, Any]:
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "postgresql": _server(stores.pg_version, s),
        "redis": _server(stores.redis_version, s),
        "packages": versions,
        "load_at_start": load(),
    }
