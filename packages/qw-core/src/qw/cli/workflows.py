"""``qw workflows list|show|cancel``: look at workflows, their steps, and stop them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
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
from qw.cli.jobs import job_dict
from qw.display import escape_text
from qw.model import Job, JobStatus, Workflow, WorkflowState
from qw.payload import task_name_of

__all__ = [
    "SHOW_CHILDREN",
    "SHOW_DEPTH",
    "draw_tree",
    "step_order",
    "workflow_dict",
    "workflows",
]

#: Without ``--all``, ``workflows show`` draws at most this many children of
#: one step (and this many roots); a "… and K more" line stands for the rest.
SHOW_CHILDREN = 20
#: ... and steps at most this deep; a line under the deepest counts the rest.
SHOW_DEPTH = 12

_STEP_HEADERS = ["STEP", "TASK", "STATUS", "ATT", "STARTED", "DURATION"]
_DIGITS = re.compile(r"([0-9]+)")


def workflow_dict(workflow: Workflow) -> dict[str, Any]:
    """A workflow as plain data for ``--json``: every status counted, zeros included."""
    return {
        "id": workflow.id,
        "state": workflow.state.value,
        "output": workflow.output,
        "created_at": workflow.created_at,
        "finished_at": workflow.finished_at,
        "cancel_requested": workflow.cancel_requested,
        "steps": workflow.steps,
        "counts": {s.value: workflow.counts.get(s, 0) for s in JobStatus},
    }


def step_order(step_id: str) -> tuple[tuple[str | int, ...], str]:
    """A sort key putting ``wf.2`` before ``wf.10`` (ids hold numbers the builder counts up)."""
    parts: list[str | int] = list(_DIGITS.split(step_id))
    # split() alternates text and digits, so positions compare like with like.
    parts[1::2] = map(int, parts[1::2])
    return tuple(parts), step_id


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _counts_text(workflow: Workflow) -> str:
    shown = ", ".join(f"{n} {s.value}" for s in JobStatus if (n := workflow.counts.get(s, 0)))
    return _plural(workflow.steps, "step") + (f": {shown}" if shown else "")


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _duration(job: Job) -> str:
    if job.started_at is None or job.finished_at is None:
        return "-"
    seconds = max(0.0, (job.finished_at - job.started_at).total_seconds())
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _task(job: Job) -> str:
    name = task_name_of(job.payload)
    return "-" if name is None else name


def _step_cells(job: Job) -> list[object]:
    return [_task(job), job.status.value, job.attempts, _when(job.started_at), _duration(job)]


def _line(first: str, second: str = "") -> list[object]:
    """A tree row that is not a drawn step: a reference, or a count of steps left out."""
    return [first, second, None, None, None, None]


def _primary(job: Job, steps: dict[str, Job]) -> str | None:
    """The parent a step is drawn under: its first one (None: it is drawn as a root)."""
    return job.parents[0] if job.parents and job.parents[0] in steps else None


def draw_tree(
    steps: Sequence[Job], *, limit: int | None = SHOW_CHILDREN
) -> tuple[list[list[object]], bool]:
    """The rows of a workflow's DAG drawn as a tree, roots first, for :func:`render_table`.

    A step is drawn, with its children, under its first parent; under every
    other parent one line says where it is drawn, so a fan-in is not drawn
    once per parent. With ``limit`` (None: everything), a step shows at most
    ``limit`` children, the roots are at most ``limit``, the tree at most
    :data:`SHOW_DEPTH` deep, and one line counts what is left out; the
    second value says whether anything was.
    """
    by_id = {job.id: job for job in steps}
    roots = sorted((j.id for j in steps if _primary(j, by_id) is None), key=step_order)
    below = _subtree_sizes(by_id, roots)
    rows: list[list[object]] = []
    drawn: set[str] = set()
    cut = False
    # (step id, the parent it is listed under, its connector, the lead of its
    # children, depth); a "… and K more" line is (None, None, its text, "", 0).
    pending: list[tuple[str | None, str | None, str, str, int]] = []

    def push(children: Sequence[str], parent: str | None, lead: str, depth: int) -> None:
        nonlocal cut
        shown = children if limit is None else children[:limit]
        hidden = len(children) - len(shown)
        entries: list[tuple[str | None, str | None, str, str, int]] = []
        for i, child in enumerate(shown):
            last = i == len(shown) - 1 and not hidden
            if parent is None:
                entries.append((child, None, "", "", depth))
            else:
                connector = lead + ("└─ " if last else "├─ ")
                entries.append((child, parent, connector, lead + ("   " if last else "│  "), depth))
        if hidden:
            cut = True
            text = f"{lead}{'' if parent is None else '└─ '}… and {hidden} more"
            entries.append((None, None, text, "", 0))
        pending.extend(reversed(entries))

    push(roots, None, "", 0)
    while pending:
        step_id, parent, connector, lead, depth = pending.pop()
        if step_id is None:
            rows.append(_line(connector))
            continue
        job = by_id.get(step_id)
        if job is None:
            rows.append(_line(connector + step_id, "-"))
            continue
        first = _primary(job, by_id)
        if step_id in drawn or first != parent:
            rows.append(_line(connector + step_id, f"(see under {first})"))
            continue
        drawn.add(step_id)
        rows.append([connector + step_id, *_step_cells(job)])
        if not job.children:
            continue
        if limit is not None and depth + 1 >= SHOW_DEPTH:
            cut = True
            more = below.get(step_id, 1) - 1
            rows.append(_line(f"{lead}└─ … {_plural(more, 'more step')} below"))
            continue
        push(list(job.children), step_id, lead, depth + 1)
    return rows, cut


def _subtree_sizes(by_id: dict[str, Job], roots: Iterable[str]) -> dict[str, int]:
    """Steps drawn at or under each step (each drawn under its first parent only)."""
    order: list[str] = []
    todo = list(roots)
    seen: set[str] = set()
    while todo:
        step_id = todo.pop()
        if step_id in seen:
            continue
        seen.add(step_id)
        order.append(step_id)
        todo.extend(c for c in by_id[step_id].children if _is_primary_child(by_id, c, step_id))
    sizes = dict.fromkeys(order, 1)
    for step_id in reversed(order):
        parent = _primary(by_id[step_id], by_id)
        if parent is not None and parent in sizes:
            sizes[parent] += sizes[step_id]
    return sizes


def _is_primary_child(by_id: dict[str, Job], child: str, parent: str) -> bool:
    job = by_id.get(child)
    return job is not None and _primary(job, by_id) == parent


def _ids(ids: Sequence[str], most: int = 3) -> str:
    if not ids:
        return "-"
    shown = ", ".join(ids[:most])
    return shown if len(ids) <= most else f"{shown} +{len(ids) - most}"


@click.group()
def workflows() -> None:
    """List, show and cancel workflows (steps that run once their parents end)."""


@workflows.command("list")
@store_options
@click.option("--state", "-s", type=click.Choice([s.value for s in WorkflowState]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--after", metavar="WORKFLOW_ID", help="Page on: workflows with ids after this one.")
@json_option
def list_workflows(
    url: str | None,
    namespace: str | None,
    state: str | None,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """Workflows by id, optionally in one state, with their steps counted by status."""
    with open_client(url, namespace) as client:
        found = client.list_workflows(state=state, limit=limit, after=after)
    if as_json:
        echo_json([workflow_dict(w) for w in found])
        return
    if not found:
        click.echo("no workflows")
        return
    statuses = list(JobStatus)
    rows = [
        [
            w.id,
            w.state.value,
            w.steps,
            *(w.counts.get(s, 0) for s in statuses),
            w.created_at,
            "-" if w.finished_at is None else w.finished_at,
        ]
        for w in found
    ]
    headers = ["ID", "STATE", "STEPS", *(s.value.upper() for s in statuses), "CREATED", "FINISHED"]
    click.echo(render_table(headers, rows))


@workflows.command()
@click.argument("workflow_id")
@store_options
@click.option("--table", "as_table", is_flag=True, help="List the steps flat, by id.")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help=f"Draw every step (default: {SHOW_CHILDREN} children per step, {SHOW_DEPTH} deep).",
)
@json_option
def show(
    workflow_id: str,
    url: str | None,
    namespace: str | None,
    as_table: bool,
    show_all: bool,
    as_json: bool,
) -> None:
    """A workflow and its steps, drawn as a tree (exit 4 if there is none).

    Roots come first, each step under its first parent; under its other
    parents a line says where it is drawn. --json prints the workflow and
    every step (with its parents and children).
    """
    with open_client(url, namespace) as client:
        workflow = client.get_workflow(workflow_id)
        steps = sorted(client.steps(workflow_id), key=lambda j: step_order(j.id))
    if as_json:
        echo_json({"workflow": workflow_dict(workflow), "steps": [job_dict(j) for j in steps]})
        return
    fields: list[tuple[str, object]] = [
        ("workflow", workflow.id),
        ("state", workflow.state.value),
        ("output", workflow.output),
        ("created", workflow.created_at),
        ("finished", workflow.finished_at),
        ("steps", _counts_text(workflow)),
    ]
    if workflow.cancel_requested:
        fields.insert(2, ("cancel", "requested"))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        shown = "-" if value is None else escape_text(str(value))
        click.echo(f"{key.ljust(width)}  {shown}")
    if not steps:
        return
    click.echo("")
    if as_table:
        rows = [[j.id, *_step_cells(j), _ids(j.parents)] for j in steps]
        click.echo(render_table([*_STEP_HEADERS, "PARENTS"], rows))
        return
    rows, cut = draw_tree(steps, limit=None if show_all else SHOW_CHILDREN)
    click.echo(render_table(_STEP_HEADERS, rows))
    if cut:
        click.echo("(not every step is drawn: --all draws them all, --table lists them)")


@workflows.command()
@click.argument("workflow_id")
@store_options
@json_option
def cancel(workflow_id: str, url: str | None, namespace: str | None, as_json: bool) -> None:
    """Cancel a workflow: its waiting and queued steps at once, running ones by their workers.

    Prints the workflow's state and its steps counted by status afterwards.
    """
    with open_client(url, namespace) as client:
        workflow = client.cancel_workflow(workflow_id)
    if as_json:
        echo_json(workflow_dict(workflow))
        return
    note = ""
    if workflow.state is WorkflowState.RUNNING:
        running = workflow.counts.get(JobStatus.RUNNING, 0)
        note = f" (cancel requested; {_plural(running, 'running step')} left to their workers)"
    elif not workflow.cancel_requested:
        note = " (it had ended; nothing to cancel)"
    echo_text(f"{workflow.id} {workflow.state.value}{note}: {_counts_text(workflow)}")
