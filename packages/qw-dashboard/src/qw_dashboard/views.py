"""What each page shows, read from a :class:`qw.Client`: blocking calls, run in a thread.

Each function returns the template's context (plain values); nothing here
knows about HTTP. Store-held text is passed as it is: the templates escape it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qw.cli.limits import key_state_name, limit_text
from qw.client import Client
from qw.display import escape_json, escape_text, progress_text
from qw.errors import InvalidInput
from qw.model import Job, JobStatus, WorkflowState
from qw.payload import task_name_of
from qw_dashboard.dag import MAX_DRAWN_STEPS, layout

__all__ = [
    "COUNT_ORDER",
    "PAGE_SIZE",
    "can_retry",
    "events_page",
    "job_page",
    "jobs_page",
    "keys_page",
    "overview",
    "pretty",
    "workers_page",
    "workflow_page",
    "workflows_page",
]

#: The overview's count columns, in the order an operator reads them.
COUNT_ORDER = ("queued", "running", "waiting", "succeeded", "failed", "cancelled")
#: Rows per page of jobs, workflows and limit keys.
PAGE_SIZE = 50
#: The events page reads this many unacknowledged events (the outbox's oldest) ...
EVENTS_READ = 1000
#: ... and shows the newest this many of them.
EVENTS_SHOWN = 200
#: A worker not seen for this long is shown as stale (as ``qw status`` does).
STALE_AFTER_S = 60.0
RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED)
LIVE = (JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING)


# Control characters but tab and newline, C1 controls, bidi embeddings,
# overrides, isolates and marks, the line and paragraph separators, and lone
# surrogates: text that could disguise what it says on a page.
_DISGUISING = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


def inert(value: object) -> object:
    """Every value a template prints: disguising characters of a string shown as ``\\uXXXX``.

    Jinja2 escapes HTML after this; this keeps a job id holding a
    right-to-left override from reading backwards on the page.
    """
    if isinstance(value, str) and _DISGUISING.search(value):
        return _DISGUISING.sub(lambda m: f"\\u{ord(m.group(0)):04x}", value)
    return value


def pretty(value: object) -> str:
    """JSON as an operator reads it: indented, Unicode kept, bidi and control characters escaped.

    Not HTML-escaped: the template does that (autoescape).
    """
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    return escape_json(text)


def multiline_fields(value: object) -> list[tuple[str, str]]:
    """The string fields of a dict holding several lines (a traceback), to show as they read.

    Each line has its control and bidi characters escaped, as ``pretty`` does.
    """
    if not isinstance(value, dict):
        return []
    return [
        (str(key), "\n".join(escape_text(line) for line in text.split("\n")))
        for key, text in value.items()
        if isinstance(text, str) and "\n" in text.strip()
    ]


def error_summary(error: object) -> str | None:
    """``Type: message`` for an error shaped like the worker's, else None."""
    if not isinstance(error, dict):
        return None
    kind, message = error.get("type"), error.get("message")
    if isinstance(kind, str) and isinstance(message, str):
        return escape_text(f"{kind}: {message}")
    return None


def task_of(job: Job) -> str:
    name = task_name_of(job.payload)
    return "-" if name is None else name


def can_retry(client: Client, job: Job) -> bool:
    """Whether the job page offers retry: the store can, and the job is failed or cancelled.

    A workflow step is never retried alone (its workflow has settled around it).
    """
    return (
        bool(getattr(client.capabilities, "retry", False))
        and hasattr(client, "retry")
        and job.status in RETRYABLE
        and job.workflow is None
    )


def overview(client: Client) -> dict[str, Any]:
    counts = client.counts()
    switches = client.switches()
    names = sorted(set(counts) | set(switches.queues))
    queues: list[dict[str, Any]] = []
    for name in names:
        by_status = counts.get(name, {})
        queues.append(
            {
                "name": name,
                "counts": {s: by_status.get(JobStatus(s), 0) for s in COUNT_ORDER},
                "enabled": switches.queues.get(name, True),
            }
        )
    totals = {s: sum(q["counts"][s] for q in queues) for s in COUNT_ORDER}
    return {
        "queues": queues,
        "totals": totals,
        "ns_enabled": switches.enabled,
        "workers": len(client.workers()),
        "now": client.now(),
    }


def _check_choice(value: str | None, choices: Sequence[str], what: str) -> str | None:
    if not value:
        return None
    if value not in choices:
        raise InvalidInput(f"unknown {what} {value!r}: one of {', '.join(choices)}")
    return value


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The jobs page's filters, as the query string gives them (empty = none)."""

    queue: str | None = None
    status: str | None = None
    key: str | None = None
    q: str | None = None
    after: str | None = None


def jobs_page(client: Client, f: JobFilter, *, full: bool = True) -> dict[str, Any]:
    """A page of jobs by id; with ``q``, the job of that id, else those whose ids start with it.

    ``full=False`` is a live refresh of the list alone: it looks up no exact
    id (a prefix listing stays a listing) and lists no queues for the filter.
    """
    status = _check_choice(f.status, [s.value for s in JobStatus], "status")
    found: Job | None = None
    prefix_of: str | None = None
    if f.q:
        found = client.find(f.q) if full else None
        if found is not None:
            return {"found": found}
        prefix_of = f.q
    # One more than a page, to know whether there is a next one.
    after = f.after
    if prefix_of is not None and not after:
        # Ids sort as text, so every id that starts with q comes right after q itself.
        after = prefix_of
    rows = client.list_jobs(
        queue=f.queue or None, status=status, key=f.key or None, after=after, limit=PAGE_SIZE + 1
    )
    if prefix_of is not None:
        rows = [j for j in rows if j.id.startswith(prefix_of)]
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return {
        "found": None,
        "not_found": prefix_of,
        "jobs": [_job_row(j) for j in rows],
        "next_after": rows[-1].id if more else None,
        "queues": sorted(client.counts()) if full else [],
        "statuses": [s.value for s in JobStatus],
        "now": client.now(),
    }


