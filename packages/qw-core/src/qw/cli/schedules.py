"""``qw schedules``: the periodic schedules recorded in the store, with their last and next tick.

Read from the store's records alone (no app needed): the next tick is
computed from each record's spec and time zone, on the store's clock. The
last tick is the latest one a scheduler handled: enqueued its job, or
passed over (a new schedule starts from its next tick; ``missed="skip"``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from qw.cli._common import (
    EXIT_NOT_FOUND,
    echo_json,
    echo_text,
    json_option,
    open_client,
    render_table,
    store_options,
)
from qw.errors import InvalidInput
from qw.model import Schedule
from qw.schedule import Timing, timing, zone_of

__all__ = ["schedule_dict", "schedules"]

_HEADERS = ["NAME", "SPEC", "TZ", "TASK", "QUEUE", "LAST TICK", "NEXT TICK"]


def _timing(schedule: Schedule) -> Timing | None:
    """The record's ticks; None for a spec this qw cannot read (a newer version's)."""
    try:
        return timing(schedule.spec, schedule.tz)
    except InvalidInput:
        return None


def schedule_dict(schedule: Schedule, now: datetime) -> dict[str, Any]:
    """A record as plain data for ``--json``: times in UTC, ``next_tick`` after ``now``.

    ``pending`` is True when a tick later than the last one is already due:
    no scheduler has handled it yet (no worker runs the schedule, or one is
    about to). ``valid`` is False for a spec this qw cannot read.
    """
    ticks = _timing(schedule)
    upcoming = None if ticks is None else ticks.next_after(now)
    due = None if ticks is None else ticks.latest(now)
    last = schedule.last_tick
    return {
        "name": schedule.name,
        "spec": schedule.spec,
        "tz": schedule.tz,
        "task": schedule.task,
        "queue": schedule.queue,
        "last_tick": None if last is None else last.astimezone(UTC),
        "next_tick": upcoming,
        "pending": last is not None and due is not None and due > last,
        "valid": ticks is not None,
    }


def _local(when: datetime | None, tz: str) -> str:
    """``when`` as wall-clock time in the schedule's zone (its UTC offset after it)."""
    if when is None:
        return "-"
    return f"{when.astimezone(zone_of(tz)):%Y-%m-%d %H:%M:%S%z}"


def _rows(records: list[Schedule], now: datetime) -> list[list[object]]:
    rows: list[list[object]] = []
    for record in records:
        data = schedule_dict(record, now)
        zone_ok = data["valid"]
        last = _local(data["last_tick"], record.tz) if zone_ok else str(data["last_tick"] or "-")
        if not zone_ok:
            upcoming = "? (spec not understood)"
        else:
            upcoming = _local(data["next_tick"], record.tz)
            if data["pending"]:
                upcoming += " (a tick is due)"
        rows.append(
            [record.name, record.spec, record.tz, record.task, record.queue, last, upcoming]
        )
    return rows


class _Store:
    """The store options given to the group, for a subcommand that gives none."""

    def __init__(self, url: str | None, namespace: str | None) -> None:
        self.url, self.namespace = url, namespace


@click.group(invoke_without_command=True)
@store_options
@json_option
@click.pass_context
def schedules(ctx: click.Context, url: str | None, namespace: str | None, as_json: bool) -> None:
    """List the periodic schedules: spec, zone, task, queue, last and next tick.

    Times are shown in each schedule's own zone; --json gives them in UTC.
    Workers record the schedules of their app when they start. The last
    tick is the latest one handled: its job enqueued, or passed over (a new
    schedule starts at its next tick).
    """
    ctx.obj = _Store(url, namespace)
    if ctx.invoked_subcommand is None:
        _list(url, namespace, as_json)


@schedules.command("list")
@store_options
@json_option
@click.pass_obj
def list_schedules(
    store: _Store | None, url: str | None, namespace: str | None, as_json: bool
) -> None:
    """List the periodic schedules (what qw schedules alone does)."""
    given = store or _Store(None, None)
    _list(url or given.url, namespace or given.namespace, as_json)


def _list(url: str | None, namespace: str | None, as_json: bool) -> None:
    with open_client(url, namespace) as client:
        records = client.schedules()
        now = client.now()
    if as_json:
        echo_json([schedule_dict(r, now) for r in records])
        return
    if not records:
        echo_text("no schedules")
        return
    click.echo(render_table(_HEADERS, _rows(records, now)))


@schedules.command()
@click.argument("name")
@store_options
@click.pass_obj
def remove(store: _Store | None, name: str, url: str | None, namespace: str | None) -> None:
    """Forget schedule NAME and its last tick; exit 4 if there is none.

    A worker whose app defines NAME records it again when it starts, and
    its first tick is then the next one: remove a schedule from the app's
    code too to end it for good.
    """
    given = store or _Store(None, None)
    with open_client(url or given.url, namespace or given.namespace) as client:
        existed = client.remove_schedule(name)
    if not existed:
        echo_text(f"qw: error: no schedule {name!r}", err=True)
        raise click.exceptions.Exit(EXIT_NOT_FOUND)
    echo_text(f"schedule {name} removed")
