"""The storage contract, run against the reference ``memory`` backend."""

from __future__ import annotations

import uuid

import qw
from qw.backends.memory import MemoryBackend
from qw_testkit import BackendContractTests

#: One store for this run: every namespace the kit opens lives in it.
STORE = "contract-" + uuid.uuid4().hex[:8]


class TestMemoryContract(BackendContractTests):
    def make_backend(self, namespace: str) -> qw.Backend:
        return MemoryBackend(STORE, namespace=namespace)

    def backend_url(self) -> str | None:
        return f"memory://{STORE}"
