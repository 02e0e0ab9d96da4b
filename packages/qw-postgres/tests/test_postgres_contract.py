"""The storage contract (qw_testkit), run against the real PostgreSQL server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import qw
from qw_postgres import PostgresBackend
from qw_testkit import BackendContractTests
from qw_testkit.servers import require_server, server_url

from .conftest import _probe, with_query

#: The contract's own schema, shared by every contract test (each test gets a
#: fresh namespace) and by no other suite.
CONTRACT_SCHEMA = "qw_test"


class TestPostgresContract(BackendContractTests):
    url: str
    server: str

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _server(cls) -> None:
        base = require_server("postgres", server_url("postgres"), _probe)
        cls.server = base
        cls.url = with_query(base, f"schema={CONTRACT_SCHEMA}&pool_max=10")

    def make_backend(self, namespace: str) -> qw.Backend:
        return PostgresBackend.from_url(self.url, namespace=namespace)

    def backend_url(self) -> str:
        return self.url

    async def make_async_backend(self, namespace: str) -> Any:
        # The native twin (qw_postgres.aio), not the kit's threaded default.
        return await PostgresBackend.open_async(self.url, namespace=namespace)

    @contextlib.contextmanager
    def app_connection(self) -> Iterator[Any]:
        # The server's plain URL (qw's ?schema= is not a libpq option); not
        # autocommit, as an application's connection usually is not.
        with psycopg.connect(self.server, autocommit=False) as conn:
            yield conn
