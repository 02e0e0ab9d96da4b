"""``qw purge --older-than 7d``: delete old terminal jobs and acknowledged events."""

from __future__ import annotations

import re

import click

from qw.cli._common import Seconds, echo_json, echo_text, json_option, open_client, store_options
from qw.errors import InvalidInput

__all__ = ["parse_duration", "purge"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


class Duration(Seconds):
    """Seconds written as ``90``, ``30s``, ``15m``, ``12h``, ``7d`` or ``2w``, bounded likewise."""

    name = "duration"

    def parse(self, text: str) -> float:
        return parse_duration(text)


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"30s"``, ``"15m"``, ``"12h"``, ``"7d"`` or ``"2w"``."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidInput(f"not a duration: {text!r} (use e.g. 90, 30s, 15m, 12h, 7d, 2w)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@click.command()
@click.option(
    "--older-than", type=Duration(), required=True, metavar="DURATION", help="e.g. 12h, 7d, 2w."
)
@store_options
@json_option
def purge(older_than: float, url: str | None, namespace: str | None, as_json: bool) -> None:
    """Delete succeeded/failed/cancelled jobs finished, and acked events created, before then.

    Queued and running jobs, and events not yet acknowledged, are never deleted.
    """
    with open_client(url, namespace) as client:
        result = client.purge(older_than)
    if as_json:
        echo_json({"jobs": result.jobs, "events": result.events, "older_than_s": older_than})
    else:
        echo_text(
            f"purged {result.jobs} jobs and {result.events} events older than {older_than:g}s"
        )
