"""``qw dashboard``: serve the web UI for a store, on loopback unless told otherwise."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence

import click
import uvicorn

from qw.cli._common import fail, url_option
from qw.display import redact_url
from qw.errors import QwError
from qw.opening import resolve_namespace, resolve_url
from qw_dashboard.app import MAX_REFRESH_MS, create_app
from qw_dashboard.security import is_loopback_host

__all__ = ["dashboard"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
TOKEN_ENV = "QW_DASHBOARD_TOKEN"


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it serves once it is ready (port 0: the real port)."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            click.echo(f"qw dashboard: serving on {self.url}")
            sys.stdout.flush()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (IPv4 or IPv6, as ``host`` resolves)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _served_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


@click.command()
@url_option
@click.option(
    "--namespace",
    "-n",
    "namespaces",
    multiple=True,
    metavar="NAME",
    help="A namespace to serve; repeat for more (the first is the home page). "
    "Default: $QW_NAMESPACE, else 'default'.",
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to bind; 0 picks a free one (printed).",
)
@click.option(
    "--token",
    default=None,
    metavar="TOKEN",
    help=f"Actions need this token (log in at /login, or send 'Authorization: Bearer'). "
    f"Default: ${TOKEN_ENV}. Prefer the variable: a command line is visible to other users.",
)
@click.option(
    "--expose",
    is_flag=True,
    help="Allow binding a non-loopback address. Needs a token, and then reading needs it too.",
)
@click.option(
    "--read-only", is_flag=True, help="Show everything, offer no actions, refuse every POST."
)
@click.option(
    "--refresh-ms",
    default=2000,
    show_default=True,
    type=click.IntRange(0, MAX_REFRESH_MS),
    help="How often pages refresh their live parts, in milliseconds; 0 turns it off.",
)
def dashboard(
    url: str | None,
    namespaces: Sequence[str],
    host: str,
    port: int,
    token: str | None,
    expose: bool,
    read_only: bool,
    refresh_ms: int,
) -> None:
    """Serve the web dashboard for a store: queues, jobs, workers, events, workflows, limits.

    It binds 127.0.0.1 by default. Binding any other address needs --expose,
    and --expose needs a token (--token or $QW_DASHBOARD_TOKEN); see
    docs/dashboard.md for the security model.
    """
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    loopback = is_loopback_host(host)
    if not loopback and not expose:
        raise click.UsageError(
            f"--host {host} is not a loopback address: the dashboard would be reachable from "
            "other machines. Add --expose (with a token) to mean it."
        )
    if expose and not token:
        raise click.UsageError(
            f"--expose needs a token: give --token or set ${TOKEN_ENV}, so that no one "
            "else who reaches the port can act"
        )
    try:
        target = resolve_url(url)
        served = [resolve_namespace(n) for n in namespaces] or [resolve_namespace(None)]
        # Fail now on a URL no backend takes, rather than on the first page.
        from qw.opening import open as qw_open

        qw_open(target, namespace=served[0]).close()
        app = create_app(
            target,
            namespaces=served,
            token=token,
            refresh_ms=refresh_ms,
            read_only=read_only,
            private=expose,
            # Exposed, it answers whatever name it is reached by; on loopback
            # only loopback names (no DNS rebinding from another site's page).
            allowed_hosts=None if expose else ("localhost", "127.0.0.1", "::1", host),
        )
    except QwError as exc:
        fail(exc)
    try:
        sock = _bind(host, port)
    except OSError as exc:
        reason = exc.strerror or exc
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from exc
    served_url = _served_url(sock)
    click.echo(
        f"qw dashboard: store {redact_url(target)}, namespace{'s' if len(served) > 1 else ''} "
        f"{', '.join(served)}"
        + (", read-only" if read_only else "")
        + (", actions need the token" if token else "")
    )
    config = uvicorn.Config(app, log_level="info", access_log=False, lifespan="on")
    server = _Server(config, served_url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
