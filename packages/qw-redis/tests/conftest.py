"""Fixtures: the shared Redis on 127.0.0.1:6379, and a Redis Cluster this session starts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qw_testkit.servers import require_server, server_url

from .servers import cluster, need_binaries, probe


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
