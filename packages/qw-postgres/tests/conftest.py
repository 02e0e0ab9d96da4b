"""Shared fixtures: the test server's URL, with a schema of the tests' own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from qw_testkit.servers import require_server, server_url

#: Every test schema starts with this, so a crashed run's leftovers are easy to find.
TEST_SCHEMA_PREFIX = "qw_test"


def with_query(url: str, query: str) -> str:
    """``url`` with ``query`` appended to its query string."""
    parts = urlsplit(url)
    joined = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, parts.fragment))


def _probe(url: str) -> None:
    with psycopg.connect(url, connect_timeout=3) as conn:
        conn.execute("SELECT 1")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The reachable server's plain URL (skips loudly, or fails when required)."""
    return require_server("postgres", server_url("postgres"), _probe)


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def fresh_schema(pg_url: str) -> Iterator[str]:
    """A schema name nobody has used, dropped after the test."""
    schema = f"{TEST_SCHEMA_PREFIX}_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(pg_url, schema)
