"""qw-toyfile proves itself with the same contract suite as qw's own backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from qw_testkit import BackendContractTests

from qw_toyfile import ToyFileBackend


class TestToyFileContract(BackendContractTests):
    @pytest.fixture(autouse=True)
    def _store(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.json"

    def make_backend(self, namespace: str) -> ToyFileBackend:
        return ToyFileBackend(self.path, namespace=namespace)

    def backend_url(self) -> str:
        return f"toyfile://{self.path}"
