"""``qw pause`` and ``qw resume``: the operator switch for a namespace or one queue."""

from __future__ import annotations

import click

from qw.cli._common import echo_text, open_client, store_options

__all__ = ["pause", "resume"]


def _switch(url: str | None, namespace: str | None, queue: str | None, enabled: bool) -> None:
    with open_client(url, namespace) as client:
        client.set_enabled(enabled, queue)
        what = f"queue {queue}" if queue else f"namespace {client.namespace}"
    echo_text(f"{what}: {'ON' if enabled else 'OFF (paused)'}")


@click.command()
@click.argument("queue", required=False)
@store_options
def pause(queue: str | None, url: str | None, namespace: str | None) -> None:
    """Stop workers claiming from QUEUE (or the whole namespace). Running jobs finish."""
    _switch(url, namespace, queue, False)


@click.command()
@click.argument("queue", required=False)
@store_options
def resume(queue: str | None, url: str | None, namespace: str | None) -> None:
    """Let workers claim from QUEUE (or the whole namespace) again."""
    _switch(url, namespace, queue, True)
