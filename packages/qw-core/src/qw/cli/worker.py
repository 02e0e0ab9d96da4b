"""``qw worker APP``: run an application's tasks until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import sys

import click
from click.core import ParameterSource

from qw.app import App, load_app
from qw.cli._common import Seconds, echo_text, store_options
from qw.errors import QwError
from qw.opening import resolve_namespace, resolve_url
from qw.validation import MAX_LEASE_S, validate_queues
from qw.worker.supervisor import MAX_PROCESSES, ChildRole, ChildSpec, Supervisor

__all__ = ["add_schedules", "app_from_options", "child_command", "worker"]

LOG_LEVELS = ["debug", "info", "warning", "error"]


def app_from_options(spec: str, url: str | None, namespace: str | None) -> App:
    """Load ``module:attr`` and apply ``--url``/``--namespace`` given on the command line.

    An explicit option or ``$QW_URL``/``$QW_NAMESPACE`` wins over the app's
    own settings, and is checked even then: an empty one is an error.
    """
    given_url = url is not None or "QW_URL" in os.environ
    given_ns = namespace is not None or "QW_NAMESPACE" in os.environ
    # Resolved before the app is imported, so a bad option fails fast.
    chosen_url = resolve_url(url) if given_url else None
    chosen_ns = resolve_namespace(namespace) if given_ns else None
    app = load_app(spec)
    if chosen_ns is None and app.namespace is None:
        chosen_ns = resolve_namespace(None)
    app.configure(url=chosen_url, namespace=chosen_ns)
    return app


def add_schedules(app: App, entries: tuple[str, ...], tz: str) -> None:
    """Define ``TASK=SPEC`` schedules (``--periodic``) on ``app``, as ``app.periodic`` would.

    ``SPEC`` is a cron expression (in zone ``tz``) or ``every 30s``; the
    schedule is named after the task. Anything wrong is a usage error.
    """
    for entry in entries:
        task_name, sep, spec = entry.partition("=")
        task = app.tasks.get(task_name.strip())
        if not sep or task is None:
            raise click.BadParameter(
                f"{entry!r}: expected TASK=SPEC with TASK one of the app's tasks "
                f"({', '.join(sorted(app.tasks)) or 'none'})",
                param_hint="--periodic",
            )
        cron = not spec.strip().lower().startswith("every")
        try:
            app.periodic(spec.strip(), tz=tz if cron else "UTC", task=task)
        except QwError as exc:
            raise click.BadParameter(f"{entry!r}: {exc}", param_hint="--periodic") from None


def child_command(ctx: click.Context) -> list[str]:
    """The command line of a supervised child: this ``qw worker`` run minus ``--processes``.

    Rebuilt from the parsed options (not from ``sys.argv``, whose spelling
    varies); options left at their defaults are left out (the child applies
    the same ones, and reads ``$QW_URL`` and ``$QW_NAMESPACE`` from the
    environment it inherits). ``--url`` is never passed on: a password in it
    would show in every child's command line (``ps``); the caller hands it
    over as ``$QW_URL``.
    """
    args = [sys.executable, "-c", "from qw.cli import main; main(prog_name='qw')", "worker"]
    assert ctx.command is not None
    for param in ctx.command.params:
        name = param.name
        if name is None or name in ("processes", "child", "url"):
            continue
        value = ctx.params[name]
        if isinstance(param, click.Argument):
            args.append(str(value))
            continue
        if value is None or ctx.get_parameter_source(name) is ParameterSource.DEFAULT:
            continue
        assert isinstance(param, click.Option)
        flag = param.opts[0]
        if param.is_flag and param.secondary_opts:
            args.append(flag if value else param.secondary_opts[0])
        elif param.multiple:
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


def parse_queues(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return list(validate_queues(q.strip() for q in value.split(",") if q.strip()))


@click.command()
@click.argument("app_spec", metavar="APP")
@store_options
@click.option(
    "--queues", "-q", metavar="A,B", help="Queues to work (default: the app's task queues)."
)
@click.option("--concurrency", "-c", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--lease",
    "lease_s",
    type=Seconds(0.1, MAX_LEASE_S),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Lease length; a dead worker's jobs return after this.",
)
@click.option(
    "--grace",
    "grace_s",
    type=Seconds(),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM/SIGINT, how long running jobs may finish.",
)
@click.option(
    "--poll-interval",
    type=Seconds(0.01),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest sleep between claims without a wake-up.",
)
@click.option(
    "--reclaim-interval",
    "reclaim_s",
    type=Seconds(0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How often to requeue expired leases.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(0, 1000),
    default=None,
    metavar="N",
    help="Jobs claimed ahead of free slots (default: adaptive, about 50 ms of work).",
)
@click.option(
    "--scheduler/--no-scheduler",
    default=True,
    show_default=True,
    help="Enqueue the ticks of the app's periodic schedules (any number of workers may).",
)
@click.option(
    "--periodic",
    "periodic",
    multiple=True,
    metavar="TASK=SPEC",
    help="Also run TASK on a schedule: a cron SPEC ('*/5 * * * *') or 'every 30s'. Repeatable.",
)
@click.option(
    "--periodic-tz",
    default="UTC",
    show_default=True,
    metavar="ZONE",
    help="The time zone of the --periodic cron specs (an IANA name).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, MAX_PROCESSES),
    default=1,
    show_default=True,
    metavar="N",
    help="Run N worker processes (each with --concurrency slots) under a supervisor "
    "that forwards signals and restarts crashed ones.",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
# Set by the supervisor on the children it starts; see qw.worker.supervisor.
@click.option("--child", "child", default=None, hidden=True)
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str,
    url: str | None,
    namespace: str | None,
    queues: str | None,
    concurrency: int,
    lease_s: float,
    grace_s: float,
    poll_interval: float,
    reclaim_s: float,
    prefetch: int | None,
    scheduler: bool,
    periodic: tuple[str, ...],
    periodic_tz: str,
    processes: int,
    log_level: str,
    child: str | None,
) -> None:
    """Run the tasks of APP ("package.module:app") until SIGTERM or SIGINT.

    The first signal stops claiming and lets running jobs finish within
    --grace; what is still running then is released (no attempt counted).
    A second signal releases at once.

    With --processes N, a supervisor runs N such workers and passes its
    signals on to all of them; it restarts one that crashes, and exits
    non-zero if one did not stop cleanly.
    """
    role = None
    if child is not None:
        try:
            role = ChildRole(ChildSpec.parse(child))
        except ValueError:
            raise click.BadParameter(f"{child!r}", param_hint="--child") from None
        if processes != 1:
            raise click.UsageError("--child and --processes exclude each other")
    tag = f"[{role.tag}] " if role else "[supervisor] " if processes > 1 else ""
    logging.basicConfig(
        level=log_level.upper(),
        format=f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s",
    )
    if processes > 1 and os.name != "posix":
        # The supervisor hands children pipes (pass_fds) and process groups.
        raise click.UsageError("--processes needs a POSIX system (Linux, macOS)")
    if processes > 1:
        # What can be checked without the app is checked here, once, rather
        # than by every child failing its start-up until the supervisor gives up.
        resolve_url(url)
        resolve_namespace(namespace)
        parse_queues(queues)
        if url is not None:
            os.environ["QW_URL"] = url  # the children inherit it (see child_command)
        ctx.exit(Supervisor(child_command(ctx), processes).run())
    if role is not None:
        role.start()
    app = app_from_options(app_spec, url, namespace)
    add_schedules(app, periodic, periodic_tz)
    runner = app.worker(
        parse_queues(queues),
        concurrency=concurrency,
        lease_s=lease_s,
        grace_s=grace_s,
        poll_interval=poll_interval,
        reclaim_s=reclaim_s,
        prefetch=prefetch,
        scheduler=scheduler,
    )
    if role is not None:
        role.adopt(runner)
    try:
        stats = runner.run()
    finally:
        app.close()
    echo_text(
        f"qw worker {runner.id} stopped: {stats.succeeded} succeeded, {stats.retried} retried, "
        f"{stats.failed} failed, {stats.cancelled} cancelled, {stats.released} released",
        err=True,
    )
