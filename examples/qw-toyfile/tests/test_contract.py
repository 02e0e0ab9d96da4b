"""qw-toyfile proves itself with the same contract suite as qw's own backends."""

from __future__ import annotations

import tempfile
from pathlib import Path

from qw_testkit import BackendContractTests
from qw_toyfile import ToyFileBackend

#: One store directory for the run; every test works in a fresh namespace inside it.
STORE = Path(tempfile.mkdtemp(prefix="qw-toyfile-"))


class TestToyFileContract(BackendContractTests):
    def make_backend(self, namespace: str) -> ToyFileBackend:
        return ToyFileBackend(STORE, namespace=namespace)

    def backend_url(self) -> str:
        return f"toyfile://{STORE}"
