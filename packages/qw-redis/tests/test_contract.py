"""The storage contract (qw_testkit) against a single Redis and a Redis Cluster."""

from __future__ import annotations

import pytest

import qw
from qw_redis import RedisBackend
from qw_testkit import BackendContractTests


class TestRedisContract(BackendContractTests):
    url: str

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _server(cls, redis_url: str) -> None:
        cls.url = redis_url

    def make_backend(self, namespace: str) -> qw.Backend:
        return RedisBackend.from_url(self.url, namespace=namespace)

    def backend_url(self) -> str:
        return self.url


class TestRedisClusterContract(BackendContractTests):
    url: str

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _server(cls, cluster_url: str) -> None:
        cls.url = cluster_url

    def make_backend(self, namespace: str) -> qw.Backend:
        return RedisBackend.from_url(self.url, namespace=namespace)

    def backend_url(self) -> str:
        return self.url
