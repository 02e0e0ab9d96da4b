"""``qw migrate``: bring the store's schema up to date, where the backend has one."""

from __future__ import annotations

import click

from qw.cli._common import echo_text, open_client, redact_url, store_options

__all__ = ["migrate"]


@click.command()
@store_options
def migrate(url: str | None, namespace: str | None) -> None:
    """Create or upgrade the store's schema, where the backend has one (else nothing to do)."""
    with open_client(url, namespace) as client:
        backend = client.backend
        step = getattr(backend, "migrate", None)
        if not callable(step):
            click.echo(f"nothing to do: the {backend.name} backend has no migrations")
            return
        outcome = step()
    done = f": {outcome}" if outcome not in (None, "") else ""
    echo_text(f"migrated {redact_url(url)} ({backend.name}){done}")