def _job_row(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status.value,
        "queue": job.queue,
        "task": task_of(job),
        "attempts": f"{job.attempts} / {job.max_attempts}",
        "priority": job.priority,
        "created_at": job.created_at,
        "run_at": job.run_at,
        "key": job.limit_key,
        "progress": None if job.progress is None else progress_text(job.progress, message_chars=40),
        "workflow": job.workflow,
    }


def job_page(client: Client, job_id: str) -> dict[str, Any]:
    job = client.get(job_id)
    progress = job.progress
    return {
        "job": job,
        "task": task_of(job),
        "attempts": f"{job.attempts} / {job.max_attempts}",
        "payload": pretty(job.payload),
        "result": pretty(job.result),
        "error": pretty(job.error),
        "error_summary": error_summary(job.error),
        "error_texts": multiline_fields(job.error),
        "progress_text": progress_text(progress),
        "progress_fraction": None if progress is None else progress.fraction,
        "limit_text": limit_text(job.limit) if job.limit is not None else None,
        "can_retry": can_retry(client, job),
        "can_cancel": job.status in LIVE,
        "now": client.now(),
    }


def workers_page(client: Client) -> dict[str, Any]:
    now = client.now()
    rows = []
    for w in client.workers():
        age = None if w.last_seen is None else max(0.0, (now - w.last_seen).total_seconds())
        rows.append(
            {
                "w": w,
                "age": age,
                "state": "live" if age is not None and age <= STALE_AFTER_S else "stale",
            }
        )
    return {"workers": rows, "now": now}


def events_page(client: Client) -> dict[str, Any]:
    # Read-only: the outbox belongs to its consumers, so nothing here acks.
    read = client.fetch_events(EVENTS_READ)
    newest = list(reversed(read))[:EVENTS_SHOWN]
    return {
        "events": [
            {
                "e": e,
                "data": json.dumps(e.data, ensure_ascii=False, default=str),
            }
            for e in newest
        ],
        "read": len(read),
        "read_all": len(read) < EVENTS_READ,
        "now": client.now(),
    }


def workflows_page(client: Client, state: str | None, after: str | None) -> dict[str, Any]:
    state = _check_choice(state, [s.value for s in WorkflowState], "workflow state")
    rows = client.list_workflows(state=state, after=after or None, limit=PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return {
        "workflows": [
            {"wf": w, "counts": {s.value: w.counts.get(s, 0) for s in JobStatus}} for w in rows
        ],
        "next_after": rows[-1].id if more else None,
        "states": [s.value for s in WorkflowState],
        "now": client.now(),
    }


def _label(task: str) -> str:
    """A step's box label: the task's last dotted part, cut to fit the box."""
    short = task.rsplit(".", 1)[-1] or task
    return short if len(short) <= 22 else short[:21] + "…"


def _sublabel(step_id: str, workflow_id: str) -> str:
    tail = step_id
    if step_id.startswith(workflow_id):
        tail = step_id[len(workflow_id) :].lstrip(":.-_") or step_id
    return tail if len(tail) <= 26 else "…" + tail[-25:]


def workflow_page(client: Client, workflow_id: str) -> dict[str, Any]:
    wf = client.get_workflow(workflow_id)
    steps = client.steps(workflow_id)
    by_id = {s.id: s for s in steps}
    drawn = len(steps) <= MAX_DRAWN_STEPS
    dag = None
    if drawn:
        placed = layout(
            [s.id for s in steps], [(p, s.id) for s in steps for p in s.parents if p in by_id]
        )
        dag = {
            "width": placed.width,
            "height": placed.height,
            "edges": placed.edges,
            "nodes": [
                {
                    "n": n,
                    "status": by_id[n.id].status.value,
                    "label": _label(task_of(by_id[n.id])),
                    "sublabel": _sublabel(n.id, workflow_id),
                    "task": task_of(by_id[n.id]),
                }
                for n in placed.nodes
            ],
        }
    return {
        "wf": wf,
        "counts": {s.value: wf.counts.get(s, 0) for s in JobStatus},
        "steps": [_job_row(s) | {"parents": s.parents} for s in steps],
        "dag": dag,
        "max_drawn": MAX_DRAWN_STEPS,
        "can_cancel": wf.state is WorkflowState.RUNNING and not wf.cancel_requested,
        "now": client.now(),
    }


def keys_page(client: Client, after: str | None) -> dict[str, Any]:
    if not client.capabilities.limits:
        return {"supported": False}
    keys = client.keys(limit=PAGE_SIZE + 1, after=after or None)
    more = len(keys) > PAGE_SIZE
    keys = keys[:PAGE_SIZE]
    return {
        "supported": True,
        "keys": [
            {
                "k": k,
                "limit": limit_text(k.limit),
                "state": key_state_name(k),
            }
            for k in keys
        ],
        "next_after": keys[-1].key if more else None,
    }


def age_text(then: datetime | None, now: datetime) -> str:
    """``5s ago``, ``3m ago``, ``in 2h``; ``-`` for no time."""
    if then is None:
        return "-"
    seconds = (now - then).total_seconds()
    ahead = seconds < 0
    s = abs(seconds)
    if s < 60:
        text = f"{s:.0f}s"
    elif s < 3600:
        text = f"{s / 60:.0f}m"
    elif s < 86400:
        text = f"{s / 3600:.1f}h"
    else:
        text = f"{s / 86400:.1f}d"
    return f"in {text}" if ahead else f"{text} ago"
