"""The storage contract, run against the sqlite backend on a real file."""

from __future__ import annotations

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
        return SqliteBackend(self.db_path, namespace=namespace)

    def backend_url(self) -> str:
        # Four slashes: an absolute path, whatever the child process's cwd.
        return f"sqlite:///{self.db_path.resolve()}"
