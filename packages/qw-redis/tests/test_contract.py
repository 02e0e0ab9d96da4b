"""The storage contract (qw_testkit) against a single Redis and a Redis Cluster."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from typing import ClassVar

import pytest

import qw
from qw.aio import AsyncBackend
from qw_redis import RedisBackend
from qw_testkit import BackendContractTests

from .servers import drop_namespaces


def with_shards(url: str, shards: int) -> str:
    """``url`` asking for ``shards`` shards."""
    return f"{url}{'&' if '?' in url else '?'}shards={shards}"


class TestRedisContract(BackendContractTests):
    url: str
    namespaces: ClassVar[set[str]] = set()

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _server(cls, redis_url: str) -> Iterator[None]:
        cls.url = redis_url
        yield
        # The shared server outlives the session: leave no test namespace behind.
        drop_namespaces(redis_url, cls.namespaces)

    def make_backend(self, namespace: str) -> qw.Backend:
        self.namespaces.add(namespace)
        return RedisBackend.from_url(self.url, namespace=namespace)

    def make_async_backend(self, namespace: str) -> Awaitable[AsyncBackend]:
        # The native twin, so the kit's async suite runs against it.
        self.namespaces.add(namespace)
        return RedisBackend.open_async(self.url, namespace=namespace)

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

    def make_async_backend(self, namespace: str) -> Awaitable[AsyncBackend]:
        return RedisBackend.open_async(self.url, namespace=namespace)

    def backend_url(self) -> str:
        return self.url


class TestRedisShardedContract(TestRedisContract):
    """The kit on namespaces spread over 3 shards of the single server (``shards=3``)."""

    namespaces: ClassVar[set[str]] = set()

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _server(cls, redis_url: str) -> Iterator[None]:
        cls.url = with_shards(redis_url, 3)
        yield
        drop_namespaces(redis_url, cls.namespaces)


class TestRedisClusterShardedContract(TestRedisClusterContract):
    """The kit on namespaces spread over 3 shards of the 3-master loopback Cluster."""

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _server(cls, cluster_url: str) -> None:
        cls.url = with_shards(cluster_url, 3)
