"""The ``qw`` command line.

Each command lives in a module of its own and is registered here: adding one
is an import and a ``main.add_command(...)`` line; other distributions add
theirs through the ``qw.commands`` entry-point group (:mod:`qw.cli.extensions`).
Commands take the shared
options from :mod:`qw.cli._common` (``--url``/``QW_URL``,
``--namespace``/``QW_NAMESPACE``, ``--json``); a :class:`~qw.errors.QwError`
they raise becomes a one-line message and a documented exit code.
"""

from __future__ import annotations

import click

from qw import __version__
from qw.cli._common import EXIT_CODES_HELP
from qw.cli.backends import backends
from qw.cli.demo import demo
from qw.cli.enqueue import enqueue
from qw.cli.events import events
from qw.cli.extensions import ExtensibleGroup
from qw.cli.jobs import jobs
from qw.cli.limits import limits
from qw.cli.migrate import migrate
from qw.cli.purge import purge
from qw.cli.schedules import schedules
from qw.cli.status import status
from qw.cli.switch import pause, resume
from qw.cli.worker import worker
from qw.cli.workflows import workflows

__all__ = ["main"]


@click.group(
    cls=ExtensibleGroup,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="qw")
def main() -> None:
    """qw: a durable job queue with pluggable storage."""


main.add_command(backends)
main.add_command(status)
main.add_command(worker)
main.add_command(enqueue)
main.add_command(jobs)
main.add_command(workflows)
main.add_command(pause)
main.add_command(resume)
main.add_command(limits)
main.add_command(events)
main.add_command(purge)
main.add_command(schedules)
main.add_command(migrate)
main.add_command(demo)
