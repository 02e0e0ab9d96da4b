"""The qw storage contract, unchanged, against MongoDB (or, without a server, the stand-in)."""

from __future__ import annotations

import pytest
from mongo_store import STAND_IN, URL, Store

import qw
from qw_testkit import BackendContractTests


class TestMongoContract(BackendContractTests):
    @pytest.fixture(autouse=True)
    def _mongo_store(self, store: Store) -> None:
        self.store = store

    def make_backend(self, namespace: str) -> qw.Backend:
        return self.store.open(namespace)

    def backend_url(self) -> str | None:
        if URL is None:
            # The stand-in lives in this process: no URL reaches it. Say so in
            # the skip, rather than the kit's generic "returns None".
            pytest.skip(
                f"no URL reaches the in-process stand-in {STAND_IN!r}; "
                "set QW_TEST_MONGODB_URL to run the URL and multi-process tests"
            )
        return URL
