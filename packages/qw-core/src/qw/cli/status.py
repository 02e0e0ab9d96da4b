"""``qw status``: jobs per queue and status, the switches, and the workers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import click

from qw.cli._common import (
    Seconds,
    echo_json,
    json_option,
    open_client,
    redact_url,
    render_table,
    store_options,
)
from qw.client import Client
from qw.display import escape_text
from qw.model import JobStatus, WorkerInfo

__all__ = ["Status", "read_status", "status"]

#: A worker not seen for this long is shown as ``stale`` (probably gone).
DEFAULT_STALE_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of one namespace, read through a client."""

    url: str
    backend: str
    namespace: str
    now: datetime
    enabled: bool
    counts: dict[str, dict[JobStatus, int]]
    queue_enabled: dict[str, bool]
    workers: list[WorkerInfo]

    def worker_age(self, worker: WorkerInfo) -> float | None:
        """Seconds since ``worker`` was last seen, on the store's clock."""
        if worker.last_seen is None:
            return None
        return max(0.0, (self.now - worker.last_seen).total_seconds())


def read_status(client: Client, url: str) -> Status:
    """Read counts, switches and workers from ``client``."""
    counts = client.counts()
    switches = client.switches()
    queues = sorted(set(counts) | set(switches.queues))
    return Status(
        url=url,
        backend=client.backend.name,
        namespace=client.namespace,
        now=client.now(),
        enabled=switches.enabled,
        counts={q: counts.get(q, dict.fromkeys(JobStatus, 0)) for q in queues},
        queue_enabled={q: switches.queues.get(q, True) for q in queues},
        workers=client.workers(),
    )


def _on_off(value: bool) -> str:
    return "ON" if value else "OFF"


def _worker_state(age: float | None, stale_after: float) -> str:
    return "live" if age is not None and age <= stale_after else "stale"


def _as_dict(snapshot: Status, stale_after: float) -> dict[str, object]:
    return {
        "url": snapshot.url,
        "backend": snapshot.backend,
        "namespace": snapshot.namespace,
        "enabled": snapshot.enabled,
        "store_now": snapshot.now,
        "queues": {
            queue: {
                "enabled": snapshot.queue_enabled[queue],
                "counts": {status.value: n for status, n in by_status.items()},
            }
            for queue, by_status in snapshot.counts.items()
        },
        "workers": [
            {
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "queues": list(w.queues),
                "concurrency": w.concurrency,
                "started_at": w.started_at,
                "last_seen": w.last_seen,
                "age_s": snapshot.worker_age(w),
                "state": _worker_state(snapshot.worker_age(w), stale_after),
            }
            for w in snapshot.workers
        ],
    }


def _render(snapshot: Status, stale_after: float) -> str:
    lines = [
        escape_text(
            f"namespace {snapshot.namespace} on {snapshot.url} ({snapshot.backend}): "
            f"{_on_off(snapshot.enabled)}"
        ),
        "",
    ]
    if snapshot.counts:
        rows = [
            [queue, *(by_status[s] for s in JobStatus), _on_off(snapshot.queue_enabled[queue])]
            for queue, by_status in snapshot.counts.items()
        ]
        headers = ["QUEUE", *(s.value.upper() for s in JobStatus), "SWITCH"]
        lines.append(render_table(headers, rows))
    else:
        lines.append("no jobs")
    lines.append("")
    if snapshot.workers:
        rows = []
        for w in snapshot.workers:
            age = snapshot.worker_age(w)
            rows.append(
                [
                    w.id,
                    _worker_state(age, stale_after),
                    w.host,
                    w.pid,
                    ",".join(w.queues),
                    w.concurrency,
                    "-" if age is None else f"{age:.0f}s ago",
                ]
            )
        headers = ["WORKER", "STATE", "HOST", "PID", "QUEUES", "CONCURRENCY", "LAST SEEN"]
        lines.append(render_table(headers, rows))
    else:
        lines.append("no workers")
    return "\n".join(lines)


@click.command()
@store_options
@json_option
@click.option(
    "--stale-after",
    type=Seconds(),
    default=DEFAULT_STALE_AFTER,
    show_default=True,
    metavar="SECONDS",
    help="Show a worker as stale when not seen for this long.",
)
def status(url: str | None, namespace: str | None, as_json: bool, stale_after: float) -> None:
    """Jobs per queue and status, the ON/OFF switches, and registered workers."""
    with open_client(url, namespace) as client:
        snapshot = read_status(client, redact_url(url))
    if as_json:
        echo_json(_as_dict(snapshot, stale_after))
    else:
        click.echo(_render(snapshot, stale_after))
