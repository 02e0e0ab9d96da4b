"""Reading a ``mongodb://`` / ``mongodb+srv://`` URL: qw's own options, then pymongo's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pymongo.errors import ConfigurationError as PyMongoConfigurationError
from pymongo.errors import InvalidURI
from pymongo.uri_parser import split_options

from qw.errors import ConfigurationError
from qw_mongodb.names import DEFAULT_PREFIX, validate_prefix

__all__ = ["WAKEUP_MODES", "MongoOptions", "WakeupMode", "parse_url"]

WakeupMode = Literal["auto", "change_stream", "tailable", "poll"]
WAKEUP_MODES: tuple[WakeupMode, ...] = ("auto", "change_stream", "tailable", "poll")
SCHEMES = ("mongodb", "mongodb+srv", "mongo")
#: Query options that qw reads and removes before pymongo sees the URL.
QW_OPTIONS = ("qw_prefix", "qw_wakeup", "qw_poll")


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
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in QW_OPTIONS:
            if key in ours:
                raise ConfigurationError(f"option {key} is given twice in the URL")
            ours[key] = value
        else:
            theirs.append((key, value))
    query = urlencode(theirs)
    if query:
        try:
            split_options(query, validate=True, warn=False)
        except (PyMongoConfigurationError, InvalidURI, ValueError) as exc:
            # The URL may carry a password: name the problem, not the URL.
            raise ConfigurationError(f"bad MongoDB URL option: {exc}") from None
    try:
        poll = float(ours.get("qw_poll", "0.5"))
    except ValueError:
        raise ConfigurationError(
            f"qw_poll must be a number of seconds, not {ours['qw_poll']!r}"
        ) from None
    options = MongoOptions(
        database_prefix=ours.get("qw_prefix", DEFAULT_PREFIX),
        wakeup=cast(WakeupMode, ours.get("qw_wakeup", "auto")),
        poll_interval=poll,
    )
    # ``mongo://`` is qw's alias; pymongo knows only ``mongodb://``.
    scheme = "mongodb" if parts.scheme == "mongo" else parts.scheme
    return urlunsplit(parts._replace(scheme=scheme, query=query)), options
