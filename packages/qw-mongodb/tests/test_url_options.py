"""MongoDB URL options: qw's own through qw.urloptions, the rest checked by pymongo."""

from __future__ import annotations

import pytest

from qw.errors import ConfigurationError
from qw_mongodb.config import parse_url


@pytest.mark.parametrize(
    "query",
    [
        "qw_prefix=a_&qw_prefix=b_",
        "qw_poll=1&qw_poll=2",
        "qw_wakeup=push",
        "qw_poll=nan",
        "qw_poll=soon",
        "qw_bogus=1",
        "bogus=1",
    ],
)
def test_bad_options_are_configuration_errors_without_the_password(query: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_url(f"mongodb://u:Sup3rSecretPW@h:27017/?{query}")
    assert "Sup3rSecretPW" not in str(caught.value)


def test_qw_options_are_taken_out_and_pymongo_options_kept() -> None:
    url, options = parse_url("mongodb://h/?qw_poll=0.25&w=majority&qw_wakeup=poll")
    assert (options.poll_interval, options.wakeup) == (0.25, "poll")
    assert url == "mongodb://h/?w=majority"
