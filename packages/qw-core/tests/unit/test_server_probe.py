"""qw_testkit.servers.require_server probes each (backend, URL) once per process."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from qw_testkit import servers


@pytest.fixture(autouse=True)
def _fresh_probes() -> Iterator[None]:
    servers.forget_probes()
    yield
    servers.forget_probes()


class Counting:
    """A probe that really connects over TCP, and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, url: str) -> None:
        self.calls.append(url)
        host, port = url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=2):
            pass


@pytest.fixture
def listening() -> Iterator[str]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_a_reachable_server_is_probed_once(listening: str) -> None:
    probe = Counting()
    for _ in range(5):
        assert servers.require_server("fake", listening, probe) == listening
    assert probe.calls == [listening]


def test_an_unreachable_server_is_probed_once_and_every_call_skips(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("QW_REQUIRE_BACKENDS", raising=False)
    url, probe = _closed_port(), Counting()
    for _ in range(3):
        with pytest.raises(pytest.skip.Exception, match="fake server unreachable"):
            servers.require_server("fake", url, probe)
    assert probe.calls == [url]


def test_the_cache_is_per_backend_and_url(listening: str) -> None:
    probe = Counting()
    servers.require_server("one", listening, probe)
    servers.require_server("two", listening, probe)
    servers.require_server("one", listening, probe)
    assert probe.calls == [listening, listening]


def test_a_required_backend_fails_every_time_from_the_cached_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QW_REQUIRE_BACKENDS", "fake")
    url, probe = _closed_port(), Counting()
    for _ in range(2):
        with pytest.raises(pytest.fail.Exception, match="QW_REQUIRE_BACKENDS requires fake"):
            servers.require_server("fake", url, probe)
    assert probe.calls == [url]
