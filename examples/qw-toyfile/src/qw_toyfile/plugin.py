"""Registers the ``toyfile`` backend with qw (entry point ``qw.backends: toyfile``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qw.plugin import hookimpl

if TYPE_CHECKING:
    from qw_toyfile.backend import ToyFileBackend


@hookimpl
def qw_register_backends() -> list[type[ToyFileBackend]]:
    # Imported here, not at the top: qw loads this module only when someone
    # asks for "toyfile", and a failure is then reported as this package's.
    from qw_toyfile.backend import ToyFileBackend

    return [ToyFileBackend]
