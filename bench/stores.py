"""Creating, emptying and dropping what the harness owns on the servers."""

from __future__ import annotations

import re

from bench.config import Stores

__all__ = ["pg_drop", "pg_recreate", "pg_version", "redis_flush", "redis_version"]

_DB_NAME = re.compile(r"qw_bench[a-z0-9_]*")


def _check(name: str) -> str:
    # Only databases the harness names itself are ever dropped.
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"refusing to touch database {name!r}")
    return name


def pg_recreate(stores: Stores, name: str) -> str:
    """Drop (forcing out old sessions) and create database ``name``; return its URL."""
    import psycopg

    with psycopg.connect(stores.postgres_admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_check(name)} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return stores.postgres_db(name)


def pg_drop(stores: Stores, name: str) -> None:
    import psycopg

    with psycopg.connect(stores.postgres_admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_check(name)} WITH (FORCE)")


def pg_version(stores: Stores) -> str:
    import psycopg

    with psycopg.connect(stores.postgres_admin, autocommit=True) as conn:
        parts = []
        for setting in ("server_version", "fsync", "synchronous_commit"):
            row = conn.execute(f"SHOW {setting}").fetchone()
            parts.append(f"{setting}={row[0] if row else '?'}")
    # Durability settings change write-heavy numbers, so the report states them.
    return ", ".join(parts).removeprefix("server_version=")


def redis_flush(stores: Stores) -> None:
    """FLUSHDB on the bench DB (never DB 0: :class:`Stores` refuses that URL)."""
    import redis

    client = redis.Redis.from_url(stores.redis)
    try:
        db = client.connection_pool.connection_kwargs.get("db", 0)
        if int(db) == 0:
            raise ValueError("refusing to flush Redis DB 0")
        client.flushdb()
    finally:
        client.close()


def redis_version(stores: Stores) -> str:
    import redis

    client = redis.Redis.from_url(stores.redis)
    try:
        version = client.info("server")["redis_version"]
        persistence = client.info("persistence")
        aof = "on" if persistence.get("aof_enabled") else "off"
        save = client.config_get("save").get("save") or "none"
        return f"{version}, appendonly={aof}, save={save!r}"
    finally:
        client.close()
