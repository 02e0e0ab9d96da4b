"""Reading a ``mongodb://`` / ``mongodb+srv://`` URL: qw's own options, then pymongo's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import urlencode, urlsplit, urlunsplit

from pymongo.errors import ConfigurationError as PyMongoConfigurationError
from pymongo.errors import InvalidURI
from pymongo.uri_parser import split_options

from qw.errors import ConfigurationError
from qw.urloptions import choice, parse_options, seconds, text
from qw_mongodb.names import DEFAULT_PREFIX, validate_prefix

__all__ = ["WAKEUP_MODES", "MongoOptions", "WakeupMode", "parse_url"]

WakeupMode = Literal["auto", "change_stream", "tailable", "poll"]
WAKEUP_MODES: tuple[WakeupMode, ...] = ("auto", "change_stream", "tailable", "poll")
SCHEMES = ("mongodb", "mongodb+srv", "mongo")
# Ranges and the prefix's pattern are MongoOptions' to check: from_client builds it too.
PREFIX = text("qw_prefix", DEFAULT_PREFIX)
WAKEUP = choice("qw_wakeup", "auto", WAKEUP_MODES)
POLL = seconds("qw_poll", 0.5)
#: Query options that qw reads and removes before pymongo sees the URL.
OPTIONS = (PREFIX, WAKEUP, POLL)
QW_OPTIONS = tuple(option.name for option in OPTIONS)


@dataclass(frozen=True, slots=True)
class MongoOptions:
    """qw's settings for one backend object."""

    database_prefix: str = DEFAULT_PREFIX
    wakeup: WakeupMode = "auto"
    poll_interval: float = 0.5

    def __post_init__(self) -> None:
        validate_prefix(self.database_prefix)
        if self.wakeup not in WAKEUP_MODES:
            raise ConfigurationError(
                f"wakeup must be one of {', '.join(WAKEUP_MODES)}, not {self.wakeup!r}"
            )
        p = self.poll_interval
        if (
            isinstance(p, bool)
            or not isinstance(p, (int, float))
            or not (math.isfinite(p) and 0.01 <= p <= 60)
        ):
            raise ConfigurationError(f"poll interval must be seconds in [0.01, 60], not {p!r}")


def parse_url(url: str) -> tuple[str, MongoOptions]:
    """Split ``url`` into the URL pymongo gets and qw's options.

    qw's options are ``qw_prefix`` (database prefix), ``qw_wakeup``
    (auto, change_stream, tailable, poll) and ``qw_poll`` (seconds). Every
    other option is pymongo's; an option neither knows raises
    :class:`~qw.errors.ConfigurationError` (without any DNS or network I/O).
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.netloc:
        raise ConfigurationError(
            "MongoDB URLs look like mongodb://host[:port]/?options or mongodb+srv://host; "
            f"got scheme {parts.scheme!r}"
        )
    ours = parse_options(parts.query, OPTIONS, what="MongoDB", pass_through=lambda _key: True)
    query = urlencode(ours.passed)
    if query:
        try:
            split_options(query, validate=True, warn=False)
        except (PyMongoConfigurationError, InvalidURI, ValueError) as exc:
            # The URL may carry a password: name the problem, not the URL.
            raise ConfigurationError(f"bad MongoDB URL option: {exc}") from None
    options = MongoOptions(
        database_prefix=ours[PREFIX],
        wakeup=cast(WakeupMode, ours[WAKEUP]),
        poll_interval=ours[POLL],
    )
    # ``mongo://`` is qw's alias; pymongo knows only ``mongodb://``.
    scheme = "mongodb" if parts.scheme == "mongo" else parts.scheme
    return urlunsplit(parts._replace(scheme=scheme, query=query)), options
