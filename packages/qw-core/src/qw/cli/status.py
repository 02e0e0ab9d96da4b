"""``qw status``: jobs per queue and status, the switches, limit keys, and the workers."""

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
from qw.cli.limits import KEY_HEADERS, OK, PAUSED, key_dict, key_row, key_state_name
from qw.client import Client
from qw.display import escape_text
from qw.model import JobStatus, KeyState, WorkerInfo
from qw.validation import MAX_LIST_LIMIT
from qw.worker.supervisor import Supervised, parse_child_id

__all__ = ["Status", "read_status", "shown_keys", "status", "supervisor_groups"]

#: A worker not seen for this long is shown as ``stale`` (probably gone).
DEFAULT_STALE_AFTER = 60.0
#: ``qw status`` shows at most this many limit keys (``--keys``); ``qw limits keys`` lists all.
DEFAULT_SHOWN_KEYS = 20
#: ... picked from at most this many keys, read in one call, so that a
#: namespace with a million keys still has a quick status.
KEYS_READ = MAX_LIST_LIMIT


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
    #: The limit keys read (at most KEYS_READ), or None: the backend has no limits.
    keys: list[KeyState] | None = None

    @property
    def keys_complete(self) -> bool:
        """Whether ``keys`` holds every key (the read stopped short of KEYS_READ)."""
        return self.keys is None or len(self.keys) < KEYS_READ

    def worker_age(self, worker: WorkerInfo) -> float | None:
        """Seconds since ``worker`` was last seen, on the store's clock."""
        if worker.last_seen is None:
            return None
        return max(0.0, (self.now - worker.last_seen).total_seconds())


def read_status(client: Client, url: str) -> Status:
    """Read counts, switches, limit keys (where the backend has limits) and workers."""
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
        keys=client.keys(limit=KEYS_READ) if client.capabilities.limits else None,
    )


_STATE_ORDER = {PAUSED: 0, OK: 2}


def shown_keys(keys: list[KeyState], most: int) -> list[KeyState]:
    """The ``most`` keys an operator looks at first: paused, then throttled, then the busiest."""

    def order(state: KeyState) -> tuple[int, int, str]:
        rank = _STATE_ORDER.get(key_state_name(state), 1)
        return rank, -(state.queued + state.running), state.key

    return sorted(keys, key=order)[:most]


def _on_off(value: bool) -> str:
    return "ON" if value else "OFF"


def _worker_state(age: float | None, stale_after: float) -> str:
    return "live" if age is not None and age <= stale_after else "stale"


def supervisor_groups(
    workers: list[WorkerInfo],
) -> tuple[list[WorkerInfo], dict[tuple[str, str], list[tuple[Supervised, WorkerInfo]]]]:
    """The workers that run alone, and the children of each (host, supervisor), by index."""
    alone: list[WorkerInfo] = []
    groups: dict[tuple[str, str], list[tuple[Supervised, WorkerInfo]]] = {}
    for w in workers:
        sup = parse_child_id(w.id)
        if sup is None:
            alone.append(w)
        else:
            groups.setdefault((w.host, sup.supervisor), []).append((sup, w))
    for children in groups.values():
        children.sort(key=lambda pair: (pair[0].index, pair[1].id))
    return alone, groups


def _more_keys(snapshot: Status, shown: int) -> int:
    return 0 if snapshot.keys is None else len(snapshot.keys) - shown


def _worker_dict(snapshot: Status, w: WorkerInfo, stale_after: float) -> dict[str, object]:
    sup = parse_child_id(w.id)
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "queues": list(w.queues),
        "concurrency": w.concurrency,
        "started_at": w.started_at,
        "last_seen": w.last_seen,
        "age_s": snapshot.worker_age(w),
        "state": _worker_state(snapshot.worker_age(w), stale_after),
        # Set for a child of `qw worker --processes N`: its supervisor and index.
        "supervisor": None if sup is None else sup.supervisor,
        "index": None if sup is None else sup.index,
    }


