"""Redis URL options go through qw.urloptions: repeats, unknowns and bad values refused."""

from __future__ import annotations

import pytest

from qw.errors import ConfigurationError
from qw_redis.urls import parse_url


@pytest.mark.parametrize(
    "query",
    [
        "poll_interval=1&poll_interval=2",
        "socket_timeout=1&socket_timeout=2",
        "bogus=1",
        "poll_interval=inf",
        "poll_interval=0",
        "poll_interval=soon",
    ],
)
def test_bad_options_are_configuration_errors_without_the_password(query: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_url(f"redis://:Sup3rSecretPW@h:6379/0?{query}")
    assert "Sup3rSecretPW" not in str(caught.value)


def test_driver_options_pass_through_in_order() -> None:
    config = parse_url("redis://h/0?socket_timeout=2&poll_interval=0.1&client_name=w")
    assert config.poll_interval == 0.1
    assert config.driver_url == "redis://h/0?socket_timeout=2&client_name=w"
