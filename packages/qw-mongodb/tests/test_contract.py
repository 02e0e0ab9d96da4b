"""The qw storage contract, unchanged, against MongoDB (or, without a server, the stand-in)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import pytest
from mongo_store import STAND_IN, URL, Store

import qw
from qw_mongodb import MongoBackend
from qw_testkit import BackendContractTests
from qw_testkit.base import OpenClient
from qw_testkit.gates import requires


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

    @contextlib.contextmanager
    def _interrupted(self, backend: MongoBackend) -> Iterator[None]:
        backend._interrupt_settles(sys.maxsize)
        try:
            yield
        finally:
            backend._interrupt_settles(0)

    def interrupt_settle(self, client: qw.Client) -> contextlib.AbstractContextManager[None]:
        # The backend's fault-injection hook: every step end inside the context
        # stops after the step's own write, as a crash there would.
        backend = client.backend
        assert isinstance(backend, MongoBackend)
        return self._interrupted(backend)

    def test_threads_finishing_a_fan_in_promote_the_child_once(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        if URL is None:
            # The kit runs this on a backend that is not thread-safe with one
            # backend object per thread; the stand-in's objects share one
            # mongomock store, which is not thread-safe at all.
            pytest.skip(
                f"needs a real MongoDB server (QW_TEST_MONGODB_URL): the stand-in {STAND_IN!r} "
                "is not thread-safe, not even across backend objects"
            )
        super().test_threads_finishing_a_fan_in_promote_the_child_once(client, open_client)

    @requires("limits")
    def test_a_long_backlog_does_not_starve_a_key_with_a_few_jobs(self, client: qw.Client) -> None:
        if URL is None:
            # Not a limit of the backend: mongomock checks a unique index by
            # scanning every document on each insert and update, so 100,000
            # jobs take hours. The fairness rules themselves run on the
            # stand-in in the kit's other fair-claiming tests and in
            # test_mongo_limits.py.
            pytest.skip(
                f"needs a real MongoDB server (QW_TEST_MONGODB_URL): the stand-in {STAND_IN!r} "
                "enqueues in quadratic time (unique indexes checked by a full scan per write)"
            )
        super().test_a_long_backlog_does_not_starve_a_key_with_a_few_jobs(client)


# Overridden here, still selected as the kit's own (`-k LimitTests`, `-k WorkflowTests`).
TestMongoContract.test_a_long_backlog_does_not_starve_a_key_with_a_few_jobs.LimitTests = True  # type: ignore[attr-defined]
TestMongoContract.test_threads_finishing_a_fan_in_promote_the_child_once.WorkflowTests = True  # type: ignore[attr-defined]
