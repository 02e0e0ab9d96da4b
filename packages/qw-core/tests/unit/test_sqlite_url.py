"""sqlite URLs: SQLAlchemy-style paths, known options only, no in-memory databases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import qw
from qw.backends.sqlite import SqliteBackend
from qw.backends.sqlite._url import SqliteOptions, parse_url
from qw.errors import BackendUnavailable, ConfigurationError, InvalidName


def test_three_slashes_is_relative_four_is_absolute() -> None:
    assert parse_url("sqlite:///jobs.db").path == "jobs.db"
    assert parse_url("sqlite:///data/jobs.db").path == "data/jobs.db"
    assert parse_url("sqlite:////var/lib/qw/jobs.db").path == "/var/lib/qw/jobs.db"
    assert parse_url("sqlite:////tmp/with%20space.db").path == "/tmp/with space.db"


def test_options_are_parsed_and_defaulted() -> None:
    assert parse_url("sqlite:///x.db") == SqliteOptions("x.db")
    opts = parse_url("sqlite:///x.db?busy_timeout=250&poll_interval=0.2&synchronous=normal")
    assert opts == SqliteOptions(
        "x.db", busy_timeout_ms=250, poll_interval=0.2, synchronous="NORMAL"
    )


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite://host/x.db",
        "sqlite:///x.db?mode=ro",
        "sqlite:///x.db?busy_timeout=soon",
        "sqlite:///x.db?busy_timeout=-1",
        "sqlite:///x.db?poll_interval=0",
        "sqlite:///x.db?poll_interval=nan",
        "sqlite:///x.db?synchronous=OFF",
        "sqlite:///x.db?busy_timeout=1&busy_timeout=2",
        "sqlite:///x.db#frag",
        "postgresql:///x.db",
    ],
)
def test_bad_urls_raise_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_url(url)


def test_memory_urls_point_to_memory_backend() -> None:
    with pytest.raises(ConfigurationError, match="memory://"):
        SqliteBackend.from_url("sqlite:///:memory:", namespace="a")
    with pytest.raises(ConfigurationError, match="memory://"):
        SqliteBackend(":memory:", namespace="a")


def test_relative_path_is_resolved_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = SqliteBackend.from_url("sqlite:///rel.db", namespace="a")
    try:
        assert backend.path == str(tmp_path / "rel.db")
        assert (tmp_path / "rel.db").exists()
    finally:
        backend.close()


def test_qw_open_finds_the_backend_by_scheme(tmp_path: Path) -> None:
    with qw.open(f"sqlite:///{tmp_path}/via-open.db", namespace="ns") as client:
        assert isinstance(client.backend, SqliteBackend)
        assert client.backend.namespace == "ns"


def test_missing_directory_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "x.db"
    with pytest.raises(BackendUnavailable, match="does not exist"):
        SqliteBackend.from_url(f"sqlite:///{missing}", namespace="a")
    assert not missing.parent.exists()


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="directory"):
        SqliteBackend(tmp_path, namespace="a")


def test_namespace_is_checked_before_any_io(tmp_path: Path) -> None:
    target = tmp_path / "never.db"
    with pytest.raises(InvalidName):
        SqliteBackend.from_url(f"sqlite:///{target}", namespace="Bad Name")
    with pytest.raises(InvalidName):
        SqliteBackend(target, namespace="Bad Name")
    assert not os.path.exists(target)


def test_a_nul_in_the_path_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="NUL"):
        parse_url("sqlite:///a%00b.db")
    with pytest.raises(qw.ConfigurationError, match="NUL"):
        qw.open("sqlite:///a%00b.db")


def test_shared_is_a_boolean_option() -> None:
    assert parse_url("sqlite:///a.db").shared is False
    assert parse_url("sqlite:///a.db?shared=true").shared is True
    assert parse_url("sqlite:///a.db?shared=off").shared is False
    with pytest.raises(ConfigurationError, match="shared must be true or false"):
        parse_url("sqlite:///a.db?shared=maybe")
