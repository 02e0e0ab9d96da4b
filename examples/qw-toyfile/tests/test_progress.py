"""qw-toyfile's own progress tests: what is particular to its journal.

The contract (fenced reports committed with their event, results awaited
through the client's poll) is proven by ``BackendContractTests`` in
test_contract.py; these check what only this store can get wrong: a report
is one journal line, a journal written before progress still opens, another
process replays the report, and the fallbacks the toy leaves to the client.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import qw
from qw.model import PROGRESS_EVENT, JobStatus
from qw_toyfile import ToyFileBackend


@pytest.fixture
def store(tmp_path: Path) -> Path:
    # A directory of its own per test: the journal's replicas are per path.
    directory = tmp_path / uuid.uuid4().hex
    directory.mkdir()
    return directory


def _client(directory: Path) -> qw.Client:
    return qw.Client(ToyFileBackend(directory, namespace="ns"))


def _lines(directory: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (directory / "ns.jsonl").read_text().splitlines()]


def test_a_report_and_its_event_are_one_journal_line(store: Path) -> None:
    client = _client(store)
    job_id = client.enqueue_one("q", 1).id
    (claim,) = client.claim(["q"], worker="w")
    before = len(_lines(store))
    client.set_progress(claim.lease, 0.5, "halfway")
    lines = _lines(store)
    assert len(lines) == before + 1
    (row,) = lines[-1]["jobs"].values()  # type: ignore[attr-defined]
    assert row["progress"]["fraction"] == 0.5
    assert row["progress"]["message"] == "halfway"
    (event,) = lines[-1]["events"].values()  # type: ignore[attr-defined]
    assert (event["type"], event["data"]) == (
        PROGRESS_EVENT,
        {"fraction": 0.5, "message": "halfway"},
    )
    progress = client.get(job_id).progress
    assert progress is not None
    assert (progress.fraction, progress.message) == (0.5, "halfway")


def test_a_stale_lease_writes_no_line(store: Path) -> None:
    client = _client(store)
    client.enqueue_one("q", 1)
    (claim,) = client.claim(["q"], worker="w")
    before = len(_lines(store))
    with pytest.raises(qw.LeaseLost):
        client.set_progress(dataclasses.replace(claim.lease, token="f" * 32), 0.1)
    assert len(_lines(store)) == before


# -- a journal written before progress -----------------------------------------------

_OLD_ROW = {
    "queue": "q", "payload": None, "priority": 0, "run_at": 1.0, "max_attempts": 3,
    "attempts": 0, "status": "queued", "created_at": 1.0, "dedupe_key": None, "result": None,
    "error": None, "started_at": None, "finished_at": None, "worker": None,
    "lease_expires_at": None, "cancel_requested": False, "token": None, "finished_by": None,
}  # fmt: skip


def test_a_journal_from_before_progress_reads_no_progress_and_takes_reports(store: Path) -> None:
    # A snapshot as the toy wrote it with flow control, before progress: no
    # progress field on any row.
    tables: dict[str, dict[str, object]] = {
        t: {} for t in ("events", "workers", "workflows", "limits", "starts", "ranks", "clocks")
    }
    snapshot = {
        "snapshot": True, "seq": 1, "enabled": True, "queues": {}, "schedules": {}, **tables,
        "jobs": {"old.1": {**_OLD_ROW, "id": "old.1", "seq": 1}},
    }  # fmt: skip
    (store / "ns.jsonl").write_text(json.dumps(snapshot) + "\n")
    client = _client(store)
    assert client.get("old.1").progress is None
    (claim,) = client.claim(["q"], worker="w")
    client.set_progress(claim.lease, message="started")
    progress = client.get("old.1").progress
    assert progress is not None
    assert progress.message == "started"


# -- another process -------------------------------------------------------------

_CHILD = """
import sys
from pathlib import Path
import qw
from qw_toyfile import ToyFileBackend
client = qw.Client(ToyFileBackend(Path(sys.argv[1]), namespace="ns"))
(claim,) = client.claim(["q"], worker="child")
client.set_progress(claim.lease, 0.75, "from the child")
client.complete(claim.lease, "child's")
"""


def test_another_process_reports_and_a_wait_here_sees_it_end(store: Path) -> None:
    client = _client(store)
    job_id = client.enqueue_one("q", 1).id
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(store)])
    try:
        # No result wake-up: the client polls get() (10 ms doubling to 250 ms).
        job = client.wait_finished(job_id, 30.0)
    finally:
        assert child.wait(30) == 0
    assert job.status is JobStatus.SUCCEEDED
    assert job.result == "child's"
    assert job.progress is not None
    assert (job.progress.fraction, job.progress.message) == (0.75, "from the child")
    types = [e.type for e in client.fetch_events(limit=10) if e.job_id == job_id]
    assert types == [PROGRESS_EVENT]  # a complete without an event writes none


def test_the_fallbacks_are_the_clients(store: Path) -> None:
    client = _client(store)
    caps = client.capabilities
    assert (caps.progress, caps.result_wakeup, caps.transactional) == (True, False, False)
    with pytest.raises(qw.Unsupported):
        client.enqueue([qw.NewJob("q", 1)], connection=object())
    assert client.counts() == {}
    with pytest.raises(qw.Unsupported):
        client.backend.wait_finished("any", 0.0)
