"""qw-toyfile's own flow-control tests: what is particular to its journal.

The contract (limits, fair claiming, schedules) is proven by
``BackendContractTests`` in test_contract.py; these check what only this
store can get wrong: a journal written before flow control still opens, and
another process replays the limit state.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

import qw
from qw.model import JobStatus, Limit, NewJob, Schedule
from qw_toyfile import ToyFileBackend


@pytest.fixture
def store(tmp_path: Path) -> Path:
    # A directory of its own per test: the journal's replicas are per path.
    directory = tmp_path / uuid.uuid4().hex
    directory.mkdir()
    return directory


def _client(directory: Path) -> qw.Client:
    return qw.Client(ToyFileBackend(directory, namespace="ns"))


# -- a journal written by qw-toyfile 0.2.0, before flow control ------------------

_OLD_ROW = {
    "queue": "q", "payload": None, "priority": 0, "run_at": 1.0, "max_attempts": 3,
    "attempts": 0, "status": "queued", "created_at": 1.0, "dedupe_key": None, "result": None,
    "error": None, "started_at": None, "finished_at": None, "worker": None,
    "lease_expires_at": None, "cancel_requested": False, "token": None, "finished_by": None,
}  # fmt: skip


def _old_journal(path: Path) -> None:
    """A snapshot line and an entry line, as 0.2.0 wrote them: no flow-control tables."""
    tables: dict[str, dict[str, object]] = {"events": {}, "workers": {}, "workflows": {}}
    snapshot = {
        "snapshot": True, "seq": 1, "enabled": True, "queues": {}, **tables,
        "jobs": {"old.1": {**_OLD_ROW, "id": "old.1", "seq": 1, "priority": 1}},
    }  # fmt: skip
    entry = {
        "seq": 2, "enabled": True, "queues": {}, **tables,
        "jobs": {"old.2": {**_OLD_ROW, "id": "old.2", "seq": 2}},
    }  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in (snapshot, entry)))


def test_a_journal_from_before_flow_control_opens_unlimited(store: Path) -> None:
    _old_journal(store / "ns.jsonl")
    client = _client(store)
    for job in client.list_jobs():
        assert (job.limit_key, job.limit, job.fair) == (None, None, False)
    assert (client.keys(), client.limits(), client.schedules()) == ([], {}, [])
    client.enqueue_one("q", id="keyed", limit_key="k", limit=Limit(concurrency=0))
    client.enqueue_one("q", id="fair", limit_key="f", fair=True, priority=1)
    claims = client.claim(["q"], worker="w", limit=10)
    # Old rows rank 0, as does a key's first fair job: FIFO among equal priorities.
    assert [c.job.id for c in claims] == ["old.2", "old.1", "fair"]
    assert client.get("keyed").status is JobStatus.QUEUED
    client.set_limit("k", Limit(concurrency=1))
    assert [c.job.id for c in client.claim(["q"], worker="w")] == ["keyed"]


# -- another process -----------------------------------------------------------------

_CHILD = """
import sys
from datetime import UTC, datetime
from pathlib import Path
import qw
from qw_toyfile import ToyFileBackend
client = qw.Client(ToyFileBackend(Path(sys.argv[1]), namespace="ns"))
tick = datetime(2030, 1, 1, tzinfo=UTC)
print(len(client.claim(["q"], worker="child", limit=10)), client.advance_schedule("s", tick))
"""


def test_another_process_replays_limits_starts_and_ticks(store: Path) -> None:
    client = _client(store)
    client.set_limit("k", Limit(concurrency=2))
    client.enqueue([NewJob("q", i, limit_key="k", limit=Limit(concurrency=9)) for i in range(3)])
    client.enqueue([NewJob("q", i, limit_key="r", limit=Limit(rate=1, per=60)) for i in range(2)])
    assert len(client.claim(["q"], worker="w", limit=1)) == 1  # one of k's two slots
    client.save_schedule(Schedule("s", "every 30s", "UTC", "q", "t"))
    assert client.advance_schedule("s", datetime(2030, 1, 1, tzinfo=UTC))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(store)], capture_output=True, text=True, check=True
    ).stdout
    # k's other slot and r's one start in its minute; the tick did not move.
    assert out.split() == ["2", "False"]
    (k, r) = client.keys()
    assert (k.running, k.queued, k.overridden) == (2, 1, True)
    assert (r.running, r.started, r.throttled) == (1, 1, True)
