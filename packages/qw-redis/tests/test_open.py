"""Opening: the registry finds the backend, errors are qw errors, persistence is checked."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import qw
from qw.errors import BackendUnavailable, ConfigurationError, InvalidName
from qw.registry import load_backend
from qw_redis import RedisBackend

from .servers import need_binaries, single_server, spare_port


def test_the_registry_loads_the_redis_backend_for_every_scheme() -> None:
    for url in ("redis://h/0", "rediss://h/0", "redis+cluster://h:1", "rediss+cluster://h:1"):
        assert load_backend(url) is RedisBackend


def test_an_unreachable_server_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable):
        RedisBackend.from_url(f"redis://127.0.0.1:{spare_port()}/0", namespace="acme")


def test_an_unreachable_cluster_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable):
        RedisBackend.from_url(f"redis+cluster://127.0.0.1:{spare_port()}", namespace="acme")


def test_the_namespace_is_checked_before_any_io() -> None:
    # The port is closed: a namespace error proves no connection was tried first.
    with pytest.raises(InvalidName):
        RedisBackend.from_url(f"redis://127.0.0.1:{spare_port()}/0", namespace="{x}")


def test_unknown_options_are_refused_before_connecting() -> None:
    with pytest.raises(ConfigurationError):
        qw.open(f"redis://127.0.0.1:{spare_port()}/0?frobnicate=1", namespace="acme")


def test_open_through_qw(redis_url: str) -> None:
    with qw.open(redis_url, namespace="opentest") as client:
        assert client.backend.name == "redis"
        assert client.now().tzinfo is not None


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "qw_redis" and r.levelno == logging.WARNING
    ]


def test_a_server_without_persistence_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    need_binaries()
    with single_server(tmp_path, ["--save", "", "--appendonly", "no"]) as server:
        caplog.set_level(logging.INFO, logger="qw_redis")
        RedisBackend.from_url(server.url, namespace="a").close()
        RedisBackend.from_url(server.url, namespace="b").close()
        warnings = _warnings(caplog)
        assert len(warnings) == 1
        assert "no persistence" in warnings[0]


def test_a_server_with_aof_is_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    need_binaries()
    with single_server(tmp_path, ["--save", "", "--appendonly", "yes"]) as server:
        caplog.set_level(logging.INFO, logger="qw_redis")
        RedisBackend.from_url(server.url, namespace="a").close()
        assert _warnings(caplog) == []


def test_a_server_with_config_disabled_still_opens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    need_binaries()
    with single_server(tmp_path, ["--save", "", "--rename-command", "CONFIG", ""]) as server:
        caplog.set_level(logging.INFO, logger="qw_redis")
        with qw.open(server.url, namespace="a") as client:
            client.enqueue_one("q", 1)
            assert client.claim(["q"], worker="w")[0].job.payload == 1
        assert _warnings(caplog) == []
        assert any("cannot read the persistence" in r.getMessage() for r in caplog.records)
