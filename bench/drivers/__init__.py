"""Every system the bench knows, by id (``system-store``), imported lazily."""

from __future__ import annotations

import importlib

from bench.config import Stores
from bench.drivers.base import Driver

__all__ = ["ALL", "PEERS", "QW", "WORKFLOW_PEERS", "load"]

QW = ["qw-sqlite", "qw-postgres", "qw-redis", "qw-mongodb"]
PEERS = [
    "huey-sqlite",
    "pgqueuer-postgres",
    "procrastinate-postgres",
    "dramatiq-redis",
    "rq-redis",
    "saq-redis",
    "huey-redis",
]
#: Peers of the workflow phases only.
WORKFLOW_PEERS = ["celery-redis", "dbos-postgres"]
ALL = QW + PEERS + WORKFLOW_PEERS

_WHERE = {
    "qw-sqlite": ("bench.drivers.qw_driver", "QwSqlite"),
    "qw-postgres": ("bench.drivers.qw_driver", "QwPostgres"),
    "qw-redis": ("bench.drivers.qw_driver", "QwRedis"),
    "qw-mongodb": ("bench.drivers.qw_driver", "QwMongo"),
    "pgqueuer-postgres": ("bench.drivers.pgqueuer_driver", "PgQueuer"),
    "procrastinate-postgres": ("bench.drivers.procrastinate_driver", "Procrastinate"),
    "dramatiq-redis": ("bench.drivers.dramatiq_driver", "Dramatiq"),
    "rq-redis": ("bench.drivers.rq_driver", "Rq"),
    "saq-redis": ("bench.drivers.saq_driver", "Saq"),
    "huey-redis": ("bench.drivers.huey_driver", "HueyRedis"),
    "huey-sqlite": ("bench.drivers.huey_driver", "HueySqlite"),
    "celery-redis": ("bench.drivers.celery_driver", "Celery"),
    "dbos-postgres": ("bench.drivers.dbos_driver", "Dbos"),
}


def load(driver_id: str, stores: Stores) -> Driver:
    """The driver for ``driver_id``; ImportError if its package is not installed."""
    module, cls = _WHERE[driver_id]
    driver: Driver = getattr(importlib.import_module(module), cls)(stores)
    return driver
