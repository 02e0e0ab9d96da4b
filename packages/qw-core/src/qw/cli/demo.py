"""``qw demo``: a real app, a few thousand jobs, a real worker, on embedded SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from qw.cli._common import echo_text
from qw.display import escape_json, escape_text, redact_url

if TYPE_CHECKING:
    from qw.demo import DemoSummary

__all__ = ["demo"]


@click.command()
@click.option("--jobs", "count", type=click.IntRange(1, 200_000), default=3000, show_default=True)
@click.option("--concurrency", "-c", type=click.IntRange(1, 1000), default=16, show_default=True)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file to use (default: a fresh one in a temporary directory).",
)
@click.option("--url", help="Run against another store instead (e.g. memory://, redis://...).")
def demo(count: int, concurrency: int, db: Path | None, url: str | None) -> None:
    """Enqueue COUNT jobs of four kinds (some fail and retry) and a workflow; drain; summarise."""
    # Imported here: the demo app should not load with every qw command.
    from qw.demo import default_database, run_demo, total_jobs

    if url is None:
        path = db or default_database()
        if path.exists():
            raise click.UsageError(f"{path} exists; the demo wants a fresh file (or omit --db)")
        url = f"sqlite:///{path.resolve()}"
    shown = escape_text(redact_url(url))
    click.echo(f"qw demo: {count} jobs on {shown}, a worker with concurrency {concurrency}")
    with click.progressbar(length=total_jobs(count), label="draining", show_pos=True) as bar:
        seen = 0

        def progress(done: int, total: int) -> None:
            nonlocal seen
            if done > seen:
                bar.update(done - seen)
                seen = done

        summary = run_demo(url, jobs=count, concurrency=concurrency, progress=progress)
    _print(summary)


def _print(s: DemoSummary) -> None:
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(s.statuses.items()))
    events = ", ".join(f"{n} {k}" for k, n in sorted(s.events.items()))
    click.echo("")
    click.echo(
        f"  jobs        {s.jobs} ({s.cancelled_by_operator} cancelled by an operator, "
        f"{s.workflow_steps} workflow steps)"
    )
    click.echo(f"  finished    {statuses}")
    click.echo(f"  retries     {s.retries} failed attempts were retried with backoff")
    click.echo(f"  events      {events}")
    tallies = s.workflow_steps - 2
    echo_text(
        f"  workflow    {s.workflow}: fetch -> {tallies} tallies in parallel -> report, "
        f"{s.workflow_state}"
    )
    if s.workflow_result is not None:
        result = json.dumps(s.workflow_result, ensure_ascii=False, separators=(",", ":"))
        click.echo(f"  result      {escape_json(result)}")
    click.echo(f"  time        {s.seconds:.2f} s")
    click.echo(f"  throughput  {s.throughput:,.0f} jobs/s")
    click.echo("")
    url = escape_text(redact_url(s.url))
    click.echo(f"look around:  qw status --url {url} --namespace demo")
    click.echo(f"              qw jobs list --status failed --url {url} --namespace demo")
    click.echo(
        f"              qw workflows show {escape_text(s.workflow)} --url {url} --namespace demo"
    )
