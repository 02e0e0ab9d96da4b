"""What every ``qw`` command shares: store options, output, and exit codes.

Exit codes (documented in ``qw --help`` and the README):

==  =====================================================================
0   success
1   the command ran and found a problem (a check failed)
2   bad input or configuration (:class:`~qw.errors.InvalidInput`,
    :class:`~qw.errors.ConfigurationError`, click's usage errors), or an
    installed plugin that fails to load (:class:`~qw.errors.PluginError`)
3   the backend: not installed, failed to load, claimed twice, its store
    unreachable, or its schema wrong (:class:`~qw.errors.BackendError`)
4   no such job or workflow (:class:`~qw.errors.JobNotFound`,
    :class:`~qw.errors.WorkflowNotFound`)
5   a lease that is no longer held (:class:`~qw.errors.LeaseLost`)
==  =====================================================================

A :class:`~qw.errors.QwError` escaping any command of a :class:`QwGroup` is
printed as one line on stderr and exits with its code; nothing else needs to
catch it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, NoReturn, TypeVar

import click

from qw.client import Client
from qw.display import escape_json, escape_text
from qw.display import redact_url as _redact
from qw.errors import (
    BackendError,
    ConfigurationError,
    InvalidInput,
    JobNotFound,
    LeaseLost,
    PluginError,
    QwError,
    WorkflowNotFound,
)
from qw.opening import DEFAULT_NAMESPACE, DEFAULT_URL, resolve_url
from qw.validation import MAX_SECONDS

__all__ = [
    "EXIT_BACKEND",
    "EXIT_FAILED",
    "EXIT_LEASE_LOST",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "MAX_SECONDS",
    "QwGroup",
    "Seconds",
    "echo_json",
    "echo_text",
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
    "Exit codes: 0 ok; 1 a check failed; 2 bad input or configuration, or a plugin "
    "failing to load; "
    "3 backend not installed, failing to load, claimed twice or unreachable, or "
    "without the capability a command needs; "
    "4 no such job or workflow; 5 lease lost."
)

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(exc: QwError) -> int:
    """The documented exit code for a qw error."""
    if isinstance(exc, (InvalidInput, ConfigurationError, PluginError)):
        return EXIT_USAGE
    if isinstance(exc, BackendError):
        return EXIT_BACKEND
    if isinstance(exc, (JobNotFound, WorkflowNotFound)):
        return EXIT_NOT_FOUND
    if isinstance(exc, LeaseLost):
        return EXIT_LEASE_LOST
    return EXIT_FAILED


def fail(error: QwError) -> NoReturn:
    """Print ``error`` as one line on stderr and exit with its documented code."""
    # Messages quote store-held and command-line text: escaped, it cannot
    # end the line early or send the terminal a control sequence.
    message = escape_text(" ".join((str(error) or "").split()))
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

#: The longest span any seconds option takes (about ten years).


class Seconds(click.ParamType[float, Any]):
    """A finite number of seconds in ``[low, high]``: no nan, inf or 1e12."""

    name = "seconds"

    def __init__(self, low: float = 0.0, high: float = MAX_SECONDS) -> None:
        self.low = low
        self.high = high

    def parse(self, text: str) -> float:
        """Seconds in ``text``; ValueError if it is not a number."""
        return float(text)

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            seconds = value
        else:
            try:
                seconds = self.parse(str(value))
            except (ValueError, InvalidInput) as exc:
                self.fail(
                    f"{escape_text(str(value))!r} is not a number of seconds ({exc})", param, ctx
                )
        if not (math.isfinite(seconds) and self.low <= seconds <= self.high):
            self.fail(
                f"{escape_text(str(value))} is not a number of seconds in "
                f"[{self.low:g}, {self.high:.0f}]"
                + (" (about ten years)" if self.high == MAX_SECONDS else ""),
                param,
                ctx,
            )
        return seconds


# Neither option reads its environment variable through click: click drops an
# empty one silently, and qw.open must see it to refuse it.
url_option = click.option(
    "--url",
    default=None,
    metavar="URL",
    help=f"Store URL (sqlite:///path, memory://, postgresql://..., redis://...). "
    f"Default: $QW_URL, else {DEFAULT_URL}.",
)
namespace_option = click.option(
    "--namespace",
    default=None,
    metavar="NAME",
    help=f"Namespace (tenant) to work in. Default: $QW_NAMESPACE, else {DEFAULT_NAMESPACE!r}.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table."
)


def store_options(func: F) -> F:
    """``--url`` and ``--namespace``; the command receives ``url`` and ``namespace``."""
    return url_option(namespace_option(func))


def open_client(url: str | None, namespace: str | None) -> Client:
    """Open the store the options name (``qw.open`` rules for defaults)."""
    from qw.opening import open as qw_open

    return qw_open(url, namespace=namespace)


def redact_url(url: str | None) -> str:
    """The store URL the options name, resolved, as :func:`qw.display.redact_url` shows it."""
    return _redact(resolve_url(url))


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
    click.echo(escape_json(json.dumps(data, indent=2, default=_to_jsonable, ensure_ascii=False)))


def echo_text(text: str, *, err: bool = False) -> None:
    """Print one line holding store-held or command-line text, escaped for the terminal."""
    click.echo(escape_text(text), err=err)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: left-aligned text, right-aligned numbers; cells escaped, None empty."""
    cells = [[escape_text(str(h)) for h in headers]] + [
        ["" if c is None else escape_text(str(c)) for c in r] for r in rows
    ]
    # A number column holds ints, and None where a row has no value.
    numeric = [
        all(isinstance(r[i], int) or r[i] is None for r in rows)
        and any(isinstance(r[i], int) for r in rows)
        for i in range(len(headers))
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
