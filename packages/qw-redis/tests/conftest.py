"""Fixtures: the shared Redis on 127.0.0.1:6379, and a Redis Cluster this session starts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qw_testkit.base import new_namespace
from qw_testkit.servers import require_server, server_url

from .servers import cluster, drop_namespaces, need_binaries, probe


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The reachable single server (skips loudly, or fails when required)."""
    return require_server("redis", server_url("redis"), probe)


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-master Redis Cluster on spare loopback ports, stopped when the session ends."""
    need_binaries()
    with cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield f"redis+cluster://127.0.0.1:{nodes[0].port}"


@pytest.fixture(params=["single", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    """The single server, then the Cluster: a test taking it runs on both."""
    return str(request.getfixturevalue("redis_url" if request.param == "single" else "cluster_url"))


@pytest.fixture
def namespace(url: str) -> Iterator[str]:
    """A fresh namespace on ``url``, dropped after the test on the shared single server."""
    ns = new_namespace()
    yield ns
    if not url.startswith("redis+cluster://"):
        drop_namespaces(url, {ns})
