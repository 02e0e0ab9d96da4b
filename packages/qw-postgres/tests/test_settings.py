"""URLs, options, names and errors: checked before any SQL, translated after."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

import qw
from qw_postgres import PostgresBackend
from qw_postgres.settings import parse_url

from .conftest import with_query

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=2"


def test_qw_options_are_stripped_and_libpq_options_kept() -> None:
    s = parse_url(
        "postgres://u:p@h:5433/db?schema=jobs&pool_min=2&pool_max=7&sslmode=disable"
        "&application_name=app&auto_migrate=0&pool_timeout=3&poll_interval=0.2"
    )
    assert s.conninfo == "postgresql://u:p@h:5433/db?sslmode=disable&application_name=app"
    assert (s.schema, s.pool_min, s.pool_max, s.auto_migrate) == ("jobs", 2, 7, False)
    assert (s.pool_timeout, s.poll_interval) == (3.0, 0.2)
    assert parse_url("pg://h/db").conninfo == "postgresql://h/db"
    assert parse_url("pg://h/db").schema == "qw"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://h/db?shema=qw",  # a typo of a qw option
        "postgresql://h/db?schema=qw&schema=other",
        "postgresql://h/db?pool_min=5&pool_max=2",
        "postgresql://h/db?pool_max=lots",
        "postgresql://h/db?auto_migrate=maybe",
        "postgresql://h/db?schema=" + quote('qw"; DROP TABLE x; --'),
        "postgresql://h/db?schema=Public",
        "postgresql://h/db?schema=",
        "postgresql://h/db?schema=" + "a" * 41,
        "mysql://h/db",
        "postgresql://h/db#frag",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(qw.ConfigurationError):
        parse_url(url)
    with pytest.raises((qw.ConfigurationError, qw.BackendNotFound)):
        PostgresBackend.from_url(url, namespace="a")


def test_bad_namespace_is_refused_before_any_io() -> None:
    # The server is unreachable: only a check before I/O can answer InvalidName.
    for bad in ("Bad", "a b", "x'; DROP TABLE jobs; --", "", "-a", "a" * 64):
        with pytest.raises(qw.InvalidName):
            PostgresBackend.from_url(UNREACHABLE, namespace=bad)
        if bad:  # qw.open reads an empty namespace as "use the default"
            with pytest.raises(qw.InvalidName):
                qw.open(UNREACHABLE, namespace=bad)


def test_unreachable_server_is_backend_unavailable() -> None:
    with pytest.raises(qw.BackendUnavailable) as info:
        qw.open(UNREACHABLE, namespace="a")
    assert "psycopg" not in type(info.value).__module__


def test_alias_schemes_open_the_postgres_backend(pg_url: str) -> None:
    for scheme in ("pg", "postgres", "postgresql"):
        url = with_query(pg_url.replace("postgresql", scheme, 1), "schema=qw_test")
        with qw.open(url, namespace="alias") as client:
            assert client.backend.name == "postgres"
            assert client.now().tzinfo is not None


def test_weakened_durability_is_logged_once(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # A libpq `options` string changes the setting for our sessions only.
    marker = uuid.uuid4().hex[:8]
    url = with_query(
        pg_url,
        "schema=qw_test&options="
        + quote(f"-c synchronous_commit=off -c application_name={marker}"),
    )
    with caplog.at_level(logging.WARNING, logger="qw_postgres"):
        qw.open(url, namespace="a").close()
        qw.open(url, namespace="b").close()
    lines = [r.getMessage() for r in caplog.records if "synchronous_commit=off" in r.getMessage()]
    assert len(lines) == 1


def test_default_server_settings_are_not_warned_about(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="qw_postgres"):
        qw.open(with_query(pg_url, "schema=qw_test"), namespace="a").close()
    assert not [r for r in caplog.records if "crash" in r.getMessage()]


def test_driver_errors_surface_as_qw_errors(pg_url: str) -> None:
    client = qw.open(with_query(pg_url, "schema=qw_test"), namespace="errs")
    client.close()
    with pytest.raises(qw.BackendUnavailable):
        client.enqueue_one("q", 1)


# -- secrets never printed ------------------------------------------------------

PW = "Sup3rSecretPW"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{PW}@h/db?schema=a&schema=b",
        f"postgresql://u:{PW}@h/db#frag",
        f"postgresql://u:{PW}@[::1/db",
        f"postgresql://u:{PW}@h/db?bogus=1",
        f"postgresql://u:{PW}@h/db?schema=Bad",
    ],
)
def test_url_errors_never_show_the_password(url: str) -> None:
    from click.testing import CliRunner

    from qw.cli import main

    with pytest.raises(qw.ConfigurationError) as caught:
        qw.open(url)
    assert PW not in str(caught.value)
    result = CliRunner().invoke(main, ["status", "--url", url])
    assert result.exit_code == 2
    assert result.stderr.startswith("qw: error: ConfigurationError: ")
    assert PW not in result.stdout + result.stderr


def test_status_never_shows_a_password_query_option(pg_url: str, fresh_schema: str) -> None:
    from click.testing import CliRunner

    from qw.cli import main

    # The local server trusts its clients, so libpq never needs the password.
    url = with_query(pg_url, f"password={PW}&schema={fresh_schema}")
    for args in (["status"], ["status", "--json"], ["migrate"]):
        result = CliRunner().invoke(main, [*args, "--url", url])
        assert result.exit_code == 0, result.output
        assert PW not in result.stdout + result.stderr
        assert "password=***" in result.stdout


def test_cli_output_of_a_postgres_store_holds_no_raw_control_characters(
    pg_url: str, fresh_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same hostile jobs and checks as qw-core's sqlite test, on this store.
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "qw-core" / "tests" / "unit"))
    from test_redaction import assert_inert_cli_output, seed_hostile

    url = with_query(pg_url, f"schema={fresh_schema}")
    assert_inert_cli_output(url, seed_hostile(url))
