"""qw.urloptions: one parser for every backend's URL query options."""

from __future__ import annotations

import pytest

from qw.backends.sqlite._url import parse_url as parse_sqlite_url
from qw.errors import ConfigurationError
from qw.urloptions import boolean, choice, integer, parse_options, seconds, text

FLAG = boolean("flag")
COUNT = integer("count", 3, 1, 10)
WAIT = seconds("wait", 0.5, 0.01, 60)
NAME = text("name", "qw")
MODE = choice("mode", "FULL", ("NORMAL", "FULL"), ignore_case=True)
SCHEMA = (FLAG, COUNT, WAIT, NAME, MODE)


def _parse(query: str) -> dict[str, object]:
    options = parse_options(query, SCHEMA, what="test")
    return {o.name: options[o] for o in SCHEMA}


def test_defaults_apply_to_what_is_not_given() -> None:
    options = parse_options("", SCHEMA, what="test")
    assert _parse("") == {"flag": False, "count": 3, "wait": 0.5, "name": "qw", "mode": "FULL"}
    assert not options.has(COUNT)


def test_values_are_typed() -> None:
    got = _parse("flag=YES&count=10&wait=1.5&name=x%20y&mode=normal")
    assert got == {"flag": True, "count": 10, "wait": 1.5, "name": "x y", "mode": "NORMAL"}
    assert parse_options("count=4", SCHEMA, what="test").has(COUNT)


@pytest.mark.parametrize("raw", ["true", "TRUE", "1", "yes", "On"])
def test_true_booleans(raw: str) -> None:
    assert _parse(f"flag={raw}")["flag"] is True


@pytest.mark.parametrize("raw", ["false", "False", "0", "no", "OFF"])
def test_false_booleans(raw: str) -> None:
    assert _parse(f"flag={raw}")["flag"] is False


@pytest.mark.parametrize("raw", ["", "y", "2", "tru", "enabled", "nope"])
def test_other_booleans_are_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="flag must be true or false"):
        _parse(f"flag={raw}")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("count=x", "count must be an integer"),
        ("count=0", r"count must be in \[1, 10\]"),
        ("count=2.5", "count must be an integer"),
        ("wait=soon", "wait must be a number of seconds"),
        ("wait=nan", "wait must be a finite"),
        ("wait=inf", "wait must be a finite"),
        ("wait=0", r"wait must be in \[0.01, 60\] seconds"),
        ("mode=OFF", "mode must be one of NORMAL, FULL"),
    ],
)
def test_bad_values_are_refused_by_name(query: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        _parse(query)


def test_a_repeated_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'name' is given twice"):
        _parse("name=a&name=b")


def test_an_unknown_option_is_refused_and_the_known_ones_listed() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown test option.*bogus.*count") as caught:
        _parse("bogus=1")
    assert "flag (true|false)" in str(caught.value)


def test_pass_through_keys_reach_the_driver_in_order() -> None:
    options = parse_options(
        "a=1&count=4&b=2&a=3", SCHEMA, what="test", pass_through=lambda k: k in {"a", "b"}
    )
    assert options[COUNT] == 4
    assert options.passed == [("a", "1"), ("b", "2"), ("a", "3")]
    with pytest.raises(ConfigurationError, match="'a' is given twice"):
        parse_options("a=1&a=3", SCHEMA, what="test", pass_through=bool, repeat_pass_through=False)
    with pytest.raises(ConfigurationError, match="unknown test option"):
        parse_options("c=1", SCHEMA, what="test", pass_through=lambda k: k == "a")


def test_strict_refuses_a_key_without_a_value() -> None:
    assert parse_options("name", SCHEMA, what="test")[NAME] == ""
    with pytest.raises(ConfigurationError, match="cannot read the test URL's options"):
        parse_options("name", SCHEMA, what="test", strict=True)


@pytest.mark.parametrize(
    "query",
    ["shared=true&shared=false", "busy_timeout=1&busy_timeout=2", "bogus=1", "shared=maybe"],
)
def test_sqlite_urls_refuse_repeated_unknown_and_bad_options(query: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_sqlite_url(f"sqlite:///jobs.db?{query}")


def test_sqlite_messages_never_show_the_value_of_an_unknown_option() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_sqlite_url("sqlite:///jobs.db?password=Sup3rSecret")
    assert "Sup3rSecret" not in str(caught.value)
