"""``qw events tail``: read the outbox, optionally acknowledge, optionally follow."""

from __future__ import annotations

import json
import time

import click

from qw.cli._common import Seconds, json_option, open_client, store_options
from qw.display import escape_json, escape_text
from qw.model import Event
from qw.transitions import (
    EVENT_CANCELLED,
    EVENT_FAILED,
    EVENT_SUCCEEDED,
    EVENT_WORKFLOW_CANCELLED,
    EVENT_WORKFLOW_FAILED,
    EVENT_WORKFLOW_SUCCEEDED,
)

__all__ = ["events"]

#: The type column fits every event qw writes, ``workflow.cancelled`` the longest.
TYPE_WIDTH = max(
    len(t)
    for t in (
        EVENT_SUCCEEDED,
        EVENT_FAILED,
        EVENT_CANCELLED,
        EVENT_WORKFLOW_SUCCEEDED,
        EVENT_WORKFLOW_FAILED,
        EVENT_WORKFLOW_CANCELLED,
    )
)


def event_dict(event: Event) -> dict[str, object]:
    return {
        "cursor": event.cursor,
        "job_id": event.job_id,
        "type": event.type,
        "data": event.data,
        "created_at": event.created_at.isoformat(),
    }


@click.group()
def events() -> None:
    """The outbox: an event for every job that reached a terminal state, every workflow that ended.

    A workflow.* event (workflow.succeeded, .failed, .cancelled) is written
    once, when a workflow's last step ends; its job column is the workflow id.
    """


@events.command()
@store_options
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--ack", is_flag=True, help="Acknowledge what was printed (consumes it).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option(
    "--interval",
    type=Seconds(0.05),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="With --follow: the pause between reads.",
)
@json_option
def tail(
    url: str | None,
    namespace: str | None,
    limit: int,
    ack: bool,
    follow: bool,
    interval: float,
    as_json: bool,
) -> None:
    """Print unacknowledged events in cursor order (--json: one JSON object per line).

    Without --ack the events stay pending: the next reader sees them again.
    With --follow but without --ack, only events past the last one printed
    are shown, among the first --limit pending ones.
    """
    last = 0
    with open_client(url, namespace) as client:
        try:
            while True:
                batch = [e for e in client.fetch_events(limit) if e.cursor > last]
                for event in batch:
                    _print(event, as_json)
                if batch:
                    last = batch[-1].cursor
                    if ack:
                        client.ack_events([e.cursor for e in batch])
                if not follow:
                    return
                if len(batch) < limit:
                    time.sleep(interval)
        except KeyboardInterrupt:
            return


def _print(event: Event, as_json: bool) -> None:
    if as_json:
        click.echo(escape_json(json.dumps(event_dict(event), ensure_ascii=False)))
        return
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    when = f"{event.created_at:%Y-%m-%d %H:%M:%S}"
    kind, job_id = escape_text(event.type), escape_text(event.job_id)
    click.echo(f"{event.cursor:>8}  {when}  {kind:<{TYPE_WIDTH}} {job_id}  {escape_json(data)}")
