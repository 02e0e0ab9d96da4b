"""What every ``qw`` command shares: store options, output, and exit codes.

Exit codes (documented in ``qw --help`` and the README):

==  =====================================================================
0   success
1   the command ran and found a problem (a check failed)
2   bad input or configuration (:class:`~qw.errors.InvalidInput`,
    :class:`~qw.errors.ConfigurationError`, and click's usage errors)
3   the backend: not installed, failed to load, claimed twice, its store
    unreachable, or its schema wrong (:class:`~qw.errors.BackendError`)
4   no such job (:class:`~qw.errors.JobNotFound`)
5   a lease that is no longer held (:class:`~qw.errors.LeaseLost`)
==  =====================================================================

A :class:`~qw.errors.QwError` escaping any command of a :class:`QwGroup` is
printed as one line on stderr and exits with its code; nothing else needs to
catch it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click

from qw.client import Client
from qw.errors import (
    BackendError,
    ConfigurationError,
    InvalidInput,
    JobNotFound,
    LeaseLost,
    QwError,
)
from qw.opening import DEFAULT_NAMESPACE, DEFAULT_URL, resolve_url

__all__ = [
    "EXIT_BACKEND",
    "EXIT_FAILED",
    "EXIT_LEASE_LOST",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "QwGroup",
    "echo_json",
    "exit_code_for",
    "fail",
    "json_option",
    "namespace_option",
    "open_client",
    "redact_url",
    "render_table",
    "store_options",
    "url_option",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BACKEND = 3
EXIT_NOT_FOUND = 4
EXIT_LEASE_LOST = 5

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 a check failed; 2 bad input or configuration; "
    "3 backend not installed, failing to load, claimed twice or unreachable; "
    "4 no such job; 5 lease lost."
)

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(exc: QwError) -> int:
    """The documented exit code for a qw error."""
    if isinstance(exc, (InvalidInput, ConfigurationError)):
        return EXIT_USAGE
    if isinstance(exc, BackendError):
        return EXIT_BACKEND
    if isinstance(exc, JobNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, LeaseLost):
        return EXIT_LEASE_LOST
    return EXIT_FAILED


def fail(error: QwError) -> NoReturn:
    """Print ``error`` as one line on stderr and exit with its documented code."""
    message = " ".join((str(error) or "").split())
    click.echo(f"qw: error: {type(error).__name__}: {message}", err=True)
    raise click.exceptions.Exit(exit_code_for(error))


class QwGroup(click.Group):
    """A click group whose commands' :class:`~qw.errors.QwError` become :func:`fail`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QwError as exc:
            fail(exc)


# -- options ---------------------------------------------------------------

url_option = click.option(
    "--url",
    envvar="QW_URL",
    default=None,
    metavar="URL",
    help=f"Store URL (sqlite:///path, memory://, postgresql://..., redis://...). "
    f"Default: $QW_URL, else {DEFAULT_URL}.",
)
namespace_option = click.option(
    "--namespace",
    envvar="QW_NAMESPACE",
    default=DEFAULT_NAMESPACE,
    show_default=True,
    metavar="NAME",
    help="Namespace (tenant) to work in. Default: $QW_NAMESPACE, else 'default'.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table."
)


def store_options(func: F) -> F:
    """``--url`` and ``--namespace``; the command receives ``url`` and ``namespace``."""
    return url_option(namespace_option(func))


def open_client(url: str | None, namespace: str) -> Client:
    """Open the store the options name (``qw.open`` rules for defaults)."""
    from qw.opening import open as qw_open

    return qw_open(url, namespace=namespace)


def redact_url(url: str | None) -> str:
    """The resolved store URL with any password replaced by ``***``, for display."""
    resolved = resolve_url(url)
    parts = urlsplit(resolved)
    if parts.password is None:
        return resolved
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# -- output ----------------------------------------------------------------


def _to_jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def echo_json(data: object) -> None:
    """Print ``data`` as indented JSON (datetimes as ISO 8601, enums as values)."""
    click.echo(json.dumps(data, indent=2, default=_to_jsonable, ensure_ascii=False))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: left-aligned text, right-aligned numbers."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    numeric = [all(isinstance(r[i], int) for r in rows) and bool(rows) for i in range(len(headers))]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
