"""The task backend's OPTIONS and the qw URL derived from a DATABASES entry: no store needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from qw_django.store import StoreConfig, derived_url


def test_defaults() -> None:
    config = StoreConfig.from_options("default", {})
    assert config == StoreConfig()
    assert config.transactional
    assert config.max_attempts == 1


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"DATABSE": "default"}, id="typo"),
        pytest.param({"DATABASE": ""}, id="empty-alias"),
        pytest.param({"URL": ""}, id="empty-url"),
        pytest.param({"URL": "redis://x", "STORE_OPTIONS": {"a": "b"}}, id="url-and-options"),
        pytest.param({"STORE_OPTIONS": {"schema": ["x"]}}, id="option-value"),
        pytest.param({"NAMESPACE": "no spaces"}, id="namespace"),
        pytest.param({"ENQUEUE_ON_COMMIT": "yes"}, id="on-commit"),
        pytest.param({"MAX_ATTEMPTS": 0}, id="attempts"),
        pytest.param({"MAX_ATTEMPTS": True}, id="attempts-bool"),
    ],
)
def test_bad_options_are_improperly_configured(options: dict[str, Any]) -> None:
    with pytest.raises(ImproperlyConfigured):
        StoreConfig.from_options("default", options)


def test_explicit_url_is_not_transactional() -> None:
    config = StoreConfig.from_options("default", {"URL": "redis://127.0.0.1:6379/0"})
    assert not config.transactional
    assert config.resolve_url() == "redis://127.0.0.1:6379/0"


def pg(**entry: Any) -> dict[str, Any]:
    return {"ENGINE": "django.db.backends.postgresql", **entry}


@pytest.mark.parametrize(
    ("entry", "store_options", "url"),
    [
        pytest.param(
            pg(NAME="shop", USER="app", PASSWORD="p@ss:/w", HOST="db.internal", PORT="6432"),
            {},
            "postgresql://app:p%40ss%3A%2Fw@db.internal:6432/shop",
            id="tcp",
        ),
        pytest.param(
            pg(NAME="shop", HOST="/var/run/postgresql", PORT=5433),
            {"schema": "jobs"},
            "postgresql:///shop?host=%2Fvar%2Frun%2Fpostgresql&port=5433&schema=jobs",
            id="unix-socket",
        ),
        pytest.param(
            pg(NAME="shop", HOST="::1", OPTIONS={"sslmode": "require", "pool": True}),
            {},
            "postgresql://[::1]/shop?sslmode=require",
            id="ipv6-libpq-options-only",
        ),
    ],
)
def test_postgres_url(entry: dict[str, Any], store_options: dict[str, str], url: str) -> None:
    assert derived_url(entry, store_options) == url


def test_sqlite_url_is_the_absolute_file_shared(tmp_path: Path) -> None:
    entry = {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "my db.sqlite3"}
    url = derived_url(entry, {"busy_timeout": "9000"})
    assert url == f"sqlite:///{tmp_path}/my%20db.sqlite3?shared=true&busy_timeout=9000"
    assert url.startswith("sqlite:////")


@pytest.mark.parametrize("name", [":memory:", "", "file:memdb1?mode=memory&cache=shared"])
def test_sqlite_memory_databases_are_refused(name: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="not a file"):
        derived_url({"ENGINE": "django.db.backends.sqlite3", "NAME": name}, {})


def test_other_engines_need_a_url() -> None:
    with pytest.raises(ImproperlyConfigured, match="OPTIONS\\['URL'\\]"):
        derived_url({"ENGINE": "django.db.backends.mysql", "NAME": "x"}, {})


def test_system_check_names_a_missing_database() -> None:
    from qw_django.backend import QwTaskBackend

    backend = QwTaskBackend("x", {"OPTIONS": {"DATABASE": "nowhere"}})
    assert [e.id for e in backend.check()] == ["qw_django.E001"]
    assert QwTaskBackend("y", {}).check() == []
