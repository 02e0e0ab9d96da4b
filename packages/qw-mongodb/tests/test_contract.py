"""The qw storage contract, unchanged, against MongoDB (or, without a server, the stand-in)."""

from __future__ import annotations

import pytest
from mongo_store import URL, Store

import qw
from qw_testkit import BackendContractTests


class TestMongoContract(BackendContractTests):
    @pytest.fixture(autouse=True)
    def _mongo_store(self, store: Store) -> None:
        self.store = store

    def make_backend(self, namespace: str) -> qw.Backend:
        return self.store.open(namespace)

    def backend_url(self) -> str | None:
        # Child processes need a real server; the stand-in lives in this process.
        return URL
