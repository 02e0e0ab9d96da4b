"""``qw backends``: every installed backend, whether it loads, and what it declares."""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from qw.capabilities import Capabilities
from qw.cli._common import EXIT_BACKEND, echo_json, echo_text, json_option, render_table
from qw.errors import QwError
from qw.registry import BackendEntry, discover, load_backend

__all__ = ["BackendRow", "backends", "inspect_backends"]


@dataclass(frozen=True, slots=True)
class BackendRow:
    """One announced backend as ``qw backends`` reports it."""

    name: str
    distribution: str
    version: str
    target: str
    loads: bool
    error: str | None = None
    backend_class: str | None = None
    capabilities: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "target": self.target,
            "loads": self.loads,
            "error": self.error,
            "class": self.backend_class,
            "capabilities": self.capabilities,
        }


def _capabilities(declared: object) -> dict[str, object]:
    if not isinstance(declared, Capabilities):
        # Declared per opened store (set in __init__), so unknown until opened.
        return {}
    return {
        **declared.flags(),
        "max_payload_bytes": declared.max_payload_bytes,
        "stand_in": declared.stand_in,
    }


def _row(entry: BackendEntry) -> BackendRow:
    try:
        cls = load_backend(entry.name)
    except QwError as exc:
        return BackendRow(
            entry.name, entry.distribution, entry.version, entry.target, False, str(exc)
        )
    return BackendRow(
        entry.name,
        entry.distribution,
        entry.version,
        entry.target,
        True,
        backend_class=f"{cls.__module__}.{cls.__qualname__}",
        capabilities=_capabilities(getattr(cls, "capabilities", None)),
    )


def inspect_backends() -> list[BackendRow]:
    """A row per announcing distribution; loading each name imports only its module."""
    rows: list[BackendRow] = []
    for name, entries in discover().items():
        if len(entries) == 1:
            rows.append(_row(entries[0]))
            continue
        claimants = " and ".join(f"{e.distribution} {e.version} ({e.target})" for e in entries)
        error = f"backend name {name!r} is claimed by {claimants}; uninstall one"
        rows += [
            BackendRow(name, e.distribution, e.version, e.target, False, error) for e in entries
        ]
    return rows


def _capability_text(row: BackendRow) -> str:
    if not row.loads:
        return ""
    if not row.capabilities:
        return "(declared when opened)"
    words = [name for name, value in row.capabilities.items() if value is True]
    if row.capabilities.get("stand_in"):
        words.append(f"stand_in={row.capabilities['stand_in']}")
    return " ".join(words)


@click.command()
@json_option
def backends(as_json: bool) -> None:
    """List installed backends: distribution, version, whether it loads, capabilities.

    Errors (a backend failing to load, two distributions claiming one name)
    are printed on stderr, one line each, and the command exits 3.
    """
    rows = inspect_backends()
    ok = all(row.loads for row in rows)
    if as_json:
        echo_json({"ok": ok, "backends": [row.as_dict() for row in rows]})
    elif not rows:
        click.echo("no qw backends are installed (the qw.backends entry-point group is empty)")
    else:
        table = [
            (
                row.name,
                row.distribution,
                row.version,
                "yes" if row.loads else "NO",
                _capability_text(row),
            )
            for row in rows
        ]
        click.echo(
            render_table(("NAME", "DISTRIBUTION", "VERSION", "LOADS", "CAPABILITIES"), table)
        )
    # Errors go to stderr in both modes, once each (a conflict spans rows).
    for error in dict.fromkeys(f"{row.name}: {row.error}" for row in rows if row.error):
        echo_text(f"qw: error: {error}", err=True)
    if not ok:
        raise click.exceptions.Exit(EXIT_BACKEND)
