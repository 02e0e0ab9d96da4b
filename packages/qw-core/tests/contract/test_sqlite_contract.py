"""The storage contract, run against the sqlite backend on a real file."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import qw
from qw.backends.sqlite import SqliteBackend
from qw_testkit import BackendContractTests


class TestSqliteContract(BackendContractTests):
    db_path: Path

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _sqlite_file(cls, tmp_path_factory: pytest.TempPathFactory) -> None:
        # One file per test class: namespaces share it, as they would in production.
        cls.db_path = tmp_path_factory.mktemp("sqlite") / "qw.db"

    def make_backend(self, namespace: str) -> qw.Backend:
        # shared: the transaction tests keep an application table in the file.
        return SqliteBackend(self.db_path, namespace=namespace, shared=True)

    def backend_url(self) -> str:
        # Four slashes: an absolute path, whatever the child process's cwd;
        # shared, as make_backend.
        return f"sqlite:///{self.db_path.resolve()}?shared=true"

    @contextlib.contextmanager
    def app_connection(self) -> Iterator[sqlite3.Connection]:
        # As an application opens the file: Python's default transaction handling.
        conn = sqlite3.connect(self.db_path)
        try:
            yield conn
        finally:
            conn.close()
