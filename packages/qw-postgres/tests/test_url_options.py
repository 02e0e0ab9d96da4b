"""Postgres URL options go through qw.urloptions: repeats, unknowns and bad values refused."""

from __future__ import annotations

import pytest

import qw
from qw_postgres.settings import parse_url

BASE = "postgresql://u:Sup3rSecretPW@h/db"


@pytest.mark.parametrize(
    "query",
    [
        "schema=a&schema=b",
        "auto_migrate=true&auto_migrate=false",
        "bogus=1",
        "auto_migrate=maybe",
        "auto_migrate=",
        "pool_min=x",
        "pool_timeout=nan",
        "poll_interval=0",
    ],
)
def test_bad_options_are_configuration_errors_without_the_password(query: str) -> None:
    with pytest.raises(qw.ConfigurationError) as caught:
        parse_url(f"{BASE}?{query}")
    assert "Sup3rSecretPW" not in str(caught.value)


@pytest.mark.parametrize(("raw", "value"), [("on", True), ("NO", False), ("1", True)])
def test_booleans_take_the_shared_spellings(raw: str, value: bool) -> None:
    assert parse_url(f"{BASE}?auto_migrate={raw}").auto_migrate is value


def test_libpq_keys_pass_through_while_qw_options_are_taken_out() -> None:
    settings = parse_url(f"{BASE}?connect_timeout=3&schema=jobs&sslmode=disable")
    assert settings.schema == "jobs"
    assert (
        settings.conninfo == "postgresql://u:Sup3rSecretPW@h/db?connect_timeout=3&sslmode=disable"
    )
