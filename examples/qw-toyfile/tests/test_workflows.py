"""qw-toyfile's own workflow tests: what is particular to its journal.

The contract (settling, workflow ends, cancel, purge, ...) is proven by
``BackendContractTests`` in test_contract.py; these check what only this
store can get wrong: a cascade is one journal line, another process replays
it, and a journal written before workflows existed still opens.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

import qw
from qw.errors import DuplicateJob
from qw.model import JobStatus, NewJob, ParentFailure, WorkflowState
from qw_toyfile import ToyFileBackend


def _client(directory: Path, namespace: str = "ns") -> qw.Client:
    return qw.Client(ToyFileBackend(directory, namespace=namespace))


def _lines(directory: Path, namespace: str = "ns") -> int:
    return len((directory / f"{namespace}.jsonl").read_bytes().splitlines())


def _drain(client: qw.Client, *, fail: frozenset[str] = frozenset()) -> list[list[str]]:
    """Claim and finish everything claimable, round by round; the ids claimed each round."""
    rounds: list[list[str]] = []
    while claims := client.claim(["q"], worker="w", limit=100):
        rounds.append(sorted(c.job.id for c in claims))
        for c in claims:
            if c.job.id in fail:
                client.fail(c.lease, "boom")
            else:
                client.complete(c.lease, c.job.payload)
    return rounds


DIAMOND = [
    NewJob("q", 1, id="d.1"),
    NewJob("q", 2, id="d.2", parents=("d.1",)),
    NewJob("q", 3, id="d.3", parents=("d.1",)),
    NewJob("q", 4, id="d.4", parents=("d.2", "d.3")),
]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    # A directory of its own per test: the journal's replicas are per path.
    directory = tmp_path / uuid.uuid4().hex
    directory.mkdir()
    return directory


def test_a_diamond_runs_in_order_and_ends_once(store: Path) -> None:
    client = _client(store)
    assert client.create_workflow("d", DIAMOND, output="d.4").created
    assert client.get("d.4").status is JobStatus.WAITING
    assert client.get("d.1").children == ("d.2", "d.3")
    assert _drain(client) == [["d.1"], ["d.2", "d.3"], ["d.4"]]
    flow = client.get_workflow("d")
    assert (flow.state, flow.output, flow.counts) == (
        WorkflowState.SUCCEEDED,
        "d.4",
        {JobStatus.SUCCEEDED: 4},
    )
    events = client.fetch_events()
    assert [(e.job_id, e.type, e.data) for e in events] == [
        ("d", "workflow.succeeded", {"workflow": "d", "state": "succeeded"})
    ]


def test_a_failure_cascade_is_one_journal_line(store: Path) -> None:
    client = _client(store)
    client.create_workflow("d", DIAMOND)
    claim = client.claim(["q"], worker="w")[0]
    before = _lines(store)
    client.fail(claim.lease, "boom")  # max_attempts 3, but no retry_in: final
    assert _lines(store) == before + 1
    jobs = {j.id: j for j in client.steps("d")}
    assert [jobs[i].status for i in ("d.1", "d.2", "d.3", "d.4")] == [
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
    ]
    assert jobs["d.2"].error == {"reason": "parent_failed", "parent": "d.1"}
    assert jobs["d.4"].failed_parents in (("d.2", "d.3"), ("d.3", "d.2"))
    assert client.get_workflow("d").state is WorkflowState.FAILED
    types = [e.type for e in client.fetch_events()]
    assert types == ["job.cancelled"] * 3 + ["workflow.failed"]


def test_another_process_replays_the_workflow(store: Path, tmp_path: Path) -> None:
    client = _client(store)
    client.create_workflow("d", DIAMOND)
    _drain(client, fail=frozenset({"d.2"}))
    # A copy under a new path has no replica in this process: it is replayed
    # from the file, as another process would.
    other = tmp_path / "copy"
    shutil.copytree(store, other)
    replayed = _client(other)
    assert replayed.get_workflow("d") == client.get_workflow("d")
    assert replayed.steps("d") == client.steps("d")
    assert replayed.get("d.4").failed_parents == ("d.2",)


def test_a_parent_may_come_after_its_child_in_the_batch(store: Path) -> None:
    client = _client(store)
    steps = [NewJob("q", 2, id="b", parents=("a",)), NewJob("q", 1, id="a")]
    assert client.create_workflow("w", steps).created
    assert client.get("a").children == ("b",)
    assert _drain(client) == [["a"], ["b"]]


def test_run_policy_runs_the_step_with_its_failed_parents(store: Path) -> None:
    client = _client(store)
    steps = [
        NewJob("q", id="a", max_attempts=1),
        NewJob("q", id="b", parents=("a",), on_parent_failure=ParentFailure.RUN),
    ]
    client.create_workflow("w", steps)
    assert _drain(client, fail=frozenset({"a"})) == [["a"], ["b"]]
    assert client.get("b").failed_parents == ("a",)
    assert client.get_workflow("w").state is WorkflowState.FAILED


def test_refused_workflows_write_nothing(store: Path) -> None:
    client = _client(store)
    client.enqueue([NewJob("q", id="taken"), NewJob("q", id="k", dedupe_key="key")])
    before = (store / "ns.jsonl").read_bytes()
    with pytest.raises(DuplicateJob):
        client.create_workflow("w", [NewJob("q", id="new"), NewJob("q", id="taken")])
    with pytest.raises(DuplicateJob):
        client.create_workflow("w", [NewJob("q", id="new", dedupe_key="key")])
    assert (store / "ns.jsonl").read_bytes() == before
    assert client.find_workflow("w") is None
    assert client.find("new") is None
    assert client.create_workflow("w", [NewJob("q", id="new")]).created
    assert not client.create_workflow("w", [NewJob("q", id="other")]).created
    assert client.find("other") is None


def test_add_steps_is_fenced_and_keeps_the_workflow_open(store: Path) -> None:
    client = _client(store)
    client.create_workflow("w", [NewJob("q", id="a")])
    claim = client.claim(["q"], worker="w")[0]
    more = [NewJob("q", id="a.x", parents=("a",)), NewJob("q", id="a.y", parents=("a.x",))]
    assert client.add_steps(claim.lease, "w", more) is True
    assert client.add_steps(claim.lease, "w", more) is False  # a retried batch
    assert client.get("a").children == ("a.x",)
    assert client.claim(["q"], worker="w") == []  # a.x waits for a, which runs
    client.complete(claim.lease)
    assert client.get_workflow("w").state is WorkflowState.RUNNING
    assert _drain(client) == [["a.x"], ["a.y"]]
    assert client.get_workflow("w").counts == {JobStatus.SUCCEEDED: 3}
    with pytest.raises(qw.LeaseLost):
        client.add_steps(claim.lease, "w", [NewJob("q", id="late", parents=("a",))])


def test_cancel_workflow_ends_it_with_its_last_running_step(store: Path) -> None:
    client = _client(store)
    client.create_workflow("d", DIAMOND)
    claim = client.claim(["q"], worker="w")[0]
    flow = client.cancel_workflow("d")
    assert (flow.state, flow.cancel_requested) == (WorkflowState.RUNNING, True)
    assert flow.counts == {JobStatus.RUNNING: 1, JobStatus.CANCELLED: 3}
    assert client.renew(claim.lease).cancel_requested
    with pytest.raises(qw.LeaseLost):
        client.add_steps(claim.lease, "d", [NewJob("q", id="x", parents=("d.1",))])
    client.abort(claim.lease)
    assert client.get_workflow("d").state is WorkflowState.CANCELLED
    assert [e.type for e in client.fetch_events()][-1] == "workflow.cancelled"


def test_purge_takes_steps_only_with_their_ended_workflow(store: Path) -> None:
    client = _client(store)
    client.create_workflow("done", [NewJob("q", id="done.1")])
    _drain(client)
    client.create_workflow("open", [NewJob("q", id="open.1"), NewJob("q", id="open.2")])
    claim = client.claim(["q"], worker="w")[0]
    client.complete(claim.lease)  # an ended step of a running workflow
    client.enqueue_one("q", id="plain")
    client.cancel("plain")
    assert client.purge(0).jobs == 2  # done.1 (with its workflow) and plain
    assert client.find_workflow("done") is None
    assert [j.id for j in client.list_jobs()] == ["open.1", "open.2"]


def test_get_many_and_list_filters(store: Path) -> None:
    client = _client(store)
    client.create_workflow("a", [NewJob("q", id="a.1")])
    client.create_workflow("b", [NewJob("q", id="b.1"), NewJob("q", id="b.2")])
    client.enqueue_one("q", id="plain")
    assert [j and j.id for j in client.get_many(["b.2", "nope", "plain"])] == [
        "b.2",
        None,
        "plain",
    ]
    assert [j.id for j in client.list_jobs(workflow="b")] == ["b.1", "b.2"]
    client.cancel_workflow("a")
    assert [w.id for w in client.list_workflows()] == ["a", "b"]
    assert [w.id for w in client.list_workflows(state="cancelled")] == ["a"]
    assert [w.id for w in client.list_workflows(after="a", limit=1)] == ["b"]


def test_workflow_ids_are_per_namespace(store: Path) -> None:
    one, two = _client(store, "one"), _client(store, "two")
    assert one.create_workflow("w", [NewJob("q", id="s")]).created
    assert two.create_workflow("w", [NewJob("q", id="s")]).created
    one.cancel_workflow("w")
    assert two.get_workflow("w").state is WorkflowState.RUNNING


# -- a journal written by qw-toyfile 0.1.0, before workflows -------------------

_OLD_ROW = {
    "queue": "q", "payload": {"n": 1}, "priority": 0, "run_at": 1.0, "max_attempts": 3,
    "attempts": 0, "status": "queued", "created_at": 1.0, "dedupe_key": None, "result": None,
    "error": None, "started_at": None, "finished_at": None, "worker": None,
    "lease_expires_at": None, "cancel_requested": False, "token": None, "finished_by": None,
}  # fmt: skip


def _old_journal(path: Path) -> None:
    """A snapshot line and an entry line, as 0.1.0 wrote them: no workflows table."""
    snapshot = {
        "snapshot": True, "seq": 1, "enabled": True, "queues": {},
        "jobs": {"old.1": {**_OLD_ROW, "id": "old.1", "seq": 1}}, "events": {}, "workers": {},
    }  # fmt: skip
    entry = {
        "seq": 2, "enabled": True, "queues": {},
        "jobs": {"old.2": {**_OLD_ROW, "id": "old.2", "seq": 2}}, "events": {}, "workers": {},
    }  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in (snapshot, entry)))


def test_a_journal_from_before_workflows_opens_as_plain_jobs(store: Path) -> None:
    _old_journal(store / "ns.jsonl")
    client = _client(store)
    old = client.get("old.1")
    assert (old.workflow, old.parents, old.children, old.failed_parents) == (None, (), (), ())
    assert client.counts()["q"][JobStatus.QUEUED] == 2
    assert client.list_workflows() == []
    assert _drain(client) == [["old.1", "old.2"]]
    assert client.purge(0).jobs == 2
    assert client.create_workflow("d", DIAMOND).created
    assert _drain(client) == [["d.1"], ["d.2", "d.3"], ["d.4"]]
    assert client.get_workflow("d").state is WorkflowState.SUCCEEDED
