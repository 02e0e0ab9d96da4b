"""``qw limits list|keys|set|clear``: the operators' limits per key, changed at run time.

An operators' limit is stored with the namespace (like the ON/OFF switch), so
it holds for every worker at once, without a redeploy, and outlives restarts.
For its key it *replaces* the limit the key's jobs declare: a field it leaves
out is no limit at all. ``qw limits clear`` gives the key back to its jobs'
own limits.
"""

from __future__ import annotations

from collections.abc import Iterator

import click

from qw.cli._common import (
    echo_json,
    echo_text,
    json_option,
    open_client,
    render_table,
    store_options,
)
from qw.client import Client
from qw.errors import InvalidInput
from qw.model import KeyState, Limit
from qw.taskflow import parse_rate
from qw.validation import MAX_CONCURRENCY_LIMIT

__all__ = [
    "KEY_HEADERS",
    "OK",
    "PAUSED",
    "THROTTLED",
    "iter_keys",
    "key_dict",
    "key_row",
    "key_state_name",
    "limit_dict",
    "limit_text",
    "limits",
]

#: A key whose effective limit has ``concurrency=0``: none of its jobs start.
PAUSED = "paused"
#: A key with queued jobs held back by its limit now.
THROTTLED = "throttled"
OK = "ok"

KEY_HEADERS = ["KEY", "QUEUED", "RUNNING", "LIMIT", "STARTED", "STATE", "OVERRIDE"]

#: ``limits keys`` reads the store in pages of this many keys.
KEYS_PAGE = 1000


def _seconds(per: float) -> str:
    # .15g keeps whole seconds whole (86400, not 8.64e+04), so the text reads
    # back through parse_rate.
    return f"{per:.15g}s"


def limit_text(limit: Limit | None) -> str:
    """A limit in one phrase: ``2 running, 10/60s``, ``paused``; ``none`` when it limits nothing."""
    if limit is None:
        return "none"
    parts = []
    if limit.concurrency == 0:
        parts.append(PAUSED)
    elif limit.concurrency is not None:
        parts.append(f"{limit.concurrency} running")
    if limit.rate is not None and limit.per is not None:
        parts.append(f"{limit.rate}/{_seconds(limit.per)}")
    return ", ".join(parts) or "none"


def limit_dict(limit: Limit | None) -> dict[str, object] | None:
    """A limit as plain data for ``--json`` (None for no limit)."""
    if limit is None:
        return None
    return {"concurrency": limit.concurrency, "rate": limit.rate, "per": limit.per}


def key_state_name(state: KeyState) -> str:
    """``paused`` (concurrency 0), ``throttled`` (queued jobs held back now), else ``ok``."""
    if state.limit is not None and state.limit.concurrency == 0:
        return PAUSED
    return THROTTLED if state.throttled else OK


def key_dict(state: KeyState) -> dict[str, object]:
    """A key's state as plain data for ``--json``."""
    return {
        "key": state.key,
        "state": key_state_name(state),
        "queued": state.queued,
        "running": state.running,
        "started": state.started,
        "limit": limit_dict(state.limit),
        "overridden": state.overridden,
        "throttled": state.throttled,
    }


def key_row(state: KeyState) -> list[object]:
    """A key's row under :data:`KEY_HEADERS` (STARTED empty without a rate limit)."""
    rated = state.limit is not None and state.limit.rate is not None
    return [
        state.key,
        state.queued,
        state.running,
        limit_text(state.limit),
        state.started if rated else None,
        key_state_name(state),
        "yes" if state.overridden else "no",
    ]


def iter_keys(client: Client, *, after: str | None = None) -> Iterator[KeyState]:
    """Every limit key after ``after``, by key, read a page at a time."""
    while page := client.keys(limit=KEYS_PAGE, after=after):
        yield from page
        if len(page) < KEYS_PAGE:
            return
        after = page[-1].key


@click.group()
def limits() -> None:
    """Concurrency and rate limits per limit key, set by operators at run time.

    An operators' limit is stored with the namespace and holds for every
    worker at once; for its key it replaces what the jobs declare.
    """


