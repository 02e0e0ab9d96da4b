"""``qw migrate``: bring the store's schema up to date, where the backend has one."""

from __future__ import annotations

import click

from qw.cli._common import open_client, redact_url, store_options

__all__ = ["migrate"]


@click.command()
@store_options
def migrate(url: str | None, namespace: str) -> None:
    """Run the backend's ``migrate()``, if it has one; otherwise there is nothing to do."""
    with open_client(url, namespace) as client:
        backend = client.backend
        step = getattr(backend, "migrate", None)
        if not callable(step):
            click.echo(f"nothing to do: the {backend.name} backend has no migrations")
            return
        outcome = step()
    done = f": {outcome}" if outcome not in (None, "") else ""
    click.echo(f"migrated {redact_url(url)} ({backend.name}){done}")
