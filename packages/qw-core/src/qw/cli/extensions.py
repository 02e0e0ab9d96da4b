"""Commands other distributions add to ``qw``: the ``qw.commands`` entry-point group.

A distribution declares ``[project.entry-points."qw.commands"] dashboard =
"qw_dashboard.cli:dashboard"`` (a click command). ``qw --help`` lists every
such command by name; only the one asked for is imported. A built-in command
keeps its name: an entry point cannot replace ``qw worker``.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import click

from qw.cli._common import QwGroup

__all__ = ["COMMAND_GROUP", "ExtensibleGroup"]

COMMAND_GROUP = "qw.commands"

#: Commands of qw's own distributions, named in the error when one is not installed.
_KNOWN = {"dashboard": "qw-dashboard"}


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


class ExtensibleGroup(QwGroup):
    """The ``qw`` group: built-in commands, then those of the ``qw.commands`` group."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        builtin = super().get_command(ctx, cmd_name)
        if builtin is not None:
            return builtin
        ep = _entry_points().get(cmd_name)
        if ep is None:
            if cmd_name in _KNOWN:
                raise click.UsageError(
                    f"'qw {cmd_name}' comes with the {_KNOWN[cmd_name]} distribution: "
                    f"pip install {_KNOWN[cmd_name]}"
                )
            return None
        dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
        try:
            command = ep.load()
        except Exception as exc:
            raise click.ClickException(
                f"command {cmd_name!r} from {dist} failed to load: {exc!r}"
            ) from exc
        if not isinstance(command, click.Command):
            raise click.ClickException(
                f"entry point {cmd_name!r} of {dist} is not a click command: {ep.value}"
            )
        return command