@limits.command("list")
@store_options
@json_option
def list_limits(url: str | None, namespace: str | None, as_json: bool) -> None:
    """The operators' limits, by key (not the ones jobs declare: see 'qw limits keys')."""
    with open_client(url, namespace) as client:
        found = client.limits()
    if as_json:
        echo_json([{"key": key, **(limit_dict(lim) or {})} for key, lim in found.items()])
        return
    if not found:
        click.echo("no operators' limits")
        return
    click.echo(render_table(["KEY", "LIMIT"], [[k, limit_text(v)] for k, v in found.items()]))


@limits.command("keys")
@store_options
@click.option("--after", metavar="KEY", help="Page on: keys after this one.")
@click.option(
    "--limit",
    type=click.IntRange(1, None),
    default=None,
    metavar="N",
    help="Show at most this many keys. Default: all of them.",
)
@click.option("--throttled", is_flag=True, help="Only keys whose queued jobs are held back now.")
@json_option
def list_keys(
    url: str | None,
    namespace: str | None,
    after: str | None,
    limit: int | None,
    throttled: bool,
    as_json: bool,
) -> None:
    """Every limit key with queued or running jobs, or an operators' limit, by key.

    LIMIT is the key's effective limit (the operators' when OVERRIDE says
    yes, else the one its jobs declare); STARTED counts starts in the
    current rate window.
    """
    found: list[KeyState] = []
    with open_client(url, namespace) as client:
        for state in iter_keys(client, after=after):
            if throttled and not state.throttled:
                continue
            found.append(state)
            if len(found) == limit:
                break
    if as_json:
        echo_json([key_dict(s) for s in found])
        return
    if not found:
        click.echo("no throttled keys" if throttled else "no limit keys")
        return
    click.echo(render_table(KEY_HEADERS, [key_row(s) for s in found]))


def _new_limit(concurrency: int | None, rate: str | None, pause: bool) -> Limit:
    if pause and concurrency is not None:
        raise InvalidInput("--pause is --concurrency 0: give one of them, not both")
    if pause:
        concurrency = 0
    if concurrency is None and rate is None:
        raise InvalidInput("give --concurrency, --rate or --pause (a limit of nothing is `clear`)")
    starts, per = parse_rate(rate) if rate is not None else (None, None)
    return Limit(concurrency=concurrency, rate=starts, per=per)


@limits.command("set")
@click.argument("key")
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(0, MAX_CONCURRENCY_LIMIT),
    metavar="N",
    help="At most N of the key's jobs running at once (0 holds them all back).",
)
@click.option("--rate", "-r", metavar="N/UNIT", help="At most N starts per period: 10/min, 5/30s.")
@click.option("--pause", is_flag=True, help="Hold every job of the key back (--concurrency 0).")
@store_options
@json_option
def set_limit(
    key: str,
    concurrency: int | None,
    rate: str | None,
    pause: bool,
    url: str | None,
    namespace: str | None,
    as_json: bool,
) -> None:
    """Set KEY's operators' limit, replacing any set before.

    It replaces, for KEY, the limit its jobs declare: a field not given here
    is no limit (--rate 10/min alone lifts a declared concurrency).
    Workers apply it at their next claim.
    """
    new = _new_limit(concurrency, rate, pause)
    with open_client(url, namespace) as client:
        client.set_limit(key, new)
    if as_json:
        echo_json({"key": key, "limit": limit_dict(new)})
    else:
        echo_text(f"{key}: {limit_text(new)} (operators' limit; replaces what its jobs declare)")


@limits.command("clear")
@click.argument("key")
@store_options
@json_option
def clear_limit(key: str, url: str | None, namespace: str | None, as_json: bool) -> None:
    """Remove KEY's operators' limit: its jobs' own limits apply again."""
    with open_client(url, namespace) as client:
        # Read first only to say what happened; clearing is idempotent either way.
        had = key in client.limits()
        client.set_limit(key, None)
    if as_json:
        echo_json({"key": key, "cleared": had})
    elif had:
        echo_text(f"{key}: operators' limit cleared; its jobs' own limits apply")
    else:
        echo_text(f"{key}: had no operators' limit")
