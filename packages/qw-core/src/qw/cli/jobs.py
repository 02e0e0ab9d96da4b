"""``qw jobs list|show|retry|cancel``: look at jobs and act on them."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import click

from qw.cli._common import (
    echo_json,
    echo_text,
    json_option,
    open_client,
    render_table,
    store_options,
)
from qw.cli.limits import limit_dict, limit_text
from qw.client import Client
from qw.display import escape_json, escape_text, progress_text
from qw.errors import InvalidInput
from qw.model import Job, JobStatus, NewJob
from qw.payload import task_name_of

__all__ = ["WORKFLOW_FIELDS", "jobs", "job_dict", "retry_job"]

RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED)
#: The fields only a workflow step has; ``jobs show`` leaves them out for a plain job.
WORKFLOW_FIELDS = ("workflow", "parents", "children", "on_parent_failure", "failed_parents")
#: ``jobs show`` lists at most this many parents or children on its line.
SHOW_STEP_IDS = 10
#: ``jobs list`` cuts a progress message to this many characters in its column.
LIST_PROGRESS_CHARS = 30


_JOB_FIELDS = tuple(f.name for f in fields(Job))


def job_dict(job: Job) -> dict[str, Any]:
    """A job as plain data for ``--json``: its fields, by name, in order.

    Not ``dataclasses.asdict``: that deep-copies every payload, result and
    error, and a workflow of ten thousand steps is printed in one go.
    """
    data = {name: getattr(job, name) for name in _JOB_FIELDS}
    data["limit"] = limit_dict(job.limit)
    progress = job.progress
    data["progress"] = (
        None
        if progress is None
        else {"fraction": progress.fraction, "message": progress.message, "at": progress.at}
    )
    return data


def _task_of(job: Job) -> str:
    name = task_name_of(job.payload)
    return "-" if name is None else name


def retry_job(client: Client, job: Job) -> str:
    """Enqueue a failed or cancelled job again as a new job; return the new id.

    The new job has the old one's queue, payload, priority, attempts
    budget, and limit key, limit and fairness (a retry is held to its
    key's limit like the first run). Its dedupe key is the old one's, or ``retry:<old id>``, so a
    retry repeated while the first one is still live makes no second job.
    A workflow step is refused: alone, it would run without its parents'
    results, and its children would not run again.
    """
    if job.workflow is not None:
        raise InvalidInput(
            f"job {job.id} is a step of workflow {job.workflow}; "
            "a step is not retried alone (enqueue the workflow again)"
        )
    if job.status not in RETRYABLE:
        raise InvalidInput(
            f"job {job.id} is {job.status.value}; only failed or cancelled jobs can be retried"
        )
    new = NewJob(
        job.queue,
        job.payload,
        priority=job.priority,
        max_attempts=job.max_attempts,
        dedupe_key=job.dedupe_key or f"retry:{job.id}",
        limit_key=job.limit_key,
        limit=job.limit,
        fair=job.fair,
    )
    return client.enqueue([new])[0].id


@click.group()
def jobs() -> None:
    """List, show, retry and cancel jobs."""


@jobs.command("list")
@store_options
@click.option("--queue", "-q", metavar="QUEUE")
@click.option("--status", "-s", type=click.Choice([s.value for s in JobStatus]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--after", metavar="JOB_ID", help="Page on: jobs with ids after this one.")
@click.option("--workflow", "-w", metavar="WORKFLOW_ID", help="Only this workflow's steps.")
@click.option("--key", "-k", metavar="KEY", help="Only jobs with this limit key.")
@json_option
def list_jobs(
    url: str | None,
    namespace: str | None,
    queue: str | None,
    status: str | None,
    limit: int,
    after: str | None,
    workflow: str | None,
    key: str | None,
    as_json: bool,
) -> None:
    """Jobs by id (oldest first), optionally of one queue, status, workflow or limit key."""
    with open_client(url, namespace) as client:
        found = client.list_jobs(
            queue=queue, status=status, limit=limit, after=after, workflow=workflow, key=key
        )
    if as_json:
        echo_json([job_dict(j) for j in found])
        return
    if not found:
        click.echo("no jobs")
        return
    headers = ["ID", "QUEUE", "STATUS", "ATT", "MAX", "TASK", "CREATED"]
    rows: list[list[object]] = [
        [j.id, j.queue, j.status.value, j.attempts, j.max_attempts, _task_of(j), j.created_at]
        for j in found
    ]
    # The KEY column only when a job has one: most namespaces use no limits.
    if any(j.limit_key is not None for j in found):
        headers.append("KEY")
        for row, j in zip(rows, found, strict=True):
            row.append("-" if j.limit_key is None else j.limit_key)
    # PROGRESS only when a task reported some; last, as its message varies in width.
    reported = [j for j in found if j.progress is not None]
    if reported:
        headers.append("PROGRESS")
        for row, j in zip(rows, found, strict=True):
            # render_table escapes every cell.
            row.append(progress_text(j.progress, message_chars=LIST_PROGRESS_CHARS))
    click.echo(render_table(headers, rows))
    if reported:
        running = sum(j.status is JobStatus.RUNNING for j in reported)
        click.echo(f"{len(reported)} of {len(found)} jobs reported progress ({running} running)")


@jobs.command()
@click.argument("job_id")
@store_options
@json_option
def show(job_id: str, url: str | None, namespace: str | None, as_json: bool) -> None:
    """Every field of one job (exit 4 if there is none); a step's workflow, parents, children."""
    with open_client(url, namespace) as client:
        job = client.get(job_id)
    data = job_dict(job)
    if as_json:
        echo_json(data)
        return
    if job.workflow is None:
        # A plain job: the workflow fields would only ever say "none".
        for key in WORKFLOW_FIELDS:
            del data[key]
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key in WORKFLOW_FIELDS and isinstance(value, tuple):
            shown = _step_ids(value)
        elif key == "limit" and job.limit is not None:
            shown = escape_text(limit_text(job.limit))
        elif key == "progress":
            shown = _progress_line(job)
        elif isinstance(value, (dict, list, tuple)):
            shown = escape_json(json.dumps(value, ensure_ascii=False))
        else:
            shown = "-" if value is None else escape_text(str(value))
        click.echo(f"{key.ljust(width)}  {shown}")


def _progress_line(job: Job) -> str:
    """``40% resizing (at 2026-…)``: what the task last reported, and when the store took it."""
    if job.progress is None:
        return "-"
    return escape_text(f"{progress_text(job.progress)} (at {job.progress.at})")


def _step_ids(ids: tuple[str, ...]) -> str:
    """Step ids for one line: the first SHOW_STEP_IDS, then how many more."""
    if not ids:
        return "-"
    shown = escape_text(", ".join(ids[:SHOW_STEP_IDS]))
    more = len(ids) - SHOW_STEP_IDS
    return shown if more <= 0 else f"{shown} … and {more} more (--json lists them all)"


@jobs.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...")
@click.option("--all-failed", is_flag=True, help="Retry every failed job (of --queue).")
@click.option("--queue", "-q", metavar="QUEUE", help="With --all-failed: only this queue.")
@click.option(
    "--as-new",
    is_flag=True,
    help="Enqueue each as a new job with the same payload instead (any store).",
)
@store_options
@json_option
def retry(
    job_ids: tuple[str, ...],
    all_failed: bool,
    queue: str | None,
    as_new: bool,
    url: str | None,
    namespace: str | None,
    as_json: bool,
) -> None:
    """Put failed or cancelled jobs back in their queue, to run again.

    Each job is queued again in place (its id, attempts and history kept,
    one more attempt granted if it had none left); a job that is neither
    failed nor cancelled is left as it is. Prints "JOB_ID STATUS" per job.
    With --as-new the old job stays as it was and each line is
    "OLD_ID -> NEW_ID". Workflow steps are not retried alone.
    """
    if bool(job_ids) == all_failed:
        raise InvalidInput("give JOB_IDs or --all-failed (not both)")
    with open_client(url, namespace) as client:
        steps = 0
        if all_failed:
            failed = _all(client, queue, JobStatus.FAILED)
            targets = [job for job in failed if job.workflow is None]
            steps = len(failed) - len(targets)
        else:
            targets = [client.get(job_id) for job_id in job_ids]
        if as_new:
            pairs = [(job.id, retry_job(client, job)) for job in targets]
        else:
            results = [(job, client.retry(job.id)) for job in targets]
    if steps and not as_json:
        click.echo(f"skipped {steps} failed workflow step(s): not retried alone", err=True)
    elif all_failed and not targets and not as_json:
        click.echo("no failed jobs", err=True)
    if as_new and as_json:
        echo_json([{"job": old, "retry": new} for old, new in pairs])
    elif as_new:
        for old, new in pairs:
            echo_text(f"{old} -> {new}")
    elif as_json:
        echo_json([{"job": job.id, "status": status.value} for job, status in results])
    else:
        _print_retried(results)


def _print_retried(results: list[tuple[Job, JobStatus]]) -> None:
    for job, status in results:
        # What the job was when read: a retry of any other status changed nothing.
        note = "" if job.status in RETRYABLE else " (not failed or cancelled: left as it is)"
        echo_text(f"{job.id} {status.value}{note}")


def _all(client: Client, queue: str | None, status: JobStatus) -> list[Job]:
    found: list[Job] = []
    after = None
    while page := client.list_jobs(queue=queue, status=status, limit=1000, after=after):
        found.extend(page)
        after = page[-1].id
    return found


@jobs.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@store_options
@json_option
def cancel(job_ids: tuple[str, ...], url: str | None, namespace: str | None, as_json: bool) -> None:
    """Cancel jobs: a queued one at once; a running one is asked to stop by its worker."""
    results: list[tuple[str, JobStatus]] = []
    with open_client(url, namespace) as client:
        for job_id in job_ids:
            results.append((job_id, client.cancel(job_id)))
    if as_json:
        echo_json([{"job": j, "status": s.value} for j, s in results])
        return
    for job_id, status in results:
        note = " (cancel requested; its worker will stop it)" if status is JobStatus.RUNNING else ""
        echo_text(f"{job_id} {status.value}{note}")