def _as_dict(snapshot: Status, stale_after: float, most_keys: int) -> dict[str, object]:
    keys = None if snapshot.keys is None else shown_keys(snapshot.keys, most_keys)
    _, groups = supervisor_groups(snapshot.workers)
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
        # None: the backend has no limits (an empty list: it has, but no keys).
        "keys": None if keys is None else [key_dict(k) for k in keys],
        # Keys left out of "keys"; with keys_more_exact false, at least this many.
        "keys_more": _more_keys(snapshot, len(keys or ())),
        "keys_more_exact": snapshot.keys_complete,
        "workers": [_worker_dict(snapshot, w, stale_after) for w in snapshot.workers],
        # Every worker is also in "workers"; these list the children by supervisor.
        "supervisors": [
            {
                "id": sup_id,
                "host": host,
                "pid": children[0][0].supervisor_pid,
                "children": len(children),
                "live": sum(
                    _worker_state(snapshot.worker_age(w), stale_after) == "live"
                    for _, w in children
                ),
                "workers": [w.id for _, w in children],
            }
            for (host, sup_id), children in groups.items()
        ],
    }


def _render_keys(snapshot: Status, most: int) -> list[str]:
    """The limit keys' table and a line for those left out; nothing without keys."""
    if not snapshot.keys:
        return []
    keys = shown_keys(snapshot.keys, most)
    lines = [render_table(KEY_HEADERS, [key_row(k) for k in keys])] if keys else []
    more = _more_keys(snapshot, len(keys))
    if more:
        count = f"{more}" if snapshot.keys_complete else f"at least {more}"
        lines.append(f"… and {count} more limit keys, see `qw limits keys`")
    return [*lines, ""]


def _render(snapshot: Status, stale_after: float, most_keys: int) -> str:
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
    lines.extend(_render_keys(snapshot, most_keys))
    lines.extend(_render_workers(snapshot, stale_after))
    return "\n".join(lines)


_WORKER_HEADERS = ["WORKER", "STATE", "HOST", "PID", "QUEUES", "CONCURRENCY", "LAST SEEN"]


def _worker_row(snapshot: Status, w: WorkerInfo, stale_after: float) -> list[object]:
    age = snapshot.worker_age(w)
    return [
        w.id,
        _worker_state(age, stale_after),
        w.host,
        w.pid,
        ",".join(w.queues),
        w.concurrency,
        "-" if age is None else f"{age:.0f}s ago",
    ]


def _render_workers(snapshot: Status, stale_after: float) -> list[str]:
    """Workers that run alone in one table, then one table per supervisor of children."""
    if not snapshot.workers:
        return ["no workers"]
    alone, groups = supervisor_groups(snapshot.workers)
    lines = []
    if alone:
        lines.append(
            render_table(_WORKER_HEADERS, [_worker_row(snapshot, w, stale_after) for w in alone])
        )
    for (host, _), children in groups.items():
        live = sum(
            _worker_state(snapshot.worker_age(w), stale_after) == "live" for _, w in children
        )
        if lines:
            lines.append("")
        lines.append(
            escape_text(
                f"supervisor pid {children[0][0].supervisor_pid} on {host}: "
                f"{len(children)} worker process{'' if len(children) == 1 else 'es'}, {live} live"
            )
        )
        rows = [[f"w{sup.index}", *_worker_row(snapshot, w, stale_after)] for sup, w in children]
        lines.append(render_table(["CHILD", *_WORKER_HEADERS], rows))
    return lines


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
@click.option(
    "--keys",
    "most_keys",
    type=click.IntRange(0, KEYS_READ),
    default=DEFAULT_SHOWN_KEYS,
    show_default=True,
    metavar="N",
    help="Show at most N limit keys: paused, then throttled, then the busiest.",
)
def status(
    url: str | None, namespace: str | None, as_json: bool, stale_after: float, most_keys: int
) -> None:
    """Jobs per queue and status, the ON/OFF switches, limit keys, and registered workers.

    Limit keys show where the backend has limits ('qw backends' lists
    them) and some key has queued or running jobs or an operators' limit.
    """
    with open_client(url, namespace) as client:
        snapshot = read_status(client, redact_url(url))
    if as_json:
        echo_json(_as_dict(snapshot, stale_after, most_keys))
    else:
        click.echo(_render(snapshot, stale_after, most_keys))
