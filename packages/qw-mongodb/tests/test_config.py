"""Names and URLs: everything refused before any I/O."""

from __future__ import annotations

import pytest

import qw
from qw_mongodb import MongoBackend
from qw_mongodb.config import MongoOptions, parse_url
from qw_mongodb.names import database_name

# Nothing listens here; a test that reached the network would hang or fail differently.
UNREACHABLE = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=1"


def test_a_namespace_gets_its_own_database() -> None:
    assert database_name("orders") == "qw_orders"
    assert database_name("orders", "app-") == "app-orders"
    assert database_name("a" * 60) == "qw_" + "a" * 60


@pytest.mark.parametrize("bad", ["", "Upper", "has.dot", "a/b", "$x", "a" * 64, None, 3])
def test_bad_namespaces_are_refused_before_any_io(bad: object) -> None:
    with pytest.raises(qw.InvalidName):
        database_name(bad)  # type: ignore[arg-type]
    with pytest.raises(qw.InvalidName):
        MongoBackend.from_url(UNREACHABLE, namespace=bad)  # type: ignore[arg-type]


def test_a_database_name_over_mongodb_limit_is_refused() -> None:
    with pytest.raises(qw.InvalidName, match="at most 63"):
        database_name("a" * 61)
    with pytest.raises(qw.InvalidName):
        MongoBackend.from_url(UNREACHABLE + "&qw_prefix=long-prefix-", namespace="a" * 55)


@pytest.mark.parametrize("prefix", ["a.b", "a b", "$", "x" * 33, "a/b"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(qw.ConfigurationError):
        database_name("ns", prefix)


def test_qw_options_are_taken_out_and_the_rest_left_to_pymongo() -> None:
    url, options = parse_url(
        "mongodb://u:p@h1,h2/admin?replicaSet=rs0&qw_prefix=app_&qw_wakeup=poll&qw_poll=2&w=1"
    )
    assert url == "mongodb://u:p@h1,h2/admin?replicaSet=rs0&w=1"
    assert options == MongoOptions(database_prefix="app_", wakeup="poll", poll_interval=2.0)
    assert parse_url("mongodb+srv://cluster.example.net")[1] == MongoOptions()
    assert parse_url("mongo://h:27017/")[0] == "mongodb://h:27017/"


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://h/?bogus=1",
        "mongodb://h/?qw_wakeup=sometimes",
        "mongodb://h/?qw_poll=fast",
        "mongodb://h/?qw_poll=0",
        "mongodb://h/?qw_prefix=a.b",
        "mongodb://h/?qw_prefix=a&qw_prefix=b",
        "postgresql://h/db",
        "mongodb://",
    ],
)
def test_unknown_or_bad_options_raise_configuration_error(url: str) -> None:
    with pytest.raises(qw.ConfigurationError):
        parse_url(url)


def test_errors_about_a_url_do_not_repeat_its_password() -> None:
    with pytest.raises(qw.ConfigurationError) as info:
        parse_url("mongodb://user:s3cret@h/?bogus=1")
    assert "s3cret" not in str(info.value)


def test_the_backend_is_found_by_url_scheme() -> None:
    from qw.registry import load_backend

    assert load_backend("mongodb://h") is MongoBackend
    assert load_backend("mongodb+srv://h") is MongoBackend
    assert load_backend("mongo://h") is MongoBackend
